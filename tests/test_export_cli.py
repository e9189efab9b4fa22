"""`duplex-factory export` / `inspect` on a run folder: the default units tokenizer fitted on the
run with its codebook saved, rejected samples and empty shards counted, clear errors and exit codes;
every format from the main environment's command, the torch ones through the torch environment,
with no library log on the console."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.export.output import read_sidecar
from factory.export.registry import get_format, known_formats
from factory.tokenize import get_audio_tokenizer
from tests.export_fixtures import make_run, make_sample

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TORCH_PYTHON = ROOT / ".envs" / "coqui" / "bin" / "python"
VENV_CLI = ROOT / ".venv" / "bin" / "duplex-factory"
# A line a library printed rather than the command: llama.cpp / ggml, onnxruntime, Prefect.
LIBRARY_LINE = re.compile(r"llama_|ggml|onnxruntime|\[W:|prefect", re.IGNORECASE)


def _flat(result) -> str:
    return " ".join(result.output.split())  # rich wraps long messages


def _bare(result) -> str:
    return "".join(result.output.split())  # rich may also wrap inside a long path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    samples = [make_sample(seed) for seed in (0, 1)]
    return make_run(tmp_path_factory.mktemp("run") / "r", samples, rejected=("r-bad-1", "r-bad-2"))


def test_export_fits_units_on_the_run_and_counts_what_the_run_rejected(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dg"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "dgslm", "--out", str(out), "--units-k", "16"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert (report["samples_in"], report["samples_out"]) == (4, 2)
    assert report["rules"]["rejected_samples"] == 2 and report["rules"]["empty_source_shards"] == 1
    assert {d["id"] for d in report["dropped"]} == {"r-bad-1", "r-bad-2"}
    sidecar = read_sidecar(out)
    assert sidecar.source_run == str(run_dir) and sidecar.audio_tokenizer_path == "units_codebook.json"
    # the saved codebook reproduces the exported units (and can tokenize other runs)
    tok = get_audio_tokenizer("units", codebook=out / "units_codebook.json")
    assert tok.identity().weights_sha256 == sidecar.audio_tokenizer["weights_sha256"]
    from factory.export.dgslm import read_lines
    from factory.run.read import read_samples

    first = next(read_samples(run_dir))
    line = read_lines(out)[0]
    assert line[1] == tok.encode(first.stems[:, 0], first.sample_rate)[0].tolist()[: len(line[1])]
    # same run, same seed -> same bytes
    again = tmp_path / "dg2"
    assert (
        runner.invoke(app, ["export", str(run_dir), "-f", "dgslm", "--out", str(again), "--units-k", "16"]).exit_code
        == 0
    )
    assert (again / "train.unitA").read_bytes() == (out / "train.unitA").read_bytes()
    assert (again / "units_codebook.json").read_bytes() == (out / "units_codebook.json").read_bytes()
    assert (again / "data" / "train-00000.parquet").read_bytes() == (out / "data" / "train-00000.parquet").read_bytes()


def test_inspect_renders_the_sequence_as_a_timeline(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bay"
    assert (
        runner.invoke(app, ["export", str(run_dir), "-f", "bayling", "--out", str(out), "--units-k", "16"]).exit_code
        == 0
    )
    # a window around d000's barge-in (its times come from the timing model): the agent's [EPAD]
    # after the stop (one 0.8 s block later) and the next <|assistant|> fall inside it
    from factory.models import BargeInEvent
    from factory.run.read import read_samples

    d000 = next(s for s in read_samples(run_dir) if s.id == "d000")
    onset = next(e.onset for e in d000.timeline.events if isinstance(e, BargeInEvent))
    start, end = max(0, int(onset) - 5), int(onset) + 4
    result = runner.invoke(
        app, ["inspect", str(out), "d000", "--start", str(start), "--end", str(end)], env={"COLUMNS": "160"}
    )
    assert result.exit_code == 0, result.output
    assert "<|assistant|>" in result.output and "[EPAD]" in result.output and "[PAD]" in result.output
    # 12.5 Hz frames: the first shown is the first at or after `start`, the first at `end` is not shown
    first, past = (math.ceil(t * 12.5 - 1e-9) / 12.5 for t in (start, end))
    assert f" {first:.2f} " in result.output and f" {past:.2f} " not in result.output
    assert f" {start - 0.04:.2f} " not in result.output
    assert "speak" in result.output and "listen" in result.output
    missing = runner.invoke(app, ["inspect", str(out), "nope"])
    assert missing.exit_code == 2 and "no sequence 'nope'" in missing.output


def test_export_errors_are_clear_with_exit_codes(run_dir: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", str(tmp_path / "absent"), "-f", "dgslm"])
    assert r.exit_code == 2 and "does not exist" in _flat(r)
    r = runner.invoke(app, ["export", str(run_dir), "-f", "wav2vec-soup"])
    assert r.exit_code == 2 and "unknown export format 'wav2vec-soup'" in _flat(r) and "bayling" in _flat(r)
    r = runner.invoke(app, ["export", str(run_dir), "-f", "units-1s", "-o", "frame_rate=12.5"])
    assert r.exit_code == 2 and "frame_rate 25 or 50, not 12.5" in _flat(r)
    r = runner.invoke(app, ["export", str(run_dir), "-f", "dgslm", "--codebook", str(tmp_path / "none.json")])
    assert r.exit_code == 3 and "none.json" in _bare(r)
    r = runner.invoke(app, ["export", str(tmp_path), "-f", "dgslm"])  # a folder, not a run
    assert r.exit_code == 2 and "no finished shards" in _flat(r)


def test_a_run_whose_samples_were_all_rejected_exits_4(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", [], rejected=("a", "b"), empty_shard=False)
    r = runner.invoke(app, ["export", str(run), "-f", "dgslm", "--out", str(tmp_path / "o")])
    assert r.exit_code == 4, r.output


@pytest.mark.parametrize(
    ("fmt", "sample", "expect", "option"),
    [("lslm", "d000", "IRQ", "mu=0.3"), ("units-1s", "d001", "interrupt", "frame_rate=50")],
)
def test_inspect_every_token_format(
    run_dir: Path, tmp_path: Path, fmt: str, sample: str, expect: str, option: str
) -> None:
    out = tmp_path / fmt
    r = runner.invoke(app, ["export", str(run_dir), "-f", fmt, "--out", str(out), "--units-k", "16", "-o", option])
    assert r.exit_code == 0, r.output
    key, value = option.split("=")
    assert read_sidecar(out).options["format_options"] == {key: float(value)}
    r = runner.invoke(app, ["inspect", str(out), sample], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and expect in r.output and "listen" in r.output, r.output[-2000:]


def test_a_re_export_leaves_no_stale_shard_and_a_foreign_folder_is_refused(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dg"
    base = ["export", str(run_dir), "-f", "dgslm", "--out", str(out), "--units-k", "16"]
    assert runner.invoke(app, [*base, "--shard-size", "1"]).exit_code == 0
    assert len(list((out / "data").glob("*.parquet"))) == 2
    (out / "valid.unitA").write_text("stale\n")  # as if an earlier export had a dev split
    assert runner.invoke(app, [*base, "--shard-size", "2", "--units-k", "8"]).exit_code == 0
    assert [p.name for p in (out / "data").glob("*.parquet")] == ["train-00000.parquet"]
    assert not (out / "valid.unitA").exists()
    # the codebook beside the export is the one that made these tokens
    from factory.tokenize import get_audio_tokenizer

    assert get_audio_tokenizer("units", codebook=out / "units_codebook.json").cardinality == 8
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = runner.invoke(app, ["export", str(run_dir), "-f", "dgslm", "--out", str(foreign)])
    assert r.exit_code == 2 and "is not an export" in _flat(r) and (foreign / "notes.txt").exists()


@pytest.mark.skipif(
    not os.environ.get("BAYLING_DUPLEX_SRC") or not TORCH_PYTHON.exists(),
    reason="set BAYLING_DUPLEX_SRC to a BayLing-Duplex checkout (and make envs) to parse with its own code",
)
def test_bayling_duplexs_own_parser_reads_our_segments(run_dir: Path, tmp_path: Path) -> None:
    """BayLing-Duplex's `_extract_segments` (its code, in the torch env) on our export."""
    import importlib.util

    out = tmp_path / "bay"
    args = ["export", str(run_dir), "-f", "bayling", "--out", str(out), "--units-k", "16"]
    assert runner.invoke(app, args).exit_code == 0
    spec = importlib.util.spec_from_file_location("check", ROOT / "scripts" / "check_bayling_export.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.main(run_dir, out, Path(os.environ["BAYLING_DUPLEX_SRC"]), str(TORCH_PYTHON)) == 0


def test_every_format_exports_from_the_main_command_with_no_flag_and_no_library_log(
    tiny_run: Path, tmp_path: Path
) -> None:
    """`.venv/bin/duplex-factory export RUN --format F` for every registered F, as a user runs it:
    nemo-duplex needs torch and goes to the torch environment by itself, every format gets the
    default text tokenizer there too, and the libraries' logs go to the log file. All started at
    once: their imports and units fits share the cores. --out keeps the session's run untouched."""
    extra = {"fdb": ["-o", "split=all"]}  # the tiny run is all train; fdb cuts the test split by default
    log = tmp_path / "libraries.log"
    env = {**os.environ, "DUPLEX_LOG_FILE": str(log)}
    started = {
        fmt: subprocess.Popen(
            [
                str(VENV_CLI),
                "export",
                str(tiny_run),
                "--format",
                fmt,
                "--out",
                str(tmp_path / fmt),
                *extra.get(fmt, []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for fmt in known_formats()
    }
    for fmt, proc in started.items():
        console, _ = proc.communicate(timeout=600)
        out = tmp_path / fmt
        assert proc.returncode == 0, f"{fmt}: {console}"
        assert json.loads((out / "report.json").read_text())["samples_out"] >= 1, fmt
        assert read_sidecar(out).format == fmt
        wrote = [p for pattern in ("data/*.parquet", *get_format(fmt).outputs) for p in out.glob(pattern)]
        assert wrote, f"{fmt} wrote no data"
        leaked = [line for line in console.splitlines() if LIBRARY_LINE.search(line)]
        assert not leaked, f"{fmt} printed library logs: {leaked}"
    # where they went instead: llama.cpp's lines from loading the default text tokenizer's GGUF
    assert "llama_context" in log.read_text()


def test_an_export_that_needs_torch_names_make_envs_when_the_torch_environment_is_missing(tmp_path: Path) -> None:
    r = runner.invoke(
        app, ["export", str(tmp_path), "-f", "nemo-duplex"], env={"DUPLEX_TORCH_PYTHON": str(tmp_path / "python")}
    )
    assert r.exit_code == 3 and "make envs" in _flat(r) and str(tmp_path / "python") in _flat(r), r.output

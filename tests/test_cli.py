"""The `duplex-factory` command from the outside: exit codes, error messages, and the summary
and plot commands checked against the run's files (manifest, decoded PNG)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.cli.generate import ALL_REJECTED
from factory.runtime import Runtime
from tests.conftest import TINY
from tests.latency_server import STAND_IN_BEHAVIOUR, LatencyServer


@pytest.fixture(scope="module")
def small() -> Iterator[list[str]]:
    """The smallest real run: the tiny run's settings and voices, one attempt per sample, scripted
    by a stand-in LLM server (the exit codes, reasons and logs around a run are under test here,
    not the model's words: the embedded model cost each run its load and every script)."""
    with LatencyServer(latency_s=0.0) as llm:
        yield [
            *TINY,
            *STAND_IN_BEHAVIOUR,
            "run.max_sample_attempts=1",
            "tts.qa_wer_threshold=null",
            "llm.backend=http",
            f"llm.base_url={llm.base_url}",
        ]


def _invoke(*args: str, overrides: list[str] = ()) -> object:
    cli_args = list(args)
    for item in overrides:
        cli_args += ["--set", item]
    return CliRunner().invoke(app, cli_args)


# --------------------------------------------------------------------------- --help stays light
def test_help_imports_nothing_heavy() -> None:
    """`duplex-factory --help` (importing the CLI) loads none of the packages that take seconds:
    each command imports them when it runs (factory/cli/runs.py's docstring)."""
    heavy = ["prefect", "datasets", "polars", "scipy", "matplotlib", "huggingface_hub", "aiohttp", "factory.engine"]
    code = f"import sys, factory.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["run.seed=-3"], "run.seed: Input should be greater than or equal to 0"),
        (["run.sede=3"], "run.sede: unknown field (allowed here: run_id, name, seed"),
        (["tts.user_voice=piper-joe"], "set both tts.user_voice and tts.agent_voice, or neither"),
        (["tts.agent_voice=piper-joe"], "set both tts.user_voice and tts.agent_voice, or neither"),
        (["tts.user_voice=piper-joe", "tts.agent_voice=piper-joe"], "must differ (both 'piper-joe')"),
        (["seed=3"], "must be a dotted path"),
    ],
)
def test_config_errors_exit_2_before_anything_runs(tmp_path: Path, overrides: list[str], message: str) -> None:
    result = _invoke("generate", "--out", str(tmp_path), overrides=overrides)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output  # rich may wrap long lines
    assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run: {seed: [unclosed\n", "is not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping of sections"),
        ("run:\n  n_samples: many\n", "run.n_samples: Input should be a valid integer"),
        ("tts:\n  user_voice: kokoro-alpha\n", "set both tts.user_voice and tts.agent_voice"),
    ],
)
def test_bad_config_file_exits_2(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(text)
    result = _invoke("generate", "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()
    assert _invoke("config", "--config", str(tmp_path / "missing.yaml")).exit_code == 2


def test_config_command_shows_fixed_voices() -> None:
    result = _invoke("config", overrides=["tts.user_voice=piper-joe", "tts.agent_voice=espeak-gb-m3"])
    assert result.exit_code == 0, result.output
    assert "user_voice: piper-joe" in result.output and "agent_voice: espeak-gb-m3" in result.output


# --------------------------------------------------------------------------- rejected runs
@pytest.mark.usefixtures("prefect_api")
def test_run_with_every_sample_rejected_exits_4_with_reasons(tmp_path: Path, small: list[str]) -> None:
    overrides = [*small, "run.n_samples=1", "behaviour.min_barge_ins=9"]
    result = _invoke("generate", "--out", str(tmp_path), "--run-id", "none", overrides=overrides)
    assert result.exit_code == ALL_REJECTED == 4, result.output
    assert "1 rejected: behaviour_minimum x 1" in result.output
    assert "every sample was rejected" in result.output
    manifest = pl.read_parquet(tmp_path / "none" / "manifest.parquet")
    assert manifest["status"].to_list() == ["rejected"]
    assert manifest["reason"][0].startswith("behaviour_minimum: ") and "barge_ins" in manifest["reason"][0]
    # the summary of such a run still reads, and counts the same reasons
    summary = _invoke("summary", str(tmp_path / "none"))
    assert summary.exit_code == 0 and "1 rejected: behaviour_minimum x 1" in summary.output, summary.output


class Boom(RuntimeError):
    """Not a TTSError: what a backend bug looks like to the pipeline."""


@pytest.mark.usefixtures("prefect_api")
def test_unexpected_backend_error_rejects_one_sample_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small: list[str]
) -> None:
    """The first synthesis of the run raises: that sample is rejected as internal_error with the
    traceback logged, the other comes out, the shard is written, and a partial run exits 0."""
    real_lookup = Runtime.tts
    calls: list[str] = []

    class FirstCallExplodes:
        def __init__(self, inner) -> None:
            self.inner = inner

        def synthesize(self, text, voice, rate=1.0):
            calls.append(text)
            if len(calls) == 1:
                raise Boom("backend bug")
            return self.inner.synthesize(text, voice, rate=rate)

    monkeypatch.setattr(Runtime, "tts", lambda self, name: FirstCallExplodes(real_lookup(self, name)))
    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("duplex_factory").addHandler(handler)
    try:
        overrides = [*small, "run.n_samples=2", "run.samples_per_shard=2", "run.workers=1"]
        result = _invoke("generate", "--out", str(tmp_path), "--run-id", "partial", overrides=overrides)
    finally:
        logging.getLogger("duplex_factory").removeHandler(handler)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "1 rejected: internal_error x 1" in result.output

    run = tmp_path / "partial"
    manifest = pl.read_parquet(run / "manifest.parquet")
    # Which sample met the first synthesis depends on which script came back first.
    status = dict(zip(manifest["id"], manifest["status"], strict=True))
    (failed,) = [i for i, s in status.items() if s == "rejected"]
    (survived,) = [i for i, s in status.items() if s == "ok"]
    reason = manifest.filter(pl.col("id") == failed)["reason"][0]
    assert reason.startswith("internal_error: Boom: backend bug"), reason
    assert any(f"{failed} failed unexpectedly" in m and "Traceback" in m and "Boom" in m for m in logged), logged
    record = json.loads((run / "shards" / "train-00000-of-00001.json").read_text())
    assert (record["n_ok"], record["n_rejected"]) == (1, 1)
    data = pl.read_parquet(run / "data" / "train-00000-of-00001.parquet", columns=["id"])
    assert data["id"].to_list() == [survived]


# --------------------------------------------------------------------------- summary and plot
def _table_rows(output: str) -> dict[str, list[str]]:
    """Data rows of the rich table, by sample id (first cell)."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0].startswith("train-"):
            rows[cells[0]] = cells
    return rows


def test_summary_lists_every_ok_sample_with_the_manifest_counts(tiny_run: Path) -> None:
    result = _invoke("summary", str(tiny_run))
    assert result.exit_code == 0, result.output
    manifest = pl.read_parquet(tiny_run / "manifest.parquet").filter(pl.col("status") == "ok")
    table = _table_rows(result.output)
    assert sorted(table) == sorted(manifest["id"].to_list()) and len(table) == 4
    for row in manifest.iter_rows(named=True):
        _, mode, seconds, turns, barge_ins, backchannels, fillers, overlap, voices = table[row["id"]]
        assert mode == row["mode"] and float(seconds) == pytest.approx(row["duration"], abs=0.05)
        assert [int(turns), int(barge_ins), int(backchannels), int(fillers)] == [
            row["n_turns"],
            row["n_barge_ins"],
            row["n_backchannels"],
            row["n_fillers"],
        ]
        assert float(overlap) == pytest.approx(row["overlap_share"], abs=0.005)
        assert voices == f"{row['user_voice']} / {row['agent_voice']}"
    assert f"{len(manifest)} dialogues, {manifest['duration'].sum():.1f} s" in result.output


def test_summary_of_a_folder_without_manifest_exits_1(tmp_path: Path) -> None:
    result = _invoke("summary", str(tmp_path))
    assert result.exit_code == 1 and "no manifest" in result.output


def _waveform_pixels(png: np.ndarray, panel: slice) -> int:
    """Pixels of one panel in the waveform's exact grey (0.6): many where a channel speaks, a
    thin line's worth where it is silent (shading, text and word bars are other colours)."""
    return int((np.abs(png[panel, :, :3] - 0.6) < 0.01).all(axis=2).sum())


def test_plot_draws_each_dialogue_decoded(tiny_run: Path, tmp_path: Path) -> None:
    import matplotlib.image

    images = {}
    durations = dict(pl.read_parquet(tiny_run / "manifest.parquet").select("id", "duration").iter_rows())
    for sid in ("train-0000000", "train-0000001"):
        out = tmp_path / f"{sid}.png"
        result = _invoke("plot", str(tiny_run), sid, "--out", str(out))
        assert result.exit_code == 0, result.output
        png = matplotlib.image.imread(out)
        width_in = max(12.0, min(40.0, durations[sid] * 0.6))
        # Agg truncates the figure's size in pixels (12.95 in x 110 dpi = 1424.7 -> 1424)
        assert png.shape[:2] == (int(5.5 * 110), int(width_in * 110))
        half = png.shape[0] // 2
        for panel in (slice(0, half), slice(half, None)):  # ch0 user above, ch1 agent below
            assert _waveform_pixels(png, panel) > 2000, (sid, panel)  # speech, not a flat line
        images[sid] = png
    a, b = images.values()
    height, width = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    assert np.abs(a[:height, :width] - b[:height, :width]).mean() > 0.01  # two dialogues, two pictures


def test_plot_of_unknown_sample_exits_1(tiny_run: Path) -> None:
    result = _invoke("plot", str(tiny_run), "nope")
    assert result.exit_code == 1 and "no sample 'nope'" in result.output


def test_resuming_a_finished_run_loads_no_models(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    """`generate` warms its models up while its Prefect server starts, unless every shard of the
    run already has its record: then nothing is loaded. One record gone, the warm-up runs."""
    import shutil

    import factory.engine
    from factory.cli.generate import _warm_up
    from factory.config import load_config

    warmed = []
    monkeypatch.setattr(factory.engine, "warm_up", lambda rt: warmed.append(rt))
    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)
    cfg = load_config(None, [*TINY, f"run.output_dir={tmp_path}", "run.run_id=tiny"])
    _warm_up(cfg)
    assert warmed == []
    next((run / "shards").glob("*.json")).unlink()
    _warm_up(cfg)
    assert len(warmed) == 1

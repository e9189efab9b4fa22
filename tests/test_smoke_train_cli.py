"""`duplex-factory smoke-train` from the main environment, which has no torch: the command hands
itself over to the torch environment (factory.cli.torch_env, as `export` does for nemo-duplex),
with its options, and its report and plot land where the user asked. The training itself is
tests/coqui/test_smoke_train.py; this is the hand-over, on a tiny export, with 2 steps."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factory.cli import app, torch_env
from factory.vap.report import PLOT, REPORT, TRAIN_SEEDS
from tests.export_fixtures import make_cued_sample, make_run

ROOT = Path(__file__).resolve().parents[1]
VENV_CLI = ROOT / ".venv" / "bin" / "duplex-factory"


@pytest.mark.slow  # ~30 CPU s: a units fit, then torch's import and six 2-step trainings in the torch env
def test_smoke_train_from_the_main_command_runs_in_the_torch_environment(tmp_path: Path) -> None:
    assert not torch_env.has_torch()  # the hand-over is what runs it
    samples = [make_cued_sample(i, "dev" if i % 4 == 0 else "train", 4) for i in range(8)]
    run = make_run(tmp_path / "run", samples)
    export = tmp_path / "dgslm"
    result = CliRunner().invoke(app, ["export", str(run), "-f", "dgslm", "--units-k", "16", "--out", str(export)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "smoke"
    env = {**os.environ, "DUPLEX_LOG_FILE": str(tmp_path / "libraries.log")}
    args = [str(VENV_CLI), "smoke-train", str(export), "--out", str(out), "--steps", "2", "--threads", "1"]
    args += ["--seed", "3", "--train-seeds", "2"]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    # exit 0 or 1 is the verdict (2 steps learn nothing); anything else is a failed hand-over
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    report = json.loads((out / REPORT).read_text())
    assert (report["steps"], report["seeds"], report["threads"]) == (2, [3, 4], 1)  # the options went along
    assert report["export"] == str(export) and report["format"] == "dgslm" and (out / PLOT).is_file()
    assert report["held_out_dialogues"] == 2 and report["train_dialogues"] == 6
    assert " ".join(report["verdict"].split()) in " ".join(proc.stdout.split())  # the torch side printed here


def test_smoke_train_names_make_envs_when_the_torch_environment_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "python"
    result = CliRunner().invoke(app, ["smoke-train", str(tmp_path)], env={"DUPLEX_TORCH_PYTHON": str(missing)})
    flat = " ".join(result.output.split())
    assert result.exit_code == 3 and "make envs" in flat and str(missing) in "".join(result.output.split())


def test_smoke_train_refuses_one_training_seed(tmp_path: Path) -> None:
    # the verdict's margin counts the spread between training seeds: one seed has none to count
    result = CliRunner().invoke(app, ["smoke-train", str(tmp_path), "--train-seeds", "1"])
    flat = " ".join(result.output.split())
    assert result.exit_code == 2 and "--train-seeds" in flat and "greater than or equal to" in flat, flat


def test_smoke_train_hands_over_the_libraries_default_seeds(tmp_path: Path, monkeypatch) -> None:
    # one default for the number of training seeds (factory.vap.report.TRAIN_SEEDS): the command's,
    # handed to the torch environment, and the library's
    import inspect

    from factory.vap.smoke import smoke_train

    handed: list[list[str]] = []
    monkeypatch.setattr(torch_env, "has_torch", lambda: False)
    monkeypatch.setattr(torch_env, "run_there", lambda args, _: handed.append(args) or 0)
    result = CliRunner().invoke(app, ["smoke-train", str(tmp_path)])
    assert result.exit_code == 0, result.output
    args = handed[0]
    assert args[args.index("--train-seeds") + 1] == str(TRAIN_SEEDS)
    assert inspect.signature(smoke_train).parameters["train_seeds"].default == TRAIN_SEEDS

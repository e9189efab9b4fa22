"""`duplex-factory doctor`: one table of what this machine can do for a config, and its exit code
(0 runs, 2 invalid config, 3 a check the config needs failed). Voice banks of two espeak voices
keep the renders cheap; an empty DUPLEX_ENVS_DIR stands for a machine without the heavy
environments (and skips the GPU probe through the torch environment)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from factory.cli import app
from factory.config import load_config
from factory.doctor import environments
from factory.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
ESPEAK = [
    {"id": "espeak-a", "backend": "espeak", "speaker": "en+m3", "group": "a", "split": "train"},
    {"id": "espeak-b", "backend": "espeak", "speaker": "en-us+m7", "group": "b", "split": "train"},
]
COQUI = {"id": "vctk-x", "backend": "coqui", "model": "tts_models/en/vctk/vits", "speaker": "p225", "split": "train"}


def bank(tmp_path: Path, voices: list[dict]) -> Path:
    path = tmp_path / "voices.yaml"
    path.write_text(yaml.safe_dump(voices))
    return path


def doctor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str):
    monkeypatch.setenv("DUPLEX_ENVS_DIR", str(tmp_path / "no-envs"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    args = ["doctor", "--set", f"run.output_dir={tmp_path / 'out'}"]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    rows = {}
    for line in result.output.splitlines():  # the table's rows: │ area │ check │ status │ needed │ ...
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 6 and cells[1]:
            rows[cells[1]] = cells
    return result, rows


def test_a_config_that_can_run_exits_0_and_names_each_voice(tmp_path, monkeypatch):
    voices = bank(tmp_path, ESPEAK)
    result, rows = doctor(tmp_path, monkeypatch, f"tts.voice_bank={voices}")
    assert result.exit_code == 0, result.output
    assert rows["espeak-a"][2] == rows["espeak-b"][2] == "ok" and "'hello'" in rows["espeak-a"][4]
    assert rows["en"][2] == "ok" and rows["embedded model"][2] == "ok"
    # the heavy environments are missing, but this config does not need them
    assert rows["coqui"][2:4] == ["missing", "no"] and rows["vllm"][2:4] == ["missing", "no"]


def test_a_missing_environment_the_voices_need_exits_3(tmp_path, monkeypatch):
    voices = bank(tmp_path, [*ESPEAK, COQUI])
    result, rows = doctor(
        tmp_path, monkeypatch, f"tts.voice_bank={voices}", "tts.user_voice=vctk-x", "tts.agent_voice=espeak-a"
    )
    assert result.exit_code == 3, result.output
    assert rows["coqui"][2:4] == ["missing", "yes"] and "setup_coqui.sh" in rows["coqui"][5]
    assert rows["vctk-x"][2:4] == ["missing", "yes"]
    assert rows["espeak-b"][2:4] == ["ok", "no"]  # in the bank, not in this run


@pytest.mark.parametrize(
    ("override", "code"),
    [("tts.voice_bank=/nonexistent/voices", 3), ("llm.model_path=/nonexistent/m.gguf", 3), ("run.seed=-1", 2)],
)
def test_missing_paths_exit_3_and_an_invalid_config_2(tmp_path, monkeypatch, override, code):
    result, _ = doctor(tmp_path, monkeypatch, f"tts.voice_bank={bank(tmp_path, ESPEAK)}", override)
    assert result.exit_code == code, result.output


def _script_stamp(script: str) -> str:
    """The stamp the set-up script itself computes (its WANT= line, run by bash in the checkout)."""
    text = (ROOT / "scripts" / script).read_text()
    want = re.search(r"^WANT=\$\((.*?)\)$", text, re.S | re.M)
    assert want, script
    return subprocess.run(["bash", "-c", want.group(1)], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_environment_stamps_are_the_set_up_scripts_hashes(tmp_path, monkeypatch):
    envs = tmp_path / "envs"
    (envs / "coqui" / "bin").mkdir(parents=True)
    (envs / "coqui" / "bin" / "python").touch()
    monkeypatch.setenv("DUPLEX_ENVS_DIR", str(envs))
    rt = Runtime(load_config())
    (envs / ".coqui-stamp").write_text(_script_stamp("setup_coqui.sh").split()[0] + "\n")
    rows = {c.name: c for c in environments(rt)}
    assert rows["coqui"].status == "ok", rows["coqui"]
    assert rows["vllm"].status == "missing"
    (envs / ".coqui-stamp").write_text(_script_stamp("setup_vllm.sh").split()[0] + "\n")  # another lock's stamp
    assert {c.name: c for c in environments(rt)}["coqui"].status == "missing"

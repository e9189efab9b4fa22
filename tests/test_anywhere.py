"""The factory works from any folder: a wheel built from the repository and installed into a fresh
venv generates a dialogue from an empty folder, with its data (voice bank, scenario bank) from the
installed package; and the session's tiny run was made from a folder outside the repository with
the normal install (tests/conftest.py), writing nothing there but the run."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from factory.config import load_config
from factory.locations import user_cache
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
# What a wheel is built from (pyproject names README.md as the long description).
SOURCES = ("pyproject.toml", "README.md", "factory", "flows", "voices", "dialogues")


def test_the_tiny_run_was_made_outside_the_repository(tiny_run: Path) -> None:
    started_in = tiny_run.parent / "cwd"  # the command's working folder (conftest.tiny_run)
    assert started_in.is_dir() and ROOT not in started_in.parents
    assert os.listdir(started_in) == []  # no relative cache or other leftovers where it started
    cfg = load_config(tiny_run / "config.yaml")
    assert cfg.tts.voice_bank is None  # the packaged bank, not a path relative to where it started
    assert cfg.tts.cache_dir == user_cache("tts") and cfg.tts.cache_dir.is_absolute()
    assert pl.read_parquet(tiny_run / "manifest.parquet")["status"].to_list() == ["ok"] * 4


def _uv() -> str:
    """The pinned uv that scripts/setup.sh uses (scripts/uv.sh installs it when it is missing)."""
    out = subprocess.run(
        ["bash", "-c", 'source scripts/uv.sh && echo "$UV"'], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def _wheel(tmp: Path, uv: str) -> Path:
    """A wheel built from a copy of the working tree (a build writes build/ and *.egg-info beside
    its sources; the repository stays as it is)."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():  # symlinks kept: factory/voices links to the top-level voices/
            shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([uv, "build", "--quiet", "--wheel", "--out-dir", str(tmp / "dist"), str(src)], check=True)
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


def test_a_wheel_in_a_fresh_venv_generates_a_dialogue_from_an_empty_folder(tmp_path: Path, prefect_api: str) -> None:
    uv = _uv()
    wheel = _wheel(tmp_path, uv)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dependencies come from this venv's site-packages, added as a plain path: its .pth files
    # (the editable install's finder, which maps `factory` to a checkout) are not processed there.
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--offline", "--no-deps", "--python", str(python), str(wheel)], check=True
    )

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # PREFECT_API_URL: the session's server
    where = subprocess.run(
        [python, "-c", "import factory.locations as l; print(l.voice_bank_dir()); print(l.dialogue_set_dir())"],
        cwd=empty,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), where  # the installed wheel's data, not a checkout
    assert (Path(where[1]) / "en-everyday.jsonl").is_file()  # the dialogue sets travel like the voice bank

    args = [str(venv / "bin" / "duplex-factory"), "generate", "--run-id", "one"]
    # An empty TTS cache (real renders); one process (no worker pool to spawn: ~20 s of CPU less).
    for item in [*TINY, "run.n_samples=1", "run.processes=1", f"tts.cache_dir={tmp_path / 'tts'}"]:
        args += ["--set", item]
    result = subprocess.run(args, cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    run = empty / "outputs" / "one"  # outputs/ is only the default output folder, under where it started
    assert pl.read_parquet(run / "manifest.parquet")["status"].to_list() == ["ok"]
    assert yaml.safe_load((run / "config.yaml").read_text())["tts"]["voice_bank"] is None
    assert sorted(os.listdir(empty)) == ["outputs"]


def test_caches_default_to_the_per_user_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("DUPLEX_CACHE", raising=False)
    cfg = load_config()
    assert cfg.tts.cache_dir == platformdirs.user_cache_path("duplex-factory") / "tts"
    assert cfg.augment.cache_dir == platformdirs.user_cache_path("duplex-factory") / "augment"
    # $DUPLEX_CACHE moves them all, read when a config loads (not when the module was imported)
    monkeypatch.setenv("DUPLEX_CACHE", str(tmp_path))
    cfg = load_config()
    assert (cfg.tts.cache_dir, cfg.augment.cache_dir) == (tmp_path / "tts", tmp_path / "augment")
    # and the config puts either anywhere
    cfg = load_config(None, [f"tts.cache_dir={tmp_path / 'x'}", "augment.cache_dir=rel"])
    assert (cfg.tts.cache_dir, cfg.augment.cache_dir) == (tmp_path / "x", Path("rel"))

"""The torch environment (`.envs/coqui`, built by `make envs`) from a command running without torch:
an export that needs torch (nemo-duplex's lhotse; the Mimi and EnCodec tokenizers) runs there as a
subprocess, on this same source tree, and prints to the same terminal. One path for every such
export: `export` hands its whole request over, so no option is restated here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import factory
from factory.cli import logs
from factory.export.errors import ExportError

TORCH_PYTHON_ENV = "DUPLEX_TORCH_PYTHON"  # a torch environment's python, instead of .envs/coqui
SOURCE_ROOT = Path(factory.__file__).resolve().parents[1]  # the folder that holds this `factory` package


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def torch_python() -> Path:
    """$DUPLEX_TORCH_PYTHON, else .envs/coqui of this checkout, else of the machine's envs folder
    ($DUPLEX_ENVS_DIR, default ~/.cache/duplex-factory/envs: where scripts/envs_dir.sh builds it).
    ExportError (exit 3) naming `make envs` when none exists."""
    if os.environ.get(TORCH_PYTHON_ENV):
        candidates = [Path(os.environ[TORCH_PYTHON_ENV])]
    else:
        envs = Path(os.environ.get("DUPLEX_ENVS_DIR", Path.home() / ".cache" / "duplex-factory" / "envs"))
        candidates = [SOURCE_ROOT / ".envs" / "coqui" / "bin" / "python", envs / "coqui" / "bin" / "python"]
    for python in candidates:
        if python.is_file() and os.access(python, os.X_OK):
            return python
    raise ExportError(
        "this export needs torch, which this environment lacks, and the torch environment is missing "
        f"(looked for {', '.join(map(str, candidates))}): build it with `make envs` "
        f"(or point {TORCH_PYTHON_ENV} at a python with torch and this project)",
        exit_code=3,
    )


def run_there(args: list[str], request_json: str) -> int:
    """`python -m factory.cli ARGS` in the torch environment, the request on its stdin, its output
    on this terminal (stderr too, not the library log); returns its exit code."""
    python = torch_python()
    env = dict(os.environ)
    # this source tree first, so the torch side runs the code this command runs (a checkout, a worktree)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
    argv = [str(python), "-m", "factory.cli", *(["--verbose"] if logs.verbose() else []), *args]
    return subprocess.run(argv, input=request_json, text=True, env=env, stderr=logs.terminal_stderr()).returncode

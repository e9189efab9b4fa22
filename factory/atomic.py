"""Atomic file writes and checksums: every file a run publishes appears complete or not at all
(temporary name in the same folder, then rename), so a killed run leaves no half-written file
under a final name. Runs, exporters, the audit and script signatures all publish through here, so
it imports no stage (only the kill points of `factory.crash`)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

from factory.crash import crash_point

# In temporary names, so a cleaner can tell a live writer on this machine from a dead one.
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"


def tmp_path(path: Path) -> Path:
    """The temporary sibling a file is written to before its rename (dot-prefixed, `.tmp`,
    naming the writer's host and pid; `factory.run.store.clean_stale_tmp` removes dead ones)."""
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.tmp")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` to produce the file at a temporary path, then rename it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        write(tmp)
        crash_point("atomic_write")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

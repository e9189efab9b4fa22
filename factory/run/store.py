"""Where a run's files end up: a local folder or any fsspec URL (`s3://bucket/prefix`, ...).

Shards are produced in the local run folder (`run.output_dir/<run id>`) and, when
`run.destination` is set, streamed to `<destination>/<run id>` and deleted locally, so local disk
holds only the shards in flight. Every published object appears complete or not at all: object
stores publish a `put` whole; on a filesystem the file goes to a temporary name and is renamed.
A shard's record is published last, so a record at the destination means its files are there.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from pathlib import Path
from typing import Any

import fsspec

from factory.atomic import HOST, tmp_path
from factory.config import RunConfig
from factory.crash import crash_point

STALE_FOREIGN_S = 6 * 3600  # another machine's temporary file this old belongs to a dead writer


class RunStore:
    """The final home of one run's files, addressed by paths relative to the run folder."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_local = "file" in protocols or "local" in protocols

    def __repr__(self) -> str:
        return f"RunStore({self.url!r})"

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def open(self, rel: str, mode: str = "rb"):
        return self.fs.open(self.path(rel), mode)

    def sha256(self, rel: str) -> str:
        """Streamed, so a large shard is never held whole in memory."""
        digest = hashlib.sha256()
        with self.open(rel) as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        return digest.hexdigest()

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def names(self, folder: str, suffix: str = "") -> list[str]:
        """File names (not paths) in `folder`, sorted; [] when it does not exist."""
        try:
            entries = self.fs.ls(self.path(folder), detail=False)
        except FileNotFoundError:
            return []
        self.fs.invalidate_cache(self.path(folder))
        return sorted(n for n in (posixpath.basename(e.rstrip("/")) for e in entries) if n.endswith(suffix))

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.is_local:
            self._local_atomic(rel, lambda tmp: Path(tmp).write_bytes(data))
        else:
            self.fs.pipe_file(self.path(rel), data)

    def put(self, local: Path, rel: str) -> None:
        """Copy a local file to `rel` (whole or not at all)."""
        target = self.path(rel)
        if self.is_local and Path(target).resolve() == Path(local).resolve():
            return
        if self.is_local:
            self._local_atomic(rel, lambda tmp: self.fs.put_file(str(local), tmp))
        else:
            self.fs.put_file(str(local), target)
        crash_point("store.put")

    def delete(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def _local_atomic(self, rel: str, write) -> None:
        target = Path(self.path(rel))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path(target)
        try:
            write(str(tmp))
            crash_point("atomic_write")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def clean_stale_tmp(self, folders: tuple[str, ...]) -> int:
        """Remove temporary files a killed writer left behind (only local stores have them)."""
        if not self.is_local:
            return 0
        return clean_stale_tmp(Path(self.root), folders)


def run_store(cfg: RunConfig) -> RunStore:
    """The run's final home: `<run.destination>/<run id>` when set, else the local run folder."""
    if cfg.run.destination:
        return RunStore(f"{cfg.run.destination.rstrip('/')}/{cfg.run_id}", cfg.run.storage_options)
    return RunStore(str(cfg.run_dir))


def clean_stale_tmp(run_dir: Path, folders: tuple[str, ...]) -> int:
    """Delete temporary files (`.<name>.<host>.<pid>.tmp`) whose writer is gone; returns how many.

    A file of a live process on this machine is left alone, so runs (and threads) sharing a
    folder never delete each other's work in progress; on a shared filesystem another machine's
    file counts as stale once it is `STALE_FOREIGN_S` old."""
    removed = 0
    for folder in folders:
        base = run_dir / folder if folder else run_dir
        if not base.is_dir():
            continue
        for tmp in base.glob(".*.tmp"):
            parts = tmp.name.rsplit(".", 3)
            host, pid = (parts[-3], parts[-2]) if len(parts) == 4 else ("", "")
            if host == HOST and pid.isdigit() and pid_alive(int(pid)):
                continue
            if host != HOST:
                try:
                    if time.time() - tmp.stat().st_mtime < STALE_FOREIGN_S:
                        continue
                except FileNotFoundError:
                    continue
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

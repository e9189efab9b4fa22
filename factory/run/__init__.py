"""Run stage: shards, resume, atomic I/O, and reading a finished run back as Samples."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from factory.models import Sample


def read_samples(
    run_dir: Path | str,
    ids: Iterable[str] | None = None,
    *,
    verify: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[Sample]:
    """Yield the Samples of a finished run folder or URL (see `factory.run.read`)."""
    from factory.run.read import read_samples as _read

    return _read(run_dir, ids, verify=verify, storage_options=storage_options)

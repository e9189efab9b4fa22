"""Run stage: shards, resume, atomic I/O, the run format (`rows`, `records`) and its one reader
(`read`: a finished run, local or at an fsspec URL, back as Samples)."""

from __future__ import annotations

from factory.run.read import read_samples

__all__ = ["read_samples"]

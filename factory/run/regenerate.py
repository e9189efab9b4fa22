"""Regenerate one sample of a finished run alone, from the run's `config.yaml` and the sample's
`run_seed` + `sample_key`: every stage's generator derives from (run seed, sample key, stage), so
the result is the same Sample, byte for byte (with deterministic backends). It is a wave of one
dialogue through the shard engine, in this process."""

from __future__ import annotations

from pathlib import Path

from factory.config import load_config
from factory.engine import build_one
from factory.models import Sample
from factory.run.read import read_sample_metas
from factory.runtime import runtime_for


def regenerate(run_dir: Path, sample_id: str, overrides: list[str] | None = None) -> Sample:
    """`overrides` (`section.field=value`) change settings that do not decide the audio, such as
    `tts.cache_dir`."""
    run_dir = Path(run_dir)
    meta = next((m for m in read_sample_metas(run_dir) if m.id == sample_id), None)
    if meta is None:
        raise KeyError(f"no produced sample {sample_id!r} in {run_dir}")
    cfg = load_config(run_dir / "config.yaml", [*(overrides or []), f"run.seed={meta.run_seed}"])
    return build_one(runtime_for(cfg), meta.id, meta.sample_key)

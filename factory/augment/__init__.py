"""Augmentation stage: transforms of a Sample's clean mix into its augmented audio, each drawn
from the sample's own generator and recorded (`AugmentationRecord`). Takes Samples, so it runs
on a finished run (`factory.run.read_samples`) as well as inside the pipeline."""

from __future__ import annotations

from factory.augment.noise import add_noise
from factory.config import AugmentSection
from factory.models import Sample
from factory.seeding import rng_for


def augment_sample(sample: Sample, cfg: AugmentSection) -> Sample:
    """`sample` with its augmented audio (re)drawn from (run seed, sample key, "augment"): the
    same Sample and config give the same bytes, in the pipeline or on a finished run."""
    rng = rng_for(sample.meta.run_seed, sample.meta.sample_key, "augment")
    drawn = add_noise(sample.stems, sample.sample_rate, cfg, rng, sample.meta.recipe.peak_dbfs)
    meta = sample.meta.model_copy(update={"augmentation": drawn[1] if drawn else None})
    return Sample(meta=meta, stems=sample.stems, augmented=drawn[0] if drawn else None)

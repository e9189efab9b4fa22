"""Augmentation stage: chains of transforms (one per file, one signature: `(audio, sr, rng) ->
(audio, params)`) turn a Sample's clean mix into its augmented audio; every draw comes from the
sample's own generator and every step is recorded (`AugmentationRecord`). Takes Samples, so it
runs on a finished run (`factory.run.read.read_samples`, `factory.augment.rerun`) as well as inside
the pipeline, and never calls a TTS."""

from __future__ import annotations

from factory.augment.base import AugmentContext
from factory.augment.chain import augmenter
from factory.config import AugmentSection
from factory.models import Sample
from factory.seeding import rng_for
from factory.tts_cache import CacheLike


def augment_sample(sample: Sample, cfg: AugmentSection, tts_cache_dir: CacheLike | None = None) -> Sample:
    """`sample` with its augmented audio (re)drawn from (run seed, sample key, "augment"): the
    same Sample and config give the same bytes, in the pipeline or on a finished run. The clean
    stems are left as they are. `tts_cache_dir`: renders for babble."""
    context = AugmentContext(
        sample_rate=sample.sample_rate,
        cache_dir=cfg.cache_dir,
        tts_cache_dir=tts_cache_dir,
        noise_folder=cfg.noise_folder,
        rir_folder=cfg.rir_folder,
    )
    rng = rng_for(sample.meta.run_seed, sample.meta.sample_key, "augment")
    drawn = augmenter(cfg, context)(sample.stems, sample.sample_rate, rng, sample.meta.recipe.peak_dbfs)
    meta = sample.meta.model_copy(update={"augmentation": drawn[1] if drawn else None})
    return sample.model_copy(update={"meta": meta, "augmented": drawn[0] if drawn else None})

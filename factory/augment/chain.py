"""Chains of transforms, as the config names them: each sample draws one chain (or none) by the
chains' probabilities, then runs its steps in order, each on every channel, one channel, or the
mix, each with its own probability. Every draw comes from the sample's generator and every step
is recorded; a clipping guard keeps the result under the peak ceiling."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from factory.augment.babble import Babble
from factory.augment.base import AugmentContext, Transform
from factory.augment.codec import Codec
from factory.augment.echo import Echo
from factory.augment.gain import Gain, clipping_guard
from factory.augment.hum import Hum
from factory.augment.noise import ColoredNoise
from factory.augment.recorded_noise import RecordedNoise
from factory.augment.room import Room
from factory.augment.telephone import Telephone
from factory.config import AugmentChain, AugmentSection, AugmentStep
from factory.models import AugmentationRecord, Channel

TRANSFORMS: dict[str, type] = {
    t.name: t for t in (ColoredNoise, Hum, Babble, RecordedNoise, Room, Telephone, Codec, Gain, Echo)
}
CHANNELS = {"user": [Channel.user], "agent": [Channel.agent], "each": [Channel.user, Channel.agent]}


def configured_chains(cfg: AugmentSection) -> list[AugmentChain]:
    if cfg.chains:
        return list(cfg.chains)
    step = AugmentStep(
        transform="colored_noise",
        apply_to="mix",
        options={"snr_db": (cfg.snr_db.low, cfg.snr_db.high), "colors": cfg.colors},
    )
    return [AugmentChain(name="colored_noise", probability=cfg.noise_probability, steps=[step])]


class Augmenter:
    """The configured chains with their transforms built (banks simulated, pools read) once."""

    def __init__(self, cfg: AugmentSection, context: AugmentContext):
        self.chains = [
            (chain, [(step, TRANSFORMS[step.transform](step.options, context)) for step in chain.steps])
            for chain in configured_chains(cfg)
        ]

    def __call__(
        self, stereo: np.ndarray, sr: int, rng: np.random.Generator, peak_dbfs: float
    ) -> tuple[np.ndarray, list[AugmentationRecord]] | None:
        u, acc, picked = rng.random(), 0.0, None
        for chain, steps in self.chains:
            acc += chain.probability
            if u < acc:
                picked = (chain, steps)
                break
        if picked is None:
            return None
        chain, steps = picked
        out = np.ascontiguousarray(stereo, np.float32).copy()
        records: list[AugmentationRecord] = []
        for step, transform in steps:
            if step.probability < 1 and rng.random() >= step.probability:
                continue
            records += _apply(step, transform, out, sr, rng, chain.name)
        out, scale = clipping_guard(out, peak_dbfs)
        if scale < 1:
            records.append(AugmentationRecord(transform="clipping_guard", chain=chain.name, params={"scale": scale}))
        return out, records


def _apply(
    step: AugmentStep, transform: Transform, out: np.ndarray, sr: int, rng: np.random.Generator, chain: str
) -> list[AugmentationRecord]:
    """Run one step in place on `out`."""
    if step.apply_to == "mix":
        out[:], params = transform(out, sr, rng)
        return [AugmentationRecord(transform=transform.name, chain=chain, params=params)]
    records = []
    for ch in CHANNELS[step.apply_to]:
        i = ch.index
        y, params = transform(out[:, i : i + 1].copy(), sr, rng)
        out[:, i] = y[:, 0]
        records.append(AugmentationRecord(transform=transform.name, chain=chain, channels=[ch], params=params))
    return records


@lru_cache(maxsize=8)
def _augmenter(cfg_json: str, context: AugmentContext) -> Augmenter:
    return Augmenter(AugmentSection.model_validate_json(cfg_json), context)


def augmenter(cfg: AugmentSection, context: AugmentContext) -> Augmenter:
    """One built `Augmenter` per (config, context) per process."""
    return _augmenter(json.dumps(cfg.model_dump(mode="json"), sort_keys=True), context)

"""Echo: the agent's output leaking into the user channel, delayed and attenuated, as a
full-duplex front end without perfect echo cancellation hears it (Moshi trains with a scale of
0-0.2 and a delay of 100-500 ms). Needs both channels: applies to the mix only."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from factory.augment.base import AugmentContext, Options, Params, options_of, uniform


class Echo:
    name: ClassVar[str] = "echo"
    stereo_only: ClassVar[bool] = True

    class Options(Options):
        delay_ms: tuple[float, float] = (100.0, 500.0)
        scale: tuple[float, float] = (0.02, 0.2)

    def __init__(self, options: dict, context: AugmentContext):
        self.o = options_of(type(self), options)

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        delay = int(round(uniform(rng, self.o.delay_ms) / 1000 * sr))
        scale = uniform(rng, self.o.scale)
        out = audio.astype(np.float32).copy()
        if delay < len(out):
            out[delay:, 0] += scale * audio[: len(audio) - delay, 1]  # user channel hears the agent
        return out, {"delay_samples": delay, "delay_ms": round(delay / sr * 1000, 3), "scale": round(scale, 4)}

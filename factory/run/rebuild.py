"""Rebuild a sample's clean audio (and its voice prompt) from its mix recipe and the TTS cache,
without any TTS call.

Each recipe piece names its render's cache key and the sha256 of that render at the run's rate;
the rebuild reads the render from the cache, resamples it as the pipeline did (`resample_render`), proves the hash,
and mixes through the same `factory.audio.mix.mix` the pipeline used. So augmentation and
exports can be redone on an existing run, and a recipe can be checked against its audio.
"""

from __future__ import annotations

import numpy as np

from factory.audio.edit import resample_render
from factory.audio.mix import apply_gain, audio_sha256, mix
from factory.audio.sounds import SOUND_BACKEND, rebuild_sound
from factory.models import MixRecipe, PieceSource, VoicePrompt
from factory.tts_cache import CacheLike, read_entry


class SourceMissing(LookupError):
    """A piece's render is not in the cache (or differs from what the recipe recorded)."""


def load_source(cache_dir: CacheLike | None, source: PieceSource, sample_rate: int) -> np.ndarray:
    """The render of one piece at `sample_rate`, read from the TTS cache and hash-checked (a run
    whose config has no `tts.cache_dir` has nothing to read it from; a folder, a URL or an open
    `factory.tts_cache.CacheStore`); a synthesised sound is
    made again from its seed."""
    if source.backend == SOUND_BACKEND:
        sound = rebuild_sound(source)
        if audio_sha256(sound) != source.sha256:
            raise SourceMissing(f"{source.text!r} (seed {source.seed}) synthesises other audio than the recipe used")
        return sound
    if source.cache_key is None:
        raise SourceMissing(
            f"{source.text!r} ({source.voice_id}) was rendered with the TTS cache off: "
            "nothing to rebuild it from; re-run with tts.cache_dir set"
        )
    key = source.cache_key
    if cache_dir is None:
        raise SourceMissing(f"{source.text!r} ({source.voice_id}): cache entry {key}, but no tts.cache_dir to read it")
    try:
        stored, stored_rate = read_entry(cache_dir, key)
    except FileNotFoundError:
        raise SourceMissing(f"{source.text!r} ({source.voice_id}): cache entry {key} not in {cache_dir}") from None
    audio = resample_render(stored, stored_rate, sample_rate)
    if audio_sha256(audio) != source.sha256:
        raise SourceMissing(f"{source.text!r} ({source.voice_id}): cache entry {key} is not the audio the recipe used")
    return audio


def rebuild_clean(recipe: MixRecipe, cache_dir: CacheLike) -> np.ndarray:
    """The clean (samples, 2) float32 mix, exactly as the pipeline stored it."""
    sources = [load_source(cache_dir, p.source, recipe.sample_rate) for p in recipe.pieces]
    return mix(recipe, sources)


def rebuild_voice_prompt(prompt: VoicePrompt, sample_rate: int, cache_dir: CacheLike) -> np.ndarray:
    """The agent's voice-prompt clip, mono float32, exactly as the pipeline stored it."""
    return apply_gain(load_source(cache_dir, prompt.source, sample_rate), prompt.gain)

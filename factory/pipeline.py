"""One dialogue end to end, as a composition of the stages: scenario -> script -> renders ->
timeline -> mix recipe -> clean and augmented audio -> `Sample`.

No orchestration (that is `flows/`) and no file I/O (that is `factory.run`): these functions
are what a shard, a benchmark or a notebook calls. A sample either comes out whole or is
rejected with a reason for the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from factory.audio.edit import resample_utterance
from factory.audio.mix import MixError, apply_gains, audio_sha256, flac_bytes, loudness_gains, place
from factory.augment import augment_sample
from factory.config import RunConfig
from factory.llm import get_llm
from factory.llm.base import LLMBackend, LLMError
from factory.models import (
    Channel,
    InsertedSilence,
    ListenerMark,
    ManifestRow,
    MixPiece,
    MixRecipe,
    PieceSource,
    Sample,
    SampleMeta,
    SampleStatus,
    TurnKind,
    Utterance,
    Voice,
)
from factory.render.base import TTSBackend, TTSError
from factory.render.cache import CachedBackend
from factory.render.qa import render_checked
from factory.render.registry import get_backend
from factory.render.voices import VoiceBank
from factory.script.compose import write_script, write_script_structured
from factory.script.scenario import draw_scenario, load_bank
from factory.script.writer import TurnRejected
from factory.seeding import rng_for
from factory.timeline.measures import behaviour_counts, overlap_share, unmet_minimums
from factory.timeline.place import Placement, build_timeline

log = logging.getLogger("duplex_factory")


class SampleRejected(Exception):
    """A sample that cannot be produced; `reason` goes to the manifest."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StageTimes:
    """Wall time per stage, summed over samples (for benchmarks and progress reports)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class SampleResult:
    manifest: ManifestRow
    sample: Sample | None  # None when rejected


def sample_id(cfg: RunConfig, index: int) -> str:
    return f"{cfg.run.split}-{index:07d}"


# --------------------------------------------------------------------------- backends
@lru_cache(maxsize=4)
def _llm(backend: str, options: tuple[tuple[str, Any], ...]) -> LLMBackend:
    return get_llm(backend, **dict(options))


def llm_for(cfg: RunConfig) -> LLMBackend:
    if cfg.llm.backend == "embedded":
        options = {"model_path": cfg.llm.model_path, "n_threads": cfg.llm.n_threads}
    else:
        options = {
            "base_url": cfg.llm.base_url,
            "model": cfg.llm.model,
            "concurrency": cfg.llm.concurrency,
            "timeout_s": cfg.llm.timeout_s,
            "max_retries": cfg.llm.max_retries,
            "api_key_env": cfg.llm.api_key_env,
        }
    return _llm(cfg.llm.backend, tuple(sorted(options.items())))


@lru_cache(maxsize=4)
def voice_bank(path: Path) -> VoiceBank:
    return VoiceBank.load(path)


def pick_voices(cfg: RunConfig, key: str) -> dict[Channel, Voice]:
    bank = voice_bank(cfg.tts.voice_bank)
    if cfg.tts.user_voice or cfg.tts.agent_voice:
        if not (cfg.tts.user_voice and cfg.tts.agent_voice):
            raise ValueError("set both tts.user_voice and tts.agent_voice, or neither")
        return {Channel.user: bank.get(cfg.tts.user_voice), Channel.agent: bank.get(cfg.tts.agent_voice)}
    user, agent = bank.pick_pair(cfg.run.split, rng_for(cfg.run.seed, key, "voices"))
    return {Channel.user: user, Channel.agent: agent}


def preflight(cfg: RunConfig) -> None:
    """Fail fast, before any shard starts, on what would fail every sample: the voice bank, fixed
    voice ids, the scenario bank, the LLM (weights or server) and the TTS backends of the split's voices."""
    bank = voice_bank(cfg.tts.voice_bank)
    if cfg.tts.user_voice or cfg.tts.agent_voice:
        voices = list(pick_voices(cfg, "preflight").values())
    else:
        voices = bank.by_split(cfg.run.split)
        if len({v.group or v.id for v in voices}) < 2:
            raise ValueError(f"voice bank {cfg.tts.voice_bank} has fewer than two speakers in split {cfg.run.split!r}")
    for backend in sorted({v.backend for v in voices}):
        get_backend(backend, cfg.tts.backend_options.get(backend))
    load_bank(cfg.dialogue.scenario_bank)
    llm_for(cfg)


_BACKEND_LOCK = threading.Lock()


def tts_backend(name: str, cfg: RunConfig) -> TTSBackend:
    # One (cached) backend per process even when shard threads ask at once: lru_cache alone may
    # build two, which splits the cache statistics and loads a model twice.
    with _BACKEND_LOCK:
        return _tts_backend(name, cfg.tts.cache_dir, json.dumps(cfg.tts.backend_options.get(name, {}), sort_keys=True))


@lru_cache(maxsize=16)
def _tts_backend(name: str, cache_dir: Path | None, options_json: str) -> TTSBackend:
    backend = get_backend(name, json.loads(options_json))
    return CachedBackend(backend, cache_dir) if cache_dir is not None else backend


# --------------------------------------------------------------------------- render
@dataclass
class Rendered:
    """A render at the run's rate plus where it came from (a recipe piece's source)."""

    utt: Utterance
    source: PieceSource


def render(text: str, voice: Voice, rate: float, cfg: RunConfig) -> Rendered:
    """Render (through the cache), check intelligibility by ASR round trip when configured
    (re-rendering slower once before rejecting), and resample to the run's rate."""
    backend = tts_backend(voice.backend, cfg)
    used: list[float] = []

    def synthesize(r: float) -> Utterance:
        used.append(r)
        return backend.synthesize(text, voice, rate=r)

    if cfg.tts.qa_wer_threshold is None:
        utt = synthesize(rate)
    else:
        rates = (rate, rate * cfg.tts.qa_retry_rate)
        utt, qa = render_checked(synthesize, text, cfg.tts.qa_wer_threshold, rates)
        if not math.isnan(qa.wer):
            utt = utt.model_copy(update={"qa_wer": round(qa.wer, 4)})
    resampled = resample_utterance(utt, cfg.audio.sample_rate)
    key = backend.key(text, voice, used[-1]) if isinstance(backend, CachedBackend) else None
    source = PieceSource(
        cache_key=key,
        backend=voice.backend,
        voice_id=voice.id,
        text=text,
        rate=used[-1],
        sample_rate=utt.sample_rate,
        n_samples=len(resampled.audio),
        sha256=audio_sha256(resampled.audio),
    )
    return Rendered(resampled, source)


def recipe_pieces(placements: list[Placement], sources: dict[tuple[str, int], Rendered]) -> list[MixPiece]:
    return [
        MixPiece(
            channel=p.channel,
            source=sources[p.key].source,
            silences=[InsertedSilence(at=a, length=n) for a, n in p.silences],
            length=len(p.audio),
            cut=p.cut,
            fade=p.fade,
            offset=p.start,
        )
        for p in placements
    ]


# --------------------------------------------------------------------------- one sample
def build_sample(cfg: RunConfig, sid: str, key: str, times: StageTimes | None = None) -> Sample:
    """Everything for one dialogue; raises SampleRejected (or a backend error) on failure."""
    seed, sr = cfg.run.seed, cfg.audio.sample_rate
    times = times or StageTimes()
    scenario = draw_scenario(
        sid,
        rng_for(seed, key, "scenario"),
        cfg.dialogue.mode_weights,
        cfg.dialogue.n_turns,
        load_bank(cfg.dialogue.scenario_bank),
    )
    voices = pick_voices(cfg, key)
    with times("script"):
        try:
            writer = write_script_structured if cfg.llm.script_mode == "structured" else write_script
            script = writer(llm_for(cfg), scenario, cfg, key)
        except TurnRejected as exc:
            raise SampleRejected(f"script: {exc}") from exc

    with times("tts"):
        rate_rng = rng_for(seed, key, "speaking-rate")
        rates = {ch: float(rate_rng.uniform(*voices[ch].rate_range)) for ch in Channel}
        sources: dict[tuple[str, int], Rendered] = {
            ("turn", i): render(t.text, voices[t.speaker], rates[t.speaker], cfg) for i, t in enumerate(script.turns)
        }
        for k, m in enumerate(script.marks):
            if isinstance(m, ListenerMark):
                listener = script.turns[m.turn].speaker.other
                sources[("reaction", k)] = render(m.token, voices[listener], rates[listener], cfg)
    with times("timeline"):
        timeline, placements = build_timeline(
            sid,
            script,
            [sources[("turn", i)].utt for i in range(len(script.turns))],
            {k: r.utt for (kind, k), r in sources.items() if kind == "reaction"},
            {ch: v.id for ch, v in voices.items()},
            rng_for(seed, key, "timeline"),
            cfg.timing,
            cfg.audio.fade_ms / 1000,
            scenario.mode,
        )
        b = cfg.behaviour
        unmet = unmet_minimums(
            timeline, {"fillers": b.min_fillers, "backchannels": b.min_backchannels, "barge_ins": b.min_barge_ins}
        )
        if unmet:
            raise SampleRejected(f"behaviour_minimum: {unmet[0]}")

    with times("mix"):
        pieces = recipe_pieces(placements, sources)
        recipe = MixRecipe(
            sample_rate=sr,
            n_samples=int(round(timeline.duration * sr)),
            pieces=pieces,
            gains=(1.0, 1.0),
            target_lufs=cfg.audio.target_lufs,
            peak_dbfs=cfg.audio.peak_dbfs,
        )
        audio = [sources[p.key].utt.audio for p in placements]
        stems = place(recipe, audio)  # placed once: the gains are measured on it, then applied to it
        recipe.gains = loudness_gains(stems, sr, cfg.audio.target_lufs, cfg.audio.peak_dbfs)
        clean = apply_gains(stems, recipe.gains)  # what mix(recipe, audio) gives, as rebuild_clean checks
    meta = SampleMeta(
        id=sid,
        split=cfg.run.split,
        run_seed=seed,
        sample_key=key,
        scenario=scenario,
        script=script,
        timeline=timeline,
        recipe=recipe,
        voices={ch: v.id for ch, v in voices.items()},
        llm=script.llm,
    )
    with times("augment"):
        return augment_sample(Sample(meta=meta, stems=clean), cfg.augment, cfg.tts.cache_dir)


def manifest_row(sample: Sample, shard: str) -> ManifestRow:
    tl, counts = sample.timeline, behaviour_counts(sample.timeline)
    return ManifestRow(
        id=sample.id,
        shard=shard,
        status=SampleStatus.ok,
        split=sample.meta.split,
        mode=sample.meta.scenario.mode,
        duration=tl.duration,
        n_turns=sum(t.kind is TurnKind.turn for t in tl.turns),
        n_words=sum(w.spoken for w in tl.words),
        n_barge_ins=counts["barge_ins"],
        n_backchannels=counts["backchannels"],
        n_fillers=counts["fillers"],
        n_laughs=counts["laughs"],
        n_failed_interruptions=counts["failed_interruptions"],
        overlap_share=round(overlap_share(tl), 4),
        wer_max=max((t.qa_wer for t in tl.turns if t.qa_wer is not None), default=None),
        user_voice=sample.meta.voices[Channel.user],
        agent_voice=sample.meta.voices[Channel.agent],
        llm=sample.meta.llm,
        audio_sha256=hashlib.sha256(flac_bytes(sample.stems, sample.sample_rate)).hexdigest(),
    )


def generate_sample(cfg: RunConfig, index: int, shard: str, times: StageTimes | None = None) -> SampleResult:
    """Never raises for a bad sample: known failures become a rejected manifest row after
    `max_sample_attempts` re-draws; unexpected ones too, with the traceback logged."""
    sid = sample_id(cfg, index)
    reason = ""
    for attempt in range(cfg.run.max_sample_attempts):
        key = sid if attempt == 0 else f"{sid}#retry{attempt}"
        try:
            sample = build_sample(cfg, sid, key, times)
        except SampleRejected as exc:
            reason = exc.reason
        except (TTSError, LLMError, MixError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - one broken sample must not cost the shard
            log.error("sample %s failed unexpectedly:\n%s", sid, traceback.format_exc())
            reason = f"internal_error: {type(exc).__name__}: {exc}"
        else:
            return SampleResult(manifest=manifest_row(sample, shard), sample=sample)
        log.warning("sample %s attempt %d rejected: %s", sid, attempt + 1, reason)
    return SampleResult(
        manifest=ManifestRow(id=sid, shard=shard, status=SampleStatus.rejected, reason=reason, split=cfg.run.split),
        sample=None,
    )

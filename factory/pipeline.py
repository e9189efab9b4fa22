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
from factory.audit.run import gate_row
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
    Scenario,
    Script,
    TurnKind,
    Utterance,
    Voice,
)
from factory.render.base import BatchStats, SynthesisRequest, TTSBackend, TTSError, synthesize_many
from factory.render.cache import CachedBackend
from factory.render.qa import QAResult, check_intelligibility, check_together
from factory.render.registry import backend_for, get_backend
from factory.render.voices import VoiceBank
from factory.run.rows import encode_audio
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
    encoded: dict[str, bytes | None] | None = None  # the sample's FLAC columns (factory.run.rows.encode_audio)
    gate: dict | None = None  # its generation-time audit row (factory.audit.run.gate_row), made with it


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
        tts_backend(backend, cfg)  # builds it (or reaches the TTS service) once, as the shards will
    load_bank(cfg.dialogue.scenario_bank)
    llm_for(cfg)


_BACKEND_LOCK = threading.Lock()


def tts_backend(name: str, cfg: RunConfig) -> TTSBackend:
    # One (cached) backend per process even when shard threads ask at once: lru_cache alone may
    # build two, which splits the cache statistics and loads a model twice.
    with _BACKEND_LOCK:
        return _tts_backend(
            name,
            cfg.tts.cache_dir,
            json.dumps(cfg.tts.backend_options.get(name, {}), sort_keys=True),
            cfg.tts.processes if cfg.tts.processes is not None else cfg.run.worker_processes,
            cfg.tts.service_url,
        )


def batch_stats(backend: TTSBackend) -> BatchStats | None:
    """The batch fill a backend records (`BatchStats`), looking through the cache wrapper."""
    inner = backend.backend if isinstance(backend, CachedBackend) else backend
    stats = getattr(inner, "batch_stats", None)
    return stats if isinstance(stats, BatchStats) else None


@lru_cache(maxsize=16)
def _tts_backend(
    name: str, cache_dir: Path | None, options_json: str, processes: int, service_url: str | None
) -> TTSBackend:
    options = json.loads(options_json)
    if service_url or processes > 1:  # the TTS service's client, or a process pool of a CPU backend
        backend = backend_for(name, options, processes=processes, service_url=service_url)
    else:
        backend = get_backend(name, options)
    return CachedBackend(backend, cache_dir) if cache_dir is not None else backend


# --------------------------------------------------------------------------- stages of one dialogue
# A dialogue goes through these stages in order; `build_sample` runs them for one dialogue, and
# `factory.batch` runs each stage for a whole shard at once (one LLM wave per turn, one TTS batch,
# one Whisper pass per channel, mix and encode in a process pool). Both call the same functions
# with the same inputs, so they give the same bytes.
@dataclass
class Plan:
    """A dialogue before any model runs: what the seed decides up front."""

    sid: str
    key: str
    scenario: Scenario
    voices: dict[Channel, Voice]
    rates: dict[Channel, float]


@dataclass
class Rendered:
    """A render at the run's rate plus where it came from (a recipe piece's source)."""

    utt: Utterance
    source: PieceSource


PieceKey = tuple[str, int]  # ("turn", turn index) or ("reaction", mark index)


def plan_sample(cfg: RunConfig, sid: str, key: str) -> Plan:
    seed = cfg.run.seed
    scenario = draw_scenario(
        sid,
        rng_for(seed, key, "scenario"),
        cfg.dialogue.mode_weights,
        cfg.dialogue.n_turns,
        load_bank(cfg.dialogue.scenario_bank),
    )
    voices = pick_voices(cfg, key)
    rate_rng = rng_for(seed, key, "speaking-rate")
    rates = {ch: float(rate_rng.uniform(*voices[ch].rate_range)) for ch in Channel}
    return Plan(sid, key, scenario, voices, rates)


def script_for(cfg: RunConfig, plan: Plan) -> Script:
    """The LLM's script with the planner's marks; raises SampleRejected."""
    try:
        writer = write_script_structured if cfg.llm.script_mode == "structured" else write_script
        return writer(llm_for(cfg), plan.scenario, cfg, plan.key)
    except TurnRejected as exc:
        raise SampleRejected(f"script: {exc}") from exc


def render_requests(plan: Plan, script: Script) -> dict[PieceKey, SynthesisRequest]:
    """Every render a script needs: its turns, then its listener reactions (in the listener's voice)."""
    requests = {
        ("turn", i): SynthesisRequest(t.text, plan.voices[t.speaker], plan.rates[t.speaker])
        for i, t in enumerate(script.turns)
    }
    for k, m in enumerate(script.marks):
        if isinstance(m, ListenerMark):
            listener = script.turns[m.turn].speaker.other
            requests[("reaction", k)] = SynthesisRequest(m.token, plan.voices[listener], plan.rates[listener])
    return requests


def render_batch(cfg: RunConfig, requests: list[SynthesisRequest]) -> list[Utterance | Exception]:
    """All renders of a batch, in order, one `synthesize_many` call per TTS backend (through the
    cache); a failed render's slot holds its exception (TTSError, or a bug's: a backend whose
    whole batch call raises fails every render it was given)."""
    out: list[Utterance | Exception] = [TTSError("not rendered")] * len(requests)
    by_backend: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_backend.setdefault(r.voice.backend, []).append(i)
    for name, indices in sorted(by_backend.items()):
        try:
            backend = tts_backend(name, cfg)
        except TTSError as exc:
            for i in indices:
                out[i] = exc
            continue
        try:
            rendered = synthesize_many(backend, [requests[i] for i in indices])
        except Exception as exc:  # noqa: BLE001 - the batch's dialogues are rejected, not the shard
            rendered = [exc] * len(indices)
        for i, utt in zip(indices, rendered, strict=True):
            out[i] = utt
    return out


def qa_renders(cfg: RunConfig, utts: list[Utterance], channels: list[Channel]) -> list[QAResult]:
    """Intelligibility of one dialogue's renders: one Whisper pass per channel (`check_together`)."""
    assert cfg.tts.qa_wer_threshold is not None
    results: list[QAResult | None] = [None] * len(utts)
    for ch in Channel:
        idx = [i for i, c in enumerate(channels) if c is ch]
        for i, r in zip(idx, check_together([utts[i] for i in idx], cfg.tts.qa_wer_threshold), strict=True):
            results[i] = r
    return [r for r in results if r is not None]


def qa_retry(cfg: RunConfig, first: QAResult, retried: Utterance) -> tuple[Utterance, QAResult]:
    """QA of a piece re-rendered slower after failing its channel pass; raises TTSError naming
    both attempts when it fails again."""
    assert cfg.tts.qa_wer_threshold is not None
    second = check_intelligibility(retried, cfg.tts.qa_wer_threshold)
    if not second.ok:
        raise TTSError(
            f"intelligibility: WER {min(first.wer, second.wer):.2f} > threshold {cfg.tts.qa_wer_threshold:.2f} "
            f"at every rate for {retried.text!r} (heard {first.transcript!r}, then {second.transcript!r} slower)"
        )
    return retried, second


def cache_key(cfg: RunConfig, request: SynthesisRequest) -> str | None:
    """The TTS cache key of a render (None without a cache): its recipe piece names it."""
    backend = tts_backend(request.voice.backend, cfg)
    return backend.key(request.text, request.voice, request.rate) if isinstance(backend, CachedBackend) else None


def finish_render(
    cfg: RunConfig, request: SynthesisRequest, utt: Utterance, qa: QAResult | None, key: str | None
) -> Rendered:
    """A render (the one that passed QA, at `request.rate`) resampled to the run's rate, with its
    source (`key`: its TTS cache key). Needs no backend, so it runs in any process."""
    if qa is not None and not math.isnan(qa.wer):
        utt = utt.model_copy(update={"qa_wer": round(qa.wer, 4)})
    resampled = resample_utterance(utt, cfg.audio.sample_rate)
    source = PieceSource(
        cache_key=key,
        backend=request.voice.backend,
        voice_id=request.voice.id,
        text=request.text,
        rate=request.rate,
        sample_rate=utt.sample_rate,
        n_samples=len(resampled.audio),
        sha256=audio_sha256(resampled.audio),
    )
    return Rendered(resampled, source)


def render_dialogue(cfg: RunConfig, plan: Plan, script: Script) -> dict[PieceKey, Rendered]:
    """The renders of one dialogue, QA'd and resampled (the one-at-a-time path; `factory.batch`
    does the same for a whole shard). Raises TTSError."""
    requests = render_requests(plan, script)
    keys = list(requests)
    utts = _raise_first(render_batch(cfg, [requests[k] for k in keys]))
    if cfg.tts.qa_wer_threshold is None:
        return {k: finish_render(cfg, requests[k], u, None, cache_key(cfg, requests[k])) for k, u in zip(keys, utts)}
    channels = [piece_channel(script, k) for k in keys]
    results = qa_renders(cfg, utts, channels)
    failed = [i for i, r in enumerate(results) if not r.ok]
    slower = {i: retry_request(cfg, requests[keys[i]]) for i in failed}
    for i, utt in zip(failed, _raise_first(render_batch(cfg, [slower[i] for i in failed])), strict=True):
        utts[i], results[i] = qa_retry(cfg, results[i], utt)
        requests[keys[i]] = slower[i]
    return {
        k: finish_render(cfg, requests[k], u, r, cache_key(cfg, requests[k]))
        for k, u, r in zip(keys, utts, results, strict=True)
    }


def retry_request(cfg: RunConfig, request: SynthesisRequest) -> SynthesisRequest:
    return SynthesisRequest(request.text, request.voice, request.rate * cfg.tts.qa_retry_rate)


def piece_channel(script: Script, key: PieceKey) -> Channel:
    """Whose channel a piece is on: a turn's speaker's, a reaction's listener's."""
    kind, k = key
    return script.turns[k].speaker if kind == "turn" else script.turns[script.marks[k].turn].speaker.other


def _raise_first(results: list[Utterance | Exception]) -> list[Utterance]:
    for r in results:
        if isinstance(r, Exception):
            raise r
    return list(results)  # type: ignore[arg-type]


def recipe_pieces(placements: list[Placement], sources: dict[PieceKey, Rendered]) -> list[MixPiece]:
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


def assemble(cfg: RunConfig, plan: Plan, script: Script, sources: dict[PieceKey, Rendered]) -> Sample:
    """Timeline, behaviour minimums, mix recipe, clean stems and augmentation; raises SampleRejected."""
    sr = cfg.audio.sample_rate
    timeline, placements = build_timeline(
        plan.sid,
        script,
        [sources[("turn", i)].utt for i in range(len(script.turns))],
        {k: r.utt for (kind, k), r in sources.items() if kind == "reaction"},
        {ch: v.id for ch, v in plan.voices.items()},
        rng_for(cfg.run.seed, plan.key, "timeline"),
        cfg.timing,
        cfg.audio.fade_ms / 1000,
        plan.scenario.mode,
    )
    b = cfg.behaviour
    unmet = unmet_minimums(
        timeline, {"fillers": b.min_fillers, "backchannels": b.min_backchannels, "barge_ins": b.min_barge_ins}
    )
    if unmet:
        raise SampleRejected(f"behaviour_minimum: {unmet[0]}")
    recipe = MixRecipe(
        sample_rate=sr,
        n_samples=int(round(timeline.duration * sr)),
        pieces=recipe_pieces(placements, sources),
        gains=(1.0, 1.0),
        target_lufs=cfg.audio.target_lufs,
        peak_dbfs=cfg.audio.peak_dbfs,
    )
    stems = place(recipe, [sources[p.key].utt.audio for p in placements])  # gains are measured on it, then applied
    recipe.gains = loudness_gains(stems, sr, cfg.audio.target_lufs, cfg.audio.peak_dbfs)
    clean = apply_gains(stems, recipe.gains)  # what mix(recipe, audio) gives, as rebuild_clean checks
    meta = SampleMeta(
        id=plan.sid,
        split=cfg.run.split,
        run_seed=cfg.run.seed,
        sample_key=plan.key,
        scenario=plan.scenario,
        script=script,
        timeline=timeline,
        recipe=recipe,
        voices={ch: v.id for ch, v in plan.voices.items()},
        llm=script.llm,
    )
    return augment_sample(Sample(meta=meta, stems=clean), cfg.augment, cfg.tts.cache_dir)


def build_sample(cfg: RunConfig, sid: str, key: str, times: StageTimes | None = None) -> Sample:
    """Everything for one dialogue; raises SampleRejected (or a backend error) on failure."""
    times = times or StageTimes()
    plan = plan_sample(cfg, sid, key)
    with times("script"):
        script = script_for(cfg, plan)
    with times("tts"):
        sources = render_dialogue(cfg, plan, script)
    with times("mix"):
        return assemble(cfg, plan, script, sources)


def rejection_reason(exc: BaseException, sid: str) -> str:
    """The manifest's reason for a failed attempt (unexpected errors are logged with their traceback)."""
    if isinstance(exc, SampleRejected):
        return exc.reason
    if isinstance(exc, (TTSError, LLMError, MixError)):
        return f"{type(exc).__name__}: {exc}"
    log.error("sample %s failed unexpectedly:\n%s", sid, "".join(traceback.format_exception(exc)))
    return f"internal_error: {type(exc).__name__}: {exc}"


def attempt_key(sid: str, attempt: int) -> str:
    return sid if attempt == 0 else f"{sid}#retry{attempt}"


def manifest_row(sample: Sample, shard: str, clean_flac: bytes | None = None) -> ManifestRow:
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
        audio_sha256=hashlib.sha256(
            clean_flac if clean_flac is not None else flac_bytes(sample.stems, sample.sample_rate)
        ).hexdigest(),
    )


def generate_sample(cfg: RunConfig, index: int, shard: str, times: StageTimes | None = None) -> SampleResult:
    """Never raises for a bad sample: known failures become a rejected manifest row after
    `max_sample_attempts` re-draws; unexpected ones too, with the traceback logged."""
    sid = sample_id(cfg, index)
    reason = ""
    for attempt in range(cfg.run.max_sample_attempts):
        try:
            sample = build_sample(cfg, sid, attempt_key(sid, attempt), times)
        except Exception as exc:  # noqa: BLE001 - one broken sample must not cost the shard
            reason = rejection_reason(exc, sid)
        else:
            return finished(sample, shard, cfg)
        log.warning("sample %s attempt %d rejected: %s", sid, attempt + 1, reason)
    return rejected_result(cfg, sid, shard, reason)


def finished(sample: Sample, shard: str, cfg: RunConfig | None = None) -> SampleResult:
    """A made sample with its audio encoded once (for the shard's rows and the manifest's
    checksum) and, given the config, its audit gate row: the per-sample work of writing a shard,
    done where the sample was made."""
    encoded = encode_audio(sample)
    return SampleResult(
        manifest=manifest_row(sample, shard, encoded["audio"]),
        sample=sample,
        encoded=encoded,
        gate=gate_row(sample, cfg, shard) if cfg is not None else None,
    )


def rejected_result(cfg: RunConfig, sid: str, shard: str, reason: str) -> SampleResult:
    return SampleResult(
        manifest=ManifestRow(id=sid, shard=shard, status=SampleStatus.rejected, reason=reason, split=cfg.run.split),
        sample=None,
    )

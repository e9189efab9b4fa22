"""The stages of one dialogue: scenario -> script -> renders -> QA -> timeline -> mix recipe ->
clean and augmented audio -> `Sample` (+ its encoded audio, manifest row and audit gate row).

Pure compositions of the stage packages, each taking the run's `Runtime`; the shard engine
(`factory.engine`) runs each of them for a whole wave of dialogues. No orchestration (that is
`flows/`) and no file I/O (that is `factory.run`). A dialogue either comes out whole or is
rejected with a reason for the manifest.
"""

from __future__ import annotations

import hashlib
import logging
import math
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from factory.audio.edit import resample_utterance
from factory.audio.mix import MixError, apply_gain, apply_gains, audio_sha256, flac_bytes, loudness_gains, place
from factory.audio.sounds import sound_source
from factory.audit.run import gate_row
from factory.augment import augment_sample
from factory.config import DatasetSource, RunConfig
from factory.languages import spaced
from factory.llm.base import LLMError
from factory.models import (
    BackendName,
    BackgroundSpeech,
    Channel,
    InsertedSilence,
    ListenerMark,
    ManifestRow,
    MixPiece,
    MixRecipe,
    NonSpeech,
    PieceSource,
    Sample,
    SampleMeta,
    SampleStatus,
    Scenario,
    Script,
    SideTalk,
    TurnKind,
    Utterance,
    Voice,
    VoicePrompt,
)
from factory.render.base import SynthesisRequest, TTSError, synthesize_many
from factory.render.cache import CachedBackend
from factory.render.qa import QAResult, check_intelligibility, check_together
from factory.render.text import as_written, continuation_text
from factory.run.records import drops_column
from factory.run.rows import EncodedAudio, encode_audio
from factory.runtime import Runtime
from factory.script.compose import write_script, write_script_structured
from factory.script.prompts import role_prompt, voice_prompt_text
from factory.script.scenario import draw_language, draw_scenario
from factory.script.source import SourceDialogue, prepare_turns, provenance, scenario_for, write_from_source
from factory.script.writer import TurnRejected
from factory.seeding import derive_seed, rng_for
from factory.timeline.measures import behaviour_counts, event_outcomes, overlap_share, unmet_minimums
from factory.timeline.place import Placement, build_timeline
from factory.tts_cache import open_cache

log = logging.getLogger("duplex_factory")


class SampleRejected(Exception):
    """A sample that cannot be produced; `reason` goes to the manifest."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class SampleResult:
    manifest: ManifestRow
    sample: Sample | None  # None when rejected
    encoded: EncodedAudio | None = None  # the sample's FLAC columns (factory.run.rows.encode_audio)
    gate: dict | None = None  # its generation-time audit row (factory.audit.run.gate_row), made with it


def sample_id(cfg: RunConfig, index: int) -> str:
    return f"{cfg.run.split}-{index:07d}"


# --------------------------------------------------------------------------- stages of one dialogue
@dataclass
class Plan:
    """A dialogue before any model runs: what the seed decides up front."""

    sid: str
    key: str
    scenario: Scenario
    voices: dict[Channel, Voice]
    rates: dict[Channel, float]
    source: int = 0  # which of `dialogue.sources` writes it
    dialogue: SourceDialogue | None = None  # a dataset source's dialogue, else None (the LLM writes)
    background: Voice | None = None  # the voice of its background speech (events on), another speaker


@dataclass
class Rendered:
    """A render at the run's rate plus where it came from (a recipe piece's source)."""

    utt: Utterance
    source: PieceSource


PieceKey = tuple[str, int]  # ("turn", turn index), ("reaction" or "event", mark index) or VOICE_PROMPT
# The agent's voice-prompt clip: rendered with the dialogue's pieces (same batch, path and cache),
# never placed in it, and left out of the per-channel QA pass so the dialogue's own QA is unchanged.
VOICE_PROMPT: PieceKey = ("voice_prompt", 0)


def choose_source(cfg: RunConfig, sid: str) -> int:
    """Which of `dialogue.sources` a sample uses, by weight, drawn from (run seed, sample id):
    a re-drawn attempt keeps its source. One source draws nothing."""
    sources = cfg.dialogue.sources
    if len(sources) == 1:
        return 0
    weights = np.array([s.weight for s in sources], dtype=float)
    return int(rng_for(cfg.run.seed, sid, "source").choice(len(sources), p=weights / weights.sum()))


def plan_sample(rt: Runtime, sid: str, key: str) -> Plan:
    cfg, seed = rt.cfg, rt.cfg.run.seed
    source = choose_source(cfg, sid)
    dataset = rt.dialogue_sets[source]
    dialogue = None
    mode_weights, n_turns = cfg.dialogue.mode_weights, cfg.dialogue.n_turns
    if dataset is not None:
        dialogue = dataset.dialogue(int(rng_for(seed, key, "source-dialogue").integers(len(dataset))))
        n = len(prepare_turns(dialogue, cfg))
        mode_weights, n_turns = {dialogue.mode: 1.0}, (n, n)
        language = dialogue.language  # a dataset dialogue is in its own language
    else:
        language = draw_language(rng_for(seed, key, "language"), cfg.dialogue.language_weights)
    scenario = draw_scenario(
        sid, rng_for(seed, key, "scenario"), mode_weights, n_turns, rt.scenarios(language), language
    )
    if dialogue is not None:
        scenario = scenario_for(scenario, dialogue, scenario.n_turns)
    voices = rt.pick_voices(key, language)
    rate_rng = rng_for(seed, key, "speaking-rate")
    rates = {ch: float(rate_rng.uniform(*voices[ch].rate_range)) for ch in Channel}
    background = None
    if cfg.events.background_speech_per_dialogue > 0:  # drawn only then: runs without it keep their draws
        background = rt.pick_background_voice(key, list(voices.values()), language)
    return Plan(sid, key, scenario, voices, rates, source, dialogue, background)


def script_for(rt: Runtime, plan: Plan) -> Script:
    """The script of the plan's source (the LLM's, or a dataset dialogue rewritten into spoken
    style) with the planner's marks; raises SampleRejected."""
    cfg = rt.cfg
    try:
        src = cfg.dialogue.sources[plan.source]
        if isinstance(src, DatasetSource) and plan.dialogue is not None:
            rewrite = cfg.rewrite_of(src) or "rules"
            llm = rt.llm if rewrite == "llm" else None
            ref = provenance(src, plan.dialogue, rewrite)
            return write_from_source(llm, plan.scenario, plan.dialogue, ref, cfg, plan.key)
        writer = write_script_structured if cfg.llm.script_mode == "structured" else write_script
        return writer(rt.llm, plan.scenario, cfg, plan.key)
    except TurnRejected as exc:
        raise SampleRejected(f"script: {exc}") from exc


def render_requests(
    plan: Plan, script: Script, run_seed: int, hold_fall_share: float
) -> dict[PieceKey, SynthesisRequest]:
    """Every render a script needs: its turns (their inner sentence ends read as continuations but
    a share `hold_fall_share`: `continuation_text`, one generator per turn), then its listener
    reactions (in the listener's voice), then the agent's voice prompt (in the agent's voice and
    rate; its sentence from its own generator), then its side talk (the user's voice) and
    background speech (the plan's background voice); non-speech sounds are synthesised at assembly."""
    requests = {
        ("turn", i): SynthesisRequest(
            continuation_text(t.text, rng_for(run_seed, plan.key, f"prosody-{i}"), hold_fall_share),
            plan.voices[t.speaker],
            plan.rates[t.speaker],
        )
        for i, t in enumerate(script.turns)
    }
    for k, m in enumerate(script.marks):
        if isinstance(m, ListenerMark):
            listener = script.turns[m.turn].speaker.other
            requests[("reaction", k)] = SynthesisRequest(m.token, plan.voices[listener], plan.rates[listener])
    sentence = voice_prompt_text(rng_for(run_seed, plan.key, "voice_prompt"), script, plan.scenario.language)
    requests[VOICE_PROMPT] = SynthesisRequest(sentence, plan.voices[Channel.agent], plan.rates[Channel.agent])
    for k, m in enumerate(script.marks):
        if isinstance(m, SideTalk):
            requests[("event", k)] = SynthesisRequest(m.text, plan.voices[Channel.user], plan.rates[Channel.user])
        elif isinstance(m, BackgroundSpeech):
            assert plan.background is not None, "background speech planned without a background voice"
            requests[("event", k)] = SynthesisRequest(m.text, plan.background, 1.0)
    return requests


def render_batch(rt: Runtime, requests: list[SynthesisRequest]) -> list[Utterance | Exception]:
    """All renders of a batch, in order, one `synthesize_many` call per TTS backend (through the
    cache); a failed render's slot holds its exception (TTSError, or a bug's: a backend whose
    whole batch call raises fails every render it was given)."""
    out: list[Utterance | Exception] = [TTSError("not rendered")] * len(requests)
    by_backend: dict[BackendName, list[int]] = {}
    for i, r in enumerate(requests):
        by_backend.setdefault(r.voice.backend, []).append(i)
    for name, indices in sorted(by_backend.items()):
        try:
            backend = rt.tts(name)
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


def qa_renders(cfg: RunConfig, utts: list[Utterance], channels: list[Channel], language: str = "en") -> list[QAResult]:
    """Intelligibility of one dialogue's renders: one Whisper pass per channel (`check_together`),
    transcribed in the dialogue's `language` and scored against its threshold."""
    threshold = cfg.tts.qa_threshold(language)
    assert threshold is not None
    results: list[QAResult | None] = [None] * len(utts)
    for ch in Channel:
        idx = [i for i, c in enumerate(channels) if c is ch]
        for i, r in zip(idx, check_together([utts[i] for i in idx], threshold, language), strict=True):
            results[i] = r
    return [r for r in results if r is not None]


def qa_retry(cfg: RunConfig, first: QAResult, retried: Utterance, language: str = "en") -> tuple[Utterance, QAResult]:
    """QA of a piece re-rendered slower after failing its channel pass; raises TTSError naming
    both attempts when it fails again."""
    threshold = cfg.tts.qa_threshold(language)
    assert threshold is not None
    second = check_intelligibility(retried, threshold, language)
    if not second.ok:
        metric = "WER" if spaced(language) else "CER"
        raise TTSError(
            f"intelligibility: {metric} {min(first.wer, second.wer):.2f} > threshold {threshold:.2f} "
            f"at every rate for {retried.text!r} (heard {first.transcript!r}, then {second.transcript!r} slower)"
        )
    return retried, second


def cache_key(rt: Runtime, request: SynthesisRequest) -> str | None:
    """The TTS cache key of a render (None without a cache): its recipe piece names it."""
    backend = rt.tts(request.voice.backend)
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


def retry_request(cfg: RunConfig, request: SynthesisRequest) -> SynthesisRequest:
    return SynthesisRequest(request.text, request.voice, request.rate * cfg.tts.qa_retry_rate)


def piece_channel(script: Script, key: PieceKey) -> Channel:
    """Whose channel a piece is on: a turn's speaker's, a reaction's listener's, an event's user's."""
    kind, k = key
    if kind == "event":
        return Channel.user
    return script.turns[k].speaker if kind == "turn" else script.turns[script.marks[k].turn].speaker.other


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
            gain_db=p.gain_db,
        )
        for p in placements
    ]


def assemble(cfg: RunConfig, plan: Plan, script: Script, sources: dict[PieceKey, Rendered]) -> Sample:
    """Timeline, behaviour minimums, mix recipe, clean stems and augmentation; raises SampleRejected."""
    sr = cfg.audio.sample_rate
    sources = dict(sources)
    for k, m in enumerate(script.marks):
        if isinstance(m, NonSpeech):
            audio, source = sound_source(m.sound, sr, derive_seed(cfg.run.seed, plan.key, f"sound-{k}"))
            utt = Utterance(text=source.text, voice_id=source.voice_id, sample_rate=sr, audio=audio, words=[])
            sources[("event", k)] = Rendered(utt, source)
    timeline, placements = build_timeline(
        plan.sid,
        script,
        [as_written(sources[("turn", i)].utt, t.text) for i, t in enumerate(script.turns)],
        {k: r.utt for (kind, k), r in sources.items() if kind == "reaction"},
        {ch: v.id for ch, v in plan.voices.items()},
        rng_for(cfg.run.seed, plan.key, "timeline"),
        cfg.timing,
        cfg.audio.fade_ms / 1000,
        plan.scenario.mode,
        plan.scenario.language,
        {k: r.utt for (kind, k), r in sources.items() if kind == "event"},
        cfg.events,
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
    prompt = sources[VOICE_PROMPT]
    agent_gain = recipe.gains[Channel.agent.index]  # at the agent channel's loudness, on the stored 16-bit grid
    prompt_audio = apply_gain(prompt.utt.audio, agent_gain)
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
        role_prompt=role_prompt(plan.scenario),
        voice_prompt=VoicePrompt(source=prompt.source, gain=agent_gain),
    )
    sample = Sample(meta=meta, stems=clean, voice_prompt=prompt_audio)
    return augment_sample(sample, cfg.augment, open_cache(cfg.tts.cache_dir, cfg.tts.cache_storage_options))


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
    planned = sample.meta.script.events_planned
    placed, dropped = event_outcomes(sample.meta.script, tl)
    return ManifestRow(
        id=sample.id,
        shard=shard,
        status=SampleStatus.ok,
        split=sample.meta.split,
        mode=sample.meta.scenario.mode,
        language=sample.meta.scenario.language,
        duration=tl.duration,
        n_turns=sum(t.kind is TurnKind.turn for t in tl.turns),
        n_words=sum(w.spoken for w in tl.words),
        n_barge_ins=counts["barge_ins"],
        n_backchannels=counts["backchannels"],
        n_fillers=counts["fillers"],
        n_laughs=counts["laughs"],
        n_failed_interruptions=counts["failed_interruptions"],
        n_side_talk=placed.get("side_talk"),
        n_background_speech=placed.get("background_speech"),
        n_non_speech=placed.get("non_speech"),
        n_events_planned=sum(planned.values()) if planned is not None else None,
        events_dropped=drops_column(dropped),
        overlap_share=round(overlap_share(tl), 4),
        wer_max=max((t.qa_wer for t in tl.turns if t.qa_wer is not None), default=None),
        user_voice=sample.meta.voices[Channel.user],
        agent_voice=sample.meta.voices[Channel.agent],
        llm=sample.meta.llm,
        **source_columns(sample.meta.script),
        audio_sha256=hashlib.sha256(
            clean_flac if clean_flac is not None else flac_bytes(sample.stems, sample.sample_rate)
        ).hexdigest(),
    )


def source_columns(script: Script) -> dict[str, Any]:
    """The manifest's provenance columns of a script (an LLM script has no dataset, id or license)."""
    src = script.source
    if src is None:
        return {"source_kind": "llm"}
    return {
        "source_kind": src.kind,
        "source_dataset": src.dataset,
        "source_path": src.path,
        "source_id": src.dialogue_id,
        "source_license": src.license,
    }


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

"""One dialogue and one shard, end to end: scenario -> script -> utterances -> timeline -> mix -> rows.

No orchestration here (that is `flows/`): these functions are what a Prefect task, a Dask
worker or a notebook calls. A sample either yields a row or a rejection with a reason; a
shard is written atomically and records itself, so a re-run skips it.
"""

from __future__ import annotations

import hashlib
import math
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from factory.audio import resample_utterance
from factory.augment import add_noise
from factory.config import RunConfig
from factory.dedup import find_duplicates, load_signatures, save_signatures, signature
from factory.export.card import dataset_card
from factory.export.hf import sha256_file, shard_name, write_shard
from factory.llm import get_llm
from factory.llm.base import LLMBackend, LLMError
from factory.mixer import MixError, flac_bytes, normalise, render_stems
from factory.models import (
    BackchannelEvent,
    BargeInEvent,
    Channel,
    HesitationEvent,
    ListenerMark,
    ManifestRow,
    SampleStatus,
    Scenario,
    Timeline,
    TurnKind,
    Utterance,
    Voice,
)
from factory.scenario import draw_scenario
from factory.scripting import write_script, write_script_structured
from factory.seeding import derive_seed, rng_for
from factory.timeline import build_timeline
from factory.qa import render_checked
from factory.tts.base import TTSBackend, TTSError
from factory.tts.cache import CachedBackend
from factory.tts.registry import get_backend
from factory.voices import VoiceBank
from factory.writer import TurnRejected

log = logging.getLogger("duplex_factory")

MANIFEST_SCHEMA = {name: pl.Utf8 for name in ManifestRow.model_fields} | {
    "duration": pl.Float64, "n_turns": pl.Int64, "n_words": pl.Int64, "n_barge_ins": pl.Int64,
    "n_backchannels": pl.Int64, "n_fillers": pl.Int64, "overlap_share": pl.Float64, "wer_max": pl.Float64,
}


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
    row: dict[str, Any] | None  # the parquet row, None when rejected


@dataclass(frozen=True)
class ShardSpec:
    index: int
    name: str
    sample_indices: tuple[int, ...]


@dataclass
class ShardResult:
    name: str
    sha256: str
    n_ok: int
    n_rejected: int
    skipped: bool = False


def sample_id(cfg: RunConfig, index: int) -> str:
    return f"{cfg.run.split}-{index:07d}"


def plan_shards(cfg: RunConfig) -> list[ShardSpec]:
    per, n = cfg.run.samples_per_shard, cfg.run.n_samples
    total = (n + per - 1) // per
    return [
        ShardSpec(i, shard_name(cfg.run.split, i, total), tuple(range(i * per, min(n, (i + 1) * per))))
        for i in range(total)
    ]


@lru_cache(maxsize=4)
def _llm(backend: str, options: tuple[tuple[str, Any], ...]) -> LLMBackend:
    return get_llm(backend, **dict(options))


def llm_for(cfg: RunConfig) -> LLMBackend:
    if cfg.llm.backend == "embedded":
        options = {"model_path": cfg.llm.model_path, "n_threads": cfg.llm.n_threads}
    else:
        options = {"base_url": cfg.llm.base_url, "model": cfg.llm.model, "concurrency": cfg.llm.concurrency,
                   "timeout_s": cfg.llm.timeout_s, "max_retries": cfg.llm.max_retries, "api_key_env": cfg.llm.api_key_env}
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
    voice ids, the LLM (weights or server) and the TTS backends of the split's voices."""
    bank = voice_bank(cfg.tts.voice_bank)
    if cfg.tts.user_voice or cfg.tts.agent_voice:
        voices = list(pick_voices(cfg, "preflight").values())
    else:
        voices = bank.by_split(cfg.run.split)
        if len({v.group or v.id for v in voices}) < 2:
            raise ValueError(f"voice bank {cfg.tts.voice_bank} has fewer than two speakers in split {cfg.run.split!r}")
    for backend in sorted({v.backend for v in voices}):
        get_backend(backend)
    llm_for(cfg)


@lru_cache(maxsize=16)
def tts_backend(name: str, cache_dir: Path | None) -> TTSBackend:
    backend = get_backend(name)
    return CachedBackend(backend, cache_dir) if cache_dir is not None else backend


def _render(text: str, voice: Voice, rate: float, cfg: RunConfig) -> Utterance:
    """Render (through the cache), check intelligibility by ASR round trip when configured
    (re-rendering slower once before rejecting), and resample to the run's rate."""
    backend = tts_backend(voice.backend, cfg.tts.cache_dir)
    if cfg.tts.qa_wer_threshold is None:
        utt = backend.synthesize(text, voice, rate=rate)
    else:
        rates = (rate, rate * cfg.tts.qa_retry_rate)
        utt, qa = render_checked(lambda r: backend.synthesize(text, voice, rate=r), text, cfg.tts.qa_wer_threshold, rates)
        if not math.isnan(qa.wer):
            utt = utt.model_copy(update={"qa_wer": round(qa.wer, 4)})
    return resample_utterance(utt, cfg.audio.sample_rate)


def build_sample(cfg: RunConfig, sid: str, key: str, times: StageTimes | None = None) -> tuple[Scenario, Timeline, dict[str, Any]]:
    """Everything for one dialogue; raises SampleRejected (or a backend error) on failure."""
    seed, sr = cfg.run.seed, cfg.audio.sample_rate
    times = times or StageTimes()
    scenario = draw_scenario(sid, rng_for(seed, key, "scenario"), cfg.dialogue.mode_weights, cfg.dialogue.n_turns)
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
        rendered = [_render(t.text, voices[t.speaker], rates[t.speaker], cfg) for t in script.turns]
        listener = {k: script.turns[m.turn].speaker.other for k, m in enumerate(script.marks)}
        reactions = {
            k: _render(m.token, voices[listener[k]], rates[listener[k]], cfg)
            for k, m in enumerate(script.marks) if isinstance(m, ListenerMark)
        }
    with times("timeline"):
        timeline, placements = build_timeline(
            sid, script, rendered, reactions, {ch: v.id for ch, v in voices.items()},
            rng_for(seed, key, "timeline"), cfg.timing, cfg.audio.fade_ms / 1000,
        )
        check_behaviour_minimums(timeline, cfg)

    with times("mix"):
        clean = normalise(render_stems(placements, timeline.duration, sr), sr, cfg.audio.target_lufs, cfg.audio.peak_dbfs)
        augmented = add_noise(clean, sr, cfg.augment, rng_for(seed, key, "augment"), cfg.audio.peak_dbfs)
    with times("encode"):
        audio = flac_bytes(clean, sr)
        audio_aug = flac_bytes(augmented[0], sr) if augmented else None
    row = {
        "id": sid,
        "audio": {"bytes": audio, "path": f"{sid}.flac"},
        "audio_augmented": {"bytes": audio_aug, "path": f"{sid}.aug.flac"} if augmented else None,
        "augmentation": json.dumps(augmented[1]) if augmented else None,
        "duration": timeline.duration,
        "sample_rate": sr,
        "mode": scenario.mode.value,
        "text": transcript(timeline),
        "user_text": " ".join(t.spoken_text for t in timeline.turns if t.channel is Channel.user),
        "agent_text": " ".join(t.spoken_text for t in timeline.turns if t.channel is Channel.agent),
        "timeline": timeline.model_dump_json(),
        "scenario": scenario.model_dump_json(),
        "user_voice": voices[Channel.user].id,
        "agent_voice": voices[Channel.agent].id,
        "llm": script.llm,
        "seed": derive_seed(seed, key, "sample"),
    }
    return scenario, timeline, row


def transcript(timeline: Timeline) -> str:
    lines = []
    for t in timeline.turns:
        tag = f"{t.channel.value}{' (backchannel)' if t.kind is TurnKind.backchannel else ''}"
        cut = " [interrupted]" if t.end_reason.value == "interrupted" else ""
        lines.append(f"[{t.start:7.2f}-{t.end:7.2f}] {tag}: {t.spoken_text}{cut}")
    return "\n".join(lines)


def check_behaviour_minimums(timeline: Timeline, cfg: RunConfig) -> None:
    counts = behaviour_counts(timeline)
    b = cfg.behaviour
    for name, need in (("fillers", b.min_fillers), ("backchannels", b.min_backchannels), ("barge_ins", b.min_barge_ins)):
        if counts[name] < need:
            raise SampleRejected(f"behaviour_minimum: {counts[name]} {name} spoken, config asks for >= {need}")


def behaviour_counts(timeline: Timeline) -> dict[str, int]:
    return {
        "fillers": sum(isinstance(e, HesitationEvent) and e.kind == "filler" for e in timeline.events),
        "backchannels": sum(isinstance(e, BackchannelEvent) for e in timeline.events),
        "barge_ins": sum(isinstance(e, BargeInEvent) for e in timeline.events),
    }


def overlap_share(timeline: Timeline, frame: float = 0.01) -> float:
    """Frames where both channels hold a turn / frames where anyone does (from the timeline)."""
    n = int(np.ceil(timeline.duration / frame))
    active = np.zeros((2, n), bool)
    for t in timeline.turns:
        active[t.channel.index, int(t.start / frame) : int(np.ceil(t.end / frame))] = True
    anyone = active.any(0).sum()
    return float(active.all(0).sum() / anyone) if anyone else 0.0


def generate_sample(cfg: RunConfig, index: int, shard: str, times: StageTimes | None = None) -> SampleResult:
    """Never raises for a bad sample: known failures become a rejected manifest row after
    `max_sample_attempts` re-draws; unexpected ones too, with the traceback logged."""
    sid = sample_id(cfg, index)
    reason = ""
    for attempt in range(cfg.run.max_sample_attempts):
        key = sid if attempt == 0 else f"{sid}#retry{attempt}"
        try:
            scenario, timeline, row = build_sample(cfg, sid, key, times)
        except SampleRejected as exc:
            reason = exc.reason
        except (TTSError, LLMError, MixError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - one broken sample must not cost the shard
            log.error("sample %s failed unexpectedly:\n%s", sid, traceback.format_exc())
            reason = f"internal_error: {type(exc).__name__}: {exc}"
        else:
            counts = behaviour_counts(timeline)
            return SampleResult(
                manifest=ManifestRow(
                    id=sid, shard=shard, status=SampleStatus.ok, split=cfg.run.split, mode=scenario.mode,
                    duration=timeline.duration, n_turns=sum(t.kind is TurnKind.turn for t in timeline.turns),
                    n_words=sum(w.spoken for w in timeline.words), n_barge_ins=counts["barge_ins"],
                    n_backchannels=counts["backchannels"], n_fillers=counts["fillers"],
                    overlap_share=round(overlap_share(timeline), 4),
                    wer_max=max((t.qa_wer for t in timeline.turns if t.qa_wer is not None), default=None),
                    user_voice=row["user_voice"],
                    agent_voice=row["agent_voice"], llm=row["llm"],
                    audio_sha256=hashlib.sha256(row["audio"]["bytes"]).hexdigest(),
                ),
                row=row,
            )
        log.warning("sample %s attempt %d rejected: %s", sid, attempt + 1, reason)
    return SampleResult(
        manifest=ManifestRow(id=sid, shard=shard, status=SampleStatus.rejected, reason=reason, split=cfg.run.split),
        row=None,
    )


def shard_paths(cfg: RunConfig, name: str) -> tuple[Path, Path, Path]:
    run = cfg.run_dir
    return run / "data" / f"{name}.parquet", run / "manifests" / f"{name}.parquet", run / "shards" / f"{name}.json"


def signature_path(cfg: RunConfig, name: str) -> Path:
    return cfg.run_dir / "signatures" / f"{name}.npz"


def shard_is_complete(cfg: RunConfig, name: str) -> bool:
    data, manifest, record = shard_paths(cfg, name)
    if not (data.exists() and manifest.exists() and record.exists() and signature_path(cfg, name).exists()):
        return False
    try:
        return json.loads(record.read_text())["sha256"] == sha256_file(data)
    except (ValueError, KeyError):
        return False


def generate_shard(cfg: RunConfig, spec: ShardSpec, on_sample: Callable[[SampleResult], None] | None = None) -> ShardResult:
    """Produce one shard, or skip it if a previous run finished it (checksum verified)."""
    data, manifest_path, record = shard_paths(cfg, spec.name)
    if shard_is_complete(cfg, spec.name):
        info = json.loads(record.read_text())
        return ShardResult(spec.name, info["sha256"], info["n_ok"], info["n_rejected"], skipped=True)
    results = []
    for index in spec.sample_indices:
        result = generate_sample(cfg, index, spec.name)
        results.append(result)
        if on_sample:
            on_sample(result)
    rows = [r.row for r in results if r.row is not None]
    digest = write_shard(rows, data, cfg.audio.sample_rate)
    write_manifest([r.manifest for r in results], manifest_path)
    # MinHash signatures of the spoken scripts, merged across shards by finalize_run
    save_signatures(signature_path(cfg, spec.name),
                    {r["id"]: signature(f"{r['user_text']} {r['agent_text']}") for r in rows})
    n_ok = len(rows)
    _atomic_write_text(record, json.dumps(
        {"shard": spec.name, "sha256": digest, "n_ok": n_ok, "n_rejected": len(results) - n_ok}, indent=2))
    return ShardResult(spec.name, digest, n_ok, len(results) - n_ok)


def write_manifest(rows: list[ManifestRow], path: Path) -> None:
    frame = pl.DataFrame([r.model_dump(mode="json") for r in rows], schema=MANIFEST_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)


def finalize_run(cfg: RunConfig, shards: list[ShardResult]) -> Path:
    """Collect shard manifests into `manifest.parquet`, write the resolved config and a card."""
    run = cfg.run_dir
    parts = [shard_paths(cfg, s.name)[1] for s in shards]
    manifest = pl.concat([pl.read_parquet(p) for p in parts]).sort("id")
    signatures = load_signatures(signature_path(cfg, s.name) for s in shards)
    duplicates = find_duplicates(dict(sorted(signatures.items())))  # run order: independent of sharding
    manifest = manifest.with_columns(
        pl.col("id").replace_strict(duplicates, default=None, return_dtype=pl.Utf8).alias("duplicate_of"))
    tmp = run / ".manifest.parquet.tmp"
    manifest.write_parquet(tmp)
    tmp.replace(run / "manifest.parquet")
    _atomic_write_text(run / "config.yaml", cfg.to_yaml())
    _atomic_write_text(run / "README.md", dataset_card(cfg, manifest))
    return run


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)

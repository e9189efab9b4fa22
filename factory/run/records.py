"""The run format's typed records: what a run writes besides its parquet rows, and what a run
reports. Each record is written in one place and read through one function here, at a
`RunStore` (a local folder or an fsspec URL).

- `ShardRecord`: `shards/<shard>.json`, published last: a record at the store means the shard's
  files are there (checksums and row counts to verify them by), with the shard's audit gate report.
- `FailureRecord`: `failures/<shard>.json`, left instead of a record by a shard whose task kept failing.
- `ShardStats` / `Utilisation` / `RunSummary`: what a shard cost, pooled over a run, and what the
  flow returns (`generate --summary-json` writes it). Timings live here, never in the run folder,
  whose bytes depend only on the config.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from factory.run.store import RunStore


def shard_files(name: str) -> dict[str, str]:
    """A shard's files, relative to the run folder."""
    return {
        "data": f"data/{name}.parquet",
        "manifest": f"manifests/{name}.parquet",
        "signatures": f"signatures/{name}.npz",
        "record": f"shards/{name}.json",
    }


def failure_file(name: str) -> str:
    return f"failures/{name}.json"


class ShardAudit(BaseModel):
    """A shard's generation-time audit gate (`factory.audit.run.gate_shard`): pooled measures of
    the primary detector (non-finite values as null), flagged samples, measures outside their band."""

    model_config = ConfigDict(extra="forbid")

    # int | float: a count stays an int in the JSON, as the gate wrote it
    pooled: dict[str, int | float | None]
    flagged: int
    problems: list[str]


class ShardRecord(BaseModel):
    """`shards/<shard>.json`: the data file's sha256 and row counts, the sha256 of the manifest part
    and signatures, and the audit gate report."""

    model_config = ConfigDict(extra="forbid")

    shard: str
    sha256: str = Field(description="sha256 of data/<shard>.parquet")
    n_ok: int = Field(description="rows in the data file (and ok rows in the manifest part)")
    n_rejected: int = Field(description="rejected rows in the manifest part")
    manifest_sha256: str
    signatures_sha256: str
    audit: ShardAudit


class FailureRecord(BaseModel):
    """`failures/<shard>.json`: the last error of a shard whose task kept failing."""

    shard: str
    error: str
    attempts: int


def _dump(model: BaseModel) -> bytes:
    # json.dumps of the dump (not model_dump_json): the bytes records have always had
    return json.dumps(model.model_dump(mode="json"), indent=2).encode()


def write_shard_record(store: RunStore, record: ShardRecord) -> None:
    store.write_bytes(shard_files(record.shard)["record"], _dump(record))


def read_shard_record(store: RunStore, name: str) -> ShardRecord:
    """A shard's record; FileNotFoundError when absent, ValueError (pydantic's ValidationError)
    when it is not JSON or not of this format."""
    return ShardRecord.model_validate_json(store.read_bytes(shard_files(name)["record"]))


def record_names(store: RunStore) -> list[str]:
    """Names of the shards that have a record, in order."""
    return [n.removesuffix(".json") for n in store.names("shards", ".json")]


def write_failure(store: RunStore, failure: FailureRecord) -> None:
    store.write_bytes(failure_file(failure.shard), _dump(failure))


def delete_failure(store: RunStore, name: str) -> None:
    store.delete(failure_file(name))


def failed_shards(store: RunStore) -> dict[str, FailureRecord]:
    """{shard: failure record} of the shards whose last attempt failed (unreadable ones left out)."""
    out = {}
    for file in store.names("failures", ".json"):
        name = file.removesuffix(".json")
        try:
            out[name] = FailureRecord.model_validate_json(store.read_bytes(failure_file(name)))
        except (ValueError, FileNotFoundError):
            continue
    return out


class BatchFill(TypedDict):
    """One TTS backend's model batches in a shard: how many ran, the renders in them, and their
    room (a TypedDict: the engine adds to it in place)."""

    batches: int
    items: int
    capacity: int


class EventTally(BaseModel):
    """One kind of event the agent must not answer over some dialogues: planned (drawn at the
    configured rate), placed (in the audio) and the rest dropped, per reason (`EventDropReason`)."""

    planned: int = 0
    placed: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)


def drops_column(dropped: Mapping[tuple[Any, Any], int]) -> str | None:
    """The manifest's `events_dropped`: '<kind> <reason> <n>', '; '-separated; None when none."""
    return "; ".join(f"{kind} {reason} {n}" for (kind, reason), n in sorted(dropped.items())) or None


def parse_drops(column: str | None) -> dict[tuple[str, str], int]:
    """`drops_column`'s inverse."""
    out: dict[tuple[str, str], int] = {}
    for part in (column or "").split("; "):
        if part:
            kind, reason, n = part.split(" ")
            out[(kind, reason)] = int(n)
    return out


EVENT_COLUMNS = ("n_events_planned", "n_side_talk", "n_background_speech", "n_non_speech", "events_dropped")


def event_tally(rows: Iterable[Mapping[str, Any]]) -> dict[str, EventTally]:
    """Per kind, over manifest rows (`ManifestRow` dumps, or the manifest's `EVENT_COLUMNS`) of
    accepted samples with events on: planned, placed, dropped per reason. Empty when none."""
    tally: dict[str, EventTally] = {}
    for row in rows:
        if row.get("n_events_planned") is None:
            continue
        for kind in ("side_talk", "background_speech", "non_speech"):
            t = tally.setdefault(kind, EventTally())
            t.placed += row.get(f"n_{kind}") or 0
            t.planned += row.get(f"n_{kind}") or 0
        for (kind, reason), n in parse_drops(row.get("events_dropped")).items():
            t = tally.setdefault(kind, EventTally())
            t.planned += n
            t.dropped[reason] = t.dropped.get(reason, 0) + n
    return tally


class ShardStats(BaseModel):
    """What a shard's stages cost and how full they ran, for the run summary and artifacts.
    Mutable while the shard is made; dumped rounded to the millisecond."""

    seconds: dict[str, float] = Field(
        default_factory=dict,
        description="busy seconds per stage: the time at least one of its jobs ran (stages overlap in the pipeline)",
    )
    audio_s: float = Field(default=0.0, description="seconds of dialogue produced")
    llm_requests: int = 0
    llm_busy_s: float = Field(default=0.0, description="request-seconds in flight (area under the in-flight curve)")
    llm_max_in_flight: int = 0
    tts_calls: int = Field(default=0, description="synthesize_many calls")
    tts_renders: int = Field(default=0, description="renders asked for in them")
    tts_batches: dict[str, BatchFill] = Field(
        default_factory=dict, description="per TTS backend that batches on a model"
    )
    events: dict[str, EventTally] = Field(
        default_factory=dict,
        description="per kind of event the agent must not answer (events on): planned, placed, dropped per reason",
    )

    @field_serializer("seconds")
    def _round_seconds(self, seconds: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 3) for k, v in seconds.items()}

    @field_serializer("audio_s", "llm_busy_s")
    def _round(self, value: float) -> float:
        return round(value, 3)


class BatchUse(BaseModel):
    batches: int
    items: int
    capacity: int
    fill: float = Field(description="renders per room in the model batches, 0..1")


class LLMUse(BaseModel):
    requests: int
    mean_in_flight: float = Field(description="request-seconds over the script stage's busy seconds")
    max_in_flight: int


class TTSUse(BaseModel):
    calls: int
    renders_per_call: float
    batches: dict[str, BatchUse]


class Utilisation(BaseModel):
    """Where a run's time went (the shards produced now): seconds per audio-minute per stage, LLM
    requests in flight, TTS renders per call and batch fill."""

    audio_minutes: float
    stage_seconds: dict[str, float]
    seconds_per_audio_minute: dict[str, float]
    llm: LLMUse
    tts: TTSUse


def utilisation(shard_stats: Iterable[ShardStats | None]) -> Utilisation:
    """The run summary's utilisation, from the rounded stats of the shards produced now: seconds
    per audio-minute per stage, LLM requests in flight (mean over the script stage, peak), TTS
    renders per call and batch fill."""
    stats = [s.model_dump() for s in shard_stats if s]  # the rounded values, as the shards reported them
    seconds: dict[str, float] = {}
    for s in stats:
        for stage, value in s["seconds"].items():
            seconds[stage] = seconds.get(stage, 0.0) + value
    audio_min = sum(s["audio_s"] for s in stats) / 60
    per_min = {k: round(v / audio_min, 3) for k, v in seconds.items()} if audio_min else {}
    script_s = seconds.get("script", 0.0)
    busy = sum(s["llm_busy_s"] for s in stats)
    batches: dict[str, dict[str, Any]] = {}
    for s in stats:
        for name, b in s["tts_batches"].items():
            total = batches.setdefault(name, {"batches": 0, "items": 0, "capacity": 0})
            for key in total:
                total[key] += b[key]
    for b in batches.values():
        b["fill"] = round(b["items"] / b["capacity"], 4) if b["capacity"] else 0.0
    calls = sum(s["tts_calls"] for s in stats)
    return Utilisation(
        audio_minutes=round(audio_min, 3),
        stage_seconds={k: round(v, 3) for k, v in seconds.items()},
        seconds_per_audio_minute=per_min,
        llm=LLMUse(
            requests=sum(s["llm_requests"] for s in stats),
            mean_in_flight=round(busy / script_s, 3) if script_s else 0.0,
            max_in_flight=max((s["llm_max_in_flight"] for s in stats), default=0),
        ),
        tts=TTSUse(
            calls=calls,
            renders_per_call=round(sum(s["tts_renders"] for s in stats) / calls, 2) if calls else 0.0,
            batches={name: BatchUse(**b) for name, b in batches.items()},
        ),
    )


class LLMHttp(BaseModel):
    """The HTTP LLM backend's counts over one run (`factory.llm.http.HTTPStats.since`)."""

    requests: int
    attempts: int
    retries: dict[str, int] = Field(description="retried attempts by cause")
    failures: dict[str, int] = Field(description="chat completions that failed for good, by cause")
    backoff_s: float
    busy_s: float
    max_in_flight: int


class RunSummary(BaseModel):
    """What a generate run did: the flow's return value, `generate --summary-json`."""

    run_dir: str = Field(description="where the run is: its local folder or destination URL")
    shards: int
    skipped: int = Field(description="shards already complete at the store, not made again")
    ok: int
    rejected: int
    failed: dict[str, str] = Field(description="shard -> error, for shards whose task kept failing")
    llm_http: LLMHttp | None = Field(description="null unless the LLM backend is the HTTP client")
    utilisation: Utilisation

"""The typed run configuration: a YAML file plus `--set key.path=value` overrides.

Validation errors name the field, what was given and what is allowed, so a typo in a config
costs seconds, not a failed overnight run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factory.conversation.bands import known_measures
from factory.languages import base, check_language
from factory.locations import user_cache
from factory.models import Mode
from factory.progress import DEFAULT_EVERY_S


class ConfigError(ValueError):
    """A config file or override is invalid; the message names every bad field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Range(_Section):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


_SECRET_OPTIONS = {"key", "secret", "token", "password", "aws_secret_access_key", "aws_access_key_id", "anon_key"}


class RunSection(_Section):
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._\-]+$", description="default: <name>-seed<seed>")
    name: str = Field(default="demo", pattern=r"^[A-Za-z0-9._\-]+$")
    seed: int = Field(default=1234, ge=0)
    n_samples: int = Field(default=8, ge=1, le=10_000_000)
    samples_per_shard: int = Field(default=8, ge=1, le=100_000)
    split: Literal["train", "dev", "test"] = "train"
    output_dir: Path = Path("outputs")
    workers: int = Field(default=1, ge=1, le=256, description="shards generated concurrently")
    max_sample_attempts: int = Field(default=2, ge=1, le=10, description="re-draws of a rejected sample")
    wave_size: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="dialogues of a shard in the engine's pipeline at once (factory.engine: scripted, rendered, "
        "checked, assembled, then waiting for earlier ones to be written), which bounds a shard worker's memory "
        "whatever the shard's size; null = 4 x the script stage's slots (2 x llm.concurrency writers over HTTP, "
        "else the worker processes), at least 16; 1 with processes 1 = one dialogue at a time (same bytes, slower)",
    )
    processes: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="worker processes of a shard for the CPU-bound stages (embedded LLM, Whisper QA, timeline, "
        "mix, augmentation, encoding); 1 = in the shard's own process; null = the CPUs divided among "
        "`workers` (at least 1)",
    )
    license: str = Field(
        default="other",
        pattern=r"^[a-z0-9.\-]+$",
        description="the dataset card's Hub license id (e.g. cc-by-4.0); check the licenses of the LLM and voices used",
    )
    # Deployment at scale (factory.run.store, flows/generate.py; README "Scaling out").
    destination: str | None = Field(
        default=None,
        description="fsspec URL the run is published to as <destination>/<run id> (s3://bucket/prefix, "
        "file:///shared/runs, ...); shards are produced in output_dir and deleted there once published. "
        "null = output_dir is the final place",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for the destination, e.g. {endpoint_url: http://minio:9000}; "
        "credentials come from the environment (AWS_ACCESS_KEY_ID, ...), never from the config",
    )
    task_runner: Literal["thread", "dask", "ray"] = Field(
        default="thread", description="where shard tasks run: threads in this process, a Dask or a Ray cluster"
    )
    cluster_address: str | None = Field(
        default=None,
        description="existing cluster for dask (tcp://scheduler:8786) or ray (ray://head:10001, auto); "
        "null = a local cluster of `workers` processes",
    )
    max_shards_in_flight: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="shard tasks submitted to the runner at once; the rest are submitted as these finish, so "
        "the flow holds a bounded number of futures however many shards the run has (same bytes); set it at "
        "least to the cluster's task slots; null = 2 x `workers`",
    )
    shard_retries: int = Field(default=2, ge=0, le=20, description="retries of a shard task that raised")
    retry_delay_s: float = Field(default=10.0, ge=0, le=3600, description="first retry delay; doubles each retry")
    progress_every_s: float = Field(
        default=DEFAULT_EVERY_S,
        gt=0,
        le=3600,
        description="without a terminal (cron, CI, Prefect deployments, a pipe): a progress line at most this often",
    )

    @property
    def shards_in_flight(self) -> int:
        """`max_shards_in_flight`, with null resolved against the shard workers."""
        return self.max_shards_in_flight or 2 * self.workers

    @property
    def worker_processes(self) -> int:
        """`processes`, with null resolved against this machine's CPUs and the shard workers."""
        if self.processes is not None:
            return self.processes
        return max(1, (os.cpu_count() or 1) // self.workers)

    @model_validator(mode="before")
    @classmethod
    def _batched_is_wave_size(cls, data: Any) -> Any:
        """Configs written before the one engine (runs' config.yaml) said `batched`: false meant one
        dialogue at a time, which is a wave of one now; true is the default."""
        if isinstance(data, dict) and "batched" in data:
            data = dict(data)
            if data.pop("batched") is False and data.get("wave_size") is None:
                data["wave_size"] = 1
        return data

    @model_validator(mode="after")
    def _check_scale(self) -> RunSection:
        secret = sorted(k for k in self.storage_options if k.lower() in _SECRET_OPTIONS)
        if secret:
            raise ValueError(
                f"storage_options must not hold credentials ({', '.join(secret)}): the config is written "
                "into the run folder; set them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
            )
        if self.cluster_address and self.task_runner == "thread":
            raise ValueError("cluster_address needs task_runner dask or ray")
        if self.destination is not None and "://" not in self.destination and not self.destination.startswith("/"):
            raise ValueError(f"destination must be an fsspec URL or an absolute path, got {self.destination!r}")
        return self


class LLMSource(_Section):
    """The LLM writes the dialogue (section `llm`)."""

    kind: Literal["llm"] = "llm"
    weight: float = Field(default=1.0, gt=0, description="relative share of the run's dialogues")


class DatasetSource(_Section):
    """Existing text dialogues, rewritten into spoken style (`factory.script.source`)."""

    kind: Literal["dataset"] = "dataset"
    weight: float = Field(default=1.0, gt=0, description="relative share of the run's dialogues")
    path: str = Field(
        min_length=1,
        description="a dialogue-set JSONL file (dialogues/README.md; a bare name such as `en-everyday` is a set the "
        "package carries) or, with `turns_column` set, a Hugging Face dataset: a local file or folder, or a Hub name",
    )
    name: str | None = Field(default=None, description="its name in the manifest and card; default: the file stem")
    turns_column: str | None = Field(
        default=None,
        description="Hugging Face datasets only: the column holding each dialogue's list of messages; "
        "null = the dialogue-set format",
    )
    role_key: str = Field(default="role", description="the message key naming its speaker (ShareGPT: `from`)")
    text_key: str = Field(default="content", description="the message key holding its text (ShareGPT: `value`)")
    roles: dict[str, Literal["user", "agent", "skip"]] = Field(
        default_factory=lambda: {"user": "user", "assistant": "agent", "system": "skip"},
        description="speaker values of the dataset -> user, agent, or skip (ShareGPT: {human: user, gpt: agent, "
        "system: skip}); a message whose speaker is not here is a config error",
    )
    hf_split: str = Field(default="train", description="the Hugging Face split to read")
    id_column: str | None = Field(default=None, description="Hugging Face: the column of dialogue ids")
    license: str | None = Field(
        default=None, description="Hugging Face: the license of its rows (SPDX id); dialogue sets carry theirs"
    )
    mode: Mode = Field(default=Mode.assistant, description="Hugging Face: the mode its dialogues are in")
    language: str = Field(default="en", description="Hugging Face: the language its dialogues are in")
    rewrite: Literal["auto", "llm", "rules"] = Field(
        default="auto",
        description="into spoken style with the LLM (a rewrite prompt that keeps the content, validated like the "
        "writer's turns) or with deterministic rules (numbers to words, contractions; the planner's fillers and "
        "restarts come in either case); auto = the LLM when `sources` has an llm source served over HTTP, else rules",
    )

    @property
    def label(self) -> str:
        """Its name: `name`, else the file stem or the Hub name."""
        if self.name:
            return self.name
        if self.turns_column is None or self.path.endswith((".jsonl", ".json", ".parquet", ".csv")):
            return Path(self.path).stem if "." in Path(self.path).name else Path(self.path).name
        return self.path

    @model_validator(mode="after")
    def _check(self) -> DatasetSource:
        mapped = set(self.roles.values())
        if self.turns_column is not None and not {"user", "agent"} <= mapped:
            raise ValueError(f"roles must map some speaker to user and some to agent, got {self.roles}")
        return self


ScriptSourceConfig = Annotated[LLMSource | DatasetSource, Field(discriminator="kind")]


class DialogueSection(_Section):
    sources: list[ScriptSourceConfig] = Field(
        default_factory=lambda: [LLMSource()],
        min_length=1,
        description="where scripts come from, mixed by weight (a deterministic draw per sample): "
        "[{kind: llm, weight: 0.7}, {kind: dataset, path: en-everyday, weight: 0.3}]",
    )
    mode_weights: dict[Mode, float] = Field(default_factory=lambda: {Mode.assistant: 0.5, Mode.peer: 0.5})
    n_turns: tuple[int, int] = (6, 8)
    assistant_agent_words: tuple[int, int] = (20, 50)
    assistant_user_words: tuple[int, int] = (4, 20)
    peer_words: tuple[int, int] = (5, 30)
    language: str | dict[str, float] = Field(
        default="en",
        description="BCP-47 language of the dialogues (en, ja, es-MX), or a weighted mix {en: 0.7, ja: 0.3} "
        "drawn per dialogue; each needs voices, a behaviour lexicon and a scenario bank",
    )
    scenario_bank: Path | None = Field(
        default=None,
        description="YAML file or folder of scenario-bank files that extend (or, with `replace`, replace) the "
        "packaged bank (factory/script/bank); null = the packaged bank only",
    )
    agent_opens: bool = Field(
        default=False,
        description="assistant mode: the agent greets first (its greeting as long as a user turn), so models "
        "learn how a conversation opens; false: the user speaks first",
    )
    summary_sentences: int = Field(
        default=4,
        ge=0,
        le=12,
        description="long dialogues (n_turns up to 64, ~40 turns = 5 minutes): the turn writer sees the last 6 "
        "turns plus a running summary of the older ones, this many of their sentences nearest the scenario's "
        "topic and setting (chosen by the content judge, no LLM call); 0 = no summary",
    )
    summary_from_turn: int = Field(
        default=12,
        ge=7,
        le=64,
        description="the first turn whose writer gets the running summary (turns before it see no summary, so "
        "dialogues shorter than this are written as without one)",
    )

    @property
    def language_weights(self) -> dict[str, float]:
        """`language` as weights: one code is a weight of 1."""
        return {self.language: 1.0} if isinstance(self.language, str) else dict(self.language)

    @model_validator(mode="after")
    def _check(self) -> DialogueSection:
        weights = self.language_weights
        for code in weights:
            check_language(code)
        if not weights or sum(weights.values()) <= 0 or min(weights.values()) < 0:
            raise ValueError("dialogue.language weights must be non-negative with a positive sum")
        if sum(s.kind == "llm" for s in self.sources) > 1:
            raise ValueError("sources may hold one llm source")
        labels = [s.label for s in self.sources if isinstance(s, DatasetSource)]
        if len(set(labels)) < len(labels):
            raise ValueError(f"dataset sources need distinct names (set `name`), got {labels}")
        if not self.mode_weights or sum(self.mode_weights.values()) <= 0 or min(self.mode_weights.values()) < 0:
            raise ValueError("mode_weights must be non-negative with a positive sum")
        low, high = self.n_turns
        if not 2 <= low <= high <= 64:
            raise ValueError(f"n_turns must satisfy 2 <= low <= high <= 64, got {self.n_turns}")
        for name in ("assistant_agent_words", "assistant_user_words", "peer_words"):
            low, high = getattr(self, name)
            if not 1 <= low <= high <= 400:
                raise ValueError(f"{name} must satisfy 1 <= low <= high <= 400, got {(low, high)}")
        return self


class LLMSection(_Section):
    backend: Literal["embedded", "http"] = "embedded"
    model_path: str | None = Field(default=None, description="GGUF for embedded; default the packaged SmolLM2")
    n_threads: int = Field(default=1, ge=1, le=64)
    base_url: str = Field(
        default="http://127.0.0.1:8000/v1", pattern=r"^https?://", description="OpenAI-compatible server"
    )
    model: str | None = Field(default=None, description="model name on the HTTP server; default: the first it serves")
    concurrency: int = Field(default=8, ge=1, le=1024, description="HTTP requests in flight per process")
    timeout_s: float = Field(default=60.0, gt=0, le=3600, description="per HTTP request")
    max_retries: int = Field(default=4, ge=0, le=20, description="on connection errors, timeouts, 429 and 5xx")
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable holding the API key"
    )
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    turn_attempts: int = Field(default=3, ge=1, le=10)
    script_mode: Literal["turns", "structured"] = Field(
        default="turns",
        description="turns: the LLM writes one turn at a time, the planner adds every mark (any model); "
        "structured: a capable LLM writes the whole dialogue with proposed marks as JSON (guided decoding), "
        "validated, repaired and calibrated",
    )


class TTSSection(_Section):
    voice_bank: Path | None = Field(
        default=None,
        description="a voice-bank YAML file or folder of them; null = the bank the package carries "
        "(the repository's voices/)",
    )
    user_voice: str | None = Field(default=None, description="fixed voice id; default: drawn per sample")
    agent_voice: str | None = None
    cache_dir: Path | str | None = Field(
        default_factory=lambda: user_cache("tts"),
        description="content-addressed TTS cache (voice, text, settings): a folder or an fsspec URL "
        "(s3://bucket/tts-cache: on a cluster, so every worker and every later reader of the run, rebuild, "
        "augment, preference, finds the renders); default: tts/ in the per-user cache "
        "folder ($DUPLEX_CACHE, else the platform's, e.g. ~/.cache/duplex-factory); null = off",
    )
    cache_storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for a cache_dir URL, e.g. {endpoint_url: http://minio:9000}; "
        "credentials come from the environment, never from the config",
    )
    qa_wer_threshold: float | None = Field(
        default=0.8,
        ge=0,
        le=5,
        description="re-render slower, then reject, turns whose Whisper round trip has a higher "
        "WER; null = no intelligibility QA",
    )
    qa_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"ja": 0.4},
        description="QA threshold per language (primary subtag), replacing qa_wer_threshold for it; a language "
        "written without spaces (ja) is scored by character error rate (CER), not WER",
    )
    qa_retry_rate: float = Field(default=0.85, gt=0.3, le=1.0, description="speaking-rate factor of the QA re-render")
    hold_fall_share: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="share of the sentence ends inside a turn read with a final fall; the others are read "
        "as continuations (a comma's contour), as people holding the floor mostly do (24.7 % of holds "
        "follow a fall against 47.2 % of turn switches: Gravano & Hirschberg 2011); 1 = read the text as written",
    )
    backend_options: dict[Literal["piper", "kokoro", "espeak", "coqui"], dict[str, Any]] = Field(
        default_factory=dict,
        description="construction options per TTS backend, validated by the backend "
        "(e.g. coqui: {device: cuda:1, batch_size: 32}; espeak: {library: /path/libespeak-ng.so.1})",
    )
    processes: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="worker processes per CPU TTS backend (piper, kokoro, espeak) rendering a shard's "
        "batch (factory.render.pool); 1 = in-process; null = as many as `run.processes` resolves to",
    )
    service_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="a TTS service (`duplex-factory tts-serve`) that renders for every voice, batching "
        "across workers, e.g. http://gpu-box:8020; null = render in this process",
    )

    def qa_threshold(self, language: str) -> float | None:
        """The QA threshold of `language` (null: no QA, as `qa_wer_threshold` null turns QA off)."""
        if self.qa_wer_threshold is None:
            return None
        return self.qa_thresholds.get(base(language), self.qa_wer_threshold)

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _cache_url_or_folder(cls, value: Any) -> Any:
        """A URL (`s3://...`) stays a string; anything else is a folder."""
        if isinstance(value, str) and "://" in value and not value.startswith("file://"):
            return value.rstrip("/")
        if isinstance(value, str):
            return Path(value.removeprefix("file://"))
        return value

    @model_validator(mode="after")
    def _fixed_voices(self) -> TTSSection:
        secret = sorted(k for k in self.cache_storage_options if k.lower() in _SECRET_OPTIONS)
        if secret:
            raise ValueError(
                f"tts.cache_storage_options must not hold credentials ({', '.join(secret)}): the config is "
                "written into the run folder; set them in the environment"
            )
        # One fixed voice would leave the other channel's voice undefined; one voice on both
        # channels makes them impossible to tell apart.
        if bool(self.user_voice) != bool(self.agent_voice):
            raise ValueError("set both tts.user_voice and tts.agent_voice, or neither")
        if self.user_voice and self.user_voice == self.agent_voice:
            raise ValueError(f"tts.user_voice and tts.agent_voice must differ (both {self.user_voice!r})")
        return self


_LEXICON = "null = the lexicon of the dialogue's language (factory/script/lexicon/<language>.yaml)"


class BehaviourSection(_Section):
    """Targets for the behaviour planner (defaults: ../shared/reference/conversation.md)."""

    fillers_per_100_words: float = Field(default=3.0, ge=0, le=30)
    restarts_per_100_words: float = Field(default=1.0, ge=0, le=20)
    pauses_per_100_words: float = Field(default=1.5, ge=0, le=20)
    backchannels_per_minute: float | None = Field(
        default=None,
        ge=0,
        le=60,
        description="listener reactions a minute of speech; null = the language's lexicon (English 6.0: "
        "Switchboard, 19 % of ~27 dialogue acts a minute are backchannels; Japanese 15.0, cited there)",
    )
    barge_ins_per_dialogue: float = Field(default=1.0, ge=0, le=10, description="mean over dialogues")
    barge_in_dialogue_share: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="share of dialogues with at least one barge-in (LSLM trained with 0.5); capped at "
        "barge_ins_per_dialogue, the mean, which the others' extra barge-ins make up",
    )
    failed_interruptions_per_dialogue: float = Field(default=0.3, ge=0, le=10)
    laughs_per_minute: float = Field(default=0.5, ge=0, le=30)
    count_dispersion: float | None = Field(
        default=2.0,
        gt=0,
        le=1000,
        description="negative-binomial shape of per-dialogue counts of barge-ins, backchannels, laughs and "
        "failed interruptions (smaller = more spread between dialogues, as in human data); null = Poisson",
    )
    min_fillers: int = Field(default=1, ge=0)
    min_backchannels: int = Field(default=0, ge=0)
    min_barge_ins: int = Field(default=0, ge=0)
    filler_tokens: list[str] | None = Field(default=None, min_length=1, description=_LEXICON)
    backchannel_tokens: list[str] | None = Field(default=None, min_length=1, description=_LEXICON)
    laugh_tokens: list[str] | None = Field(default=None, min_length=1, description=_LEXICON)
    failed_interruption_tokens: list[str] | None = Field(default=None, min_length=1, description=_LEXICON)


class EventsSection(_Section):
    """Sound on the user's channel that the agent must not answer, placed during the agent's turns
    (it keeps talking through them), side talk also in a pause of the user's own turn (the user
    holds the floor), and background speech and non-speech sounds also under the user's own speech:
    Full-Duplex-Bench v1.5's talking-to-others and background speech, and non-speech sounds.
    Rates are means per dialogue (Poisson); 0 = none (default)."""

    side_talk_per_dialogue: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="the user speaks to someone else (phrases: the language's lexicon, `side_talk`)",
    )
    background_speech_per_dialogue: float = Field(
        default=0.0, ge=0, le=10, description="a TV / radio / other people: another voice of the bank's split"
    )
    non_speech_per_dialogue: float = Field(
        default=0.0, ge=0, le=10, description="coughs, door knocks, keyboard (synthesised: factory/audio/sounds)"
    )
    non_speech_sounds: list[Literal["cough", "knock", "keyboard"]] = Field(
        default_factory=lambda: ["cough", "knock", "keyboard"], min_length=1
    )
    side_talk_user_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share of side talk said in a pause of the user's own turn (the user holds the floor: the "
        "agent must neither answer it nor take the turn); the rest during the agent's turns",
    )
    background_user_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share of background speech and non-speech sounds placed in the user's own turns, mixed "
        "under the user's speech (a TV or a cough while the user talks); the rest during the agent's turns",
    )
    side_talk_gain_db: float = Field(default=-4.0, ge=-30, le=0, description="turned away from the microphone")
    background_speech_gain_db: float = Field(default=-12.0, ge=-40, le=0, description="under the user's own speech")
    non_speech_gain_db: float = Field(default=-6.0, ge=-40, le=0, description="of the synthesised sound (peak -6 dBFS)")


class TimingSection(_Section):
    """Turn-taking timing: the `factory.timeline.timing.TimingModel` of floor-transfer offsets
    (a lognormal mixture; its transition fields default to the dialogue language's, English's
    fitted so the audio measures as Switchboard, ../shared/reference/conversation.md), its
    context effects, and barge-in stops."""

    lead_in: Range = Range(low=0.3, high=0.8)
    tail: Range = Range(low=0.4, high=0.8)
    model_file: Path | None = Field(
        default=None,
        description="a fitted TimingModel (JSON from `duplex-factory fit-timing`); its fields replace the "
        "transition fields below",
    )
    # null: the dialogue language's default (`factory.timeline.timing.timing_defaults`: English fitted
    # so the FTO measured from the audio matches Switchboard; other languages moved by published means)
    overlap_probability: float | None = Field(
        default=None, ge=0, le=1, description="share of floor transfers made in overlap; null: the language's default"
    )
    gap_median: float | None = Field(default=None, gt=0, le=5, description="null: the language's default")
    gap_sigma: float | None = Field(
        default=None, ge=0, le=3, description="within-dialogue gap spread (log scale); null: the language's default"
    )
    overlap_median: float | None = Field(default=None, gt=0, le=3, description="null: the language's default")
    overlap_sigma: float | None = Field(default=None, ge=0, le=3, description="null: the language's default")
    tempo_sigma: float | None = Field(
        default=None, ge=0, le=1, description="per-dialogue tempo spread (log scale); null: the language's default"
    )
    gap_max: float = Field(default=3.0, gt=0, le=10)
    overlap_max: float = Field(default=1.5, gt=0, le=5)
    question_factor: float = Field(
        default=0.8, gt=0, le=3, description="gap scale after a question (answers come faster)"
    )
    topic_shift_factor: float = Field(default=1.5, gt=0, le=5, description="gap scale before a turn that changes topic")
    long_turn_s: float = Field(default=8.0, gt=0, le=60)
    long_turn_factor: float = Field(
        default=1.3, gt=0, le=5, description="gap scale after a turn longer than long_turn_s"
    )
    agent_latency_median: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="assistant mode: the agent's own response latency median (null: human timing)",
    )
    agent_latency_sigma: float = Field(default=0.4, ge=0, le=3)
    agent_overlap_probability: float = Field(default=0.0, ge=0, le=1)
    barge_in_stop_median: float | None = Field(
        default=None,
        gt=0,
        le=3,
        description="a barge-in's victim stops this long (median) after the interrupter's onset; null: like "
        "Switchboard's between-overlaps (median 0.2174 s, sigma 0.8041, times the dialogue's tempo)",
    )
    barge_in_stop_sigma: float = Field(default=0.45, ge=0, le=3, description="with barge_in_stop_median set")
    barge_in_stop: Range = Field(
        default=Range(low=0.05, high=1.0), description="bounds of the barge-in stop latency (LSLM: within 2 mu = 1 s)"
    )
    pause_median: float = Field(default=0.45, gt=0, le=3)
    backchannel_delay_median: float = Field(default=0.2, gt=0, le=2)


class AudioSection(_Section):
    sample_rate: Literal[16000, 22050, 24000, 44100, 48000] = 24000
    target_lufs: float = Field(default=-23.0, ge=-40, le=-10)
    peak_dbfs: float = Field(default=-1.0, ge=-20, le=0)
    fade_ms: float = Field(default=8.0, ge=0, le=100)


AUGMENT_TRANSFORMS = ("colored_noise", "hum", "babble", "recorded_noise", "room", "telephone", "codec", "gain", "echo")


class AugmentStep(_Section):
    """One transform of a chain (`factory.augment`); `options` are validated by the transform."""

    transform: Literal["colored_noise", "hum", "babble", "recorded_noise", "room", "telephone", "codec", "gain", "echo"]
    apply_to: Literal["each", "user", "agent", "mix"] = Field(
        default="each",
        description="each: every channel with its own draws; user/agent: that channel; mix: both, one draw",
    )
    probability: float = Field(default=1.0, ge=0, le=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _echo_needs_both(self) -> AugmentStep:
        if self.transform == "echo" and self.apply_to != "mix":
            raise ValueError("echo leaks the agent channel into the user channel: apply_to must be mix")
        return self


class AugmentChain(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9._\-]+$")
    probability: float = Field(ge=0, le=1, description="share of samples that get this chain")
    steps: list[AugmentStep] = Field(min_length=1)


class AugmentSection(_Section):
    """Augmentation chains, written as a second audio column beside the clean one (which is never
    changed). Each sample draws at most one chain by `probability`; with no `chains`, the one
    chain is coloured noise on both channels with `noise_probability`, `snr_db` and `colors`."""

    noise_probability: float = Field(default=0.5, ge=0, le=1)
    snr_db: Range = Range(low=10.0, high=30.0)
    colors: list[Literal["white", "pink", "brown"]] = Field(default_factory=lambda: ["white", "pink", "brown"])
    chains: list[AugmentChain] = Field(default_factory=list)
    noise_folder: Path | None = Field(
        default=None, description="recorded noise (MUSAN / DEMAND layout) for recorded_noise"
    )
    rir_folder: Path | None = Field(
        default=None, description="measured impulse responses (.wav) instead of the simulated bank"
    )
    cache_dir: Path = Field(
        default_factory=lambda: user_cache("augment"),
        description="simulated RIR banks; default: augment/ in the per-user cache folder",
    )

    @model_validator(mode="after")
    def _chains(self) -> AugmentSection:
        total = sum(c.probability for c in self.chains)
        if total > 1 + 1e-9:
            raise ValueError(f"chain probabilities sum to {total:g}; at most 1 (the rest get no augmentation)")
        names = [c.name for c in self.chains]
        if len(set(names)) != len(names):
            raise ValueError(f"chain names must be unique, got {names}")
        return self


class AuditSection(_Section):
    """The audit's detectors and its gates (`factory.audit`). Per-sample thresholds (null = not
    checked) flag a failing sample in the manifest with its reason; a shard whose pooled value
    of a `shard_bands` measure leaves its human band (`factory.conversation.bands`), or whose share of
    flagged samples exceeds `max_flagged_share`, is reported in its record and by `audit`. Bands are
    the samples' language's (`bands_for`): a measure whose band for it is borrowed from English, only
    a reference (`Band.gated` False), or that has no band in it, is not gated for that language."""

    vad: Literal["energy", "webrtc", "silero"] = Field(
        default="energy", description="primary detector: measures and gates (energy is exact on the clean stems)"
    )
    compare_vad: Literal["energy", "webrtc", "silero"] | None = Field(
        default="webrtc", description="second detector reported beside the primary one by `duplex-factory audit`"
    )
    asr_turns: int = Field(default=2, ge=0, le=64, description="turns per sample through the audit's ASR round trip")
    min_planned_found: float | None = Field(default=0.9, ge=0, le=1, description="share of planned speech in the audio")
    min_audio_explained: float | None = Field(
        default=0.9, ge=0, le=1, description="share of audio speech the plan explains"
    )
    max_stop_latency_s: float | None = Field(
        default=1.0, gt=0, le=10, description="interrupted speaker's stop after the barge-in onset (LSLM: 2 mu = 1 s)"
    )
    min_barge_ins_found: float | None = Field(
        default=1.0, ge=0, le=1, description="share of the timeline's barge-ins found in the audio"
    )
    max_asr_wer: float | None = Field(default=0.6, ge=0, le=5, description="mean WER of the audited turns (audit only)")
    max_loudness_error_lu: float | None = Field(
        default=3.0,
        ge=0,
        le=40,
        description="|channel loudness - audio.target_lufs|, louder side (quieter: peak-limited)",
    )
    shard_bands: list[str] = Field(
        default_factory=lambda: ["fto_p50_s", "fto_mean_s", "transitions_in_overlap", "overlap_share", "gap_median_s"],
        description="measures whose shard value must lie in its band for the shard's language (names from "
        "factory.conversation.bands; a band borrowed from English, a reference, or none, is not gated: English has "
        "no fto_mean_s)",
    )
    max_flagged_share: float = Field(
        default=0.25, ge=0, le=1, description="a shard with more flagged samples is reported"
    )

    @model_validator(mode="after")
    def _known_bands(self) -> AuditSection:
        known = known_measures()
        unknown = [m for m in self.shard_bands if m not in known]
        if unknown:
            raise ValueError(f"audit.shard_bands: unknown measure(s) {unknown}; known: {sorted(known)}")
        return self


class RunConfig(_Section):
    run: RunSection = RunSection()
    dialogue: DialogueSection = DialogueSection()
    llm: LLMSection = LLMSection()
    tts: TTSSection = Field(default_factory=TTSSection)  # its cache folder is resolved when a config loads
    behaviour: BehaviourSection = BehaviourSection()
    events: EventsSection = EventsSection()
    timing: TimingSection = TimingSection()
    audio: AudioSection = AudioSection()
    augment: AugmentSection = Field(default_factory=AugmentSection)
    audit: AuditSection = AuditSection()

    @property
    def run_id(self) -> str:
        return self.run.run_id or f"{self.run.name}-seed{self.run.seed}"

    @property
    def run_dir(self) -> Path:
        return self.run.output_dir / self.run_id

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @property
    def uses_llm(self) -> bool:
        """Whether any script source needs the LLM (to write, or to rewrite a dataset's dialogues)."""
        return any(s.kind == "llm" or self.rewrite_of(s) == "llm" for s in self.dialogue.sources)

    def rewrite_of(self, source: LLMSource | DatasetSource) -> Literal["llm", "rules"] | None:
        """How a dataset source is rewritten, `auto` resolved: the LLM when the sources include it
        and it is served (`llm.backend: http`, a capable model); the embedded 135M model keeps too
        little of a line's content (docs/sources.md), so rules. None for the LLM source."""
        if not isinstance(source, DatasetSource):
            return None
        if source.rewrite != "auto":
            return source.rewrite
        served = self.llm.backend == "http" and any(s.kind == "llm" for s in self.dialogue.sources)
        return "llm" if served else "rules"


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            section = _section_for(e["loc"][:-1])
            allowed = ", ".join(section.model_fields) if section else "?"
            msg = f"unknown field (allowed here: {allowed})"
        lines.append(f"  {where}: {msg} (got {e.get('input')!r})")
    return "invalid run config:\n" + "\n".join(lines)


def _section_for(path: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for part in path:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.field=value")
    key, raw = item.split("=", 1)
    if not re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", key.strip()):
        raise ConfigError(f"override key {key!r} must be a dotted path like run.seed")
    return key.strip().split("."), yaml.safe_load(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- YAML file <- overrides (`section.field=value`, value parsed as YAML)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        _deep_merge(data, loaded)
    for item in overrides or []:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
        node[keys[-1]] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def _deep_merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value

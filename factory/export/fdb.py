"""Evaluation sets in Full-Duplex-Bench's v1.0 per-task layout, cut from a run's held-out split.

Sources (github.com/DanielLin94144/Full-Duplex-Bench at d7336bd, folder `v1_v1.5/`), read for every
file name, JSON field, unit and what each metric reads:

- `dataset/README.md`: the layout `{task}/{ID}/` with `input.wav` (the user's stream, the audio
  fed to the model), `{TASK}.json` (`pause.json`, `turn_taking.json`, `interrupt.json`),
  `transcription.json` (text with word timestamps) and, for user interruption, `context.wav` and
  `interrupt.wav`. Times are seconds from the start of `input.wav`.
- `evaluation/evaluate.py`: the task names `pause_handling`, `backchannel`, `smooth_turn_taking`,
  `user_interruption`, each run as `evaluate.py --task T --root_dir DIR` on one task folder.
- `evaluation/eval_pause_handling.py`: reads only the model's `output.json` (`chunks[].timestamp`);
  metric TOR (take-over rate: output over 1 s or more than 3 words). Lists every entry of the
  root as a folder (l. 18-24), so a task root holds item folders only.
- `evaluation/eval_smooth_turn_taking.py`: `turn_taking.json[0]["timestamp"][0]` is the user's
  turn end (l. 48); metrics TOR and latency = first output word - that time (l. 70-73). Same
  folder-only listing (l. 23-34).
- `evaluation/eval_user_interruption.py`: `interrupt.json[0]` fields `interrupt` (text),
  `context` (text) and `timestamp[1]` = end of the interruption (l. 86-88); metrics TOR, latency
  from `timestamp[1]`, and a GPT-4 relevance rating of the reply. `os.walk` takes every folder
  below the root as an item (l. 57-59), so items hold no sub-folders.
- `evaluation/eval_backchannel.py`: item folders must be named by digits (`spk.isdigit()`, l. 28);
  the reference is `./icc_gt_distribution.json` (cwd), `{ID: histogram}` (l. 19-21, 137), the
  normalised count of reference backchannels per 0.2 s window, epsilon 1e-10 added (l. 120-134);
  metrics TOR, backchannel frequency (per second of output) and JSD against that histogram.
- `get_transcript/asr.py`: makes `output.json` from the model's `output.wav`; for user
  interruption it transcribes only after `interrupt.json[0]["timestamp"][1]` (l. 33-45).
- `model_inference/freeze-omni/smooth_turn_taking.py` (l. 462-467): reads `turn_taking.json`
  `timestamp[0]` as the end of the user's speech in `input.wav`, i.e. silence follows it;
  `.../user_interruption.py` (l. 447-473) builds its own input from `context.wav` + silence +
  `interrupt.wav`.
- `evaluation/example_data/*/1/`: `pause.json` = `[{"text": "[PAUSE]", "timestamp": [3.32, 4.0]}]`
  in a 4.72 s input whose speech resumes for ~0.7 s after the pause; `turn_taking.json` =
  `[{"text": "[TURN-TAKING]", "timestamp": [end, ...]}]` with ~8 s of silence after the turn;
  `transcription.json` = `[{"speaker": k, "item": [{"text", "timestamp": [s, e]}]}]`, the listener's
  reference words beside the input speaker's; `interrupt.json` =
  `[{"context", "interrupt", "timestamp": [onset, end]}]`.

How items are cut from our dialogues (one item per event, IDs "1", "2", ... per task in sample
order then time order; `index.json` beside the task folders maps each back to its sample, event
and dialogue times). `input.wav` is the USER channel (channel 0) over the item's window with every
sample outside the item's focal user turns set to digital zero (the benchmark's inputs hold only the
focal speech; our other user speech there, e.g. a backchannel to the agent, is dropped), then
`tail_s` of zeros where the model is expected to answer. The agent channel is not in `input.wav`:
the model under test is the agent. It is written as `reference.wav` (agent channel over the same
span, what our agent did): not read by any benchmark script, it can stand in as `output.wav` to
score our own data, so it holds only speech that can answer `input.wav`: every agent turn begun
before the item's first focal user turn (e.g. the agent's previous turn ending inside the lead) is
digital zero there, left out of `transcription.json`, and listed in the item's `index.json` entry
(`reference_silenced`); the benchmark's scripts would take its words for the model's reply.
Windows start `lead_s` before the first focal turn. Every wav is written at the benchmark's
16 kHz (`eval_backchannel.py` runs its VAD at 16 kHz without resampling), resampled with
`factory.audio.edit.resample`; times stay in seconds.

- `pause_handling`: a user turn with within-turn silent pauses (`HesitationEvent` kind `pause`);
  input = that turn up to `pause_resume_s` after its last pause (or its end); no tail, as in the
  benchmark's example. `pause.json` lists the pauses, `[{"text": "[PAUSE]", "timestamp": [s, e]}]`.
- `backchannel`: a user floor turn during which the agent backchannels (`BackchannelEvent`,
  channel agent); input = that turn plus `lead_s` of silence. `backchannel.json` (ours, same
  shape as `pause.json`, text = the token) lists the agent's backchannels, and the task root's
  `icc_gt_distribution.json` holds their histogram computed exactly as the eval bins predictions.
- `smooth_turn_taking`: a completed user floor turn (`EndOfTurnEvent`) answered by an agent floor
  turn (the next floor turn, begun within `tail_s` of the turn end: an item has a reply to score);
  input = the turn + `tail_s` of silence. `turn_taking.json` = `[{"text": "[TURN-TAKING]",
  "timestamp": [turn end, our agent's reply onset (not before the end)]}]` (the evals read [0]).
- `user_interruption`: a user barge-in on an agent turn (`BargeInEvent` by user) that the agent
  answers, as a turn end is answered (an interruption that ends the dialogue is left out: FDB would
  count a failed take-over); context = the user's last floor turn begun before the interrupted
  agent turn; input = context + (zeroed) agent turn time + the interrupting turn + `tail_s`
  (the agent's interrupted turn stays in `reference.wav`: it answers the context);
  `interrupt.json` = `[{"context": text, "interrupt": text, "timestamp": [onset, interrupting
  turn end]}]`, and `context.wav` / `interrupt.wav` hold
  those two user turns alone.

Full-Duplex-Bench v1.5 (overlap handling; same repository and commit): `dataset/README.md`
l. 21-27 names the subsets `user_interruption`, `user_backchannel`, `talking_to_other`,
`background_speech`; l. 46-63 and l. 104-125 give each item folder `input.wav` (the user's audio
with the overlap event), `clean_input.wav` (the same without it) and `metadata.json` with exactly
`context_text`, `current_turn_text` and `timestamps` = `[start, end]` of the overlap event in
`input.wav`, seconds. `evaluation/eval_behavior.py` l. 115-119 takes every non-hidden folder of a
subset as an item and l. 128-131 reads the ASR transcripts `input.json` / `clean_input.json` of
those two wavs (and the model's `output.json` / `clean_output.json`); `evaluation/get_timing.py`
l. 22 and 125-126 reads `input.wav` at 16 kHz. We write them under `v1_5/{subset}/{ID}/` (the
task names `v1_5/...`): the model under test is the agent, talking (its turn answers
`context_text`, the user's turn before it) when the event happens. `input.wav` = the context
turn + the event on the user's channel + `tail_s`; `clean_input.wav` = the same with the event's
span zeroed; `current_turn_text` = the side talk, the background line, the user's backchannel
token or the interrupting turn (`timestamps` from its onset to its end). Non-speech events have
no v1.5 subset and are counted as left out. `reference.wav` and `transcription.json` as above.

`transcription.json` = `[{"speaker": 0, "item": user words in input.wav}, {"speaker": 1, "item":
agent words in the window (reference, not in input.wav)}]`; speaker numbers are our channel indices.

Nothing is dropped silently: the report (`FdbReport`, `report.json`; the same counts in
`index.json`) holds per task the items written and, by reason, the samples that gave none and the
events left out; samples of another split and damaged ones are dropped by rule, each named. It is
the registry's `fdb` format (`duplex-factory export RUN -f fdb`): options (`FdbOptions`) are
checked before the run is read, and a re-export into the same folder replaces the earlier one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, Field, field_validator

from factory.audio.edit import resample
from factory.audio.mix import to_pcm16
from factory.export.exporter import Exporter
from factory.export.options import ExportOptions, FormatOptions, dump_options
from factory.export.output import Sidecar, finish
from factory.export.report import RUN_RULES, ExportReport, Rule
from factory.models import (
    BackchannelEvent,
    BackgroundSpeechEvent,
    BargeInEvent,
    Channel,
    EndOfTurnEvent,
    EndReason,
    HesitationEvent,
    NonSpeechEvent,
    Sample,
    SideTalkEvent,
    Timeline,
    TimelineTurn,
    TurnKind,
)

TASKS = ("pause_handling", "backchannel", "smooth_turn_taking", "user_interruption")
# v1.5's subsets (dataset/README.md l. 21-27), written under v1_5/
V15_TASKS = ("v1_5/user_interruption", "v1_5/user_backchannel", "v1_5/talking_to_other", "v1_5/background_speech")
TASK_FILES = {
    "pause_handling": "pause.json",
    "backchannel": "backchannel.json",
    "smooth_turn_taking": "turn_taking.json",
    "user_interruption": "interrupt.json",
    **dict.fromkeys(V15_TASKS, "metadata.json"),  # dataset/README.md l. 51-63
}
GT_DISTRIBUTION = "icc_gt_distribution.json"  # eval_backchannel.py l. 19: read from the cwd
BC_WINDOW_S, BC_EPSILON = 0.2, 1e-10  # eval_backchannel.py l. 12-13
# eval_backchannel.py runs silero-vad on output.wav at its default 16 kHz and never resamples (l. 37-43);
# the benchmark's own inputs are 16 kHz: every wav is written at this rate.
FDB_SAMPLE_RATE = 16_000


Task = Literal[
    "pause_handling",
    "backchannel",
    "smooth_turn_taking",
    "user_interruption",
    "v1_5/user_interruption",
    "v1_5/user_backchannel",
    "v1_5/talking_to_other",
    "v1_5/background_speech",
]
INDEX_OPTIONS = ("lead_s", "tail_s", "pause_resume_s", "split")  # the options index.json records

RULES: dict[str, Rule] = {
    "fdb_other_split": Rule("drop", "a sample of another split than the option split is not cut into items"),
    "fdb_damaged_sample": Rule(
        "drop",
        "a sample that is not two-channel, whose audio ends before its timeline's last turn, or whose "
        "events name a turn the timeline lacks, gives no item",
    ),
}


class FdbOptions(FormatOptions):
    lead_s: float = Field(default=0.5, ge=0, le=60, description="seconds of silence before the first focal turn")
    tail_s: float = Field(
        default=8.0,
        ge=0,
        le=60,
        description="seconds of silence after a turn end or interruption (the example: ~8.4 s)",
    )
    pause_resume_s: float = Field(
        default=0.7, ge=0, le=60, description="seconds of speech kept after a pause (the example keeps ~0.7 s)"
    )
    split: str | None = Field(
        default="test", description="export only samples of this split; 'all' or None: every sample"
    )
    tasks: tuple[Task, ...] = Field(
        default=(*TASKS, *V15_TASKS), min_length=1, description="comma-separated tasks to cut (v1.0 and v1.5)"
    )

    @field_validator("split")
    @classmethod
    def _all_splits(cls, split: str | None) -> str | None:
        return None if split == "all" else split

    @field_validator("tasks", mode="before")
    @classmethod
    def _comma_separated(cls, tasks: object) -> object:
        return tuple(t.strip() for t in tasks.split(",")) if isinstance(tasks, str) else tasks


class TaskCounts(BaseModel):
    items: int = 0
    samples_with_items: int = 0
    samples_without: dict[str, int] = Field(default_factory=dict, description="reason -> samples that gave none")
    events_left_out: dict[str, int] = Field(default_factory=dict, description="reason -> events not made items")


class FdbReport(ExportReport):
    """The export report plus, per task, the items written and what gave none (and why)."""

    tasks: dict[str, TaskCounts] = Field(default_factory=dict)


@dataclass
class _Item:
    """One benchmark item, in samples of the dialogue."""

    start: int  # first dialogue sample of input.wav
    stop: int  # dialogue audio ends here (exclusive); zeros follow
    tail: int  # zero samples appended
    keep: list[tuple[int, int]]  # user-channel ranges copied; the rest of the window is zero
    annotation: Callable[[Callable[[float], float]], object]  # task JSON, given dialogue time -> item time
    event: dict  # for index.json, dialogue seconds
    clips: dict[str, tuple[int, int]] = field(default_factory=dict)  # extra wavs: name -> user range
    overlap: tuple[int, int] | None = None  # v1.5: the event's user range, zeroed in clean_input.wav


@dataclass
class _Found:
    items: list[_Item] = field(default_factory=list)
    left_out: Counter = field(default_factory=Counter)  # events not made into items, by reason
    none_reason: str = ""  # why a sample gave no item, when it gave none


def _floor_turn(t: TimelineTurn) -> bool:
    return t.kind is TurnKind.turn and t.end_reason is not EndReason.yielded


def _n(t: float, sr: int) -> int:
    return round(t * sr)  # timeline times lie on the sample grid


def _pause_items(tl: Timeline, sr: int, o: FdbOptions) -> _Found:
    found, by_turn = _Found(), {}
    for e in tl.events:
        if isinstance(e, HesitationEvent) and e.kind == "pause":
            if e.channel is Channel.user:
                by_turn.setdefault(e.turn, []).append(e)
            else:
                found.left_out["pause in an agent turn (the benchmark's pauses are the user's)"] += 1
    for turn_id, pauses in by_turn.items():
        turn = tl.turn(turn_id)
        a, z = _n(turn.start, sr), _n(turn.end, sr)
        stop = min(_n(pauses[-1].end + o.pause_resume_s, sr), z)
        spans = [(p.start, p.end) for p in pauses]
        found.items.append(
            _Item(
                start=max(0, a - _n(o.lead_s, sr)),
                stop=stop,
                tail=0,
                keep=[(a, stop)],
                annotation=lambda rel, spans=spans: [
                    {"text": "[PAUSE]", "timestamp": [rel(s), rel(e)]} for s, e in spans
                ],
                event={"turn": turn_id, "pauses": [list(s) for s in spans]},
            )
        )
    if not found.items:
        found.none_reason = "no pause in a user turn"
    return found


def _backchannel_items(tl: Timeline, sr: int, o: FdbOptions) -> _Found:
    found, by_turn = _Found(), {}
    for e in tl.events:
        if isinstance(e, BackchannelEvent):
            host = tl.turn(e.during_turn)
            if e.channel is Channel.agent and host.channel is Channel.user and _floor_turn(host):
                by_turn.setdefault(e.during_turn, []).append(e)
            else:
                found.left_out["backchannel by the user (the benchmark scores the model's backchannels)"] += 1
    for turn_id, events in by_turn.items():
        turn = tl.turn(turn_id)
        a, z = _n(turn.start, sr), _n(turn.end, sr)
        spans = [(e.start, e.end, tl.turn(e.turn).spoken_text) for e in events]
        found.items.append(
            _Item(
                start=max(0, a - _n(o.lead_s, sr)),
                stop=z,
                tail=_n(o.lead_s, sr),
                keep=[(a, z)],
                annotation=lambda rel, spans=spans: [
                    {"text": text, "timestamp": [rel(s), rel(e)]} for s, e, text in spans
                ],
                event={"turn": turn_id, "backchannels": [[s, e] for s, e, _ in spans]},
            )
        )
    if not found.items:
        found.none_reason = "no agent backchannel during a user turn"
    return found


def _agent_reply(floor: list[TimelineTurn], turn: TimelineTurn, o: FdbOptions, found: _Found) -> TimelineTurn | None:
    """The agent's floor turn that answers `turn` (the next floor turn begun after it), or None with
    the reason counted: an item without a reply in its window has nothing to score (FDB counts it
    as a missed take-over)."""
    after = [t for t in floor if t.start > turn.start and t.id != turn.id]
    if not after:
        found.left_out["user turn with no reply (the dialogue ends)"] += 1
        return None
    if after[0].channel is not Channel.agent:
        found.left_out["the user speaks on before the agent replies"] += 1
        return None
    if after[0].start >= turn.end + o.tail_s:
        found.left_out["the agent's reply begins after the tail (tail_s)"] += 1
        return None
    return after[0]


def _turn_taking_items(tl: Timeline, sr: int, o: FdbOptions) -> _Found:
    found = _Found()
    floor = sorted((t for t in tl.turns if _floor_turn(t)), key=lambda t: t.start)
    for e in tl.events:
        if not (isinstance(e, EndOfTurnEvent) and e.channel is Channel.user):
            continue
        turn = tl.turn(e.turn)
        if turn.kind is not TurnKind.turn:
            continue
        reply = _agent_reply(floor, turn, o, found)
        if reply is None:
            continue
        a, z = _n(turn.start, sr), _n(turn.end, sr)
        end, onset = turn.end, max(reply.start, turn.end)
        found.items.append(
            _Item(
                start=max(0, a - _n(o.lead_s, sr)),
                stop=z,
                tail=_n(o.tail_s, sr),
                keep=[(a, z)],
                annotation=lambda rel, end=end, onset=onset: [
                    {"text": "[TURN-TAKING]", "timestamp": [rel(end), rel(onset)]}
                ],
                event={"turn": turn.id, "turn_end": end, "reply_turn": reply.id, "reply_start": reply.start},
            )
        )
    if not found.items:
        found.none_reason = "no completed user turn answered by the agent"
    return found


def _interruption_items(tl: Timeline, sr: int, o: FdbOptions) -> _Found:
    found = _Found()
    floor = sorted((t for t in tl.turns if _floor_turn(t)), key=lambda t: t.start)
    for e in tl.events:
        if not isinstance(e, BargeInEvent):
            continue
        if e.by is not Channel.user:
            found.left_out["barge-in by the agent (the benchmark's interruptions are the user's)"] += 1
            continue
        victim, interrupter = tl.turn(e.victim_turn), tl.turn(e.turn)
        if interrupter.end_reason is not EndReason.complete:
            found.left_out["the interrupting user turn was itself cut"] += 1
            continue
        # the user's last floor turn begun before the agent's turn (it may overlap the agent's start)
        before = [
            t
            for t in tl.turns
            if t.channel is Channel.user and _floor_turn(t) and t.start < victim.start and t.id != interrupter.id
        ]
        if not before:
            found.left_out["no user turn before the interrupted agent turn (no context)"] += 1
            continue
        if _agent_reply(floor, interrupter, o, found) is None:
            continue
        context = max(before, key=lambda t: t.start)
        ctx = (_n(context.start, sr), _n(context.end, sr))
        intr = (_n(interrupter.start, sr), _n(interrupter.end, sr))
        onset, end = e.onset, interrupter.end
        found.items.append(
            _Item(
                start=max(0, ctx[0] - _n(o.lead_s, sr)),
                stop=intr[1],
                tail=_n(o.tail_s, sr),
                keep=[ctx, intr],
                annotation=lambda rel, c=context.spoken_text, i=interrupter.spoken_text, s=onset, z=end: [
                    {"context": c, "interrupt": i, "timestamp": [rel(s), rel(z)]}
                ],
                event={
                    "context_turn": context.id,
                    "victim_turn": victim.id,
                    "interrupt_turn": interrupter.id,
                    "onset": onset,
                    "interrupt_end": end,
                },
                clips={"context.wav": ctx, "interrupt.wav": intr},
            )
        )
    if not found.items:
        found.none_reason = "no user barge-in with a context turn and an agent reply"
    return found


def _context_turn(tl: Timeline, host: TimelineTurn, exclude: int | None = None) -> TimelineTurn | None:
    """The user's floor turn the agent's `host` turn answers: the last begun before it."""
    before = [
        t for t in tl.turns if t.channel is Channel.user and _floor_turn(t) and t.start < host.start and t.id != exclude
    ]
    return max(before, key=lambda t: t.start) if before else None


def _overlap_items(tl: Timeline, sr: int, o: FdbOptions, task: str) -> _Found:
    """v1.5 items: the agent talks (answering the user's context turn) and the user's channel
    holds an overlap event it must handle: stop for an interruption, keep talking through a
    backchannel, side talk or background speech."""
    found = _Found()
    for e in tl.events:
        if isinstance(e, NonSpeechEvent) and task == "v1_5/background_speech":
            found.left_out["non-speech sound (no v1.5 subset)"] += 1
            continue
        if task == "v1_5/user_interruption" and isinstance(e, BargeInEvent) and e.by is Channel.user:
            intr = tl.turn(e.turn)
            host, text, span = tl.turn(e.victim_turn), intr.spoken_text, (e.onset, intr.end)
        elif task == "v1_5/user_backchannel" and isinstance(e, BackchannelEvent) and e.channel is Channel.user:
            host, text, span = tl.turn(e.during_turn), tl.turn(e.turn).spoken_text, (e.start, e.end)
        elif (task == "v1_5/talking_to_other" and isinstance(e, SideTalkEvent)) or (
            task == "v1_5/background_speech" and isinstance(e, BackgroundSpeechEvent)
        ):
            host, text, span = tl.turn(e.during_turn), e.text, (e.start, e.end)
            if host.channel is Channel.user:  # v1.5 overlaps the model's speech; this is in the user's turn
                found.left_out[f"{e.type.replace('_', ' ')} in the user's own turn (v1.5's is during the model's)"] += 1
                continue
        else:
            continue
        context = _context_turn(tl, host, exclude=getattr(e, "turn", None))
        if context is None:
            found.left_out["no user turn before the agent's turn (no context)"] += 1
            continue
        ctx, event = (_n(context.start, sr), _n(context.end, sr)), (_n(span[0], sr), _n(span[1], sr))
        found.items.append(
            _Item(
                start=max(0, ctx[0] - _n(o.lead_s, sr)),
                stop=event[1],
                tail=_n(o.tail_s, sr),
                keep=[ctx, event],
                annotation=lambda rel, c=context.spoken_text, t=text, s=span: {
                    "context_text": c,
                    "current_turn_text": t,
                    "timestamps": [rel(s[0]), rel(s[1])],
                },
                event={"type": e.type, "context_turn": context.id, "agent_turn": host.id, "span": list(span)},
                overlap=event,
            )
        )
    if not found.items:
        found.none_reason = f"no {task.removeprefix('v1_5/')} event during an agent turn after a user turn"
    return found


FINDERS: dict[str, Callable[[Timeline, int, FdbOptions], _Found]] = {
    "pause_handling": _pause_items,
    "backchannel": _backchannel_items,
    "smooth_turn_taking": _turn_taking_items,
    "user_interruption": _interruption_items,
    **{t: (lambda tl, sr, o, t=t: _overlap_items(tl, sr, o, t)) for t in V15_TASKS},
}


def _problem(sample: Sample) -> str | None:
    """Why a sample cannot be cut into items (damaged or inconsistent), or None."""
    tl, stems = sample.timeline, sample.stems
    if stems.ndim != 2 or stems.shape[1] != 2:
        return "audio is not two-channel (user, agent)"
    last = max((_n(t.end, sample.sample_rate) for t in tl.turns), default=0)
    if len(stems) < last:
        return "audio ends before the timeline's last turn (truncated)"
    ids = {t.id for t in tl.turns}
    refs = {getattr(e, name) for e in tl.events for name in ("turn", "during_turn", "victim_turn") if hasattr(e, name)}
    if not refs <= ids:
        return "a timeline event refers to a turn the timeline does not hold"
    return None


def gt_histogram(spans: Iterable[tuple[float, float]], duration: float) -> list[float]:
    """Reference backchannel distribution over an item, binned exactly as eval_backchannel.py
    (l. 120-134) bins a model's backchannels: counts per 0.2 s window, + epsilon, normalised."""
    counts = np.zeros(int(duration / BC_WINDOW_S) + 1)
    for s, e in spans:
        for i in range(int(s / BC_WINDOW_S), int(e / BC_WINDOW_S) + 1):
            if i < len(counts):
                counts[i] += 1
    counts = counts + BC_EPSILON
    return (counts / counts.sum()).tolist()


def _write_wav(path: Path, audio: np.ndarray) -> None:
    sf.write(path, to_pcm16(audio), FDB_SAMPLE_RATE, subtype="PCM_16")


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_item(folder: Path, task: str, item: _Item, sample: Sample) -> dict:
    sr, tl = sample.sample_rate, sample.timeline
    stems = sample.stems
    length = item.stop - item.start + item.tail
    user = np.zeros(length, np.float32)
    for a, z in item.keep:
        a, z = max(a, item.start), min(z, item.stop)
        user[a - item.start : z - item.start] = stems[a:z, Channel.user.index]
    agent = np.zeros(length, np.float32)
    agent_src = stems[item.start : item.start + length, Channel.agent.index]
    agent[: len(agent_src)] = agent_src
    # The reference holds only what can answer input.wav: an agent turn begun before the first focal
    # user turn (e.g. the agent's previous turn ending inside the lead) is silenced, else the
    # benchmark's scripts take its words for the reply (take-over counted, latency near 0).
    focal, window_end = item.keep[0][0], item.start + length
    silenced = [
        t for t in tl.turns if t.channel is Channel.agent and _n(t.start, sr) < focal and _n(t.end, sr) > item.start
    ]
    for t in silenced:
        agent[max(_n(t.start, sr), item.start) - item.start : min(_n(t.end, sr), window_end) - item.start] = 0

    def rel(t: float) -> float:
        return round((_n(t, sr) - item.start) / sr, 6)

    def at(n: int) -> int:  # dialogue sample -> sample of the written (benchmark-rate) item
        return round((n - item.start) * FDB_SAMPLE_RATE / sr)

    user16, agent16 = resample(user, sr, FDB_SAMPLE_RATE), resample(agent, sr, FDB_SAMPLE_RATE)
    folder.mkdir(parents=True)
    _write_wav(folder / "input.wav", user16)
    _write_wav(folder / "reference.wav", agent16)
    if item.overlap is not None:  # v1.5: the same input without the overlap event
        clean = user16.copy()
        clean[at(item.overlap[0]) : at(item.overlap[1])] = 0
        _write_wav(folder / "clean_input.wav", clean)
    for name, (a, z) in item.clips.items():
        _write_wav(folder / name, user16[at(a) : at(z)])  # the turn's own samples of input.wav
    _write_json(folder / TASK_FILES[task], item.annotation(rel))

    def in_input(w) -> bool:
        n0, n1 = _n(w.start, sr), _n(w.end, sr)
        return any(a <= n0 and n1 <= min(z, item.stop) for a, z in item.keep)

    left_out = {t.id for t in silenced}
    user_words = [w for w in tl.words if w.spoken and w.channel is Channel.user and in_input(w)]
    agent_words = [
        w
        for w in tl.words
        if w.spoken
        and w.channel is Channel.agent
        and w.turn not in left_out
        and w.start >= item.start / sr
        and w.end <= window_end / sr
    ]
    _write_json(
        folder / "transcription.json",
        [
            {"speaker": ch.index, "item": [{"text": w.word, "timestamp": [rel(w.start), rel(w.end)]} for w in ws]}
            for ch, ws in ((Channel.user, user_words), (Channel.agent, agent_words))
        ],
    )
    return {
        "sample_id": sample.id,
        "split": sample.meta.split,
        "user_voice": tl.voices.get(Channel.user),
        "agent_voice": tl.voices.get(Channel.agent),
        "window": [item.start / sr, window_end / sr],
        "duration": len(user16) / FDB_SAMPLE_RATE,
        "event": item.event,
        # marked as well as silenced: the agent turns begun before the focal turn, item seconds
        "reference_silenced": [
            {"turn": t.id, "span": [max(rel(t.start), 0.0), min(rel(t.end), length / sr)]} for t in silenced
        ],
    }


class FullDuplexBench(Exporter[FdbOptions]):
    """Evaluation items, not training shards: no token grid, no audio tokenizer."""

    name = "fdb"
    format_version = "1"
    outputs = ("index.json", *TASKS, "v1_5")
    own_rules = RULES
    options_model = FdbOptions
    report_model = FdbReport

    def rules(self) -> dict[str, Rule]:
        return {**RUN_RULES, **self.own_rules}

    def write(
        self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions, format_options: FdbOptions
    ) -> ExportReport:
        """Items for the chosen tasks under `out_dir/{task}/{ID}/`, `index.json` (every item's sample,
        event and window, and the per-task counts), `export.json` and `report.json`."""
        opts, tasks = format_options, list(format_options.tasks)
        report, counter, started = self.start(out_dir)
        assert isinstance(report, FdbReport)
        out_dir.mkdir(parents=True, exist_ok=True)
        excluded: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        counts = {
            t: {"items": 0, "samples_with_items": 0, "samples_without": Counter(), "events_left_out": Counter()}
            for t in tasks
        }
        index: dict[str, dict[str, dict]] = {t: {} for t in tasks}
        histograms: dict[str, list[float]] = {}
        sr = None
        for sample in samples:
            report.samples_in += 1
            if opts.split is not None and sample.meta.split != opts.split:
                reason = f"split {sample.meta.split!r} (exporting {opts.split!r})"
                excluded[reason] += 1
                counter.drop(sample.id, "fdb_other_split", reason)
                continue
            problem = _problem(sample)
            if problem is not None:
                rejected[problem] += 1
                counter.drop(sample.id, "fdb_damaged_sample", problem)
                continue
            used = False
            for task in tasks:
                found, c = FINDERS[task](sample.timeline, sample.sample_rate, opts), counts[task]
                c["events_left_out"].update(found.left_out)
                if not found.items:
                    c["samples_without"][found.none_reason] += 1
                    continue
                c["samples_with_items"] += 1
                used = True
                for item in found.items:
                    c["items"] += 1
                    item_id = str(c["items"])
                    entry = _write_item(out_dir / task / item_id, task, item, sample)
                    index[task][item_id] = entry
                    if task == "backchannel":
                        rate = sample.sample_rate
                        spans = [
                            ((_n(s, rate) - item.start) / rate, (_n(e, rate) - item.start) / rate)
                            for s, e in entry["event"]["backchannels"]
                        ]
                        histograms[item_id] = gt_histogram(spans, entry["duration"])
            if used:
                report.samples_out += 1
                report.dialogue_seconds += sample.timeline.duration
                sr = FDB_SAMPLE_RATE
        if histograms:
            _write_json(out_dir / "backchannel" / GT_DISTRIBUTION, histograms)
        summary: dict = {"samples": report.samples_in, "excluded": dict(excluded), "rejected": dict(rejected)}
        summary["tasks"] = {
            t: {k: dict(v) if isinstance(v, Counter) else v for k, v in c.items()} for t, c in counts.items()
        }
        summary["options"] = {k: getattr(opts, k) for k in INDEX_OPTIONS}
        _write_json(out_dir / "index.json", {"report": summary, "items": index})
        report.tasks = {t: TaskCounts.model_validate(c) for t, c in summary["tasks"].items()}
        sidecar = Sidecar(
            format=self.name,
            format_version=self.format_version,
            frame_rate=None,
            sample_rate=sr,
            source_run=options.source_run,
            layout="Full-Duplex-Bench v1.0: {task}/{ID}/ with input.wav (user channel), the task JSON, "
            "transcription.json, reference.wav (our agent); v1.5: v1_5/{subset}/{ID}/ with input.wav, "
            "clean_input.wav, metadata.json; index.json maps items to samples",
            options=dump_options(options),
        )
        return finish(out_dir, sidecar, report, counter, None, started)

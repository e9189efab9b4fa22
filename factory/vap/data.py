"""An export's audio tokens as two channel streams on the model's grid, and each dialogue's voice
activity from the source run's timeline: the truth the model is scored against comes from the run,
not from the tokens under test, so an exporter that shifts a channel is caught.

Layouts read (docs/exports/): `dgslm` (`unitA` user, `unitB` agent, one unit per frame),
`units-1s` (`user_audio` / `agent_audio`, per 1 s unit the codes of its frames), `moshi` with
`-o tokens=true` (`codes` [1 + 2 n_q, T]: text, agent codebooks, user codebooks) and `lslm` (one
row per agent turn: `speak` the agent's codes from `first_frame`, its last id EOS or IRQ, and
`listen` the user's codes over the same frames; frames outside every agent turn are unknown there
and read as the padding id)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from factory.export.errors import ExportError
from factory.export.output import read_rows, read_sidecar
from factory.models import Channel, Timeline
from factory.run.read import read_sample_metas
from factory.timeline.frames import frame_view
from factory.vap.measures import MODEL_RATE

FORMATS = ("dgslm", "units-1s", "moshi", "lslm")


@dataclass(frozen=True)
class Dialogue:
    """One dialogue on the model grid: `tokens` (2, T, slots) int64 ids (channel 0 = user, 1 =
    agent; a slot per codebook and export frame within a model frame, padding id where unknown),
    `activity` (2, T) bool from the run's timeline, and `text`: where its words come from (the
    source dialogue of a dataset-sourced sample, `dataset/dialogue id`; else its own id), so the
    held-out split never holds words the model was trained on."""

    id: str
    split: str
    tokens: np.ndarray
    activity: np.ndarray
    text: str = ""


@dataclass(frozen=True)
class Streams:
    format: str
    export_rate: float
    vocab: int  # ids 0..vocab-1; vocab - 1 is the padding id
    slots: int
    dialogues: list[Dialogue]

    @property
    def pad(self) -> int:
        return self.vocab - 1


def _codes_2d(x: Any) -> np.ndarray:
    a = np.asarray(x, np.int64)
    return a[:, None] if a.ndim == 1 else a


def _export_rows(export_dir: Path, fmt: str, n_q_hint: int | None) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """id -> (split, user codes [T, q], agent codes [T, q]) at the export's rate; for lslm the
    codes hold -1 outside the agent's turns."""
    out: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    if fmt == "dgslm":
        for r in read_rows(export_dir, ["id", "split", "unitA", "unitB"]):
            out[r["id"]] = (r["split"], _codes_2d(r["unitA"]), _codes_2d(r["unitB"]))
    elif fmt == "units-1s":
        for r in read_rows(export_dir, ["id", "split", "user_audio", "agent_audio"]):
            user = np.asarray(r["user_audio"], np.int64).reshape(-1, 1)
            agent = np.asarray(r["agent_audio"], np.int64).reshape(-1, 1)
            out[r["id"]] = (r["split"], user, agent)
    elif fmt == "moshi":
        if not (export_dir / "data").is_dir():
            raise ExportError(f"{export_dir}: a moshi export without token streams: export it with -o tokens=true")
        for r in read_rows(export_dir, ["id", "split", "codes"]):
            codes = np.asarray(r["codes"], np.int64)
            n_q = n_q_hint or (codes.shape[0] - 1) // 2
            out[r["id"]] = (r["split"], codes[1 + n_q : 1 + 2 * n_q].T, codes[1 : 1 + n_q].T)
    elif fmt == "lslm":
        turns: dict[str, list[dict]] = {}
        for r in read_rows(export_dir, ["sample_id", "split", "first_frame", "speak", "listen"]):
            if r["listen"] and isinstance(r["listen"][0], list):
                raise ExportError(
                    f"{export_dir}: lslm with listen=features has no user tokens: export -o listen=tokens"
                )
            turns.setdefault(r["sample_id"], []).append(r)
        for sid, rows in turns.items():
            n = max(r["first_frame"] + len(r["speak"]) for r in rows)
            user, agent = np.full((n, 1), -1, np.int64), np.full((n, 1), -1, np.int64)
            for r in rows:
                first, speak = r["first_frame"], r["speak"][:-1]  # the last id is EOS or IRQ, not audio
                agent[first : first + len(speak), 0] = speak
                user[first : first + len(r["listen"]), 0] = r["listen"]
            out[sid] = (rows[0]["split"], user, agent)
    else:
        raise ExportError(f"smoke-train reads the layouts {', '.join(FORMATS)}; {export_dir} is {fmt!r}")
    return out


def _to_grid(codes: np.ndarray, group: int, n: int, pad: int) -> np.ndarray:
    """[T_export, q] codes -> [n, group * q] on the model grid (`group` export frames per model
    frame), unknown or missing frames as `pad`."""
    need = n * group
    codes = np.where(codes < 0, pad, codes)[:need]
    if len(codes) < need:
        codes = np.concatenate([codes, np.full((need - len(codes), codes.shape[1]), pad, np.int64)])
    return codes.reshape(n, group * codes.shape[1])


def load_streams(
    export_dir: Path,
    run: str | None = None,
    storage_options: dict[str, Any] | None = None,
    timelines: Mapping[str, Timeline] | None = None,
) -> Streams:
    """The export's dialogues on the model grid with their activity from `timelines` when given,
    else from `run`'s (default the export's own source run, from its sidecar)."""
    export_dir = Path(export_dir)
    sidecar = read_sidecar(export_dir)
    run = run or sidecar.source_run
    if timelines is None and not run:
        raise ExportError(f"{export_dir} names no source run: give the run (--run) for the voice-activity truth")
    rate = sidecar.frame_rate or 0.0
    group = rate / MODEL_RATE
    if group < 1 or abs(group - round(group)) > 1e-9:
        raise ExportError(f"smoke-train needs a frame rate that is a whole multiple of {MODEL_RATE} Hz, not {rate}")
    group = round(group)
    n_q = (sidecar.audio_tokenizer or {}).get("n_q")
    rows = _export_rows(export_dir, sidecar.format, n_q if isinstance(n_q, int) else None)
    if not rows:
        raise ExportError(f"{export_dir} holds no sequence")
    texts: dict[str, str] = {}
    if timelines is None:
        metas = list(read_sample_metas(str(run), verify=False, storage_options=storage_options))
        timelines = {m.id: m.timeline for m in metas}
        texts = {
            m.id: f"{src.dataset}/{src.dialogue_id}"
            for m in metas
            if (src := m.script.source) is not None and src.kind == "dataset"
        }
    missing = sorted(set(rows) - set(timelines))
    if missing:
        raise ExportError(
            f"{len(missing)} exported dialogues have no timeline in {run or 'the timelines given'} (e.g. {missing[0]})"
        )
    pad = max(int(max(u.max(initial=-1), a.max(initial=-1))) for _, u, a in rows.values()) + 1
    dialogues = []
    for sid in sorted(rows):
        split, user, agent = rows[sid]
        activity = frame_view(timelines[sid], MODEL_RATE).activity
        n = activity.shape[1]
        tokens = np.stack([_to_grid(user, group, n, pad), _to_grid(agent, group, n, pad)])
        dialogues.append(Dialogue(sid, split, tokens, activity, texts.get(sid, sid)))
    return Streams(sidecar.format, rate, pad + 1, dialogues[0].tokens.shape[2], dialogues)


def shift_channel(streams: Streams, channel: Channel, seconds: float) -> Streams:
    """A control: every dialogue's `channel` tokens delayed by `seconds` (the first frames unknown,
    the padding id), the other channel and the activity (the truth) left as they were."""
    k = math.ceil(round(seconds * MODEL_RATE, 6))
    ch = channel.index
    shifted = []
    for d in streams.dialogues:
        tokens = d.tokens.copy()
        tokens[ch, k:] = d.tokens[ch, : max(d.tokens.shape[1] - k, 0)]
        tokens[ch, :k] = streams.pad
        shifted.append(replace(d, tokens=tokens))
    return replace(streams, dialogues=shifted)


def held_out_split(dialogues: list[Dialogue]) -> tuple[list[Dialogue], list[Dialogue]]:
    """(train, held out): the run's train split against every other split; a run with only a train
    split holds out the last fifth (by id) of its texts (`Dialogue.text`): a dataset-sourced run
    draws each source dialogue for several samples, and a held-out sample whose words were trained
    on would score memorised turn ends, not turn-taking. One text per dialogue (an LLM's run): its
    last fifth by id."""
    train = [d for d in dialogues if d.split == "train"]
    held = [d for d in dialogues if d.split != "train"]
    if not held:
        texts = sorted({d.text or d.id for d in train})
        out = set(texts[len(texts) - max(1, len(texts) // 5) :])
        held = [d for d in train if (d.text or d.id) in out]
        train = [d for d in train if (d.text or d.id) not in out]
    return train, held

"""units-1s: the dialogue as 1-second units, each channel with its state per unit (MiniCPM-o
duplex style).

Spec (source: OpenBMB/minicpm-o-4_5-pytorch-simple-demo@c7e1660 MiniCPMO45/modeling_minicpmo.py
— the duplex unit `<unit>[user audio]<|listen|></unit>` or `<unit>[user audio]<|speak|> text
<|chunk_eos|></unit>`, `<|turn_eos|>` ending a turn; `<|interrupt|>` is in its vocabulary;
shared/reference/token-layouts.md section 4). MiniCPM-o feeds the user audio as Whisper
embeddings and speaks through a TTS head on its hidden states; here both channels are tokens of
the export's audio tokenizer (default the embedded units at 25 Hz, `-o frame_rate=50`), so a
unit holds 25 codes per channel (first codebook when the tokenizer has several).

Unit u covers [u, u + 1) s; units = ceil(duration). Per channel c and unit u, one state, the
first that holds:
  interrupt  the other channel barges in on c's turn in this unit (its onset is in the unit): c must stop;
  turn_end   a turn (or backchannel) of c that completed or yielded ends in this unit;
  speak      a spoken word of c overlaps the unit;
  ignore     sound on c's channel the other must not answer (side talk, background speech,
             non-speech: the timeline's ignore spans) overlaps the unit;
  listen     otherwise.
Text per unit: c's spoken words that START in the unit (so each word is in exactly one unit).

Flat sequence for the agent (`input_ids`), per unit:
  <unit> [user codes of the unit] <|listen|> </unit>                       (listen)
  <unit> [user codes] <|speak|> [agent text ids] <|chunk_eos|> </unit>     (speak)
  <unit> [user codes] <|speak|> [agent text ids] <|turn_eos|> </unit>      (turn_end)
  <unit> [user codes] <|speak|> [agent text ids] <|interrupt|> </unit>     (interrupt)
Ids: specials first, then the text vocabulary, then the audio codes (sidecar `id_layout`).
Beside it, per-unit arrays for both channels: user_audio / agent_audio (list<list<int32>>),
user_state / agent_state (list<string>), user_text / agent_text (list<list<int32>>, raw text ids).
The last unit's audio past the end is the tokens of digital silence (rule units1s_last_unit_padded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from factory.export.errors import ExportError
from factory.export.exporter import Exporter
from factory.export.grid import fit_frames, n_frames, samples_per_frame, silence_tokens
from factory.export.options import ExportOptions, FrameRateOptions, dump_options
from factory.export.output import Decoded, ShardWriter, finish, read_row, read_sidecar
from factory.export.report import ExportReport, Rule, RuleCounter, Timer, usable
from factory.export.tokenizers import channel_tokenizer, text_audio_sidecar, text_tokenizer_for, tokenized
from factory.models import (
    BargeInEvent,
    Channel,
    EndReason,
    Sample,
    Timeline,
    TimelineWord,
)

NAME = "units-1s"
FORMAT_VERSION = "1"
FRAME_RATE = 25.0
UNIT_S = 1.0
SPECIALS = ["<unit>", "</unit>", "<|listen|>", "<|speak|>", "<|chunk_eos|>", "<|turn_eos|>", "<|interrupt|>"]
UNIT, UNIT_END, LISTEN, SPEAK, CHUNK_EOS, TURN_EOS, INTERRUPT = range(len(SPECIALS))
STATES = ("listen", "speak", "turn_end", "interrupt", "ignore")
ENDING = {"speak": CHUNK_EOS, "turn_end": TURN_EOS, "interrupt": INTERRUPT}
RULES = {
    "units1s_last_unit_padded": Rule("pad", "the last unit is completed to 1 s with the tokens of digital silence"),
}


def n_units(timeline: Timeline) -> int:
    return max(math.ceil(round(timeline.duration / UNIT_S, 6)), 1)


def _unit(t: float) -> int:
    return int(math.floor(round(t / UNIT_S, 9)))


def spoken_words(timeline: Timeline, channel: Channel, counter: RuleCounter | None = None) -> list[TimelineWord]:
    """`channel`'s spoken words in time order, without those starting at or after the end of the
    audio (rule word_past_end; a word ending after it counts as word_end_clipped)."""
    out = []
    for w in sorted((w for w in timeline.words if w.spoken and w.channel is channel), key=lambda w: w.start):
        if w.start >= timeline.duration:
            if counter is not None:
                counter.add("word_past_end")
            continue
        if w.end > timeline.duration and counter is not None:
            counter.add("word_end_clipped")
        out.append(w)
    return out


def states(timeline: Timeline, channel: Channel) -> list[str]:
    """The state of `channel` in each unit (rule in the module docstring)."""
    n = n_units(timeline)
    out = ["listen"] * n
    for e in timeline.ignored_events():  # the lowest state but listen: anything else in the unit wins
        if e.channel is channel:
            for u in range(_unit(e.start), min(_unit(max(e.end - 1e-9, e.start)), n - 1) + 1):
                out[u] = "ignore"
    for w in spoken_words(timeline, channel):
        for u in range(_unit(w.start), min(_unit(max(w.end - 1e-9, w.start)), n - 1) + 1):
            out[u] = "speak"
    for t in timeline.turns:
        if t.channel is channel and t.end_reason is not EndReason.interrupted:
            out[min(_unit(max(t.end - 1e-9, t.start)), n - 1)] = "turn_end"
    for e in timeline.events:
        if isinstance(e, BargeInEvent) and e.by is channel.other:
            out[min(_unit(e.onset), n - 1)] = "interrupt"
    return out


def unit_text(
    timeline: Timeline, channel: Channel, encode: Callable[[str], list[int]], counter: RuleCounter | None = None
) -> list[list[int]]:
    """Text ids per unit: the words of `channel` that start in it, each tokenized with its leading space."""
    out: list[list[int]] = [[] for _ in range(n_units(timeline))]
    for k, w in enumerate(spoken_words(timeline, channel, counter)):
        out[min(_unit(w.start), len(out) - 1)] += encode(w.word if k == 0 else " " + w.word)
    return out


def _per_unit(codes: np.ndarray, n: int, per: int, silence: int) -> list[list[int]]:
    need = n * per
    if len(codes) < need:
        codes = np.concatenate([codes, np.full(need - len(codes), silence, np.int64)])
    return codes[:need].reshape(n, per).astype(np.int32).tolist()


def _schema() -> pa.Schema:
    unit_ints = pa.list_(pa.list_(pa.int32()))
    return pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("duration", pa.float64()),
            ("n_units", pa.int32()),
            ("input_ids", pa.list_(pa.int32())),
            ("user_audio", unit_ints),
            ("agent_audio", unit_ints),
            ("user_state", pa.list_(pa.string())),
            ("agent_state", pa.list_(pa.string())),
            ("user_text", unit_ints),
            ("agent_text", unit_ints),
        ]
    )


def flat(user_audio, agent_state, agent_text, text_offset: int, audio_offset: int) -> list[int]:
    ids: list[int] = []
    for codes, state, text in zip(user_audio, agent_state, agent_text):
        ids += [UNIT, *(c + audio_offset for c in codes)]
        if state == "listen":
            ids += [LISTEN]
        else:
            ids += [SPEAK, *(t + text_offset for t in text), ENDING[state]]
        ids.append(UNIT_END)
    return ids


class Units1sOptions(FrameRateOptions):
    frame_rate: float = Field(
        default=FRAME_RATE, gt=0, description="code frames per second: a whole number per 1 s unit"
    )

    @field_validator("frame_rate")
    @classmethod
    def _whole_frames_per_unit(cls, rate: float) -> float:
        if abs(rate * UNIT_S - round(rate * UNIT_S)) > 1e-9:
            raise ValueError(f"units-1s needs whole frames per 1 s unit: frame_rate 25 or 50, not {rate}")
        return rate


class Units1s(Exporter[Units1sOptions]):
    name = NAME
    format_version = FORMAT_VERSION
    frame_rate = FRAME_RATE
    needs_audio_tokens = True
    own_rules = RULES
    options_model = Units1sOptions

    def write(
        self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions, format_options: Units1sOptions
    ) -> ExportReport:
        report, counter, started = self.start(out_dir)
        tok, samples = channel_tokenizer(options, format_options.frame_rate, samples, out_dir)
        rate = tok.frame_rate
        per = rate * UNIT_S
        if abs(per - round(per)) > 1e-9:
            raise ExportError(f"units-1s needs whole frames per 1 s unit; {rate} Hz gives {per}")
        per = round(per)
        text_tok = text_tokenizer_for(options)
        text_offset, audio_offset = len(SPECIALS), len(SPECIALS) + text_tok.vocab_size
        writer = ShardWriter(out_dir, _schema(), options.shard_size)
        timer, sr, silence = Timer(), None, {}
        for s, (user, agent) in tokenized(
            usable(samples, report, counter), tok, options.tokenize_batch, options.use_augmented, timer
        ):
            sr, tl = s.sample_rate, s.timeline
            samples_per_frame(sr, rate, counter)
            if sr not in silence:
                silence[sr] = int(silence_tokens(tok, sr)[0, 0])
            n, nf = n_units(tl), n_frames(tl, rate)
            if nf < n * per:
                counter.add("units1s_last_unit_padded")
            user_audio = _per_unit(fit_frames(user, nf, counter)[0], n, per, silence[sr])
            agent_audio = _per_unit(fit_frames(agent, nf, counter)[0], n, per, silence[sr])
            st = {ch: states(tl, ch) for ch in Channel}
            text = {ch: unit_text(tl, ch, text_tok.encode, counter) for ch in Channel}
            writer.add(
                s.meta.split,
                {
                    "id": s.id,
                    "split": s.meta.split,
                    "duration": tl.duration,
                    "n_units": n,
                    "input_ids": flat(user_audio, st[Channel.agent], text[Channel.agent], text_offset, audio_offset),
                    "user_audio": user_audio,
                    "agent_audio": agent_audio,
                    "user_state": st[Channel.user],
                    "agent_state": st[Channel.agent],
                    "user_text": text[Channel.user],
                    "agent_text": text[Channel.agent],
                },
            )
            report.samples_out += 1
            report.dialogue_seconds += tl.duration
        report.seconds_tokenize = timer.seconds
        sidecar = text_audio_sidecar(
            name=NAME,
            version=FORMAT_VERSION,
            frame_rate=rate,
            sample_rate=sr,
            specials=SPECIALS,
            text_tok=text_tok,
            text_offset=text_offset,
            audio_tok=tok,
            audio_offset=audio_offset,
            export_options=options,
            out_dir=out_dir,
            layout="1 s units: <unit> user codes (<|listen|> | <|speak|> agent text <|chunk_eos|>|<|turn_eos|>|"
            "<|interrupt|>) </unit>; per-unit arrays and states for both channels",
            columns={
                "input_ids": "the agent's flat MiniCPM-o style sequence",
                "user_state": f"one of {STATES} per unit",
                "agent_state": f"one of {STATES} per unit",
            },
            options={**dump_options(options), "unit_s": UNIT_S, "states": list(STATES)},
        )
        return finish(out_dir, sidecar, report, counter, writer, started)

    def decode(self, out_dir: Path, sample_id: str) -> Decoded:
        """One row per unit: each channel's state and text, and its audio codes."""
        sidecar = read_sidecar(out_dir)
        row = read_row(out_dir, sample_id)
        text_tok = text_tokenizer_for(ExportOptions(text_tokenizer=sidecar.options.get("text_tokenizer")))

        def words(ids: list[int]) -> str:
            return text_tok.decode(ids).strip() if ids else ""

        return Decoded(
            id=sample_id,
            format=NAME,
            frame_rate=1 / UNIT_S,
            tracks={
                "user state": row["user_state"],
                "user text": [words(t) for t in row["user_text"]],
                "agent state": row["agent_state"],
                "agent text": [words(t) for t in row["agent_text"]],
                "user codes": [" ".join(map(str, c[:6])) + " …" for c in row["user_audio"]],
                "agent codes": [" ".join(map(str, c[:6])) + " …" for c in row["agent_audio"]],
            },
        )

"""BayLing-Duplex: one flat token sequence of 0.8 s blocks, 10 user audio : 5 text : 10 agent audio.

Spec (sources: BayLing-Models/BayLing-Duplex@41669ac bayling_duplex/duplex.py — `interleave_ratio
"10:5:10"`, `stream_audio_tokens`, `_extract_segments`, `_build_segment`, `time_offset = x / 12.5`
— and its README; shared/reference/token-layouts.md section 3a):

  block b = [10 user audio tokens] [5 text-channel tokens] [10 agent audio tokens]

* Audio: one codebook at 12.5 Hz (GLM-4-Voice's tokenizer in the original; here the export's
  audio tokenizer, first codebook when it has several). User block b holds the user's frames
  [10b, 10b + 10), i.e. [0.8b, 0.8(b + 1)) s.
* The agent side lags one block: the model hears user block b, then writes its text and audio for
  the next 0.8 s (`_build_segment`: text slot j starts at j * 10/5 / 12.5 + 0.8 s; a segment's
  audio is the agent audio of its blocks). So text slot s covers [0.8 + 0.16 s, 0.8 + 0.16 (s + 1))
  and agent block b the agent's frames [10(b + 1), 10(b + 2)). Agent audio is written in EVERY
  block, silent or not (the original's unconditional audio loop).
* Text channel, one token per 160 ms slot: `[SILENCE]` while the agent does not hold a turn;
  `<|assistant|>` in the slot of an agent turn's start; then the turn's spoken text, contiguous
  (turn-level, as GLM-4-Voice writes text ahead of its audio); `[PAD]` after the text until the
  turn's end; `[EPAD]` in the slot of its end. A barge-in ends the agent's turn at its stop time:
  `[EPAD]` there, and the agent's next turn opens with a new `<|assistant|>`. Agent backchannels
  and yielded interruption attempts are agent speech, so they are short `<|assistant|>..[EPAD]`
  segments; the user's backchannels and failed interruptions live in the user audio only and do
  not end the agent's segment.
* Blocks: ceil(duration / 0.8); the last block is completed with the tokens of digital silence.

Ids in the exported sequence (sidecar `id_layout`): the 4 specials, then the text vocabulary at
`text` offset, then the audio codes at `audio` offset. For GLM-4, map specials and `<|audio_k|>`
by name (the sidecar lists them). Shards: parquet `data/<split>-NNNNN.parquet`, one row per
dialogue: id, split, duration, n_blocks, input_ids (list<int32>).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa

from factory.export.errors import ExportError
from factory.export.exporter import Exporter
from factory.export.grid import fit_frames, frame_of, n_frames, samples_per_frame, silence_tokens
from factory.export.options import ExportOptions, FormatOptions, dump_options
from factory.export.output import Decoded, ShardWriter, Sidecar, finish, read_row, read_sidecar
from factory.export.report import ExportReport, Rule, RuleCounter, Timer, usable
from factory.export.tokenizers import channel_tokenizer, text_audio_sidecar, text_tokenizer_for, tokenized
from factory.models import Channel, EndReason, Sample, Timeline

NAME = "bayling"
FORMAT_VERSION = "1"
FRAME_RATE = 12.5
USER, TEXT, AGENT = 10, 5, 10  # tokens per block
BLOCK = USER + TEXT + AGENT
BLOCK_S = USER / FRAME_RATE  # 0.8 s
SLOT_S = BLOCK_S / TEXT  # 0.16 s
LAG_S = BLOCK_S  # the agent side of block b covers [0.8 (b + 1), 0.8 (b + 2))
SPECIALS = ["[SILENCE]", "<|assistant|>", "[PAD]", "[EPAD]"]
SILENCE, ASSISTANT, PAD, EPAD = range(4)

RULES = {
    "bayling_last_block_padded": Rule(
        "pad", "the last block is completed to 0.8 s: audio past the end is the tokens of digital silence"
    ),
    "bayling_agent_before_first_block": Rule(
        "drop",
        "agent speech in the first 0.8 s has no agent block (the agent side lags one block): its audio "
        "tokens are dropped, and a turn starting there opens in slot 0",
    ),
    "bayling_turn_start_shifted": Rule(
        "shift", "an agent turn whose start falls in or before the previous turn's [EPAD] slot opens one slot later"
    ),
    "bayling_turn_end_shifted": Rule(
        "shift", "a turn shorter than a slot ends (EPAD) in the slot after its <|assistant|>"
    ),
    "bayling_text_truncated": Rule(
        "drop",
        "an interrupted turn's text tokens that do not fit between <|assistant|> and its [EPAD] are dropped "
        "(the stop time wins)",
    ),
    "bayling_epad_after_text": Rule(
        "shift",
        "a completed turn (or backchannel) whose text needs more slots than it lasts ends with [EPAD] right "
        "after its last text token (the text wins; GLM-4-Voice writes text ahead of speech)",
    ),
}


def n_blocks(timeline: Timeline) -> int:
    return max(-(-n_frames(timeline, FRAME_RATE) // USER), 1)


def slot_of(t: float) -> int:
    """The text slot an instant falls on (slot centres, like the frame view), before clamping."""
    return frame_of(t - LAG_S, 1 / SLOT_S) if t >= LAG_S else -1


def text_channel(
    timeline: Timeline, encode: Callable[[str], list[int]], counter: RuleCounter, n_slots: int
) -> np.ndarray:
    """The text-channel ids (special ids < 4, text ids unshifted + 4) of one dialogue."""
    out = np.full(n_slots, SILENCE, np.int64)
    last_epad = -1
    for turn in sorted((t for t in timeline.turns if t.channel is Channel.agent), key=lambda t: t.start):
        a = slot_of(turn.start)
        if a < 0:
            counter.add("bayling_agent_before_first_block")
            a = 0
        if a <= last_epad:
            counter.add("bayling_turn_start_shifted")
            a = last_epad + 1
        e = slot_of(turn.end)
        if e <= a:
            counter.add("bayling_turn_end_shifted")
            e = a + 1
        if e >= n_slots:  # cannot happen for turns inside the audio; counted, never silent
            counter.add("tokens_past_end", e - n_slots + 1)
            e = n_slots - 1
            if a >= e:
                continue
        tokens = [len(SPECIALS) + i for i in encode(turn.spoken_text)]
        room = e - a - 1
        if len(tokens) > room and turn.end_reason is not EndReason.interrupted and a + 1 + len(tokens) < n_slots:
            counter.add("bayling_epad_after_text")
            e = a + 1 + len(tokens)
        elif len(tokens) > room:
            counter.add("bayling_text_truncated", len(tokens) - room)
            tokens = tokens[:room]
        out[a] = ASSISTANT
        out[a + 1 : e] = PAD
        out[a + 1 : a + 1 + len(tokens)] = tokens
        out[e] = EPAD
        last_epad = e
    return out


def _schema() -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("duration", pa.float64()),
            ("n_blocks", pa.int32()),
            ("input_ids", pa.list_(pa.int32())),
        ]
    )


def sequence(
    sample: Sample, user: np.ndarray, agent: np.ndarray, silence: int, text: np.ndarray, counter: RuleCounter
) -> np.ndarray:
    """Interleave the streams (user/agent [T] codes at 12.5 Hz from 0 s, text ids per slot)."""
    tl = sample.timeline
    b = n_blocks(tl)
    n = n_frames(tl, FRAME_RATE)
    user, agent = fit_frames(user, n, counter)[0], fit_frames(agent, n, counter)[0]
    if any(w.spoken and w.channel is Channel.agent and w.start < LAG_S for w in tl.words):
        counter.add("bayling_agent_before_first_block")
    agent = agent[USER:]  # one block of lag
    need = b * USER
    if len(user) < need or len(agent) < need:
        counter.add("bayling_last_block_padded")
    user = np.concatenate([user, np.full(max(need - len(user), 0), silence)])[:need]
    agent = np.concatenate([agent, np.full(max(need - len(agent), 0), silence)])[:need]
    blocks = np.concatenate([user.reshape(b, USER), text.reshape(b, TEXT), agent.reshape(b, AGENT)], axis=1)
    return blocks.reshape(-1)


class Bayling(Exporter[FormatOptions]):
    """BayLing-Duplex's layout is fixed (12.5 Hz, 10:5:10): no format options."""

    name = NAME
    format_version = FORMAT_VERSION
    frame_rate = FRAME_RATE
    needs_audio_tokens = True
    own_rules = RULES
    options_model = FormatOptions

    def write(
        self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions, format_options: FormatOptions
    ) -> ExportReport:
        report, counter, started = self.start(out_dir)
        audio_tok, samples = channel_tokenizer(options, FRAME_RATE, samples, out_dir)
        if abs(audio_tok.frame_rate - FRAME_RATE) > 1e-9:
            raise _rate_error(audio_tok.frame_rate)
        text_tok = text_tokenizer_for(options)
        text_offset = len(SPECIALS)
        audio_offset = text_offset + text_tok.vocab_size
        writer = ShardWriter(out_dir, _schema(), options.shard_size)
        timer, silence_cache, sr = Timer(), {}, None
        stream = tokenized(
            usable(samples, report, counter), audio_tok, options.tokenize_batch, options.use_augmented, timer
        )
        for s, (user, agent) in stream:
            user, agent = user[:1], agent[:1]  # one codebook (the first: Mimi's semantic one)
            sr = s.sample_rate
            samples_per_frame(sr, FRAME_RATE, counter)
            if sr not in silence_cache:
                silence_cache[sr] = int(silence_tokens(audio_tok, sr)[0, 0])
            text = text_channel(s.timeline, text_tok.encode, counter, n_blocks(s.timeline) * TEXT)
            ids = sequence(
                s, user + audio_offset, agent + audio_offset, silence_cache[sr] + audio_offset, text, counter
            )
            writer.add(
                s.meta.split,
                {
                    "id": s.id,
                    "split": s.meta.split,
                    "duration": s.timeline.duration,
                    "n_blocks": n_blocks(s.timeline),
                    "input_ids": ids.astype(np.int32).tolist(),
                },
            )
            report.samples_out += 1
            report.dialogue_seconds += s.timeline.duration
        report.seconds_tokenize = timer.seconds
        sidecar = text_audio_sidecar(
            name=NAME,
            version=FORMAT_VERSION,
            frame_rate=FRAME_RATE,
            sample_rate=sr,
            specials=SPECIALS,
            text_tok=text_tok,
            text_offset=text_offset,
            audio_tok=audio_tok,
            audio_offset=audio_offset,
            export_options=options,
            out_dir=out_dir,
            layout="per 0.8 s block: 10 user audio, 5 text channel, 10 agent audio (agent side lags one block)",
            columns={"input_ids": "the flat sequence, blocks of 25 ids", "n_blocks": "blocks of 0.8 s"},
            options={**dump_options(options), "interleave_ratio": "10:5:10", "lag_s": LAG_S},
        )
        return finish(out_dir, sidecar, report, counter, writer, started)

    def decode(self, out_dir: Path, sample_id: str) -> Decoded:
        """The sequence on the absolute 12.5 Hz grid: user audio, text channel, agent audio."""
        sidecar = read_sidecar(out_dir)
        row = read_row(out_dir, sample_id)
        parts = split_blocks(row["input_ids"], sidecar)
        text_tok = text_tokenizer_for(ExportOptions(text_tokenizer=sidecar.options.get("text_tokenizer")))
        n = len(parts["user"])
        text = [""] * n
        for slot, t in enumerate(parts["text"].tolist()):
            frame = round(slot_time(slot) * FRAME_RATE)
            if frame < n:
                text[frame] = SPECIALS[t] if t < len(SPECIALS) else repr(text_tok.decode([t - len(SPECIALS)]))
        state = ["listen"] * n
        for a, e, _ in segments(parts["text"]):
            first, last = round(slot_time(a) * FRAME_RATE), round(slot_time(e) * FRAME_RATE)
            state[first : min(last, n)] = ["speak"] * (min(last, n) - first)
        agent = [""] * n
        for i, code in enumerate(parts["agent"].tolist()):
            if i + USER < n:
                agent[i + USER] = str(code)
        return Decoded(
            id=sample_id,
            format=NAME,
            frame_rate=FRAME_RATE,
            tracks={
                "user audio": [str(c) for c in parts["user"].tolist()],
                "text": text,
                "agent audio": agent,
                "agent state": state,
            },
        )


def _rate_error(rate: float) -> ExportError:
    return ExportError(f"bayling needs a 12.5 Hz audio tokenizer (GLM-4-Voice's rate); this one runs at {rate} Hz")


# --------------------------------------------------------------------------- reading back
def split_blocks(input_ids, sidecar: Sidecar) -> dict[str, np.ndarray]:
    """A flat sequence -> user / agent codes (absolute 12.5 Hz frames from 0 s and from 0.8 s)
    and the text channel (one id per slot, specials < 4, text ids shifted by the text offset)."""
    ids = np.asarray(input_ids, np.int64)
    if len(ids) % BLOCK:
        raise ValueError(f"sequence of {len(ids)} ids is not whole blocks of {BLOCK}")
    blocks = ids.reshape(-1, BLOCK)
    audio0 = sidecar.id_layout["audio"][0]
    return {
        "user": blocks[:, :USER].reshape(-1) - audio0,
        "text": blocks[:, USER : USER + TEXT].reshape(-1),
        "agent": blocks[:, USER + TEXT :].reshape(-1) - audio0,
    }


def segments(text: np.ndarray) -> list[tuple[int, int, list[int]]]:
    """(slot of <|assistant|>, slot of [EPAD], text ids between) for each agent segment."""
    out, start, words = [], None, []
    for slot, t in enumerate(text.tolist()):
        if t == ASSISTANT:
            start, words = slot, []
        elif t == EPAD and start is not None:
            out.append((start, slot, words))
            start = None
        elif start is not None and t >= len(SPECIALS):
            words.append(t - len(SPECIALS))
    return out


def slot_time(slot: int) -> float:
    """Start of a text slot in the dialogue's time."""
    return LAG_S + slot * SLOT_S

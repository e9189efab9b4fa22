"""LSLM ("Language Model Can Listen While Speaking", Ma et al. 2024): per agent turn, the speaking
channel's tokens ending in EOS, or in IRQ when the user interrupts; the listening channel beside it.

Spec (source: the paper, arXiv 2408.02622, sections 3-4; shared/reference/token-layouts.md
section 4 — no released code):
* Speaking channel: discrete tokens of the agent's speech (vq-wav2vec in the paper; here the
  export's audio tokenizer, default the embedded units at 50 Hz, `-o frame_rate=25` or 12.5 for
  coarser), first codebook. Vocabulary = the codes, then `EOS` (= cardinality) and `IRQ`
  (= cardinality + 1).
* One sequence per agent turn, conditioned on its text (the paper's TTS condition C, column
  `text`): the agent's tokens from the frame of the turn's start.
  - Turn completes (or yields): tokens to the frame of its end, then `EOS`.
  - The user barges in: `IRQ` in the frame of onset + mu (`-o mu=0.5`, seconds, the paper's 0.5 s),
    the sequence truncated after it. If the agent had already stopped before onset + mu, the
    frames between hold the silence it left (rule lslm_agent_stopped_before_irq, counted).
  - The user's backchannels and failed interruptions are not interruptions: no IRQ, the turn
    ends with EOS. (They are in the listening channel, which is what the model must learn to
    ignore — the paper's noise condition.)
* Listening channel, frame-synchronous with the speaking one (same length): the user's channel
  over the same frames, `-o listen=tokens` (the user's codes, default) or `-o listen=features`
  (the embedded tokenizer's continuous log-mel features per frame: 80 floats, the paper's
  continuous listening input).
* Parquet `data/<split>-NNNNN.parquet`, one row per agent turn: id (`<sample>#<turn>`),
  sample_id, turn, kind, text, start, end, first_frame, speak (list<int32>), listen
  (list<int32> or list<list<float32>>), end_token ("EOS"/"IRQ"), irq_index (-1 or the position
  of IRQ in speak), onset (the barge-in onset, or null).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from factory.export.errors import ExportError
from factory.export.exporter import Exporter
from factory.export.grid import channel_audio, fit_frames, frame_of, n_frames, samples_per_frame
from factory.export.options import ExportOptions, FrameRateOptions, dump_options
from factory.export.output import Decoded, ShardWriter, Sidecar, finish, read_row, read_rows, read_sidecar
from factory.export.report import ExportReport, Rule, RuleCounter, Timer, usable
from factory.export.tokenizers import channel_tokenizer, identity_dict, save_codebook, tokenized
from factory.models import BargeInEvent, Channel, EndReason, Sample
from factory.tokenize.units import features  # the embedded tokenizer's continuous frames

NAME = "lslm"
FORMAT_VERSION = "1"
FRAME_RATE = 50.0
MU_S = 0.5
RULES = {
    "lslm_agent_stopped_before_irq": Rule(
        "pad",
        "the agent stopped before onset + mu: the speaking tokens between its stop and IRQ are the silence it left",
    ),
    "lslm_irq_after_turn_end": Rule(
        "shift", "onset + mu falls after the end of the audio: IRQ goes in the last frame of the dialogue"
    ),
}


class LslmOptions(FrameRateOptions):
    frame_rate: float = Field(default=FRAME_RATE, gt=0, description="speaking-channel frames per second")
    mu: float = Field(default=MU_S, ge=0, description="seconds from the barge-in onset to IRQ (the paper's 0.5 s)")
    listen: Literal["tokens", "features"] = Field(default="tokens", description="the listening channel's input")


class Lslm(Exporter[LslmOptions]):
    name = NAME
    format_version = FORMAT_VERSION
    frame_rate = FRAME_RATE
    needs_audio_tokens = True
    own_rules = RULES
    options_model = LslmOptions

    def write(
        self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions, format_options: LslmOptions
    ) -> ExportReport:
        report, counter, started = self.start(out_dir)
        mu, listen = format_options.mu, format_options.listen
        tok, samples = channel_tokenizer(options, format_options.frame_rate, samples, out_dir)
        rate = tok.frame_rate
        eos, irq = tok.cardinality, tok.cardinality + 1
        writer = ShardWriter(out_dir, _schema(listen), options.shard_size)
        timer, sr, n_rows = Timer(), None, 0
        for s, (user, agent) in tokenized(
            usable(samples, report, counter), tok, options.tokenize_batch, options.use_augmented, timer
        ):
            sr = s.sample_rate
            samples_per_frame(sr, rate, counter)
            n = n_frames(s.timeline, rate)
            with timer:
                if listen == "features":
                    user_in = features(channel_audio(s, Channel.user, options.use_augmented), sr, rate).astype(
                        np.float32
                    )
                    if len(user_in) != n:  # same rule as fit_frames, for float frames
                        counter.add("audio_frames_adjusted")
                        user_in = np.concatenate([user_in, np.repeat(user_in[-1:], max(n - len(user_in), 0), 0)])[:n]
                else:
                    user_in = fit_frames(user, n, counter)[0]
            agent = fit_frames(agent, n, counter)[0]
            for row in turn_rows(s, agent, user_in, rate, mu, eos, irq, counter):
                writer.add(s.meta.split, row)
                n_rows += 1
            report.samples_out += 1
            report.dialogue_seconds += s.timeline.duration
        report.seconds_tokenize = timer.seconds
        sidecar = Sidecar(
            format=NAME,
            format_version=FORMAT_VERSION,
            frame_rate=rate,
            sample_rate=sr,
            special_tokens={"EOS": eos, "IRQ": irq},
            id_layout={"audio": (0, tok.cardinality), "special": (tok.cardinality, 2)},
            audio_tokenizer=identity_dict(tok),
            audio_tokenizer_path=save_codebook(tok, out_dir),
            source_run=options.source_run,
            layout="per agent turn: speak = agent codes from the turn's start, then EOS at its end or IRQ at "
            f"barge-in onset + {mu} s (truncated after); listen = the user's {listen} over the same frames",
            columns={"speak": "speaking-channel ids", "listen": f"listening channel ({listen})", "text": "condition C"},
            options={**dump_options(options), "mu": mu, "listen": listen, "sequences": n_rows},
        )
        return finish(out_dir, sidecar, report, counter, writer, started)

    def decode(self, out_dir: Path, sample_id: str) -> Decoded:
        """A turn sequence (`<sample>#<turn>`) on its frame grid, or all turns of a sample, in time."""
        sidecar = read_sidecar(out_dir)
        rate = sidecar.frame_rate or FRAME_RATE
        specials = {v: k for k, v in sidecar.special_tokens.items()}
        if "#" in sample_id:
            rows = [read_row(out_dir, sample_id)]
        else:
            rows = [r for r in read_rows(out_dir) if r["sample_id"] == sample_id]
            if not rows:
                raise ExportError(f"no sequence of sample {sample_id!r} in {out_dir}")
        n = max(r["first_frame"] + len(r["speak"]) for r in rows)
        speak, listen, state = [""] * n, [""] * n, ["listen"] * n
        for r in rows:
            for k, (code, heard) in enumerate(zip(r["speak"], r["listen"])):
                f = r["first_frame"] + k
                speak[f] = specials.get(code, str(code))
                listen[f] = str(heard) if not isinstance(heard, list) else f"{len(heard)} feats"
                state[f] = (
                    "speak" if code not in specials else ("stop (IRQ)" if specials[code] == "IRQ" else "end (EOS)")
                )
            speak[r["first_frame"]] = f"{speak[r['first_frame']]}  «{r['text']}»"
        return Decoded(
            id=sample_id,
            format=NAME,
            frame_rate=rate,
            tracks={"speaking (agent)": speak, "listening (user)": listen, "state": state},
        )


def _schema(listen: str) -> pa.Schema:
    listen_type = pa.list_(pa.int32()) if listen == "tokens" else pa.list_(pa.list_(pa.float32()))
    return pa.schema(
        [
            ("id", pa.string()),
            ("sample_id", pa.string()),
            ("split", pa.string()),
            ("turn", pa.int32()),
            ("kind", pa.string()),
            ("text", pa.string()),
            ("start", pa.float64()),
            ("end", pa.float64()),
            ("first_frame", pa.int32()),
            ("speak", pa.list_(pa.int32())),
            ("listen", listen_type),
            ("end_token", pa.string()),
            ("irq_index", pa.int32()),
            ("onset", pa.float64()),
        ]
    )


def turn_rows(
    sample: Sample,
    agent: np.ndarray,
    user: np.ndarray,
    rate: float,
    mu: float,
    eos: int,
    irq: int,
    counter: RuleCounter,
) -> Iterator[dict]:
    """One row per agent turn; `agent` [T] codes, `user` [T] codes or [T, F] features, from 0 s."""
    tl = sample.timeline
    n = len(agent)
    barges = {e.victim_turn: e for e in tl.events if isinstance(e, BargeInEvent) and e.by is Channel.user}
    for turn in sorted((t for t in tl.turns if t.channel is Channel.agent), key=lambda t: t.start):
        first = min(frame_of(turn.start, rate), n - 1)
        barge = barges.get(turn.id) if turn.end_reason is EndReason.interrupted else None
        if barge is not None:
            t_irq = barge.onset + mu
            last = frame_of(t_irq, rate)
            if last >= n:
                counter.add("lslm_irq_after_turn_end")
                last = n - 1
            if barge.victim_stop < t_irq:
                counter.add("lslm_agent_stopped_before_irq")
            last = max(last, first)
            speak = [*agent[first:last].tolist(), irq]
            end_token, irq_index = "IRQ", len(speak) - 1
        else:
            last = max(min(frame_of(turn.end, rate), n - 1), first)
            speak = [*agent[first:last].tolist(), eos]
            end_token, irq_index = "EOS", -1
        stop = first + len(speak)
        listen = user[first:stop]
        if len(listen) < len(speak):  # the end token's frame is past the last frame: repeat the last
            listen = np.concatenate([listen, np.repeat(user[-1:], len(speak) - len(listen), axis=0)])
        yield {
            "id": f"{sample.id}#{turn.id}",
            "sample_id": sample.id,
            "split": sample.meta.split,
            "turn": turn.id,
            "kind": turn.kind.value,
            "text": turn.spoken_text,
            "start": turn.start,
            "end": turn.end,
            "first_frame": first,
            "speak": speak,
            "listen": listen.tolist(),
            "end_token": end_token,
            "irq_index": irq_index,
            "onset": barge.onset if barge is not None else None,
        }

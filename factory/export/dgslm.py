"""dGSLM (Nguyen et al. 2023, "Generative Spoken Dialogue Language Modeling"): two parallel unit
streams, one per channel, frame-synchronous.

Spec (sources: facebookresearch/fairseq examples/textless_nlp/dgslm — README, hubert_fisher/,
the dialogue transformer's data layout; shared/reference/token-layouts.md section 5):
* Units: HuBERT (Fisher) layer 12 + k-means 500 at 50 Hz in the original; here the export's audio
  tokenizer at 50 Hz (default: the embedded k-means units, fitted on the run's audio; `-o
  frame_rate=25` for coarser), its first codebook when it has several.
* `<split>.unitA` / `<split>.unitB`: one dialogue per line, space-separated frame-level units (NOT
  de-duplicated: the model predicts edge units and durations itself), the SAME count on line i of
  both files. unitA = channel 0 (the user), unitB = channel 1 (the agent). fairseq's split names:
  train / valid / test (our `dev` is written as `valid`). `<split>.ids` names the dialogue of each
  line. `dict.unitA.txt` = `dict.unitB.txt`: fairseq dictionary lines "<unit> <count>", the shared
  dictionary both channels are binarised with:
      fairseq-preprocess --source-lang unitA --srcdict dict.unitA.txt --only-source \\
          --trainpref train --validpref valid --destdir bin   (and the same for unitB)
* The same arrays as parquet (`data/<split>-NNNNN.parquet`: id, split, duration, unitA, unitB)
  with the sidecar, for loaders that prefer arrays.
* Frames: T = ceil(duration * 50); each channel's codes are trimmed/padded to T (rule
  audio_frames_adjusted), so the counts are equal by construction and checked before writing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from factory.atomic import atomic_write_text
from factory.export.errors import ExportError
from factory.export.exporter import Exporter
from factory.export.grid import fit_frames, n_frames, samples_per_frame
from factory.export.options import ExportOptions, FrameRateOptions, dump_options
from factory.export.output import Decoded, ShardWriter, Sidecar, finish, read_row, read_sidecar
from factory.export.report import ExportReport, Timer, usable
from factory.export.tokenizers import channel_tokenizer, identity_dict, save_codebook, tokenized
from factory.models import Sample

NAME = "dgslm"
FORMAT_VERSION = "1"
FRAME_RATE = 50.0
FAIRSEQ_SPLIT = {"dev": "valid"}
OUTPUTS = ("*.unitA", "*.unitB", "*.ids", "dict.*.txt")  # removed before a re-export into the same folder


def _schema() -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("duration", pa.float64()),
            ("unitA", pa.list_(pa.int32())),
            ("unitB", pa.list_(pa.int32())),
        ]
    )


class DgslmOptions(FrameRateOptions):
    frame_rate: float = Field(default=FRAME_RATE, gt=0, description="unit frames per second (the original: 50)")


class Dgslm(Exporter[DgslmOptions]):
    name = NAME
    format_version = FORMAT_VERSION
    frame_rate = FRAME_RATE
    needs_audio_tokens = True
    outputs = OUTPUTS
    options_model = DgslmOptions

    def write(
        self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions, format_options: DgslmOptions
    ) -> ExportReport:
        report, counter, started = self.start(out_dir)
        tok, samples = channel_tokenizer(options, format_options.frame_rate, samples, out_dir)
        rate = tok.frame_rate
        writer = ShardWriter(out_dir, _schema(), options.shard_size)
        lines: dict[str, dict[str, list[str]]] = {}
        timer, sr = Timer(), None
        for s, (user, agent) in tokenized(
            usable(samples, report, counter), tok, options.tokenize_batch, options.use_augmented, timer
        ):
            sr = s.sample_rate
            samples_per_frame(sr, rate, counter)
            n = n_frames(s.timeline, rate)
            a, b = fit_frames(user, n, counter)[0], fit_frames(agent, n, counter)[0]
            if len(a) != len(b):  # a bug, not bad input: refuse rather than write unequal lines
                raise ExportError(f"{s.id}: unitA has {len(a)} units, unitB {len(b)}")
            split = FAIRSEQ_SPLIT.get(s.meta.split, s.meta.split)
            per = lines.setdefault(split, {"unitA": [], "unitB": [], "ids": []})
            per["unitA"].append(" ".join(map(str, a.tolist())))
            per["unitB"].append(" ".join(map(str, b.tolist())))
            per["ids"].append(s.id)
            writer.add(
                s.meta.split,
                {
                    "id": s.id,
                    "split": s.meta.split,
                    "duration": s.timeline.duration,
                    "unitA": a.astype(np.int32).tolist(),
                    "unitB": b.astype(np.int32).tolist(),
                },
            )
            report.samples_out += 1
            report.dialogue_seconds += s.timeline.duration
        for split, per in lines.items():
            for ext, rows in per.items():
                atomic_write_text(out_dir / f"{split}.{ext}", "\n".join(rows) + "\n")
        counts = np.zeros(tok.cardinality, np.int64)
        for per in lines.values():
            for line in per["unitA"] + per["unitB"]:
                counts += np.bincount(np.array(line.split(), np.int64), minlength=tok.cardinality)
        fairseq_dict = "".join(f"{u} {max(int(c), 1)}\n" for u, c in enumerate(counts))
        for ext in ("unitA", "unitB"):
            atomic_write_text(out_dir / f"dict.{ext}.txt", fairseq_dict)
        report.seconds_tokenize = timer.seconds
        sidecar = Sidecar(
            format=NAME,
            format_version=FORMAT_VERSION,
            frame_rate=rate,
            sample_rate=sr,
            id_layout={"audio": (0, tok.cardinality)},
            vocabulary=[str(u) for u in range(tok.cardinality)],
            audio_tokenizer=identity_dict(tok),
            audio_tokenizer_path=save_codebook(tok, out_dir),
            source_run=options.source_run,
            layout="two parallel frame-level unit streams: unitA = channel 0 (user), unitB = channel 1 (agent)",
            columns={"unitA": "user units, one per frame", "unitB": "agent units, one per frame"},
            options=dump_options(options),
        )
        return finish(out_dir, sidecar, report, counter, writer, started)

    def decode(self, out_dir: Path, sample_id: str) -> Decoded:
        sidecar = read_sidecar(out_dir)
        row = read_row(out_dir, sample_id)
        return Decoded(
            id=sample_id,
            format=NAME,
            frame_rate=sidecar.frame_rate or FRAME_RATE,
            tracks={"unitA (user)": list(map(str, row["unitA"])), "unitB (agent)": list(map(str, row["unitB"]))},
        )


def read_lines(out_dir: Path, split: str = "train") -> list[tuple[str, list[int], list[int]]]:
    """(id, unitA, unitB) per line of the fairseq text files, as a trainer reads them."""
    out_dir = Path(out_dir)
    ids = (out_dir / f"{split}.ids").read_text().splitlines()
    a = (out_dir / f"{split}.unitA").read_text().splitlines()
    b = (out_dir / f"{split}.unitB").read_text().splitlines()
    return [(i, list(map(int, x.split())), list(map(int, y.split()))) for i, x, y in zip(ids, a, b, strict=True)]

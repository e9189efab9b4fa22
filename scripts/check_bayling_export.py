"""Parse a `bayling` export back with BayLing-Duplex's OWN segment parser and compare it with the
run's timelines: the consumer's code, not ours, decides whether the text channel means what we say.

BayLing-Duplex (github.com/BayLing-Models/BayLing-Duplex) released inference code only; its
`BayLingDuplex._extract_segments` / `_build_segment` turn a text channel into response segments
(start time = slot * 10/5 / 12.5 + 0.8 s, text between `<|assistant|>` and `[EPAD]`, the agent
audio of the segment's blocks). This script runs exactly those methods on an instance made
without loading any model (the parser needs only the ratios and special ids); the modules of the
audio decoder and speech tokenizer (unused by the parser, heavy imports) are replaced by empty
ones. Its module imports torch, so the parsing half runs in the torch env (a subprocess); the
export and the timelines are read here, in the main env.

    .venv/bin/python scripts/check_bayling_export.py RUN EXPORT BAYLING_CHECKOUT [--torch-python P]

Prints one line per agent turn; exits 1 if a segment is missing, starts or stops more than one text
slot (0.16 s) from the timeline, or its text differs — other than the two counted rules: an
interrupted turn's text truncated at its stop, a completed turn's [EPAD] right after a text longer
than the turn.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_with_bayling(payload: Path, checkout: Path) -> None:
    """Torch-env half: BayLing's parser on each sequence's text channel; writes segments back."""
    sys.path.insert(0, str(checkout))
    for name in ("bayling_duplex_runtime.flow_inference", "bayling_duplex_runtime.speech_tokenizer.modeling_whisper"):
        stub = types.ModuleType(name)
        stub.AudioDecoder = stub.WhisperVQEncoder = object
        sys.modules[name] = stub
    from bayling_duplex.duplex import BayLingDuplex

    data = json.loads(payload.read_text())
    pieces = {int(k): v for k, v in data["pieces"].items()}
    for seq in data["sequences"]:
        parser = BayLingDuplex.__new__(BayLingDuplex)  # no model: the parser reads only these
        parser.x_ratio, parser.y_ratio, parser.z_ratio = 10, 5, 10
        parser.time_offset, parser.audio_to_text_ratio = 10 / 12.5, 10 / 5
        parser.assistant_token_id, parser.epad_token_id = data["assistant"], data["epad"]
        parser._text_special_token_ids = set(data["specials"])
        parser.tokenizer = types.SimpleNamespace(
            decode=lambda ids, skip_special_tokens=False: "".join(pieces[i] for i in ids)
        )
        segments = parser._extract_segments(seq["text"], seq["agent"], None)
        seq["segments"] = [
            {
                "start": s.start_time,
                "start_slot": s.text_token_start,
                "end_slot": s.text_token_end,
                "text": s.text,
                "n_audio": len(s.audio_tokens),
            }
            for s in segments
        ]
    payload.write_text(json.dumps(data))


def main(run: Path, export: Path, checkout: Path, torch_python: str) -> int:
    sys.path.insert(0, str(ROOT))
    from factory.export import bayling
    from factory.export.options import ExportOptions
    from factory.export.output import read_rows, read_sidecar
    from factory.export.tokenizers import text_tokenizer_for
    from factory.models import Channel, EndReason
    from factory.run.read import read_samples

    side = read_sidecar(export)
    text_tok = text_tokenizer_for(ExportOptions(text_tokenizer=side.options.get("text_tokenizer")))
    t0 = side.id_layout["text"][0]
    timelines = {s.id: s.timeline for s in read_samples(run)}
    sequences, pieces = [], {}
    for row in read_rows(export):
        parts = bayling.split_blocks(row["input_ids"], side)
        sequences.append({"id": row["id"], "text": parts["text"].tolist(), "agent": parts["agent"].tolist()})
        pieces.update({i: text_tok.decode([i - t0]) for i in set(parts["text"].tolist()) if i >= t0})
    payload = {
        "assistant": side.special_tokens["<|assistant|>"],
        "epad": side.special_tokens["[EPAD]"],
        "specials": list(side.special_tokens.values()),
        "pieces": pieces,
        "sequences": sequences,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "payload.json"
        path.write_text(json.dumps(payload))
        subprocess.run([torch_python, __file__, "--parse", str(path), str(checkout)], check=True)
        parsed = json.loads(path.read_text())["sequences"]
    bad, pad = 0, side.special_tokens["[PAD]"]
    for seq in parsed:
        turns = sorted((t for t in timelines[seq["id"]].turns if t.channel is Channel.agent), key=lambda t: t.start)
        if len(seq["segments"]) != len(turns):
            print(f"{seq['id']}: {len(seq['segments'])} segments for {len(turns)} agent turns")
            bad += 1
            continue
        for seg, turn in zip(seq["segments"], turns):
            stop = bayling.slot_time(seg["end_slot"])
            text = seg["text"].strip()
            text_ok = text == turn.spoken_text.strip() or (
                turn.end_reason is EndReason.interrupted and turn.spoken_text.startswith(text)
            )
            # a completed turn whose text needs more slots than it lasts ends right after its text
            # (rule bayling_epad_after_text): [EPAD] later than the speech, no [PAD] in between
            between = seq["text"][seg["start_slot"] + 1 : seg["end_slot"]]
            text_bound = turn.end_reason is not EndReason.interrupted and stop > turn.end and pad not in between
            ok = abs(seg["start"] - turn.start) <= bayling.SLOT_S and (
                abs(stop - turn.end) <= bayling.SLOT_S or text_bound
            )
            bad += not (ok and text_ok)
            print(
                f"{seq['id']} agent {turn.start:6.2f}-{turn.end:6.2f} {turn.end_reason.value:11s} | BayLing parser: "
                f"start {seg['start']:6.2f}, [EPAD] {stop:6.2f}, {seg['n_audio']} audio tokens, "
                f"{'ok' if ok and text_ok else 'MISMATCH'} {seg['text']!r}"
            )
    print("all segments agree with the timeline" if not bad else f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--parse":
        parse_with_bayling(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("export", type=Path)
    ap.add_argument("checkout", type=Path, help="a BayLing-Duplex source checkout")
    ap.add_argument("--torch-python", default=str(ROOT / ".envs" / "coqui" / "bin" / "python"))
    a = ap.parse_args()
    sys.exit(main(a.run, a.export, a.checkout, a.torch_python))

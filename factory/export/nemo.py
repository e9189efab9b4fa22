"""NeMo speechlm2 duplex S2S (`DuplexS2SModel`): a lhotse CutSet, built with lhotse itself, as a
jsonl.gz manifest and as Shar (audio inside; NeMo's example config reads `lhotse_shar`).

Spec — read in NVIDIA/NeMo@8cfedd7 (nemo/collections/speechlm2/data/s2s_dataset.py,
docs/source/speechlm2/datasets.rst, examples/speechlm2/conf/s2s_duplex.yaml);
shared/reference/token-layouts.md section 2. Checked against nemo_toolkit 3.0.0's own
dataloader and DuplexS2SDataset in tests/coqui/test_nemo_dataset.py (the same rules):

* One MonoCut per dialogue. `cut.recording` = the USER channel at 16 kHz (DuplexS2SDataset:
  `collate_audio(cuts.resample(source_sample_rate))`); `cut.custom["target_audio"]` = the AGENT
  channel at 22.05 kHz (`collate_audio(..., recording_field="target_audio")`), with exactly the
  cut's duration. Both are mono 16-bit wavs (jsonl.gz: absolute paths; Shar: FLAC inside).
  Equal durations at 16 kHz and 22.05 kHz need a whole number of 20 ms (320 and 441 samples):
  the audio is padded with silence to the next 20 ms (rule audio_padded_to_20ms).
* One supervision per timeline turn (turns, backchannels, fillers, laughs; a failed
  interruption is the listener's short yielded turn), speaker "user" / "agent" (the dataset's
  default input_roles / output_roles), `text` = the words actually spoken, start = the turn's
  start, duration up to its end: the stop time for an interrupted turn. `custom` keeps the
  turn id, kind and end reason (ignored by NeMo).
* What NeMo does with them (`build_token_channel`): T = compute_num_frames(cut.duration, 0.08,
  cut.sampling_rate) (round half up); per supervision of a role, [BOS] + text_to_ids(text) from
  frame compute_num_frames(start), EOS at frame compute_num_frames(end) only if that frame is
  < T (else: an unfinished turn, no EOS); supervisions are written in order, so later ones
  overwrite earlier tokens. Hence the rules turn_end_needs_a_frame (pad the audio so every
  turn's EOS fits), eos_overwritten and text_longer_than_turn (counted, with the export's text
  tokenizer: exact only with the trainer's own tokenizer).
* Prompts: `cut.custom["system_prompt"]` = the agent's role prompt, and `cut.custom["voice_prompt"]`
  = a lhotse Array of the agent's voice-prompt clip: int16 PCM at the target rate
  (`custom["voice_prompt_sampling_rate"]`), `cut.load_custom("voice_prompt")`; an Array because
  lhotse takes a custom Recording to span the cut (Shar reads it back at the cut's duration).
  DuplexS2SDataset@8cfedd7 reads neither (it takes only supervisions of its roles, lines 158-159,
  and target_audio); `system_prompt` is the name speechlm2 reads a system prompt by:
  salm_dataset.py 130-132 (`hasattr(example, "system_prompt")`, which a lhotse cut answers from
  `custom`) and the `system_prompt` tag of docs/source/speechlm2/datasets.rst 142-180. No "system"
  supervision is added: the dataset would ignore it and this export's rules count supervisions.
* Option `word_timestamps`: the supervision text carries per-word frame indices relative to
  the supervision's first frame, `<|s|> word <|e|>` (DuplexS2SDataset strips them with
  `_strip_timestamps`; the duplex text-to-text dataset reads them).

Needs lhotse (and so torch): `duplex-factory export RUN --format nemo-duplex` from the main
environment runs it in the torch environment by itself (`needs_torch`, factory.cli.torch_env);
`export_run` called from Python without torch gets an error saying so.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import soundfile as sf
from pydantic import field_validator

from factory.atomic import atomic_write
from factory.audio.edit import resample
from factory.audio.mix import to_pcm16
from factory.export.errors import ExportError
from factory.export.exporter import Exporter
from factory.export.options import ExportOptions, FormatOptions, dump_options
from factory.export.output import Decoded, Sidecar, finish, read_sidecar
from factory.export.report import ExportReport, Rule, RuleCounter, usable
from factory.export.tokenizers import identity_dict, text_tokenizer_for
from factory.models import Channel, Sample, Timeline, TimelineTurn
from factory.timeline.frames import ignore_spans

NAME = "nemo-duplex"
FORMAT_VERSION = "1"
FRAME_RATE = 12.5  # NeMo's frame_length 0.08 s
FRAME_LENGTH = 0.08
ROLE = {Channel.user: "user", Channel.agent: "agent"}
GRID = 0.02  # 20 ms: whole samples at 16 kHz (320) and 22.05 kHz (441)
LHOTSE_HINT = (
    "the nemo-duplex export builds its CutSet with lhotse, which needs torch: run it in the torch environment "
    "(built by `make envs`; `duplex-factory export RUN --format nemo-duplex` goes there by itself)"
)

RULES: dict[str, Rule] = {
    "audio_padded_to_20ms": Rule(
        "pad",
        "the dialogue's length is padded with silence to a whole 20 ms, so the 16 kHz recording and the "
        "22.05 kHz target_audio hold exactly the same duration",
    ),
    "turn_end_needs_a_frame": Rule(
        "pad",
        "a turn ends in NeMo's last frame (compute_num_frames(end) >= T), where DuplexS2SDataset writes no EOS "
        "and treats the turn as unfinished: the audio is padded with silence until its EOS frame fits",
    ),
    "eos_overwritten": Rule(
        "drop",
        "a same-role supervision starts in the frame of the previous one's EOS: NeMo's BOS overwrites that "
        "EOS (counted; times are kept as spoken)",
    ),
    "text_longer_than_turn": Rule(
        "drop",
        "[BOS] + the turn's text tokens need more frames than the turn has before its EOS: NeMo's EOS (or the "
        "next supervision) overwrites the tail (counted with the export's text tokenizer)",
    ),
}


class NemoOptions(FormatOptions):
    source_sample_rate: int = 16000
    target_sample_rate: int = 22050
    word_timestamps: bool = False
    shar_shard_size: int = 100
    manifest: bool = True  # cuts_<split>.jsonl.gz beside the Shar folders
    shar: bool = True

    @field_validator("source_sample_rate", "target_sample_rate")
    @classmethod
    def _whole_samples_per_frame(cls, sr: int) -> int:
        if round(sr * GRID) != sr * GRID or round(sr * FRAME_LENGTH) != sr * FRAME_LENGTH:
            raise ValueError(f"{sr} Hz has no whole number of samples per 20 ms / 80 ms frame")
        return sr


class NemoDuplex(Exporter[NemoOptions]):
    name = NAME
    format_version = FORMAT_VERSION
    frame_rate = FRAME_RATE
    needs_audio_tokens = False  # the trainer tokenizes: user audio -> its encoder, agent audio -> its codec
    needs_torch = True  # lhotse imports torch
    outputs = ("cuts_*.jsonl.gz", "audio", "shar")
    own_rules = RULES
    options_model = NemoOptions

    def write(
        self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions, format_options: NemoOptions
    ) -> ExportReport:
        sub = format_options
        try:
            from lhotse import CutSet  # lazy: optional heavy dependency (needs torch), the torch environment only
        except ImportError as exc:
            raise ExportError(LHOTSE_HINT, exit_code=3) from exc
        report, counter, started = self.start(out_dir)
        text_tok = text_tokenizer_for(options)
        cache: dict[str, list[int]] = {}

        def tokenize(text: str) -> list[int]:
            if text not in cache:
                cache[text] = text_tok.encode(text)
            return cache[text]

        cuts: dict[str, list] = {}
        for s in usable(samples, report, counter):
            cut = build_cut(s, out_dir / "audio" / s.meta.split, sub, counter, tokenize, options.use_augmented)
            cuts.setdefault(s.meta.split, []).append(cut)
            report.samples_out += 1
            report.dialogue_seconds += cut.duration
        shards: list[str] = []
        for split, items in cuts.items():
            cutset = CutSet.from_cuts(items)
            if sub.manifest:
                path = out_dir / f"cuts_{split}.jsonl.gz"
                write_manifest(cutset, path)
                shards.append(path.name)
            if sub.shar:
                shar_dir = out_dir / "shar" / split
                shar_dir.mkdir(parents=True, exist_ok=True)
                written = cutset.to_shar(
                    shar_dir,
                    fields={"recording": "flac", "target_audio": "flac", "voice_prompt": "numpy"},
                    shard_size=sub.shar_shard_size,
                )
                for gz in sorted(shar_dir.glob("*.jsonl.gz")):  # same bytes for the same cuts
                    _gzip(gzip.decompress(gz.read_bytes()), gz)
                shards += [str(Path(p).relative_to(out_dir)) for paths in written.values() for p in paths]
        report.shards = sorted(shards)
        sidecar = Sidecar(
            format=NAME,
            format_version=FORMAT_VERSION,
            frame_rate=FRAME_RATE,
            sample_rate=sub.source_sample_rate,
            special_tokens={},
            text_tokenizer=identity_dict(text_tok),
            source_run=options.source_run,
            layout=(
                f"lhotse CutSet: recording = user at {sub.source_sample_rate} Hz, custom.target_audio = agent at "
                f"{sub.target_sample_rate} Hz (same duration), one supervision per turn (speaker user/agent, spoken "
                "text, end = stop time), custom.system_prompt = the agent's role prompt, custom.voice_prompt = its "
                f"voice-prompt clip (int16 Array) at {sub.target_sample_rate} Hz; cuts_<split>.jsonl.gz and "
                "shar/<split>/ (flac)"
            ),
            options=dump_options(options),
        )
        return finish(out_dir, sidecar, report, counter, None, started)

    def decode(self, out_dir: Path, sample_id: str) -> Decoded:
        """Per 80 ms frame and role: the supervision's text at its first frame, '·' while it lasts,
        and 'EOS' in the frame NeMo writes its EOS in."""
        out_dir = Path(out_dir)
        side = read_sidecar(out_dir)
        cut = next(
            (
                c
                for p in sorted(out_dir.glob("cuts_*.jsonl.gz"))
                for c in read_cuts(out_dir, p.name[5:-9], shar=False)
                if c.id == sample_id
            ),
            None,
        )
        if cut is None:
            raise ExportError(f"no cut {sample_id!r} in {out_dir}")
        sr = side.sample_rate or cut.sampling_rate
        n = frame(cut.duration, sr)
        tracks: dict[str, list[str]] = {}
        for role in ("user", "agent"):
            track = [""] * n
            for sup in cut.supervisions:
                if sup.speaker != role:
                    continue
                pos, eos = frame(sup.start, sr), frame(sup.end, sr)
                for f in range(pos + 1, min(eos, n)):
                    track[f] = "·"
                if pos < n:
                    track[pos] = sup.text
                if eos < n:
                    track[eos] = "EOS"
            tracks[f"{role} text"] = track
        return Decoded(id=sample_id, format=NAME, frame_rate=FRAME_RATE, tracks=tracks)


def frame(t: float, sr: int) -> int:
    """lhotse.utils.compute_num_frames(t, 0.08, sr), restated so the main env can count rules:
    round(t * sr) samples, then frames of round(0.08 * sr) samples, rounded half up."""
    hop = round(FRAME_LENGTH * sr)
    return int((round(t * sr) + hop // 2) // hop)


def _turn_words(timeline: Timeline, turn: TimelineTurn) -> list:
    return [w for w in timeline.words if w.turn == turn.id and w.spoken]


def supervision_text(timeline: Timeline, turn: TimelineTurn, sr: int, word_timestamps: bool) -> str:
    if not word_timestamps:
        return turn.spoken_text
    f0 = frame(turn.start, sr)
    return " ".join(
        f"<|{frame(w.start, sr) - f0}|> {w.word} <|{frame(w.end, sr) - f0}|>" for w in _turn_words(timeline, turn)
    )


def dialogue_length(sample: Sample, sr: int, counter: RuleCounter) -> float:
    """The exported duration: the audio, padded to a whole 20 ms, and further (in 20 ms steps)
    until every turn's EOS frame lies inside the cut."""
    duration = len(sample.stems) / sample.sample_rate
    padded = math.ceil(round(duration / GRID, 9)) * GRID
    if padded > duration + 1e-12:
        counter.add("audio_padded_to_20ms")
    last_eos = max((frame(t.end, sr) for t in sample.timeline.turns), default=0)
    if last_eos >= frame(padded, sr):
        counter.add("turn_end_needs_a_frame")
        while last_eos >= frame(padded, sr):
            padded += GRID
    return round(padded, 6)


def count_token_rules(timeline: Timeline, tokenize: Callable[[str], list[int]], sr: int, counter: RuleCounter) -> None:
    """What build_token_channel will overwrite in each role's channel."""
    for ch in Channel:
        turns = sorted((t for t in timeline.turns if t.channel is ch), key=lambda t: t.start)
        for prev, turn in zip([None, *turns], turns):
            pos, eos = frame(turn.start, sr), frame(turn.end, sr)
            if 1 + len(tokenize(turn.spoken_text)) > eos - pos:
                counter.add("text_longer_than_turn")
            if prev is not None and frame(prev.end, sr) == pos:
                counter.add("eos_overwritten")


def _mono(sample: Sample, ch: Channel, sr: int, n: int, augmented: bool) -> np.ndarray:
    audio = sample.augmented if augmented and sample.augmented is not None else sample.stems
    x = _resampled(audio[:, ch.index], sample.sample_rate, sr)[:n]
    return np.pad(x, (0, n - len(x)))


def _resampled(audio: np.ndarray, sr_in: int, sr: int) -> np.ndarray:
    x = np.ascontiguousarray(audio, dtype=np.float32)
    return resample(x, sr_in, sr, length="soxr")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:  # a file object: np.save would add ".npy" to the temporary name
        np.save(f, array, allow_pickle=False)


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    atomic_write(path, lambda tmp: sf.write(tmp, audio, sr, subtype="PCM_16", format="WAV"))


def build_cut(
    sample: Sample,
    audio_dir: Path,
    sub: NemoOptions,
    counter: RuleCounter,
    tokenize: Callable[[str], list[int]],
    augmented: bool = False,
):
    """One lhotse MonoCut: user recording, agent target_audio, one supervision per turn."""
    try:
        from lhotse import Recording, SupervisionSegment  # lazy: optional heavy dependency (torch env only)
        from lhotse.array import Array  # lazy: as above
    except ImportError as exc:
        raise ExportError(LHOTSE_HINT, exit_code=3) from exc
    src, tgt = sub.source_sample_rate, sub.target_sample_rate
    duration = dialogue_length(sample, src, counter)
    tl = sample.timeline
    count_token_rules(tl, tokenize, src, counter)
    paths = {}
    for ch, sr, suffix in ((Channel.user, src, "user"), (Channel.agent, tgt, "agent")):
        n = round(duration * sr)
        path = (audio_dir / f"{sample.id}_{suffix}.wav").resolve()
        _write_wav(path, _mono(sample, ch, sr, n, augmented), sr)
        paths[ch] = path
    user = Recording.from_file(paths[Channel.user], recording_id=f"{sample.id}_user")
    agent = Recording.from_file(paths[Channel.agent], recording_id=f"{sample.id}_agent")
    if user.duration != agent.duration:  # a bug, not bad input
        raise ExportError(f"{sample.id}: user {user.duration} s != agent {agent.duration} s")
    cut = user.to_cut()
    cut.id = sample.id
    cut.target_audio = agent
    cut.supervisions = [
        SupervisionSegment(
            id=f"{sample.id}_turn_{t.id}",
            recording_id=user.id,
            start=round(t.start, 6),
            duration=round(t.end - t.start, 6),
            channel=0,
            text=supervision_text(tl, t, src, sub.word_timestamps),
            speaker=ROLE[t.channel],
            language=sample.meta.scenario.language,
            custom={"turn": t.id, "kind": t.kind.value, "end_reason": t.end_reason.value},
        )
        for t in sorted(tl.turns, key=lambda t: (t.start, t.id))
    ]
    cut.custom["split"] = sample.meta.split
    cut.custom["system_prompt"] = sample.meta.role_prompt
    if ignore := ignore_spans(tl):  # sound the agent must not answer (absent: none)
        cut.custom["ignore_spans"] = ignore
    # An Array, not a Recording: lhotse takes a custom Recording to span the cut's time (Shar reads it
    # back at the cut's duration), and this clip is shorter and not in the dialogue.
    pcm = to_pcm16(_resampled(sample.voice_prompt, sample.sample_rate, tgt))
    key = f"{sample.id}_voice_prompt.npy"
    atomic_write(audio_dir / key, lambda tmp: _save_npy(tmp, pcm))
    cut.voice_prompt = Array(
        storage_type="numpy_files", storage_path=str(audio_dir.resolve()), storage_key=key, shape=list(pcm.shape)
    )
    cut.custom["voice_prompt_sampling_rate"] = tgt
    return cut


def _gzip(data: bytes, path: Path) -> None:
    """gzip with a zero mtime and no name: lhotse's own .gz files carry the write time."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(data)

    atomic_write(path, write)


def write_manifest(cutset, path: Path) -> None:
    """lhotse writes the jsonl; it is gzipped here, so the same cuts give the same bytes."""
    plain = path.with_name(f".{path.name}.jsonl")
    cutset.to_file(plain)
    data = plain.read_bytes()
    plain.unlink()
    _gzip(data, path)


# --------------------------------------------------------------------------- reading back
_TS = re.compile(r"<\|(\d+)\|>\s*(\S+)\s*<\|(\d+)\|>")


def read_cuts(out_dir: Path, split: str = "train", shar: bool = True):
    """The exported CutSet, read by lhotse (Shar by default, else the jsonl.gz manifest)."""
    from lhotse import CutSet  # lazy: optional heavy dependency (torch env only)

    out_dir = Path(out_dir)
    if shar:
        return CutSet.from_shar(in_dir=out_dir / "shar" / split)
    return CutSet.from_file(out_dir / f"cuts_{split}.jsonl.gz")


def parse_word_timestamps(text: str) -> list[tuple[int, str, int]]:
    """'<|s|> word <|e|> ...' -> [(s, word, e), ...] (frames from the supervision's first frame)."""
    return [(int(a), w, int(b)) for a, w, b in _TS.findall(text)]

"""NeMo's own speechlm2 data path reads a fresh nemo-duplex export, with no skip: nemo_toolkit
3.0.0 (its [asr] extra, locked in locks/coqui.in) is installed in this environment.

A run folder (real parquet shard, two mixed dialogues) is exported by this environment's CLI with
no extra flag, so with the default text tokenizer (SmolLM2's GGUF vocabulary). NeMo's
`get_lhotse_dataloader_from_config` reads its Shar, as `examples/speechlm2/conf/s2s_duplex.yaml`
configures it (`shar_path`), into NeMo's `DuplexS2SDataset` (frame_length 0.08, 16 kHz source,
22.05 kHz target, roles user/agent). What its code assumes of a cut (nemo 3.0.0,
nemo/collections/speechlm2/data/s2s_dataset.py): `cut.recording` is the user's audio and
`custom["target_audio"]` the agent's, of the same duration; supervisions of speaker "user" /
"agent", `text` the spoken words (timestamps stripped), BOS at compute_num_frames(start), EOS at
compute_num_frames(end) only when inside the cut. DuplexEARTTSDataset's `collate_system_prompt`
(duplex_ear_tts_dataset.py) reads `custom["system_prompt"]`. No 3.0.0 code reads
`custom["ignore_spans"]` or `custom["voice_prompt"]` (checked below, so a release that starts to
read them is noticed). Truths from outside the exporter: the timeline, and energy VAD on the
tensors NeMo hands to the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet
from lhotse.utils import compute_num_frames
from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config
from nemo.collections.common.tokenizers import TokenizerSpec
from nemo.collections.speechlm2.data import DuplexS2SDataset
from nemo.collections.speechlm2.data.duplex_ear_tts_dataset import collate_system_prompt
from nemo.collections.speechlm2.data.s2s_dataset import _strip_timestamps

from factory.audio.vad import energy_vad
from factory.export import nemo
from factory.export.options import ExportOptions
from factory.models import BargeInEvent, Channel, Sample
from factory.tokenize import get_text_tokenizer
from factory.tokenize.text import GEMMA, GEMMA_VOCAB, TextTokenizer, load
from tests.coqui.test_export_nemo import _run_folder
from tests.export_fixtures import EVENTS_SCRIPT, make_japanese_sample, make_sample

SMOLLM2_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")  # BOS, EOS, pad
GEMMA_SPECIALS = ("<bos>", "<eos>", "<pad>")
FRAME = 0.08  # s2s_duplex.yaml's frame_length
SRC, TGT = 16000, 22050  # its source_sample_rate, target_sample_rate


class DefaultTokenizer(TokenizerSpec):
    """NeMo's tokenizer interface over the export's default text tokenizer (English: SmolLM2's GGUF
    vocabulary): BOS <|im_start|>, EOS <|im_end|>, and <|endoftext|> as pad (NeMo pads with
    `tokenizer.pad`, else `unk_id`). SmolLM2's Hugging Face config sets pad = EOS, which would make
    every silent frame an EOS: a trainer must give NeMo a distinct pad. Other vocabularies name
    their own three (Gemma 3's: <bos>, <eos>, <pad>)."""

    def __init__(self, tok: TextTokenizer, specials: tuple[str, str, str] = SMOLLM2_SPECIALS) -> None:
        self.tok = tok
        # TokenizerSpec's bos / eos / pad properties read these
        self.bos_id, self.eos_id = tok.token_to_id(specials[0]), tok.token_to_id(specials[1])
        self.pad_id = self.unk_id = tok.token_to_id(specials[2])
        assert None not in (self.bos_id, self.eos_id, self.pad_id) and len({self.bos_id, self.eos_id, self.pad_id}) == 3

    def text_to_ids(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def ids_to_text(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def text_to_tokens(self, text: str) -> list[str]:
        raise NotImplementedError  # not used by the datasets

    def tokens_to_text(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def tokens_to_ids(self, tokens: list[str]) -> list[int]:
        raise NotImplementedError

    def ids_to_tokens(self, ids: list[int]) -> list[str]:
        raise NotImplementedError


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return [make_sample(0), make_sample(1)]


@pytest.fixture(scope="module")
def tok() -> DefaultTokenizer:
    return DefaultTokenizer(load(None))


@pytest.fixture(scope="module")
def export(samples, tmp_path_factory) -> Path:
    """`duplex-factory export RUN -f nemo-duplex`, no other flag, on a two-dialogue run folder."""
    from typer.testing import CliRunner

    from factory.cli import app

    run = _run_folder(tmp_path_factory.mktemp("run"), *samples)
    result = CliRunner().invoke(app, ["export", str(run), "-f", "nemo-duplex"])
    assert result.exit_code == 0, result.output
    return run / "exports" / "nemo-duplex"


class _Recorded(DuplexS2SDataset):
    """NeMo's dataset, keeping the cuts the sampler handed it (to name each row of the batch)."""

    def __init__(self, tok: DefaultTokenizer) -> None:
        super().__init__(tok, frame_length=FRAME, source_sample_rate=SRC, target_sample_rate=TGT)
        self.cuts: list = []

    def __getitem__(self, cuts: CutSet) -> dict:
        self.cuts.extend(cuts)
        return super().__getitem__(cuts)


def nemo_batch(shar_dir: Path, tok: DefaultTokenizer) -> tuple[dict, list]:
    """One batch of NeMo's own dataloader over the Shar folder, and the cuts it read (in order)."""
    config = {"shar_path": str(shar_dir), "batch_size": 8, "shuffle": False, "num_workers": 0, "seed": 0}
    config |= {"shard_seed": 0, "force_finite": True, "sample_rate": SRC}
    dataset = _Recorded(tok)
    loader = get_lhotse_dataloader_from_config(config, global_rank=0, world_size=1, dataset=dataset)
    batch = next(iter(loader))
    return batch, dataset.cuts


def check_batch(batch: dict, cuts: list, samples: list[Sample], tok: DefaultTokenizer, export: Path) -> None:
    """Every assumption DuplexS2SDataset makes, against the timeline and the audio."""
    by_id = {s.id: s for s in samples}
    cut_short = 0
    assert sorted(c.id for c in cuts) == sorted(by_id)
    for i, cut in enumerate(cuts):
        s = by_id[cut.id]
        tl = s.timeline
        assert abs(cut.duration - s.duration) < 0.1
        n_src, n_tgt = int(batch["source_audio_lens"][i]), int(batch["target_audio_lens"][i])
        # same duration on both channels, at the rates the model is configured for
        assert n_src == round(cut.duration * SRC) and n_tgt == round(cut.duration * TGT)
        assert n_src / SRC == n_tgt / TGT
        T = compute_num_frames(cut.duration, FRAME, cut.sampling_rate)
        assert int(batch["target_token_lens"][i]) == int(batch["source_token_lens"][i]) == T
        assert abs(T * FRAME - cut.duration) <= FRAME
        # source = the user's audio, target = the agent's: energy VAD on NeMo's tensors vs the timeline
        for audio, sr, who in (
            (batch["source_audio"][i, :n_src], SRC, Channel.user),
            (batch["target_audio"][i, :n_tgt], TGT, Channel.agent),
        ):
            assert torch.isfinite(audio).all()
            active = energy_vad(audio.numpy(), sr)
            per_s = sr / round(0.01 * sr)
            quiet = np.ones(len(active), bool)
            for t in tl.turns:
                if t.channel is who:
                    speech = active[int(t.start * per_s) + 2 : int(t.end * per_s) - 2]
                    assert speech.mean() > 0.5, f"audio: {who.value} turn {t.id} is silent in NeMo's batch"
                    quiet[max(int(t.start * per_s) - 3, 0) : int(t.end * per_s) + 3] = False
            for e in tl.ignored_events():  # sound the agent must not answer, on the user's channel
                if e.channel is who:
                    assert active[int(e.start * per_s) + 2 : int(e.end * per_s) - 2].any(), f"audio: {e.type} silent"
                    quiet[max(int(e.start * per_s) - 3, 0) : int(e.end * per_s) + 3] = False
            assert not active[quiet].any(), f"audio: {who.value} sound in NeMo's batch where the timeline has none"
        # token channels: [BOS] + the spoken text's ids at each turn's start frame, EOS at its stop
        for key, who in (("source_tokens", Channel.user), ("target_tokens", Channel.agent)):
            channel = batch[key][i, :T].tolist()
            turns = [t for t in tl.turns if t.channel is who]
            for t in turns:
                pos = round(t.start / FRAME)  # within half a frame of the timeline's time
                near = channel[max(pos - 1, 0) : pos + 2]
                assert tok.bos in near, f"tokens: no BOS at the start of {who.value} turn {t.id} in {key}"
                start = max(pos - 1, 0) + near.index(tok.bos) + 1
                eos = round(t.end / FRAME)
                assert tok.eos in channel[eos - 1 : eos + 2], f"tokens: no EOS at the stop of {who.value} turn {t.id}"
                # the text up to NeMo's EOS: a turn shorter than its tokens loses its tail, which the
                # export counts as text_longer_than_turn
                ids, room = tok.text_to_ids(t.spoken_text), channel.index(tok.eos, start) - start
                assert channel[start : start + min(len(ids), room)] == ids[:room], (
                    f"tokens: {who.value} turn {t.id}'s text"
                )
                cut_short += len(ids) > room
            assert channel.count(tok.eos) == channel.count(tok.bos) == len(turns), f"tokens: turns in {key}"
        # the interrupted agent turn ends (EOS) at the barge-in's stop, within one frame
        agent = batch["target_tokens"][i, :T].tolist()
        for barge in (e for e in tl.events if isinstance(e, BargeInEvent)):
            stop = round(barge.victim_stop / FRAME)
            assert tok.eos in agent[stop - 1 : stop + 2], f"tokens: no EOS at the barge-in's stop {barge.victim_stop}"
        spoken = [t.spoken_text for t in sorted(tl.turns, key=lambda t: (t.start, t.id)) if t.channel is Channel.agent]
        assert batch["target_texts"][i] == " ".join(spoken)
    report = json.loads((export / "report.json").read_text())
    assert cut_short == report["rules"]["text_longer_than_turn"]


def test_nemo_dataloader_and_duplex_s2s_dataset_read_the_cli_export(export, samples, tok) -> None:
    batch, cuts = nemo_batch(export / "shar" / "train", tok)
    assert len(cuts) == 2 and batch["source_audio"].shape[0] == 2
    check_batch(batch, cuts, samples, tok, export)
    # the role prompt, as DuplexEARTTSDataset reads it (custom["system_prompt"], data prompt not ignored)
    prompts, lens, raw = collate_system_prompt(CutSet.from_cuts(cuts), tok, ignore_data_system_prompt=False)
    by_id = {s.id: s for s in samples}
    for i, cut in enumerate(cuts):
        role = by_id[cut.id].meta.role_prompt
        assert raw[i] == role and cut.system_prompt == role
        assert prompts[i, : lens[i]].tolist() == [tok.bos, *tok.text_to_ids(role), tok.eos]


def test_nemo_reads_the_export_of_a_run_with_side_talk(tok, tmp_path) -> None:
    """A run whose user talks to someone else, while the agent talks and in a pause of the user's
    own turn (tests/export_fixtures.EVENTS_SCRIPT): NeMo's loader and dataset read its CLI export
    as they read any other (the same checks: audio, tokens, EOS at the barge-in's stop; the side
    talk is sound on the user's channel outside the user's words), the role prompt as
    DuplexEARTTSDataset reads it, and the ignore spans in the cut's custom fields."""
    from typer.testing import CliRunner

    from factory.cli import app
    from factory.timeline.frames import ignore_spans

    samples = [make_sample(seed, script=EVENTS_SCRIPT) for seed in (0, 1)]
    assert {s.timeline.turn(e.during_turn).channel for s in samples for e in s.timeline.ignored_events()} == set(
        Channel
    )
    run = _run_folder(tmp_path / "run", *samples)
    result = CliRunner().invoke(app, ["export", str(run), "-f", "nemo-duplex"])
    assert result.exit_code == 0, result.output
    export = run / "exports" / "nemo-duplex"
    batch, cuts = nemo_batch(export / "shar" / "train", tok)
    check_batch(batch, cuts, samples, tok, export)
    _, _, raw = collate_system_prompt(CutSet.from_cuts(cuts), tok, ignore_data_system_prompt=False)
    by_id = {s.id: s for s in samples}
    for i, cut in enumerate(cuts):
        s = by_id[cut.id]
        assert raw[i] == s.meta.role_prompt
        assert cut.custom["ignore_spans"] == ignore_spans(s.timeline)


@pytest.fixture(scope="module")
def ja_samples() -> list[Sample]:
    return [make_japanese_sample(0), make_japanese_sample(1)]


@pytest.fixture(scope="module")
def gemma() -> DefaultTokenizer:
    """Gemma 3's vocabulary, the export's default for Japanese (`tokenize.default_text_tokenizer`)."""
    return DefaultTokenizer(get_text_tokenizer(GEMMA), GEMMA_SPECIALS)


def test_nemo_dataset_reads_a_japanese_export_word_for_word(ja_samples, gemma, tmp_path) -> None:
    """A Japanese run (its manifest says ja) exported by the CLI with no flag: NeMo's loader and
    DuplexS2SDataset read it as they read an English one (the same checks: audio per channel, BOS and
    EOS at each turn's frames, each turn's Japanese text as Gemma 3's ids, the agent's texts), with
    the Japanese text itself in the supervisions and the batch, not a reading or romanisation."""
    from typer.testing import CliRunner

    from factory.cli import app
    from factory.export.output import read_sidecar

    run = _run_folder(tmp_path / "run", *ja_samples)
    result = CliRunner().invoke(app, ["export", str(run), "-f", "nemo-duplex"])
    assert result.exit_code == 0, result.output
    export = run / "exports" / "nemo-duplex"
    assert read_sidecar(export).text_tokenizer["config"]["file"] == GEMMA_VOCAB
    batch, cuts = nemo_batch(export / "shar" / "train", gemma)
    assert len(cuts) == 2
    check_batch(batch, cuts, ja_samples, gemma, export)
    assert all(re.search("[\u3040-\u30ff\u4e00-\u9fff]", t) for t in batch["target_texts"])  # kana, kanji
    for cut in cuts:
        for sup in cut.supervisions:
            assert sup.language == "ja"


def _kana_readings(monkeypatch) -> None:
    import pyopenjtalk

    monkeypatch.setattr(nemo, "supervision_text", lambda tl, t, sr, ts: pyopenjtalk.g2p(t.spoken_text, kana=True))


def _last_word_dropped(monkeypatch) -> None:
    from factory.languages import words

    def dropped(tl, t, sr, ts):
        ws = words(t.spoken_text, "ja")
        return "".join(ws[:-1]) if len(ws) > 1 else t.spoken_text

    monkeypatch.setattr(nemo, "supervision_text", dropped)


@pytest.mark.parametrize("breakage", [_kana_readings, _last_word_dropped])
def test_a_japanese_export_that_loses_its_text_fails_the_check(
    breakage, ja_samples, gemma, tmp_path, monkeypatch
) -> None:
    """The break check for Japanese: supervisions written as their kana reading, or missing a word."""
    breakage(monkeypatch)
    nemo.NemoDuplex().export(ja_samples, tmp_path, ExportOptions(text_tokenizer_obj=gemma.tok))
    batch, cuts = nemo_batch(tmp_path / "shar" / "train", gemma)
    with pytest.raises(AssertionError, match="^tokens: "):
        check_batch(batch, cuts, ja_samples, gemma, tmp_path)


def test_word_timestamps_are_stripped_by_nemo_to_the_spoken_text(samples) -> None:
    for s in samples:
        for t in s.timeline.turns:
            text = nemo.supervision_text(s.timeline, t, SRC, word_timestamps=True)
            assert "<|" in text and _strip_timestamps(text) == t.spoken_text


def test_nemo_reads_no_ignore_spans_nor_voice_prompt() -> None:
    """Custom fields the export writes that NeMo 3.0.0 does not read: if a release starts to
    read them, this fails and the export's field names get checked against its code."""
    import nemo as nemo_toolkit

    root = Path(nemo_toolkit.__file__).parent / "collections"
    assert nemo_toolkit.__version__ == "3.0.0"
    source = "\n".join(p.read_text() for d in ("speechlm2", "common/data/lhotse") for p in (root / d).rglob("*.py"))
    assert "system_prompt" in source and "target_audio" in source
    assert "ignore_spans" not in source and "voice_prompt" not in source


def _swap_roles(monkeypatch) -> None:
    monkeypatch.setattr(nemo, "ROLE", {Channel.user: "agent", Channel.agent: "user"})


def _agent_late(monkeypatch) -> None:
    mono = nemo._mono

    def late(sample, ch, sr, n, augmented):  # the agent channel 2 s late
        x = mono(sample, ch, sr, n, augmented)
        return np.roll(x, 2 * sr) if ch is Channel.agent else x

    monkeypatch.setattr(nemo, "_mono", late)


def _supervisions_two_frames_late(monkeypatch) -> None:
    build = nemo.build_cut

    def shifted(*args, **kwargs):
        cut = build(*args, **kwargs)
        for sup in cut.supervisions:
            sup.start = round(sup.start + 2 * FRAME, 6)
        return cut

    monkeypatch.setattr(nemo, "build_cut", shifted)


@pytest.mark.parametrize(
    ("breakage", "caught"), [(_swap_roles, "tokens"), (_agent_late, "audio"), (_supervisions_two_frames_late, "tokens")]
)
def test_a_broken_export_fails_the_check(breakage, caught, samples, tok, tmp_path, monkeypatch) -> None:
    """The break check: an exporter changed on purpose gives a batch the checks above reject."""
    breakage(monkeypatch)
    nemo.NemoDuplex().export(samples, tmp_path, ExportOptions(text_tokenizer_obj=tok.tok))
    batch, cuts = nemo_batch(tmp_path / "shar" / "train", tok)
    with pytest.raises(AssertionError, match=f"^{caught}: "):
        check_batch(batch, cuts, samples, tok, tmp_path)

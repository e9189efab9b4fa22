"""The moshi export read by moshi-finetune's own loader and fed to moshi's own LMModel.

moshi-finetune is not a package: point MOSHI_FINETUNE_SRC at a checkout of
github.com/kyutai-labs/moshi-finetune (tested at 2acc879); without it the loader test is
skipped (tests/test_export_moshi.py restates each loader rule as its own test). Its code runs
unchanged, on CPU (its `.cuda()` call made a no-op), with a randomly initialised Mimi (moshi's
real class) and a SentencePiece vocabulary trained here with Moshi's special ids (EPAD 0, PAD 3).

Truths: moshi-finetune's `get_dataset_iterator` + `InterleavedTokenizer` build the [1, 17, T]
training codes from our data.jsonl / wav / alignments; our pre-tokenized streams must equal
them frame for frame. moshi's `LMModel.forward` must accept those streams (17 codebooks, ids in
range, delays applied by the model).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from factory.export import moshi
from factory.export.options import ExportOptions
from factory.export.output import read_row
from factory.tokenize.codecs import MimiTokenizer
from factory.tokenize.text import SentencePieceTextTokenizer
from tests.export_fixtures import SCRIPT, make_sample

SRC = os.environ.get("MOSHI_FINETUNE_SRC")


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory) -> Path:
    import sentencepiece

    texts = [t.text for t in SCRIPT.turns] + [m.token for m in SCRIPT.marks if hasattr(m, "token")]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts * 5),
        model_writer=model,
        vocab_size=120,
        hard_vocab_limit=False,
        unk_id=2,
        bos_id=1,
        eos_id=-1,
        pad_id=3,
        control_symbols=["<epad>"],  # id 0, Moshi's EPAD
        user_defined_symbols=["\n"],  # the interleaver's tokenize() looks up the newline piece
        normalization_rule_name="identity",
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spm") / "tokenizer_spm_test.model"
    path.write_bytes(model.getvalue())
    return path


@pytest.fixture(scope="module")
def mimi() -> MimiTokenizer:
    return MimiTokenizer(random_init_seed=3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, spm_path, mimi) -> Path:
    out = tmp_path_factory.mktemp("moshi-export")
    samples = [make_sample(0), make_sample(1)]
    opts = ExportOptions(
        format_options={"tokens": True},
        audio_tokenizer_obj=mimi,
        text_tokenizer_obj=SentencePieceTextTokenizer(spm_path),
    )
    report = moshi.Moshi().export(samples, out, opts)
    # this tiny vocabulary splits words into several pieces: some words start before the previous
    # word's pieces are out, which the loader's default drops (counted) and our streams shift
    assert report.rules["loader_drops_leftover_tokens"] > 0
    return out


def _loader(spm_path: Path, mimi: MimiTokenizer, duration_sec: float, keep_and_shift: bool = False):
    sys.path.insert(0, SRC)
    try:
        import sentencepiece
        from finetune.data.dataset import DataFile, get_dataset_iterator
        from finetune.data.interleaver import InterleavedTokenizer, Interleaver
    finally:
        sys.path.remove(SRC)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    # train.py: Interleaver(spm, mimi.frame_rate, model.text_padding_token_id (3),
    # model.end_of_text_padding_id (0), model.zero_token_id (-1), keep_main_only=True)
    interleaver = Interleaver(
        sp, mimi.model.frame_rate, 3, 0, -1, keep_main_only=True, keep_and_shift=keep_and_shift, device="cpu"
    )
    tokenizer = InterleavedTokenizer(mimi.model, interleaver, duration_sec=duration_sec)
    return lambda path: get_dataset_iterator(
        DataFile(path=path), tokenizer, rank=0, world_size=1, is_finite=True, seed=None, shuffle_at_epoch=False
    )


@pytest.mark.skipif(not SRC, reason="MOSHI_FINETUNE_SRC (a kyutai-labs/moshi-finetune checkout) is not set")
def test_moshi_finetune_builds_our_streams_from_our_folders(exported, spm_path, mimi, monkeypatch) -> None:
    """With keep_and_shift=True (its option that keeps every token) the loader's codes equal our
    pre-tokenized streams exactly; with its default (train.py) the audio rows are equal and the
    text row is what our restatement of its rule predicts, dropping what the report counted."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # its loader assumes a GPU
    spm = SentencePieceTextTokenizer(spm_path)
    differs = []
    for keep_and_shift in (True, False):
        iterate = _loader(spm_path, mimi, duration_sec=30.0, keep_and_shift=keep_and_shift)  # one window each
        got = list(iterate(exported / "train" / "data.jsonl"))
        assert len(got) == 2
        for sample, sid in zip(got, ("d000", "d001")):
            ours = np.array(read_row(exported, sid)["codes"])
            codes = sample.codes.numpy()
            assert codes.shape == (1, 17, 375) and ours.shape[0] == 17
            n = ours.shape[1]
            # the window's tail: moshi's zero token for audio; the text row holds PAD there, because
            # InterleavedTokenizer passes a frame count as prepare_item's segment_duration (seconds),
            # so its text stream runs 12.5x too long and is then cut to the window
            assert (codes[0, 1:, n:] == -1).all() and (codes[0, 0, n:] == 3).all()
            np.testing.assert_array_equal(codes[0, 1:, :n], ours[1:])  # agent codes, user codes
            assert len(set(ours[1].tolist())) > 3  # random Mimi codebooks give varied codes
            if keep_and_shift:
                np.testing.assert_array_equal(codes[0, 0, :n], ours[0])
            else:
                d = moshi.read_dialogue(exported, sid)
                al = [moshi.Alignment(w, a, b, sp) for w, (a, b), sp in d.alignments]
                predicted = moshi.text_stream(al, spm.encode, n, 3, 0, keep_and_shift=False)
                np.testing.assert_array_equal(codes[0, 0, :n], predicted)
                differs.append(not np.array_equal(predicted, ours[0]))
    assert any(differs)  # the dropped leftovers the report counted are really dropped by the loader


@pytest.mark.skipif(not SRC, reason="MOSHI_FINETUNE_SRC (a kyutai-labs/moshi-finetune checkout) is not set")
def test_moshi_finetune_windows_every_dialogue_fully(exported, spm_path, mimi, monkeypatch) -> None:
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    iterate = _loader(spm_path, mimi, duration_sec=8.0)
    one = exported / "train" / "one.jsonl"  # the first dialogue only (beside data.jsonl: same relative paths)
    one.write_text((exported / "train" / "data.jsonl").read_text().splitlines()[0] + "\n")
    got = list(iterate(one))
    one.unlink()
    assert len(got) == 3  # 8 s windows while start < duration (~19 s): 0, 8, 16
    for sample in got:
        assert sample.codes.shape == (1, 17, 100)
    # the last window of each file: audio frames up to the end, then the zero token
    tail = got[2].codes.numpy()[0]
    frames = int(np.ceil((moshi.read_dialogue(exported, "d000").duration - 16.0) * 12.5))
    assert (tail[1:, :frames] >= 0).all() and (tail[1:, frames:] == -1).all()


def test_moshi_lm_takes_the_pre_tokenized_streams(exported, spm_path) -> None:
    """moshi's LMModel (real class, tiny random config with Moshi's 17-stream layout and delays)
    accepts our codes and gives logits for every frame."""
    from moshi.models import loaders
    from moshi.models.lm import LMModel

    sp_size = SentencePieceTextTokenizer(spm_path).vocab_size
    torch.manual_seed(0)
    model = LMModel(
        delays=loaders._lm_kwargs["delays"],
        n_q=16,
        dep_q=8,
        card=2048,
        text_card=sp_size,
        dim=32,
        num_heads=2,
        num_layers=1,
        hidden_scale=2,
        depformer_dim=32,
        depformer_num_heads=2,
        depformer_num_layers=1,
        positional_embedding="rope",
        depformer_pos_emb="none",
        context=500,
        existing_text_padding_id=3,
        existing_text_end_padding_id=0,
    ).eval()
    ours = torch.tensor(np.array(read_row(exported, "d000")["codes"]))[None]
    assert ours.shape[1] == model.num_codebooks == 17
    assert int(ours[0, 0].max()) < sp_size and int(ours[0, 1:].max()) < 2048 and int(ours.min()) >= 0
    with torch.no_grad():
        out = model(codes=ours)
    t = ours.shape[-1]
    assert out.logits.shape == (1, 8, t, 2048) and out.text_logits.shape == (1, 1, t, sp_size)
    assert torch.isfinite(out.text_logits).all()
    assert model.text_padding_token_id == 3 and model.end_of_text_padding_id == 0

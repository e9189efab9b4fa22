"""The moshi export read by moshi-finetune's own loader and fed to moshi's own LMModel.

moshi-finetune is not a package: point MOSHI_FINETUNE_SRC at a checkout of
github.com/kyutai-labs/moshi-finetune (tested at 2acc879); without it the loader test is
skipped (tests/test_export_moshi.py restates each loader rule as its own test). Its code runs
unchanged, on CPU (its `.cuda()` call made a no-op), with a randomly initialised Mimi (moshi's
real class) and a SentencePiece vocabulary trained here with Moshi's special ids (EPAD 0, PAD 3).

Truths: moshi-finetune's `get_dataset_iterator` + `InterleavedTokenizer` build the [1, 17, T]
training codes from our data.jsonl / wav / alignments; our pre-tokenized streams must equal
them frame for frame. Without a checkout: moshi's own `LMModel` (tiny, random, CPU) takes a batch
of our streams cut into windows as that loader cuts files, and train.py's loss on it is finite,
near ln(cardinality), over exactly the positions the wav durations predict; wrong layouts fail; the
streams Moshi learns to speak are Mimi's codes of the wav's channel 0 (the agent).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from factory.export import moshi
from factory.export.options import ExportOptions
from factory.export.output import read_row, read_sidecar
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


# moshi-finetune's example/moshi_7B.yaml: the loss weights; duration_sec 8 (it uses 100) gives each ~19 s
# dialogue several windows, the last one padded, as its loader cuts a file
TEXT_PADDING_WEIGHT, FIRST_CODEBOOK_WEIGHT, WINDOW_S = 0.5, 100.0, 8.0


def _tiny_lm(exported: Path):
    """moshi's LMModel (real class, random weights, CPU) with Moshi's stream layout and delays, sized
    from the export's sidecar: 2 n_q audio streams, dep_q = n_q, its cardinalities and PAD/EPAD."""
    from moshi.models import loaders
    from moshi.models.lm import LMModel

    side = read_sidecar(exported)
    assert side.audio_tokenizer is not None
    n_q = side.audio_tokenizer["config"]["n_q"]
    torch.manual_seed(0)
    return LMModel(
        delays=loaders._lm_kwargs["delays"],
        n_q=2 * n_q,
        dep_q=n_q,
        card=side.id_layout["audio"][1],
        text_card=side.id_layout["text"][1],
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
        existing_text_padding_id=side.special_tokens["text_padding"],
        existing_text_end_padding_id=side.special_tokens["end_of_text_padding"],
    )


def _windows(exported: Path, sid: str, frames: int, pad: int) -> list[torch.Tensor]:
    """Our pre-tokenized row cut as moshi-finetune's loader cuts a file: windows from 0 every
    `frames` while the start is inside the dialogue, each [1, K, frames]; past the end the audio
    rows hold the zero token -1 and the text row PAD (InterleavedTokenizer, see above)."""
    codes = torch.tensor(np.array(read_row(exported, sid)["codes"]), dtype=torch.long)
    out = []
    for start in range(0, codes.shape[1], frames):
        w = codes[:, start : start + frames]
        tail = frames - w.shape[1]
        w = torch.cat([w, torch.full((w.shape[0], tail), moshi.ZERO_TOKEN, dtype=torch.long)], dim=1)
        w[0, frames - tail :] = pad
        out.append(w[None])
    return out


def _loss_with_mask(logits, target, mask, first_codebook_weight=1.0, padding_weight=1.0, padding_ids=()):
    """moshi-finetune finetune/loss.py compute_loss_with_mask, restated (checked against its own
    function below when MOSHI_FINETUNE_SRC is set)."""
    target = torch.where(mask, target, torch.zeros_like(target))
    weights = mask.float()
    weights[:, 0] *= first_codebook_weight
    for i in padding_ids:
        weights[target == i] *= padding_weight
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), reduction="none"
    )
    w = weights.reshape(-1)
    return torch.where(w > 0, ce * w, torch.zeros_like(ce)).sum() / w.sum()


def _train_step_loss(model, codes: torch.Tensor):
    """train.py's step: forward, text loss on row 0, audio loss on the dep_q streams Moshi speaks."""
    out = model(codes=codes)
    a = model.audio_offset
    text_loss = _loss_with_mask(
        out.text_logits,
        codes[:, :a],
        out.text_mask,
        padding_weight=TEXT_PADDING_WEIGHT,
        padding_ids={model.text_padding_token_id, model.end_of_text_padding_id},
    )
    audio_loss = _loss_with_mask(
        out.logits, codes[:, a : a + model.dep_q], out.mask, first_codebook_weight=FIRST_CODEBOOK_WEIGHT
    )
    return out, text_loss, audio_loss


def test_moshi_lm_trains_on_a_batch_of_our_streams(exported) -> None:
    """moshi's own LMModel takes a moshi-finetune-style batch of our windows, gives logits shaped
    like the codes, a finite loss near ln(cardinality) (an untrained model's cross-entropy) over
    exactly the valid positions the durations in data.jsonl predict, and finite gradients."""
    model = _tiny_lm(exported).train()
    side = read_sidecar(exported)
    frames = math.ceil(WINDOW_S * moshi.FRAME_RATE)
    entries = [json.loads(line) for line in (exported / "train" / "data.jsonl").read_text().splitlines()]
    pad = model.text_padding_token_id
    batch = torch.cat([w for e in entries for w in _windows(exported, Path(e["path"]).stem, frames, pad)])
    b = batch.shape[0]
    # each window's frames with codes, from the durations data.jsonl gives (the wav lengths)
    durations = [e["duration"] for e in entries]
    valid = [
        min(frames, math.ceil(d * moshi.FRAME_RATE) - s)
        for d in durations
        for s in range(0, math.ceil(d * moshi.FRAME_RATE), frames)
    ]
    assert b == len(valid) >= 4 and batch.shape[1] == model.num_codebooks == 17
    assert min(valid) < frames  # a padded last window is in the batch

    out, text_loss, audio_loss = _train_step_loss(model, batch)
    assert out.logits.shape == (b, model.dep_q, frames, model.card)
    assert out.text_logits.shape == (b, 1, frames, model.text_card)
    # the mask: every text frame (the tail holds PAD); per audio stream the frames with codes, less
    # the last `delay` frames that the delayed pattern never predicts
    delays = model.delays[1 : 1 + model.dep_q]
    assert int(out.text_mask.sum()) == b * frames
    assert int(out.mask.sum()) == sum(min(v, frames - d) for v in valid for d in delays)
    for loss, card in ((text_loss, model.text_card), (audio_loss, model.card)):
        assert torch.isfinite(loss)
        assert abs(float(loss.detach()) - math.log(card)) < 0.25 * math.log(card), (float(loss.detach()), card)
    (text_loss + audio_loss).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert float(model.text_emb.weight.grad.abs().sum()) > 0 and float(model.emb[0].weight.grad.abs().sum()) > 0
    assert side.special_tokens["zero_token"] == model.zero_token_id


def test_moshi_lm_rejects_misplaced_rows(exported) -> None:
    """A wrong layout does not reach a loss: rows rolled by one (audio ids land in the text
    embedding), a text id equal to the model's text card (the forward takes it silently, as moshi's
    own initial token; the loss's cross-entropy refuses it), or the time and stream axes swapped."""
    model = _tiny_lm(exported).eval()
    codes = torch.cat(_windows(exported, "d000", 100, model.text_padding_token_id))
    assert int(codes[:, 1:].max()) > model.text_card  # audio ids exceed the text vocabulary
    too_big = codes.clone()
    too_big[0, 0, 10] = model.text_card
    with torch.no_grad():
        _train_step_loss(model, codes)  # the right layout passes
        for bad, where in ((codes.roll(1, dims=1), "index out of range"), (too_big, "out of bounds")):
            with pytest.raises(IndexError, match=where):
                _train_step_loss(model, bad)
        with pytest.raises(AssertionError):
            model(codes=codes.transpose(1, 2))


def test_the_streams_moshi_learns_to_speak_are_the_agent_channel(exported, mimi) -> None:
    """The dep_q audio streams the loss trains (rows 1..n_q) are the codes of the wav's channel 0,
    the agent = Moshi's own voice, and rows n_q+1.. the user's channel 1: Mimi run again on the first
    seconds of the wav (its encoder is causal, so a prefix gives the full file's first frames)."""
    d = moshi.read_dialogue(exported, "d000")
    ours = np.array(read_row(exported, "d000")["codes"])
    n_q = (ours.shape[0] - 1) // 2
    seconds, frames = 2.4, 24  # 30 frames encoded; the last ones see the cut
    head = d.audio[: int(seconds * moshi.SAMPLE_RATE)]
    agent, user = mimi.encode_batch([head[:, 0], head[:, 1]], moshi.SAMPLE_RATE)
    assert (agent[:, :frames] != user[:, :frames]).sum() >= 10  # the channels' codes differ: a swap shows
    np.testing.assert_array_equal(ours[1 : 1 + n_q, :frames], agent[:, :frames], err_msg="rows 1..n_q: not the agent")
    np.testing.assert_array_equal(ours[1 + n_q :, :frames], user[:, :frames], err_msg="user rows: not channel 1")


@pytest.mark.skipif(not SRC, reason="MOSHI_FINETUNE_SRC (a kyutai-labs/moshi-finetune checkout) is not set")
def test_restated_loss_is_moshi_finetunes(exported) -> None:
    """Our train-step loss equals moshi-finetune's own compute_loss_with_mask on the same output."""
    sys.path.insert(0, SRC)
    try:
        from finetune.loss import compute_loss_with_mask
    finally:
        sys.path.remove(SRC)
    model = _tiny_lm(exported).eval()
    codes = torch.cat(_windows(exported, "d001", 100, model.text_padding_token_id))
    with torch.no_grad():
        out, text_loss, audio_loss = _train_step_loss(model, codes)
        pads = {model.text_padding_token_id, model.end_of_text_padding_id}
        theirs_text = compute_loss_with_mask(
            out.text_logits,
            codes[:, :1],
            out.text_mask,
            "text",
            text_padding_weight=TEXT_PADDING_WEIGHT,
            text_padding_ids=pads,
        )
        theirs_audio = compute_loss_with_mask(
            out.logits, codes[:, 1:9], out.mask, "audio", first_codebook_weight_multiplier=FIRST_CODEBOOK_WEIGHT
        )
    torch.testing.assert_close(text_loss, theirs_text)
    torch.testing.assert_close(audio_loss, theirs_audio)

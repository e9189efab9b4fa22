"""align_words: contract on real Piper renderings, and accuracy against Piper's exact times."""

from __future__ import annotations

import numpy as np
import pytest

from factory.render.align import align_words

SENTENCES = [
    "Well, um, I think we should probably leave at 7:30 — before the traffic gets bad.",
    "Hold on, let me check my calendar real quick.",
    "Mm-hmm, yeah.",
]


@pytest.fixture(scope="module")
def renders():
    from factory.render.registry import get_backend
    from factory.render.voices import VoiceBank

    bank = VoiceBank.load()
    piper = get_backend("piper")
    return [piper.synthesize(t, bank.get(v)) for t, v in zip(SENTENCES, ["piper-joe", "piper-joe-high", "piper-joe"])]


def check_contract(words, text, duration):
    assert [w.word for w in words] == text.split()
    prev = 0.0
    for w in words:
        assert prev - 1e-9 <= w.start <= w.end <= duration + 1e-9
        prev = w.end


def test_align_contract_and_accuracy(renders):
    errs = []
    for utt in renders:
        words = align_words(utt.audio, utt.sample_rate, utt.text)
        check_contract(words, utt.text, utt.duration)
        errs += [abs(a.start - g.start) for a, g in zip(words, utt.words)]
        errs += [abs(a.end - g.end) for a, g in zip(words, utt.words)]
    median = float(np.median(errs))
    assert median < 0.06, f"median boundary error {median * 1000:.0f} ms"  # measured ~20 ms on 40


def test_align_asr_route_and_padding(renders):
    utt = renders[1]
    sr = utt.sample_rate
    padded = np.concatenate([np.zeros(sr // 2, np.float32), utt.audio, np.zeros(sr // 2, np.float32)])
    words = align_words(padded, sr, utt.text, method="asr")
    check_contract(words, utt.text, len(padded) / sr)
    assert abs(words[0].start - (0.5 + utt.words[0].start)) < 0.05  # snapped to speech onset
    assert abs(words[-1].end - (0.5 + utt.words[-1].end)) < 0.05
    # text the ASR will not hear word for word still gets one span per token
    words = align_words(utt.audio, sr, "Hold on, uh, let me check my calendar, real quick!", method="asr")
    check_contract(words, "Hold on, uh, let me check my calendar, real quick!", utt.duration)

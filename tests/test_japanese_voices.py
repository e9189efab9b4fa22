"""The Japanese Kokoro voices: each speaks a Japanese sentence with word times that the audio
agrees with (Silero VAD, a detector independent of the durations the times come from), and
Whisper (language ja) hears it within the QA's CER threshold."""

from __future__ import annotations

import numpy as np
import pytest

from factory.asr import cer, transcribe
from factory.audio.vad import FRAME_S, silero_vad
from factory.config import load_config
from factory.languages import words
from factory.render.kokoro_backend import KokoroBackend
from factory.render.voices import VoiceBank

# Two sentences: the full stop between them is a pause the times must put between the words.
TEXT = "今日はいい天気ですね。駅はどこですか。"
JA_VOICES = [v for v in VoiceBank.load() if v.language == "ja"]


def test_the_bank_has_the_five_styles_in_japanese_with_disjoint_splits() -> None:
    assert sorted(v.speaker or "" for v in JA_VOICES) == [
        "jf_alpha",
        "jf_gongitsune",
        "jf_nezumi",
        "jf_tebukuro",
        "jm_kumo",
    ]
    bank = VoiceBank.load()
    groups = {s: bank.groups(s, "ja") for s in ("train", "dev", "test")}
    assert not (groups["train"] & groups["dev"] or groups["train"] & groups["test"] or groups["dev"] & groups["test"])
    assert len(groups["train"]) >= 2  # a Japanese dialogue needs two speakers
    assert all(not g & bank.groups("train", "en") for s, g in groups.items() if s != "train")


@pytest.mark.parametrize("voice", JA_VOICES, ids=lambda v: v.id)
def test_japanese_word_times_agree_with_the_audio_and_whisper_hears_it(voice) -> None:
    utt = KokoroBackend().synthesize(TEXT, voice)
    assert (
        [w.word for w in utt.words] == words(TEXT, "ja") == ["今日は", "いい", "天気ですね。", "駅は", "どこですか。"]
    )
    active = silero_vad(utt.audio, utt.sample_rate)

    def share(start: float, end: float) -> float:
        frames = active[int(start / FRAME_S) : max(int(end / FRAME_S), int(start / FRAME_S) + 1)]
        return float(np.mean(frames)) if len(frames) else 0.0

    for w in utt.words:
        assert w.end > w.start and share(w.start, w.end) >= 0.6, (w, share(w.start, w.end))
    first, second = utt.words[2], utt.words[3]  # the sentence break lies between them
    assert second.start - first.end >= 0.1
    assert share(first.end + 0.03, second.start - 0.03) <= 0.5, (first, second)
    threshold = load_config().tts.qa_threshold("ja")
    assert threshold is not None
    assert cer(TEXT, transcribe(utt.audio, utt.sample_rate, language="ja").text) <= threshold

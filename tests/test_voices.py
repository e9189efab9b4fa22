"""The voice bank: loading, speaker-disjoint splits, pairs of distinct speakers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from factory.models import Voice
from factory.render.registry import get_backend
from factory.render.voices import VoiceBank, VoiceBankError, group_of


@pytest.fixture(scope="module")
def bank() -> VoiceBank:
    return VoiceBank.load()


def test_bank_loads(bank: VoiceBank) -> None:
    assert len(bank) >= 4
    assert {v.backend for v in bank} >= {"piper", "espeak", "kokoro"}
    assert {v.gender for v in bank} >= {"male", "female"}
    assert bank.get("piper-joe").backend == "piper"


def test_splits_are_speaker_disjoint(bank: VoiceBank) -> None:
    groups = {split: bank.groups(split) for split in ("train", "dev", "test")}
    assert not groups["train"] & groups["dev"]
    assert not groups["train"] & groups["test"]
    assert not groups["dev"] & groups["test"]
    assert len(groups["train"]) >= 2 and len(groups["dev"]) >= 2 and len(groups["test"]) >= 2
    assert sum(len(bank.by_split(s)) for s in groups) == len(bank)


def test_every_voice_renders(bank: VoiceBank) -> None:
    """Each entry's backend accepts its speaker and params (cheap: espeak/piper only run
    here; kokoro styles are checked by name, their rendering in test_tts)."""
    from factory.render.kokoro_backend import STYLES

    for voice in bank:
        if voice.backend == "kokoro":
            assert voice.speaker in STYLES and set(voice.params) <= {"pitch"}
        else:
            u = get_backend(voice.backend).synthesize("okay", voice)
            assert u.voice_id == voice.id and u.duration > 0.1


def test_leak_detected() -> None:
    voices = [
        Voice(id="joe", backend="piper", split="train"),
        Voice(id="joe-fast", backend="piper", group="joe", split="test"),
        Voice(id="f3", backend="espeak", speaker="en-us+f3", split="dev"),
    ]
    with pytest.raises(VoiceBankError, match=r"speaker leak.*'joe'.*\['test', 'train'\].*joe-fast"):
        VoiceBank(voices)


def test_duplicate_and_unknown_ids() -> None:
    with pytest.raises(VoiceBankError, match="duplicate voice id 'a'"):
        VoiceBank([Voice(id="a", backend="piper"), Voice(id="a", backend="espeak")])
    bank = VoiceBank([Voice(id="a", backend="piper")])
    with pytest.raises(VoiceBankError, match=r"unknown voice 'b'; known: \['a'\]"):
        bank.get("b")


def test_bad_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("- id: Not Valid\n  backend: piper\n")
    with pytest.raises(VoiceBankError, match="bad.yaml: voice #0"):
        VoiceBank.load(tmp_path)
    with pytest.raises(VoiceBankError, match="no voice files"):
        VoiceBank.load(tmp_path / "empty")


def test_pick_pair_gives_distinct_speakers(bank: VoiceBank) -> None:
    rng = np.random.default_rng(7)
    for split in ("train", "dev", "test"):
        seen = set()
        for _ in range(50):
            a, b = bank.pick_pair(split, rng)
            assert a.split == b.split == split
            assert group_of(a) != group_of(b)
            assert a.backend != b.backend or a.gender != b.gender
            seen.add(a.id)
        assert len(seen) > 1 or len(bank.by_split(split)) == 1


def test_pick_pair_is_reproducible(bank: VoiceBank) -> None:
    picks = [
        [bank.pick_pair("train", rng) for _ in range(10)]
        for rng in (np.random.default_rng(3), np.random.default_rng(3))
    ]
    assert picks[0] == picks[1]


def test_pick_pair_needs_two_speakers() -> None:
    bank = VoiceBank(
        [Voice(id="a", backend="piper", split="dev"), Voice(id="a2", backend="piper", group="a", split="dev")]
    )
    with pytest.raises(VoiceBankError, match="needs en voices of >= 2 groups"):
        bank.pick_pair("dev", np.random.default_rng(0))


# Short: the bank's 57 voices each render it (Kokoro's at about real time). Its medians keep every
# drawable pair >= 0.29 apart (0.21 with a sentence twice as long), against the test's 0.1.
SENTENCE = "Sure, I can help with that."


def _voice_features(voice: Voice) -> tuple[float, float]:
    """Median F0 over frames with speech and median spectral centroid of one rendered sentence."""
    import librosa

    from factory.audio.edit import frame_activity

    utt = get_backend(voice.backend).synthesize(SENTENCE, voice)
    mono, sr = utt.audio.astype(np.float32), utt.sample_rate
    active = np.repeat(frame_activity(mono, sr), int(0.01 * sr))[: len(mono)]
    speech = mono[: len(active)][active]
    f0 = librosa.yin(speech, fmin=60, fmax=400, sr=sr)  # over speech frames only (the VAD's)
    centroid = librosa.feature.spectral_centroid(y=speech, sr=sr)
    return float(np.median(f0)), float(np.median(centroid))


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(a, b)


def test_drawable_pairs_are_what_pick_pair_draws(bank: VoiceBank) -> None:
    rng = np.random.default_rng(5)
    for split in ("train", "dev", "test"):
        drawn = {tuple(v.id for v in bank.pick_pair(split, rng)) for _ in range(400)}
        assert drawn == {(a.id, b.id) for a, b in bank.drawable_pairs(split)}


def test_every_drawable_pair_sounds_distinct(bank: VoiceBank) -> None:
    """Two channels must be told apart by ear (and by a diarizer): >10 % apart in median F0 or
    in median spectral centroid, for every pair the bank can draw in every split."""
    features = {v.id: _voice_features(v) for v in bank}
    alike = []
    for split in ("train", "dev", "test"):
        for a, b in bank.drawable_pairs(split):
            (f0_a, cen_a), (f0_b, cen_b) = features[a.id], features[b.id]
            if _relative(f0_a, f0_b) <= 0.1 and _relative(cen_a, cen_b) <= 0.1:
                alike.append((split, a.id, b.id, round(f0_a), round(f0_b), round(cen_a), round(cen_b)))
    assert not alike, alike

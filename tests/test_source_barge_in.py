"""A barge-in cut into a dataset dialogue, heard from the audio: the cut turn's voice stops where
the timeline stops it and stays silent until its speaker's next turn (the words after the cut are
in neither the transcript nor the audio), the interrupter starts where it is placed, Whisper hears
the spoken words rather than the planned ones, and the interrupter takes up nothing only the
unheard rest said. One dialogue of the shipped en-everyday set through the run's own stages (the
tiny run's voices, through the TTS cache)."""

from __future__ import annotations

import numpy as np
import pytest

from factory.asr import error_rate, transcribe
from factory.audio.edit import VAD_FRAME_S, frame_activity
from factory.config import load_config
from factory.models import BargeInEvent, Sample
from factory.runtime import Runtime
from factory.script.text_checks import content_words
from factory.stages import plan_sample, script_for
from tests.conftest import TINY
from tests.export_fixtures import render_and_assemble

FRAME_S = 0.01  # one frame of the timeline's frame view (100 Hz): the tolerance of the cut in the audio
ON = [
    *TINY,
    "dialogue.sources=[{kind: dataset, path: en-everyday}]",
    "behaviour.barge_ins_per_dialogue=2",
    "behaviour.barge_in_dialogue_share=1",
]
KEY = "train-0000001"  # en-everyday-0022, a peer dialogue: the user is cut, then the agent (checked below)


@pytest.fixture(scope="module")
def cut() -> Sample:
    cfg = load_config(overrides=ON)
    rt = Runtime(cfg)
    plan = plan_sample(rt, KEY, KEY)
    script = script_for(rt, plan)
    return render_and_assemble(rt, plan, script)


def _edges(active: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """First and last active frame's edges (seconds) of `active` between `lo` and `hi`."""
    a, b = round(lo / VAD_FRAME_S), round(hi / VAD_FRAME_S)
    on = np.flatnonzero(active[a:b]) + a
    assert len(on), (lo, hi)
    return on[0] * VAD_FRAME_S, (on[-1] + 1) * VAD_FRAME_S


def test_the_cut_turn_stops_in_the_audio_where_the_timeline_stops_it(cut: Sample) -> None:
    tl, sr = cut.timeline, cut.sample_rate
    barge_ins = [e for e in tl.events if isinstance(e, BargeInEvent)]
    assert len(barge_ins) >= 2, [e.type for e in tl.events]
    for e in barge_ins:
        victim, interrupter = tl.turn(e.victim_turn), tl.turn(e.turn)
        words = [w for w in tl.words if w.turn == victim.id]
        spoken = [w for w in words if w.spoken]
        assert spoken and len(spoken) < len(words)
        # the timeline: the transcript holds the spoken words only, and the turn ends at the last one
        assert victim.spoken_text == " ".join(w.word for w in spoken) != victim.planned_text
        assert abs(spoken[-1].end - victim.end) <= FRAME_S
        # the audio: the victim's voice stops there and stays silent until its speaker's next turn
        voice = frame_activity(cut.stems[:, victim.channel.index], sr)
        after = min(
            (t.start for t in tl.turns if t.channel is victim.channel and t.start > victim.end), default=tl.duration
        )
        _, stop = _edges(voice, victim.start, victim.end + 0.5)
        assert abs(stop - victim.end) <= FRAME_S, (stop, victim.end)
        # (the frames wholly before the next turn: the one it starts in holds its first samples)
        assert not voice[round(stop / VAD_FRAME_S) : int(after / VAD_FRAME_S)].any()
        # the interrupter's voice starts where it is placed, over the victim's
        start, _ = _edges(frame_activity(cut.stems[:, interrupter.channel.index], sr), e.onset - 0.3, e.onset + 0.3)
        assert abs(start - e.onset) <= FRAME_S and start < stop, (start, e.onset, stop)
        # what the audio says: Whisper hears the spoken words, not the planned ones
        clip = cut.stems[round(victim.start * sr) : round(victim.end * sr), victim.channel.index]
        heard = transcribe(clip, sr, "en").text
        said, planned = error_rate(victim.spoken_text, heard), error_rate(victim.planned_text, heard)
        assert said < planned, (heard, victim.spoken_text, said, planned)
        # plausible: the interrupter takes up no word that only the unheard rest of the turn said
        known = content_words(victim.spoken_text) | {
            w for t in tl.turns if t.end <= victim.start for w in content_words(t.spoken_text)
        }
        rest = content_words(" ".join(w.word for w in words if not w.spoken)) - known
        assert not rest & content_words(interrupter.spoken_text), (rest, interrupter.spoken_text)

"""Sound the agent must not answer (side talk, background speech, non-speech) against the audio:
one dialogue with a hand-written script through the real planner, TTS voices (the tiny run's,
through the TTS cache the tiny run fills), timeline and mixer, read back with the energy VAD."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from factory.audio.edit import VAD_FRAME_S, frame_activity
from factory.audio.sounds import synth_sound
from factory.config import load_config
from factory.export.fdb import FullDuplexBench
from factory.export.moshi import MoshiOptions, _alignments_json
from factory.export.options import ExportOptions
from factory.export.units1s import states
from factory.models import (
    BackgroundSpeechEvent,
    Channel,
    Mode,
    NonSpeechEvent,
    Sample,
    Script,
    ScriptTurn,
    SideTalkEvent,
)
from factory.run.rebuild import rebuild_clean
from factory.runtime import Runtime
from factory.script.compose import speaker_order, with_ignored_events
from factory.script.writer import build_messages
from factory.stages import assemble, cache_key, finish_render, plan_sample, render_batch, render_requests
from factory.timeline.frames import frame_view
from tests.conftest import TINY

MIMI_FRAME_S = 0.08  # one 12.5 Hz frame: the tolerance of an event's edges in the audio
EVENTS = (SideTalkEvent, BackgroundSpeechEvent, NonSpeechEvent)
ON = [
    *TINY,
    "tts.processes=1",
    "behaviour.min_fillers=0",
    "events.side_talk_per_dialogue=2",
    "events.background_speech_per_dialogue=2",
    "events.non_speech_per_dialogue=2",
]
TURNS = [
    (Channel.user, "Hi, can you help me plan a trip to the coast this weekend?"),
    (
        Channel.agent,
        "Of course. The coast is lovely this time of year, and the weather looks dry on Saturday, so I would "
        "leave early in the morning, take the scenic road along the river, stop for lunch in the old harbour "
        "town, and then walk along the cliffs in the afternoon before the light goes.",
    ),
    (Channel.user, "That sounds great. Where should we stay?"),
    (
        Channel.agent,
        "There is a small guest house near the harbour with rooms that look over the water, and it is not "
        "expensive, so I would book it today because places fill up quickly when the weather is good and the "
        "weekend is long.",
    ),
]


@pytest.fixture(scope="module")
def with_events() -> tuple[Sample, Runtime]:
    cfg = load_config(overrides=ON)
    rt = Runtime(cfg)
    key = "train-0000003"  # its events draw one of each kind (checked below)
    plan = plan_sample(rt, key, key)
    turns = [ScriptTurn(speaker=ch, text=text, responds_to=i - 1 if i else None) for i, (ch, text) in enumerate(TURNS)]
    script = with_ignored_events(Script(scenario_id=plan.scenario.id, turns=turns, llm="hand"), plan.scenario, cfg, key)
    requests = render_requests(plan, script, cfg.run.seed)
    utts = render_batch(rt, list(requests.values()))
    sources = {
        k: finish_render(cfg, r, u, None, cache_key(rt, r))
        for (k, r), u in zip(requests.items(), utts, strict=True)
        if not isinstance(u, Exception)
    }
    assert len(sources) == len(requests), utts
    return assemble(cfg, plan, script, sources), rt


def test_each_event_is_in_the_user_audio_where_the_timeline_places_it(with_events) -> None:
    sample, rt = with_events
    tl = sample.timeline
    events = [e for e in tl.events if isinstance(e, EVENTS)]
    assert {type(e) for e in events} == set(EVENTS), [e.type for e in events]
    user = frame_activity(sample.stems[:, Channel.user.index], sample.sample_rate)
    agent = frame_activity(sample.stems[:, Channel.agent.index], sample.sample_rate)
    view = frame_view(tl, 12.5)
    for e in events:
        near = slice(round((e.start - MIMI_FRAME_S) / VAD_FRAME_S), round((e.end + MIMI_FRAME_S) / VAD_FRAME_S))
        heard = np.flatnonzero(user[near]) * VAD_FRAME_S + near.start * VAD_FRAME_S
        assert len(heard), e
        # found where placed, to one 80 ms frame at each edge
        assert abs(heard[0] - e.start) <= MIMI_FRAME_S and abs(heard[-1] + VAD_FRAME_S - e.end) <= MIMI_FRAME_S, (
            e.type,
            e.start,
            e.end,
            heard[0],
            heard[-1],
        )
        # alone on the user's channel: silent just before and after (no turn of the user there)
        before = slice(round((e.start - 0.3) / VAD_FRAME_S), near.start)
        after = slice(near.stop, round((e.end + 0.3) / VAD_FRAME_S))
        assert not user[before].any() and not user[after].any(), e
        # the agent keeps talking through it: its turn goes on after the event, and no turn answers it
        host = tl.turn(e.during_turn)
        assert host.channel is Channel.agent and host.start < e.start and e.end < host.end
        assert agent[round(e.end / VAD_FRAME_S) : round(host.end / VAD_FRAME_S)].any()
        assert not any(t.start > e.start and t.start < host.end for t in tl.turns if t.channel is Channel.user)
        # the frame view marks it at the Mimi rate
        frames = slice(round(e.start * 12.5 + 0.5), int(e.end * 12.5 - 0.5))
        assert view.ignore[frames].all(), e
    assert view.ignore.sum() <= sum(e.end - e.start for e in events) * 12.5 + len(events)
    background = next(e for e in events if isinstance(e, BackgroundSpeechEvent))
    assert background.voice_id not in sample.meta.voices.values()


def test_the_clean_audio_rebuilds_from_its_recipe_with_the_layers(with_events) -> None:
    sample, rt = with_events
    layers = [p for p in sample.meta.recipe.pieces if p.gain_db is not None]
    assert len(layers) == sum(isinstance(e, EVENTS) for e in sample.timeline.events)
    assert rt.cfg.tts.cache_dir is not None
    np.testing.assert_array_equal(rebuild_clean(sample.meta.recipe, rt.cfg.tts.cache_dir), sample.stems)


def test_sounds_are_deterministic_and_distinct() -> None:
    for kind in ("cough", "knock", "keyboard"):
        a = synth_sound(kind, 24000, 5)
        np.testing.assert_array_equal(a, synth_sound(kind, 24000, 5))
        assert not np.array_equal(a, synth_sound(kind, 24000, 6)[: len(a)])
        assert abs(float(np.max(np.abs(a))) - 0.5) < 1e-6


def test_events_off_leave_the_script_alone_and_agent_opens_in_assistant_mode() -> None:
    off = load_config(overrides=TINY)
    rt = Runtime(off)
    plan = plan_sample(rt, "train-0000000", "train-0000000")
    script = Script(scenario_id="s", turns=[ScriptTurn(speaker=ch, text=t) for ch, t in TURNS], llm="hand")
    assert with_ignored_events(script, plan.scenario, off, plan.key) is script
    opens = load_config(overrides=[*TINY, "dialogue.agent_opens=true"])
    for mode in Mode:
        scenario = plan.scenario.model_copy(update={"mode": mode})
        first = Channel.agent if mode is Mode.assistant else Channel.user
        assert speaker_order(scenario, opens)[:2] == [first, first.other]
        assert speaker_order(scenario, off)[0] is Channel.user
        opening = build_messages(scenario, [], first, 20)[-1]["content"]
        assert ("Greet" in opening) is (mode is Mode.assistant), opening


def test_fdb_v1_5_items_of_the_events(with_events, tmp_path) -> None:
    sample, _ = with_events
    out = tmp_path / "eval"
    FullDuplexBench().export([sample], out, ExportOptions(format_options={"split": "all"}))
    wanted = {"v1_5/talking_to_other": SideTalkEvent, "v1_5/background_speech": BackgroundSpeechEvent}
    for task, kind in wanted.items():
        events = [e for e in sample.timeline.events if isinstance(e, kind)]
        items = sorted((out / task).iterdir())
        assert len(items) == len(events) > 0, task
        for folder, e in zip(items, events):
            meta = json.loads((folder / "metadata.json").read_text())
            # dataset/README.md l. 55-63 of Full-Duplex-Bench v1.5: exactly these three fields
            assert set(meta) == {"context_text", "current_turn_text", "timestamps"}
            assert meta["current_turn_text"] == e.text
            noisy, sr = sf.read(folder / "input.wav", dtype="float32")
            clean, _ = sf.read(folder / "clean_input.wav", dtype="float32")
            assert sr == 16000 and len(noisy) == len(clean)
            s, z = (round(t * sr) for t in meta["timestamps"])
            assert np.abs(noisy[s:z]).max() > 0.01 and not clean[s:z].any()
            np.testing.assert_array_equal(noisy[:s], clean[:s])
            assert abs((z - s) / sr - (e.end - e.start)) < 1e-3


def test_exports_carry_the_events_as_ignore_spans(with_events) -> None:
    sample, _ = with_events
    tl = sample.timeline
    events = [e for e in tl.events if isinstance(e, EVENTS)]
    # units-1s: a unit an event overlaps is "ignore" where the user's state would be "listen"
    plain = tl.model_copy(update={"events": [e for e in tl.events if not isinstance(e, EVENTS)]})
    touched = {u for e in events for u in range(int(e.start), int(e.end - 1e-9) + 1)}
    expected = ["ignore" if u in touched and s == "listen" else s for u, s in enumerate(states(plain, Channel.user))]
    assert states(tl, Channel.user) == expected and "ignore" in expected
    assert states(tl, Channel.agent) == states(plain, Channel.agent)
    doc = json.loads(_alignments_json(sample, [], MoshiOptions()))
    assert [(s["type"], s["start"], s["end"]) for s in doc["ignore"]] == [
        (e.type, round(e.start, 6), round(e.end, 6)) for e in events
    ]

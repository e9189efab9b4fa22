"""Sound the agent must not answer (side talk, background speech, non-speech) against the audio:
one dialogue with a hand-written script through the real planner, TTS voices (the tiny run's,
through the TTS cache the tiny run fills), timeline and mixer, read back with the energy VAD."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import soundfile as sf

from factory.audio.edit import VAD_FRAME_S, frame_activity
from factory.audio.mix import mix
from factory.audio.sounds import synth_sound
from factory.audio.vad import frame_rms
from factory.audit.gates import pool
from factory.audit.measures import audit_sample, plan_activity
from factory.config import DatasetSource, load_config
from factory.conversation.measures import BRIDGE_S, bridge, measure
from factory.export.card import dataset_card
from factory.export.fdb import FullDuplexBench
from factory.export.moshi import Moshi, MoshiOptions, _alignments_json, read_dialogue
from factory.export.options import ExportOptions
from factory.export.units1s import states
from factory.llm.http import OpenAIHTTPBackend
from factory.models import (
    IGNORED_KINDS,
    BackgroundSpeech,
    BackgroundSpeechEvent,
    BargeIn,
    Channel,
    Mode,
    NonSpeech,
    NonSpeechEvent,
    Sample,
    Script,
    ScriptTurn,
    SideTalk,
    SideTalkEvent,
)
from factory.run.rebuild import load_source as load_render
from factory.run.rebuild import rebuild_clean
from factory.run.records import event_tally, parse_drops
from factory.run.shards import MANIFEST_SCHEMA
from factory.runtime import Runtime
from factory.script.compose import speaker_order, with_ignored_events, write_script_structured
from factory.script.planner import event_counts, event_host_words, plan_ignored_events
from factory.script.scenario import draw_scenario
from factory.script.source import load_source, prepare_turns, provenance, scenario_for, write_from_source
from factory.script.writer import build_messages
from factory.seeding import rng_for
from factory.stages import manifest_row, plan_sample
from factory.timeline.frames import AgentState, frame_view
from factory.timeline.place import CHANNEL_GUARD_S, EVENT_DELAY_S
from tests.conftest import TINY
from tests.export_fixtures import EVENTS_SCRIPT, EVENTS_UNDER_SCRIPT, SCRIPT, make_sample, render_and_assemble
from tests.servers import Reply, completion_body

MIMI_FRAME_S = 0.08  # one 12.5 Hz frame: the coarsest grid a target model uses
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
    # events of each kind over the agent, side talk in a pause of the user's turn, background speech and a cough
    # under the user's speech (checked below)
    key = "train-0000181"
    plan = plan_sample(rt, key, key)
    turns = [ScriptTurn(speaker=ch, text=text, responds_to=i - 1 if i else None) for i, (ch, text) in enumerate(TURNS)]
    script = with_ignored_events(Script(scenario_id=plan.scenario.id, turns=turns, llm="hand"), plan.scenario, cfg, key)
    return render_and_assemble(rt, plan, script), rt


def test_each_event_is_in_the_user_audio_where_the_timeline_places_it(with_events) -> None:
    sample, rt = with_events
    tl = sample.timeline
    events = [e for e in tl.events if isinstance(e, EVENTS)]
    assert {type(e) for e in events} == set(EVENTS), [e.type for e in events]
    # side talk both during the agent's turn and in a pause of the user's own
    hosts = {tl.turn(e.during_turn).channel for e in events if isinstance(e, SideTalkEvent)}
    assert hosts == {Channel.user, Channel.agent}, hosts
    # background speech and a sound under the user's own speech, too
    under = {e.type for e in events if tl.turn(e.during_turn).channel is Channel.user and e.type != "side_talk"}
    assert under == {"background_speech", "non_speech"}, under
    user = frame_activity(sample.stems[:, Channel.user.index], sample.sample_rate)
    agent = frame_activity(sample.stems[:, Channel.agent.index], sample.sample_rate)
    view = frame_view(tl, 12.5)
    for e in events:
        host = tl.turn(e.during_turn)
        if host.channel is Channel.user and not isinstance(e, SideTalkEvent):
            _check_under_the_user_s_speech(sample, rt, e, view)
            continue
        near = slice(round((e.start - MIMI_FRAME_S) / VAD_FRAME_S), round((e.end + MIMI_FRAME_S) / VAD_FRAME_S))
        heard = np.flatnonzero(user[near]) * VAD_FRAME_S + near.start * VAD_FRAME_S
        # found where placed, to one 10 ms frame (the frame view's) at each edge
        _assert_found_at_its_edges(heard, e)
        # alone on the user's channel: silent just before and after (no turn of the user there)
        before = slice(round((e.start - 0.3) / VAD_FRAME_S), near.start)
        after = slice(near.stop, round((e.end + 0.3) / VAD_FRAME_S))
        assert not user[before].any() and not user[after].any(), e
        assert host.start < e.start and e.end < host.end
        frames = slice(round(e.start * 12.5 + 0.5), int(e.end * 12.5 - 0.5))
        if host.channel is Channel.agent:
            # the agent keeps talking through it: its turn goes on after the event, and no turn of the user's
            # follows it (the user's next turn may start over the agent's turn end, as any transition does,
            # but not within the 0.4 s the event stands alone in)
            assert agent[round(e.end / VAD_FRAME_S) : round(host.end / VAD_FRAME_S)].any()
            assert not any(
                e.start < t.start < e.end + CHANNEL_GUARD_S for t in tl.turns if t.channel is Channel.user
            ), e
        else:
            # side talk in the user's own turn: the user holds the floor, the agent is silent through
            # it and takes no turn, and the user goes on after it
            assert isinstance(e, SideTalkEvent)
            assert not agent[round(e.start / VAD_FRAME_S) : round(e.end / VAD_FRAME_S)].any()
            assert not any(e.start - 1 < t.start < host.end for t in tl.turns if t.channel is Channel.agent)
            assert user[round((e.end + 0.3) / VAD_FRAME_S) : round(host.end / VAD_FRAME_S)].any()
            assert (view.turn[Channel.user.index, frames] == host.id).all()
            assert (view.agent_state[frames] == AgentState.listen).all()
        # the frame view marks it at the Mimi rate
        assert view.ignore[frames].all(), e
    assert view.ignore.sum() <= sum(e.end - e.start for e in events) * 12.5 + len(events)
    background = next(e for e in events if isinstance(e, BackgroundSpeechEvent))
    assert background.voice_id not in sample.meta.voices.values()


def _assert_found_at_its_edges(heard: np.ndarray, e) -> None:
    """`heard` (start times of the 10 ms frames where the event's sound was found) begins and ends
    where the timeline places the event, to one frame at each edge."""
    assert len(heard), e
    assert abs(heard[0] - e.start) <= VAD_FRAME_S and abs(heard[-1] + VAD_FRAME_S - e.end) <= VAD_FRAME_S, (
        e.type,
        e.start,
        e.end,
        heard[0],
        heard[-1],
    )


def _check_under_the_user_s_speech(sample: Sample, rt: Runtime, e, view) -> None:
    """An event mixed under the user's own speech: its sound alone (the user's stem less the same
    mix without its layer) is heard where the timeline places it, to one 10 ms frame at each edge
    (the energy VAD's level against the user's channel, as the span is measured); it starts after
    one of the user's words and ends before the turn's last one does; the frame view keeps the
    user's turn through it and marks it `ignore`."""
    tl, sr, recipe = sample.timeline, sample.sample_rate, sample.meta.recipe
    assert rt.cfg.tts.cache_dir is not None
    sources = [load_render(rt.cfg.tts.cache_dir, p.source, sr) for p in recipe.pieces]
    k = next(
        i
        for i, p in enumerate(recipe.pieces)
        if p.gain_db is not None and p.offset <= round(e.start * sr) and round(e.end * sr) <= p.offset + p.length
    )
    sources[k] = np.zeros_like(sources[k])
    alone = sample.stems[:, Channel.user.index] - mix(recipe, sources)[:, Channel.user.index]
    loudest = frame_rms(sample.stems[:, Channel.user.index], sr).max()
    heard = np.flatnonzero(20 * np.log10(np.maximum(frame_rms(alone, sr), 1e-12) / loudest) > -45.0) * VAD_FRAME_S
    _assert_found_at_its_edges(heard, e)
    host = tl.turn(e.during_turn)
    spoken = [w for w in tl.words if w.turn == host.id and w.spoken]
    assert spoken[0].end < e.start and e.end <= spoken[-1].end, (e, host)
    frames = slice(round(e.start * 12.5 + 0.5), int(e.end * 12.5 - 0.5))
    assert (view.turn[Channel.user.index, frames] == host.id).all() and view.ignore[frames].all(), e


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_each_channel_s_voice_activity_agrees_with_the_timeline(with_events) -> None:
    """Each channel's voice activity (the energy VAD on its stem) against the timeline's (its spoken
    words and, on the user's channel, the events placed there: the audit's `plan_activity`), both
    with silences under 180 ms bridged as the conversation measures bridge them: the same stretches
    of sound, each edge within one 80 ms frame. Typing pauses between keys and a phrase may pause at
    a comma, so an event counts as one stretch from its first to its last active frame."""
    sample, _ = with_events
    tl, bridge_frames = sample.timeline, round(BRIDGE_S / VAD_FRAME_S)
    for ch in Channel:
        audio = frame_activity(sample.stems[:, ch.index], sample.sample_rate)
        plan = plan_activity(tl, len(audio), VAD_FRAME_S)[ch.index]
        for e in (e for e in tl.ignored_events() if e.channel is ch):
            on = np.flatnonzero(audio[round(e.start / VAD_FRAME_S) : round(e.end / VAD_FRAME_S)])
            audio[round(e.start / VAD_FRAME_S) + on[0] : round(e.start / VAD_FRAME_S) + on[-1] + 1] = True
        heard, planned = _runs(bridge(audio, bridge_frames)), _runs(bridge(plan, bridge_frames))
        assert len(heard) == len(planned), (ch, heard, planned)
        for (a0, a1), (p0, p1) in zip(heard, planned):
            assert abs(a0 - p0) * VAD_FRAME_S <= MIMI_FRAME_S and abs(a1 - p1) * VAD_FRAME_S <= MIMI_FRAME_S, (
                ch,
                a0,
                p0,
            )


def test_the_moshi_export_of_the_run_reads_by_the_loader_s_rules(with_events, tmp_path) -> None:
    """The moshi export of the events run, read back as moshi-finetune's loader reads it (the rules
    R1-R5 of tests/test_export_moshi.py), with its role and voice prompts and the ignore spans."""
    sample, _ = with_events
    Moshi().export([sample], tmp_path, ExportOptions())
    split = sample.meta.split
    d = read_dialogue(tmp_path, sample.id, split)
    info = sf.info(tmp_path / split / "audio" / f"{sample.id}.wav")
    assert d.duration == info.frames / info.samplerate and info.samplerate == 24000 and info.channels == 2  # R1, R2
    starts = [a[1][0] for a in d.alignments]
    assert starts == sorted(starts) and {a[2] for a in d.alignments} == {"SPEAKER_MAIN"}  # R3, R4
    assert all(a[1][1] > a[1][0] for a in d.alignments)  # R5
    spoken = [w.word for w in sample.timeline.words if w.spoken and w.channel is Channel.agent]
    assert " ".join(a[0] for a in d.alignments).split() == spoken
    # channel 0 is the agent: the side talk in the user's own turn is on channel 1 only
    events = [e for e in sample.timeline.events if isinstance(e, EVENTS)]
    for e in events:
        span = slice(round(e.start * 24000), round(e.end * 24000))
        assert np.abs(d.audio[span, 1]).max() > 0.01, e
    assert d.text_prompt == sample.meta.role_prompt and len(d.voice_prompt) > 24000
    doc = json.loads((tmp_path / split / "audio" / f"{sample.id}.json").read_text())
    assert [(s["type"], s["start"], s["end"]) for s in doc["ignore"]] == [
        (e.type, round(e.start, 6), round(e.end, 6)) for e in events
    ]


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
        # v1.5's overlaps are during the model's speech: side talk in the user's own turn is left out
        tl = sample.timeline
        events = [e for e in tl.events if isinstance(e, kind) and tl.turn(e.during_turn).channel is Channel.agent]
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


def test_the_manifest_and_the_card_count_planned_placed_and_dropped_events(with_events) -> None:
    sample, rt = with_events
    script, tl = sample.meta.script, sample.timeline
    assert script.events_planned is not None
    row = manifest_row(sample, "s")
    placed = {k: sum(e.type == k for e in tl.ignored_events()) for k in IGNORED_KINDS}
    assert (row.n_side_talk, row.n_background_speech, row.n_non_speech) == tuple(placed.values())
    assert row.n_events_planned == sum(script.events_planned.values())
    dropped = parse_drops(row.events_dropped)
    assert sum(placed.values()) + sum(dropped.values()) == row.n_events_planned
    for (kind, reason), n in dropped.items():
        marked = sum(m.type == kind for m in script.marks)
        assert n == (script.events_planned[kind] - marked if reason == "no_room" else marked - placed[kind])
    tally = event_tally([row.model_dump(), row.model_dump()])
    assert {k: (t.planned, t.placed) for k, t in tally.items()} == {
        k: (2 * script.events_planned[k], 2 * placed[k]) for k in IGNORED_KINDS
    }
    card = dataset_card(rt.cfg, pl.DataFrame([row.model_dump(mode="json")], schema=MANIFEST_SCHEMA))
    side = tally["side_talk"]
    line = f"| side_talk | 2 | {side.planned / 2:.2f} | {side.placed / 2:.2f} |"
    assert "## Speech and sounds the agent must not answer" in card and line in card, card
    off = manifest_row(
        sample.model_copy(
            update={
                "meta": sample.meta.model_copy(update={"script": script.model_copy(update={"events_planned": None})})
            }
        ),
        "s",
    )
    assert off.n_events_planned is None and off.events_dropped is None and event_tally([off.model_dump()]) == {}


def _agent_turns(n_words: list[int]) -> list[ScriptTurn]:
    words = "we could take the train along the coast and stop in every small town on the way".split()
    turns = []
    for n in n_words:
        turns += [
            ScriptTurn(speaker=Channel.user, text="And then?"),
            ScriptTurn(speaker=Channel.agent, text=" ".join((words * 9)[:n])),
        ]
    return turns


def test_events_go_where_the_room_is_and_the_rest_are_counted_dropped() -> None:
    cfg = load_config(overrides=ON).events
    # short agent turns hold nothing: every drawn event is planned and counted, none marked
    marks, counts = plan_ignored_events(_agent_turns([4, 5]), [], np.random.default_rng(0), cfg, "en")
    assert marks == [] and sum(counts.values()) > 0
    # one long turn among short ones takes the whole quota, the events apart with their guards
    for seed in range(20):
        turns = _agent_turns([4, 120, 5])
        marks, counts = plan_ignored_events(turns, [], np.random.default_rng(seed), cfg, "en")
        assert len(marks) == sum(counts.values()) and {m.turn for m in marks} <= {3}, seed
        starts = sorted(m.word_index for m in marks)
        assert all(b - a >= 4 for a, b in zip(starts, starts[1:])), (seed, starts)
        assert starts[0] >= 1 and starts[-1] <= 120 - 2 - 4, (seed, starts)
    # the counts are the events generator's first draws, so the writer sees them before the script
    assert counts == event_counts(np.random.default_rng(19), cfg)
    # the writer is asked for agent turns with room for the planned events, which then all fit
    speakers = [Channel.user, Channel.agent] * 3
    room = event_host_words(speakers, {"side_talk": 2, "background_speech": 2, "non_speech": 1}, "en")
    assert set(room) == {1, 3, 5} and room[1] > room[5]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        turns = _agent_turns([room[1], room[3], room[5]])
        marks, counts = plan_ignored_events(turns, [], rng, cfg, "en")
        fits = event_host_words(speakers, counts, "en")
        turns = _agent_turns([fits.get(i, 3) for i in (1, 3, 5)])
        marks, _ = plan_ignored_events(turns, [], np.random.default_rng(seed), cfg, "en")
        assert len(marks) == sum(counts.values()), (seed, counts, fits)
    # a barge-in's cut ends the room of its turn
    cut = [BargeIn(turn=3, heard_words=5)]
    marks, _ = plan_ignored_events(_agent_turns([4, 120]), cut, np.random.default_rng(1), cfg, "en")
    assert marks == []


AGENT_FIRST = {
    "turns": [
        {"speaker": "agent", "text": "Hello, I'm here to help you plan your trip today.", "marks": []},
        {"speaker": "user", "text": "Could you help me plan a short weekend trip to the coast?", "marks": []},
        {
            "speaker": "agent",
            "text": "Of course. A coastal weekend works best with a quiet town, a walk along the cliffs on "
            "Saturday morning, and a fish supper by the harbour before the drive home on Sunday.",
            "marks": [],
        },
        {"speaker": "user", "text": "That sounds lovely, thank you so much.", "marks": []},
    ]
}


def test_the_structured_script_opens_with_the_agent_when_it_opens(fake_server) -> None:
    farewell = "You are welcome, and do check the tide times before you walk along the beach on Sunday afternoon."
    user_first = {"turns": [*AGENT_FIRST["turns"][1:], {"speaker": "agent", "text": farewell, "marks": []}]}
    overrides = [*TINY, "llm.script_mode=structured", "dialogue.n_turns=[4, 4]", "llm.turn_attempts=2"]
    cfg = load_config(overrides=[*overrides, "dialogue.agent_opens=true", "behaviour.min_barge_ins=0"])
    scenario = draw_scenario("s1", rng_for(1, "s", "scenario"), {Mode.assistant: 1.0}, (4, 4))
    server = fake_server(
        [Reply(body=completion_body(json.dumps(user_first)))], then=Reply(body=completion_body(json.dumps(AGENT_FIRST)))
    )
    with OpenAIHTTPBackend(server.base_url, max_retries=0) as llm:
        script = write_script_structured(llm, scenario, cfg, "s1")
    assert [t.speaker for t in script.turns] == [Channel.agent, Channel.user, Channel.agent, Channel.user]
    assert len(server.requests) == 2  # the user-first script was another attempt
    system = server.requests[0]["json"]["messages"][0]["content"]
    assert "starting with the agent, who greets the user" in system
    # without agent_opens the user opens, as before
    off = load_config(overrides=[*overrides, "behaviour.min_barge_ins=0"])
    server = fake_server([], then=Reply(body=completion_body(json.dumps(user_first))))
    with OpenAIHTTPBackend(server.base_url, max_retries=0) as llm:
        script = write_script_structured(llm, scenario, off, "s1")
    assert script.turns[0].speaker is Channel.user and len(server.requests) == 1
    assert "starting with the user." in server.requests[0]["json"]["messages"][0]["content"]


def test_dataset_dialogues_get_events_too() -> None:
    cfg = load_config(overrides=[*ON, "dialogue.sources=[{kind: dataset, path: en-everyday}]"])
    src = cfg.dialogue.sources[0]
    assert isinstance(src, DatasetSource)
    dialogues = load_source(src)
    planned = marked = 0
    for k in range(6):
        dialogue = dialogues.dialogue(k)
        n = len(prepare_turns(dialogue, cfg))
        base = draw_scenario(f"d{k}", np.random.default_rng(k), {dialogue.mode: 1.0}, (n, n))
        script = write_from_source(
            None, scenario_for(base, dialogue, n), dialogue, provenance(src, dialogue, "rules"), cfg, f"d{k}"
        )
        assert script.events_planned is not None and script.source is not None
        planned += sum(script.events_planned.values())
        marked += sum(isinstance(m, (SideTalk, BackgroundSpeech, NonSpeech)) for m in script.marks)
    assert 0 < marked <= planned, (marked, planned)


def test_side_talk_in_the_user_s_turn_stands_alone_in_its_pause_and_no_reaction_enters_it() -> None:
    """Side talk where the user holds the floor (tests/export_fixtures.EVENTS_SCRIPT, word-shaped
    bursts instead of TTS): the user's turn opens a pause after the planned word, the side talk is
    heard 0.4 s clear of the user's words on each side, and the agent's backchannel planned at that
    very word is moved out of the pause (reacting there would answer the side talk)."""
    for seed in range(3):
        sample = make_sample(seed, script=EVENTS_SCRIPT)
        tl = sample.timeline
        e = next(e for e in tl.ignored_events() if tl.turn(e.during_turn).channel is Channel.user)
        words = [w for w in tl.words if w.turn == e.during_turn]
        before, after = words[4], words[5]  # the pause opens after the planned word (index 4)
        assert before.end + 0.4 - 1e-6 <= e.start and e.end <= after.start - 0.4 + 1e-6, (seed, before, e, after)
        agent = [t for t in tl.turns if t.channel is Channel.agent]
        assert not any(t.start < after.start and before.end < t.end for t in agent), (seed, agent)
        assert any(t.kind.value == "backchannel" and t.responds_to == e.during_turn for t in agent), seed


def test_background_speech_and_sounds_in_a_user_turn_go_under_the_user_s_speech() -> None:
    """tests/export_fixtures.EVENTS_UNDER_SCRIPT (word-shaped bursts instead of TTS): the planned
    background speech and cough of the user's turns are placed in those turns, after one of the
    user's words and over before the last one ends, 0.4 s apart from the other events; the turns
    stay where they are without events (nothing opens for them)."""
    for seed in range(3):
        tl = make_sample(seed, script=EVENTS_UNDER_SCRIPT).timeline
        plain = make_sample(seed, script=SCRIPT).timeline
        assert [(t.start, t.end) for t in tl.turns] == [(t.start, t.end) for t in plain.turns], seed
        events = tl.ignored_events()
        under = {e.type: e for e in events if tl.turn(e.during_turn).channel is Channel.user}
        assert set(under) == {"background_speech", "non_speech"}, (seed, events)
        for kind, turn in (("background_speech", 4), ("non_speech", 2)):
            e = under[kind]
            host = next(t for t in tl.turns if t.planned_text == SCRIPT.turns[turn].text)
            assert e.during_turn == host.id, (seed, kind)
            spoken = [w for w in tl.words if w.turn == host.id and w.spoken]
            assert any(abs(e.start - (w.end + EVENT_DELAY_S)) < 0.06 for w in spoken[:-1]), (seed, e)
            assert spoken[0].end < e.start and e.end <= spoken[-1].end, (seed, e, spoken[-1])
        spans = sorted((e.start, e.end) for e in events)
        assert all(b[0] - a[1] >= CHANNEL_GUARD_S - 1e-6 for a, b in zip(spans, spans[1:])), (seed, spans)
    # nothing planned in the user's turns when the share is 0
    cfg = load_config(overrides=[*ON, "events.background_user_share=0"]).events
    turns = [ScriptTurn(speaker=ch, text=text) for ch, text in TURNS]
    for seed in range(10):
        marks, _ = plan_ignored_events(turns, [], np.random.default_rng(seed), cfg, "en")
        assert all(turns[m.turn].speaker is Channel.agent or isinstance(m, SideTalk) for m in marks), seed


def test_the_audit_measures_turn_taking_on_turn_speech_not_on_the_events() -> None:
    """Events the agent must not answer are not turns: the audit's turn-taking measures of a
    dialogue with side talk over the agent, background speech and a cough under the user are
    those of the same dialogue without them (tests/export_fixtures, word-shaped bursts), and
    match the plan's own words; counted as turns, the events add overlap. The speech left out is
    its own measure."""
    over_agent = 0.0
    for seed in range(3):
        on, off = make_sample(seed, script=EVENTS_UNDER_SCRIPT), make_sample(seed, script=SCRIPT)
        audit_on, audit_off = audit_sample(on, ("energy",)), audit_sample(off, ("energy",))
        row, plain = audit_on.row, audit_off.row
        tl = on.timeline
        alone = sum(e.end - e.start for e in tl.ignored_events() if tl.turn(e.during_turn).channel is Channel.agent)
        counted = measure(*audit_on.activity["energy"], frame_s=audit_on.frame_s)  # events taken for turns
        if alone:  # the side talk over the agent, when it found a place (seed 0), is overlap when counted
            assert counted.overlap_share > row["energy_overlap_share"] + 0.02, (seed, counted.overlap_share)
        over_agent += alone
        assert abs(row["energy_overlap_share"] - plain["energy_overlap_share"]) <= 0.005, seed
        assert len(row["energy_fto"]) == len(plain["energy_fto"]), seed
        np.testing.assert_allclose(row["energy_fto"], plain["energy_fto"], atol=0.03)
        assert row["energy_n_backchannels"] == plain["energy_n_backchannels"], seed
        # the plan's words measured the same way agree with the audio's turn speech
        assert abs(row["energy_overlap_share"] - row["plan_overlap_share"]) <= 0.02, seed
        # the events' time: the timeline's, and what the detector heard of it apart from the user's words
        # (the side talk over the agent, less the silences between its words; the sound under the user's
        # between the user's words)
        assert plain["event_s"] == plain["energy_event_s"] == 0
        assert 0.7 * alone <= row["energy_event_s"] <= row["event_s"] + 0.1, (seed, alone, row["energy_event_s"])
        pooled, plain_pooled = pool([row], "energy"), pool([plain], "energy")
        assert pooled["event_share"] > 0 and "event_share" not in plain_pooled
        assert pooled["overlap_share"] == row["energy_overlap_share"]
    assert over_agent > 1.0

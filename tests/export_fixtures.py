"""Cheap Samples for export tests: a hand-written script with a barge-in, overlapping
backchannels (user over the agent, agent over the user), a failed interruption and a filler,
placed by the real timeline planner over word-shaped noise bursts (tests/test_timeline.py's
stand-in for TTS) and mixed into stems, plus the agent's prompts (the role prompt composed from the
scenario, a voice prompt of bursts for a sentence not in the script). The truth the tests compare
exports against is this timeline and this audio."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from factory.audio.mix import apply_gain, apply_gains, audio_sha256, loudness_gains
from factory.config import RunConfig
from factory.languages import words
from factory.models import (
    Backchannel,
    BackgroundSpeech,
    BargeIn,
    Channel,
    FailedInterruption,
    ListenerMark,
    MixRecipe,
    Mode,
    NonSpeech,
    Persona,
    PieceSource,
    Sample,
    SampleMeta,
    Scenario,
    Script,
    ScriptTurn,
    SideTalk,
    Utterance,
    VoicePrompt,
    WordTiming,
)
from factory.runtime import Runtime
from factory.script.lexicon import load_lexicon
from factory.script.prompts import role_prompt
from factory.seeding import rng_for
from factory.stages import Plan, assemble, cache_key, finish_render, render_batch, render_requests
from factory.timeline.place import build_timeline
from tests.test_timeline import SR, burst_utterance, random_script

CFG = RunConfig()

AGENT_LONG = "so I think we could try the other one later today if that works for you and the team"
SCRIPT = Script(
    scenario_id="export-test",
    turns=[
        ScriptTurn(speaker=Channel.user, text="hi could you help me plan a short trip"),
        ScriptTurn(speaker=Channel.agent, text=AGENT_LONG, responds_to=0),
        ScriptTurn(speaker=Channel.user, text="wait actually make it next week", responds_to=1),
        ScriptTurn(speaker=Channel.agent, text="sure next week works fine for me", responds_to=2),
        ScriptTurn(speaker=Channel.user, text="great then book the early train for both of us please", responds_to=3),
        ScriptTurn(speaker=Channel.agent, text="done I booked it", responds_to=4),
    ],
    marks=[
        Backchannel(turn=1, word_index=3, token="mm-hmm"),  # user backchannel over the agent
        FailedInterruption(turn=1, word_index=7, token="but I-"),  # the user tries, the agent keeps going
        BargeIn(turn=1, heard_words=14),  # the user barges in, the agent stops after "and"
        Backchannel(turn=4, word_index=4, token="okay"),  # agent backchannel over the user
    ],
)
# The same dialogue with speech the agent must not answer: side talk while the agent talks, and side
# talk where the user holds the floor (a pause opened in the user's own turn, right where the
# agent's backchannel was planned: the timeline moves the backchannel out of that pause).
EVENTS_SCRIPT = SCRIPT.model_copy(
    update={
        "marks": [
            *SCRIPT.marks[:3],
            SideTalk(turn=1, word_index=10, text="leave it by the door"),
            Backchannel(turn=4, word_index=4, token="okay"),
            SideTalk(turn=4, word_index=4, text="hang on yes put it on the table"),
        ]
    }
)

# The same dialogue with sound under the user's own speech (background speech in the user's last
# turn, a cough in the barge-in turn) besides side talk while the agent talks: no pause opens, so the
# turns are placed exactly as without events.
EVENTS_UNDER_SCRIPT = SCRIPT.model_copy(
    update={
        "marks": [
            *SCRIPT.marks[:3],
            SideTalk(turn=1, word_index=10, text="leave it by the door"),
            NonSpeech(turn=2, word_index=1, sound="cough"),
            Backchannel(turn=4, word_index=4, token="okay"),
            BackgroundSpeech(turn=4, word_index=2, text="the news at nine"),
        ]
    }
)
# The same shape in Japanese (words are pyopenjtalk accent phrases, factory.languages.words): an
# aizuchi over the agent, a barge-in cutting the agent's long turn, an aizuchi over the user.
JA_SCRIPT = Script(
    scenario_id="export-test-ja",
    turns=[
        ScriptTurn(speaker=Channel.user, text="すみません、市役所までの行き方を教えてもらえますか。"),
        ScriptTurn(
            speaker=Channel.agent,
            text="はい。ここからですと、歩いて十分くらいです。この道をまっすぐ行って、二つ目の信号を右に曲がってください。",
            responds_to=0,
        ),
        ScriptTurn(speaker=Channel.user, text="あ、二つ目の信号ですね。", responds_to=1),
        ScriptTurn(
            speaker=Channel.agent,
            text="そうです。そのあと左側に大きな白い建物が見えてきますので、それが市役所です。",
            responds_to=2,
        ),
        ScriptTurn(speaker=Channel.user, text="わかりました。ありがとうございます、助かりました。", responds_to=3),
        ScriptTurn(speaker=Channel.agent, text="どういたしまして。お気をつけて。", responds_to=4),
    ],
    marks=[
        Backchannel(turn=1, word_index=2, token="うん"),
        BargeIn(turn=1, heard_words=9),
        Backchannel(turn=3, word_index=4, token="はい"),
    ],
)
JA_SECONDS_PER_CHARACTER = 0.12  # the Kokoro Japanese voices speak ~8 characters (mostly morae) a second


def kana_burst_utterance(text: str, rng: np.random.Generator, voice: str) -> Utterance:
    """`burst_utterance` for Japanese: one burst per accent phrase, as long as its characters take
    to say (a fixed 150-400 ms, an English word's length, would be too short for a phrase)."""
    pieces, timings, t = [], [], 0.0
    for i, w in enumerate(words(text, "ja")):
        if i:
            gap = int(rng.uniform(0.03, 0.12) * SR)
            pieces.append(np.zeros(gap, np.float32))
            t += gap / SR
        n = int(len(w) * JA_SECONDS_PER_CHARACTER * rng.uniform(0.85, 1.15) * SR)
        pieces.append((rng.standard_normal(n) * 0.2).astype(np.float32))
        timings.append(WordTiming(word=w, start=t, end=t + n / SR))
        t += n / SR
    return Utterance(text=text, voice_id=voice, sample_rate=SR, audio=np.concatenate(pieces), words=timings)


def make_japanese_sample(seed: int = 0, split: str = "train") -> Sample:
    return make_sample(seed, f"ja{seed:03d}", split, JA_SCRIPT, kana_burst_utterance, "ja")


def render_and_assemble(rt: Runtime, plan: Plan, script: Script) -> Sample:
    """`script` rendered with the run's real TTS backends (one batch, no QA re-draw) and assembled:
    the engine's render and assemble stages for one dialogue, every render required to succeed."""
    cfg = rt.cfg
    requests = render_requests(plan, script, cfg.run.seed, cfg.tts.hold_fall_share)
    utts = render_batch(rt, list(requests.values()))
    sources = {
        k: finish_render(cfg, r, u, None, cache_key(rt, r))
        for (k, r), u in zip(requests.items(), utts, strict=True)
        if not isinstance(u, Exception)
    }
    assert len(sources) == len(requests), utts
    return assemble(cfg, plan, script, sources)


def make_sample(
    seed: int = 0,
    sample_id: str | None = None,
    split: str = "train",
    script: Script = SCRIPT,
    utterance: Callable[[str, np.random.Generator, str], Utterance] = burst_utterance,
    language: str = "en",
) -> Sample:
    """`script` placed over `utterance`'s audio; its side talk (`EVENTS_SCRIPT`) in the user's voice."""
    rng = np.random.default_rng(seed)
    voices = {Channel.user: "u", Channel.agent: "a"}
    rendered = [utterance(t.text, rng, voices[t.speaker]) for t in script.turns]
    reactions = {
        k: utterance(m.token, rng, voices[script.turns[m.turn].speaker.other])
        for k, m in enumerate(script.marks)
        if isinstance(m, ListenerMark)
    }
    ignored = {  # side talk in the user's voice, background speech in another, a sound as one burst
        k: utterance(m.text if not isinstance(m, NonSpeech) else m.sound, rng, voice)
        for k, m in enumerate(script.marks)
        if (voice := {SideTalk: voices[Channel.user], BackgroundSpeech: "tv", NonSpeech: "sound"}.get(type(m)))
    }
    sid = sample_id or f"d{seed:03d}"
    tl, placements = build_timeline(
        sid,
        script,
        rendered,
        reactions,
        voices,
        rng_for(seed, sid, "timeline"),
        CFG.timing,
        0.008,
        None,
        language,
        ignored,
        CFG.events,
    )
    stems = np.zeros((round(tl.duration * SR), 2), np.float32)
    for p in placements:
        gain = 1.0 if p.gain_db is None else 10 ** (p.gain_db / 20)
        stems[p.start : p.start + len(p.audio), p.channel.index] += p.audio * np.float32(gain)
    gains = loudness_gains(stems, SR, -23, -1)
    # its own generator, drawn after the dialogue's, so the dialogue is what it was without prompts
    prompt = utterance(
        load_lexicon(language).voice_prompts[seed % 6], rng_for(seed, sid, "voice_prompt"), voices[Channel.agent]
    )
    stems = apply_gains(stems, gains)
    recipe = MixRecipe(
        sample_rate=SR, n_samples=len(stems), pieces=[], gains=tuple(gains), target_lufs=-23, peak_dbfs=-1
    )
    scenario = Scenario(
        id="export-test",
        mode=Mode.assistant,
        topic="trip",
        setting="phone",
        style="casual",
        user=Persona(name="U", description="a user"),
        agent=Persona(name="A", description="an agent"),
        n_turns=len(script.turns),
        language=language,
    )
    meta = SampleMeta(
        id=sid,
        split=split,
        run_seed=seed,
        sample_key=sid,
        scenario=scenario,
        script=script,
        timeline=tl,
        recipe=recipe,
        voices=voices,
        llm="none",
        role_prompt=role_prompt(scenario),
        voice_prompt=VoicePrompt(
            source=PieceSource(
                cache_key=None,
                backend="espeak",
                voice_id=voices[Channel.agent],
                text=prompt.text,
                rate=1.0,
                sample_rate=SR,
                n_samples=len(prompt.audio),
                sha256=audio_sha256(prompt.audio),
            ),
            gain=gains[Channel.agent.index],
        ),
    )
    prompt_audio = apply_gain(prompt.audio, gains[Channel.agent.index])
    return Sample(meta=meta, stems=stems, voice_prompt=prompt_audio)


def turn_final_cue(text: str, rng: np.random.Generator, voice: str) -> Utterance:
    """`burst_utterance` whose last word is a low-passed burst, as loud (like a turn-final fall):
    audio in which the end of a turn differs from a pause inside it, so turn-taking is learnable
    from it (the smoke-train's test and benchmark)."""
    utt = burst_utterance(text, rng, voice)
    last = utt.words[-1]
    a, b = round(last.start * utt.sample_rate), round(last.end * utt.sample_rate)
    audio = utt.audio.copy()
    audio[a:b] = np.convolve(audio[a:b], np.ones(24, np.float32) / 24 * 4, "same")
    return utt.model_copy(update={"audio": audio})


def make_cued_sample(seed: int, split: str = "train", turns: int = 8) -> Sample:
    """A dialogue of its own random script (one fixed script makes who speaks next learnable from
    the position in the dialogue alone), its turns ending in `turn_final_cue`."""
    script = random_script(np.random.default_rng(1000 + seed), Mode.assistant, turns)
    return make_sample(seed, split=split, script=script, utterance=turn_final_cue)


def make_run(run_dir, samples: list[Sample], rejected: tuple[str, ...] = (), empty_shard: bool = True):
    """A run folder as factory.run.shards writes it (data shards, manifest parts, signatures and
    typed shard records), holding `samples` in one shard, the `rejected` ids in the manifest only,
    and (optionally) a second shard whose samples were all rejected, so its data file is empty."""
    from pathlib import Path

    from factory.atomic import sha256_file
    from factory.models import ManifestRow, SampleStatus
    from factory.run.records import ShardAudit, ShardRecord, shard_files, write_shard_record
    from factory.run.rows import write_shard
    from factory.run.shards import write_manifest
    from factory.run.store import RunStore
    from factory.script.dedup import save_signatures, signature

    run_dir = Path(run_dir)
    shards = [("train-00000-of-00002", samples, ())]
    if empty_shard:
        shards.append(("train-00001-of-00002", [], rejected))
    else:
        shards[0] = (shards[0][0], samples, rejected)
    store = RunStore(str(run_dir))
    for name, items, rej in shards:
        files = {kind: run_dir / rel for kind, rel in shard_files(name).items()}
        digest = write_shard(items, files["data"], SR)
        rows = [
            ManifestRow(
                id=s.id, shard=name, status=SampleStatus.ok, split=s.meta.split, language=s.meta.scenario.language
            )
            for s in items
        ]
        rows += [
            ManifestRow(id=i, shard=name, status=SampleStatus.rejected, reason="behaviour_minimum: test", split="train")
            for i in rej
        ]
        write_manifest(rows, files["manifest"])
        files["signatures"].parent.mkdir(parents=True, exist_ok=True)
        save_signatures(
            files["signatures"], {s.id: signature(" ".join(t.text for t in s.meta.script.turns)) for s in items}
        )
        record = ShardRecord(
            shard=name,
            sha256=digest,
            n_ok=len(items),
            n_rejected=len(rej),
            manifest_sha256=sha256_file(files["manifest"]),
            signatures_sha256=sha256_file(files["signatures"]),
            audit=ShardAudit(pooled={}, flagged=0, problems=[]),
        )
        write_shard_record(store, record)
    return run_dir

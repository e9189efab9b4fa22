"""Script stage: the LLM writes the dialogue, the behaviour planner marks it.

Two modes (`llm.script_mode`):
- turns: the LLM writes one turn at a time and the planner adds every mark. Turn by turn,
  because a barge-in cuts a turn short and the interrupter (and everyone after) must respond to
  what was actually heard, not to the planned text. Works with any model, the tiny one included.
- structured: a capable LLM writes the whole dialogue with proposed marks as JSON under a
  schema (`response`); `parse` validates and repairs it, `calibrate` tops rates up to the targets.
  Barge-ins the model did not propose are added by cutting a turn and re-writing the next turn
  from the heard words, so the heard-text property holds in both modes.
"""

from __future__ import annotations

from factory.config import RunConfig
from factory.languages import join, spaced
from factory.languages import words as lang_words
from factory.llm.base import LLMBackend
from factory.models import BargeIn, Channel, ListenerMark, Mark, Mode, Scenario, Script, ScriptTurn
from factory.script.calibrate import calibrate_marks
from factory.script.content import default_judge
from factory.script.lexicon import behaviour_for
from factory.script.marks import mark_order
from factory.script.outcomes import ScriptRejected
from factory.script.parse import parse_script
from factory.script.planner import (
    MIN_VICTIM_WORDS,
    barge_in_cut,
    barge_in_victims,
    event_counts,
    event_host_words,
    insert_hesitations,
    plan_ignored_events,
    plan_listener_marks,
)
from factory.script.response import response_schema, script_messages
from factory.script.summary import RunningSummary
from factory.script.writer import HISTORY_TURNS, TurnRejected, turn_length, write_turn
from factory.seeding import derive_seed, rng_for


def word_limits(scenario: Scenario, speaker: Channel, cfg: RunConfig) -> tuple[int, int]:
    return turn_length(scenario.mode, speaker, cfg.dialogue)


def speaker_order(scenario: Scenario, cfg: RunConfig) -> list[Channel]:
    """Who speaks each turn: alternating, the user first, or the agent when it opens (assistant
    mode with `dialogue.agent_opens`)."""
    first = Channel.agent if cfg.dialogue.agent_opens and scenario.mode is Mode.assistant else Channel.user
    return [first if i % 2 == 0 else first.other for i in range(scenario.n_turns)]


def with_ignored_events(script: Script, scenario: Scenario, cfg: RunConfig, sample_key: str) -> Script:
    """`script` plus the planner's side talk, background speech and non-speech marks, drawn from
    their own generator, so a run without them (rates 0) keeps every other draw and byte."""
    rng = rng_for(cfg.run.seed, sample_key, "events")
    events, counts = plan_ignored_events(script.turns, script.marks, rng, cfg.events, scenario.language)
    if not any(counts.values()):
        return script
    marks = sorted([*script.marks, *events], key=mark_order)
    return script.model_copy(update={"marks": marks, "events_planned": counts})


def running_summary(scenario: Scenario, cfg: RunConfig) -> RunningSummary | None:
    """The running summary a dialogue of `scenario.n_turns` turns carries (`dialogue.summary_*`), or
    None when no turn of it gets one (the judge is then never loaded)."""
    if cfg.dialogue.summary_sentences <= 0 or scenario.n_turns <= cfg.dialogue.summary_from_turn:
        return None
    return RunningSummary(scenario, default_judge(), cfg.dialogue.summary_sentences)


def ends_early(failed: int, marks: list[Mark], scenario: Scenario, cfg: RunConfig) -> int | None:
    """A long dialogue (more turns than `dialogue.summary_from_turn`) whose turn `failed` fails every
    attempt ends before it, as the structured parser keeps a script of half its turns: how many turns
    it keeps (one fewer when the last was cut by a barge-in whose interrupter is the failed turn), or
    None when fewer than half the scenario's turns or `behaviour.min_barge_ins` would be left (the
    dialogue is lost, as a short one always is: 40 turns at ~6 % failing would almost never finish)."""
    if scenario.n_turns <= cfg.dialogue.summary_from_turn:
        return None
    kept = failed - 1 if any(isinstance(m, BargeIn) and m.turn == failed - 1 for m in marks) else failed
    barge_ins = sum(isinstance(m, BargeIn) and m.turn < kept for m in marks)
    if kept < max(2, scenario.n_turns // 2) or barge_ins < cfg.behaviour.min_barge_ins:
        return None
    return kept


def write_script(llm: LLMBackend, scenario: Scenario, cfg: RunConfig, sample_key: str) -> Script:
    """Raises `TurnRejected` when the LLM cannot write a usable turn within its attempts."""
    seed = cfg.run.seed
    behaviour = behaviour_for(cfg.behaviour, scenario.language)
    rng = rng_for(seed, sample_key, "behaviour")
    speakers = speaker_order(scenario, cfg)
    victims = barge_in_victims(scenario.mode, speakers, rng, behaviour)
    filler_turn = int(rng.integers(len(speakers))) if behaviour.min_fillers else -1
    # Agent turns long enough for the events planned after the script (the same counts: events off, none).
    counts = event_counts(rng_for(seed, sample_key, "events"), cfg.events)
    event_room = event_host_words(speakers, counts, scenario.language)

    turns: list[ScriptTurn] = []
    heard: list[ScriptTurn] = []
    marks: list[Mark] = []
    pending_victim = False  # a planned barge-in whose turn was too short moves to a later eligible turn
    summary = running_summary(scenario, cfg)
    for i, speaker in enumerate(speakers):
        if summary is not None and i > HISTORY_TURNS:  # turn i - 7 has just left the writer's window
            summary.add(i - HISTORY_TURNS - 1, heard[i - HISTORY_TURNS - 1].text)
        low, high = word_limits(scenario, speaker, cfg)
        if i == 0 and speaker is Channel.agent:  # the agent's greeting: as short as a user's turn
            low, high = word_limits(scenario, Channel.user, cfg)
        low = min(max(low, event_room.get(i, 0)), high)
        may_be_cut = (i in victims or pending_victim) and i < len(speakers) - 1
        if may_be_cut and (scenario.mode is Mode.peer or speaker is Channel.agent):
            low = min(max(low, MIN_VICTIM_WORDS), high)  # long enough to be cut mid-way
        try:
            text = write_turn(
                llm,
                scenario,
                heard,
                speaker,
                seed=derive_seed(seed, sample_key, f"llm-turn-{i}"),
                min_words=low,
                max_words=high,
                attempts=cfg.llm.turn_attempts,
                temperature=cfg.llm.temperature,
                summary=summary.text() if summary is not None and i >= cfg.dialogue.summary_from_turn else "",
            )
        except TurnRejected:
            kept = ends_early(i, marks, scenario, cfg)
            if kept is None:
                raise
            turns, marks = turns[:kept], [m for m in marks if m.turn < kept]
            break
        text, turn_marks = insert_hesitations(
            text,
            i,
            rng,
            behaviour,
            cfg.timing.pause_median,
            force_filler=(i == filler_turn),
            language=scenario.language,
        )
        marks.extend(turn_marks)
        turn = ScriptTurn(speaker=speaker, text=text, responds_to=i - 1 if i else None)
        turns.append(turn)

        words = lang_words(text, scenario.language)
        if may_be_cut and (scenario.mode is Mode.peer or speaker is Channel.agent):
            if len(words) >= MIN_VICTIM_WORDS:
                heard_words = barge_in_cut(len(words), rng)
                marks.append(BargeIn(turn=i, heard_words=heard_words))
                # The next writer sees the cut-off text, marked as cut off, as a listener would.
                cut = join(words[:heard_words], scenario.language)
                heard.append(ScriptTurn(speaker=speaker, text=cut + " —"))
                pending_victim = False
                continue
            pending_victim = True
        heard.append(turn)

    marks.extend(plan_listener_marks(turns, marks, rng, behaviour, scenario.mode, scenario.language))
    marks.sort(key=mark_order)
    script = Script(scenario_id=scenario.id, turns=turns, marks=marks, llm=llm.name)
    return with_ignored_events(script, scenario, cfg, sample_key)


def write_script_structured(llm: LLMBackend, scenario: Scenario, cfg: RunConfig, sample_key: str) -> Script:
    """Raises `TurnRejected` when no attempt gives a usable script (reason from the parser)."""
    seed = cfg.run.seed
    limits = {ch: word_limits(scenario, ch, cfg) for ch in Channel}
    opener = speaker_order(scenario, cfg)[0]
    # The agent's greeting is as short as a user's turn (as in `write_script`): its floor is the user's.
    low = {ch: lo for ch, (lo, _) in limits.items()} | (
        {opener: limits[Channel.user][0]} if opener is Channel.agent else {}
    )
    last: ScriptRejected | None = None
    for attempt in range(cfg.llm.turn_attempts):
        raw = llm.complete(
            script_messages(scenario, scenario.n_turns, agent_opens=opener is Channel.agent),
            # A Japanese word (`languages.words`, an accent phrase) is several tokens, as in the rewrite's budget.
            max_tokens=sum(limits[ch][1] for ch in limits) * scenario.n_turns * (1 if spaced(scenario.language) else 2)
            + 256,
            temperature=cfg.llm.temperature,
            seed=derive_seed(seed, sample_key, f"llm-script-{attempt}"),
            json_schema=response_schema(scenario.n_turns, scenario.language),
        )
        try:
            script, _ = parse_script(
                raw,
                scenario,
                min_words=low,
                max_words={ch: hi for ch, (_, hi) in limits.items()},
                llm=llm.name,
            )
            if script.turns[0].speaker is not opener:
                raise ScriptRejected("wrong_speakers", f"turn 0 is the {script.turns[0].speaker}'s; the {opener} opens")
        except ScriptRejected as exc:
            last = exc
            continue
        rng = rng_for(seed, sample_key, "behaviour")
        behaviour = behaviour_for(cfg.behaviour, scenario.language)
        script = calibrate_marks(
            script,
            rng,
            behaviour,
            cfg.timing.pause_median,
            mode=scenario.mode,
            add_barge_ins=False,
            language=scenario.language,
        )
        script = _add_missing_barge_ins(llm, scenario, script, cfg, sample_key, rng)
        have = sum(isinstance(m, BargeIn) for m in script.marks)
        if have >= cfg.behaviour.min_barge_ins:
            return with_ignored_events(script, scenario, cfg, sample_key)
        # Too few (or too short) turns to cut: another attempt, not a script the timeline rejects after TTS.
        last = ScriptRejected(
            "too_few_turns", f"{len(script.turns)} turns hold {have} barge-ins < {cfg.behaviour.min_barge_ins}"
        )
    raise TurnRejected(last.reason if last else "invalid_script", last.detail if last else "")


def _add_missing_barge_ins(
    llm: LLMBackend,
    scenario: Scenario,
    script: Script,
    cfg: RunConfig,
    sample_key: str,
    rng,
) -> Script:
    """Cut eligible turns until the barge-in minimum holds, re-writing each interrupter's turn
    from the heard words (the model wrote it for the full turn). Marks on a re-written turn,
    and listener marks after a new cut, are dropped."""
    speakers = [t.speaker for t in script.turns]
    have = {m.turn for m in script.marks if isinstance(m, BargeIn)}
    need = cfg.behaviour.min_barge_ins - len(have)
    if need <= 0:
        return script
    turns, marks = list(script.turns), list(script.marks)
    candidates = [
        i
        for i in sorted(barge_in_victims(scenario.mode, speakers, rng, cfg.behaviour) | set(range(1, len(turns) - 1)))
        if i not in have
        and i + 1 not in have
        and i - 1 not in have
        and (scenario.mode is Mode.peer or speakers[i] is Channel.agent)
        and len(lang_words(turns[i].text, scenario.language)) >= MIN_VICTIM_WORDS
    ]
    for i in candidates[:need]:
        words = lang_words(turns[i].text, scenario.language)
        heard_words = barge_in_cut(len(words), rng)
        cut = ScriptTurn(speaker=turns[i].speaker, text=join(words[:heard_words], scenario.language) + " —")
        heard = [t if k != i else cut for k, t in enumerate(turns[: i + 1])]
        low, high = word_limits(scenario, speakers[i + 1], cfg)
        text = write_turn(
            llm,
            scenario,
            heard,
            speakers[i + 1],
            seed=derive_seed(cfg.run.seed, sample_key, f"llm-rewrite-{i + 1}"),
            min_words=low,
            max_words=high,
            attempts=cfg.llm.turn_attempts,
            temperature=cfg.llm.temperature,
        )
        turns[i + 1] = ScriptTurn(speaker=speakers[i + 1], text=text, responds_to=i)
        marks = [
            m
            for m in marks
            if m.turn != i + 1
            and not (m.turn == i and getattr(m, "word_index", 0) >= heard_words - 3 and isinstance(m, ListenerMark))
        ]
        marks.append(BargeIn(turn=i, heard_words=heard_words))
    marks.sort(key=mark_order)
    return Script(scenario_id=script.scenario_id, turns=turns, marks=marks, llm=script.llm)

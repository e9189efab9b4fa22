"""The behaviour planner: where hesitations, backchannels and barge-ins happen.

The LLM writes content; the planner adds the marks at calibrated rates (an LLM cannot produce
calibrated distributions, and the tiny embedded one cannot produce marks at all). All functions
are pure: text and a numpy Generator in, text and marks out.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from factory.config import BehaviourSection, EventsSection
from factory.languages import spaced
from factory.languages import words as lang_words
from factory.models import (
    IGNORED_KINDS,
    Backchannel,
    BackgroundSpeech,
    BargeIn,
    Channel,
    FailedInterruption,
    IgnoredKind,
    IgnoredMark,
    Laugh,
    ListenerMark,
    Mark,
    Mode,
    NonSpeech,
    ScriptTurn,
    SideTalk,
    SilentPause,
)
from factory.script.lexicon import load_lexicon, rate, tokens
from factory.script.marks import write_hesitations
from factory.script.text_checks import content_words

# Where a listener may react inside a turn, in seconds of the speaker's speech (English: 2, 3 and 6
# words at 3.5 words a second); in words at the language's own rate (`Lexicon.words_per_second`).
LISTENER_LEAD_S = 2 / 3.5  # not before the speaker's first words
LISTENER_TAIL_S = 3 / 3.5  # nor in the last words (nor near a barge-in cut)
LISTENER_SPACING_S = 6 / 3.5  # one reaction per this much of a turn at most
MIN_VICTIM_WORDS = 6  # the writer is asked for at least this many words in a planned victim turn
CLAUSE_ENDS = ",;:、"  # a word ending a clause: a filler may follow it (English comma, Japanese tōten)


def insert_hesitations(
    text: str,
    turn: int,
    rng: np.random.Generator,
    cfg: BehaviourSection,
    pause_median: float,
    force_filler: bool = False,
    language: str = "en",
) -> tuple[str, list[Mark]]:
    """Write fillers and restarts into `text` and mark silent pauses, at the configured rates
    (where: drawn here; how they are written: `marks.write_hesitations`). `cfg` is resolved for
    `language` (`lexicon.behaviour_for`); its words are `languages.words`."""
    words = lang_words(text, language)
    fillers = tokens(cfg.filler_tokens)
    n = len(words)
    n_fillers = int(rng.poisson(cfg.fillers_per_100_words * n / 100))
    n_restarts = int(rng.poisson(cfg.restarts_per_100_words * n / 100))
    n_pauses = int(rng.poisson(cfg.pauses_per_100_words * n / 100))

    # Fillers go before a word: turn-initially most often, else after a clause boundary or anywhere.
    filler_before: dict[int, str] = {}
    for _ in range(n_fillers):
        boundaries = [0] + [i + 1 for i, w in enumerate(words[:-1]) if w[-1] in CLAUSE_ENDS]
        pool = boundaries if rng.random() < 0.7 else list(range(n))
        j = int(rng.choice(pool))
        filler_before.setdefault(j, str(rng.choice(fillers)))
    if force_filler and not filler_before:
        filler_before[0] = str(rng.choice(fillers))  # turn-initial: always heard, even if cut
    # Restarts repeat a short word cut off ("I- I think"); pick among the first words of a clause.
    restart_at = set()
    short = [i for i, w in enumerate(words) if len(w.strip(",.;:!?")) <= 4 and w.strip(",.;:!?").isalpha()]
    for _ in range(min(n_restarts, len(short))):
        restart_at.add(int(rng.choice(short)))

    written = write_hesitations(words, turn, filler_before, restart_at, language)
    marks = list(written.marks)
    # Silent pauses after a word that is not the last one (a pause at the end is a gap, not a pause).
    candidates = [i for i, w in enumerate(written.words[:-1]) if not w.endswith("-")]
    for j in sorted({int(rng.choice(candidates)) for _ in range(n_pauses)} if candidates else set()):
        duration = float(np.clip(rng.lognormal(math.log(pause_median), 0.4), 0.2, 1.5))
        marks.append(SilentPause(turn=turn, word_index=j, duration=round(duration, 3)))
    return written.text, marks


def dispersed_count(rng: np.random.Generator, mean: float, dispersion: float | None) -> int:
    """A per-dialogue count with `mean`: negative binomial (a Poisson whose rate is gamma
    distributed with shape `dispersion`) so dialogues differ as much as people do, or Poisson
    when `dispersion` is None. Variance = mean + mean^2 / dispersion."""
    if mean <= 0:
        return 0
    rate = rng.gamma(dispersion, mean / dispersion) if dispersion else mean
    return int(rng.poisson(rate))


def barge_in_count(rng: np.random.Generator, cfg: BehaviourSection) -> int:
    """Barge-ins planned for one dialogue: none in a share `1 - barge_in_dialogue_share` of
    dialogues; the others have one plus a dispersed remainder, so the mean over all dialogues is
    `barge_ins_per_dialogue`; at least `min_barge_ins`."""
    mean = cfg.barge_ins_per_dialogue
    share = min(cfg.barge_in_dialogue_share, mean)
    count = 0
    if share > 0 and rng.random() < share:
        count = 1 + dispersed_count(rng, mean / share - 1, cfg.count_dispersion)
    return max(count, cfg.min_barge_ins)


def barge_in_victims(mode: Mode, speakers: list[Channel], rng: np.random.Generator, cfg: BehaviourSection) -> set[int]:
    """Turns planned to be interrupted by the next turn. In assistant mode the user interrupts
    the agent's long answers; in peer mode either side interrupts."""
    # The next turn must be the other speaker's (a dataset turn split in two is one speaker's twice).
    eligible = [
        i
        for i in range(len(speakers) - 1)
        if i > 0 and (mode is Mode.peer or speakers[i] is Channel.agent) and speakers[i + 1] is not speakers[i]
    ]
    count = min(barge_in_count(rng, cfg), len(eligible))
    return {int(i) for i in rng.choice(eligible, size=count, replace=False)} if count else set()


def barge_in_cut(n_words: int, rng: np.random.Generator, at_least: int = 0) -> int:
    """How many words of the victim turn are heard before it stops (its cut is a word end): 30 to
    80 % of them, and at least `at_least` (`heard_floor`; `cut_range` says whether it can be)."""
    low, high = cut_range(n_words)
    return int(rng.integers(max(low, at_least), high + 1))


def cut_range(n_words: int) -> tuple[int, int]:
    """The fewest and most words of an `n_words` turn a barge-in lets the listener hear."""
    low = max(2, math.ceil(0.3 * n_words))
    return low, max(low, min(math.floor(0.8 * n_words), n_words - 1))


_SENTENCE_END = (".", "!", "?", "。", "！", "？", "।")
_QUESTION_END = ("?", "？")


def _referents(word: str, language: str) -> set[str]:
    """What a later turn's word may refer back to in `word`: its content words in the language
    (`text_checks.content_words`: no function word of the language's list; "twenty-five" is two;
    an accent phrase's content morphemes, as dictionary forms, where words are unspaced)."""
    return content_words(word, language)


def _stems(referents: set[str], language: str) -> set[str]:
    """Referents cut to 5 letters where words are spaced, so "station" and "stations" match."""
    return {r[:5] for r in referents} if spaced(language) else referents


def heard_floor(turns: list[ScriptTurn], language: str = "en") -> list[int]:
    """Per turn, the fewest of its words (`languages.words`) a barge-in must let the listener hear
    when the turns after it were written for the whole turn, as a dataset's are: up to the last
    word that a later turn takes up again and no earlier turn said (what the later turn refers to
    must have been heard), and past half of its last question (the next turn may answer it: "would
    you like me to-" can be answered, a question never begun cannot). 0 where no later turn
    depends on the turn. A turn whose floor is past `cut_range`'s top is not cut at all."""
    keys = [[_referents(w, language) for w in lang_words(t.text, language)] for t in turns]
    out = []
    for i, ks in enumerate(keys):
        said = {r for kk in keys[:i] for word in kk for r in word}  # said before: heard, whatever the cut
        later = {stem for kk in keys[i + 1 :] for word in kk for stem in _stems(word, language)}
        need = max((j + 1 for j, word in enumerate(ks) if word - said and _stems(word, language) & later), default=0)
        words = lang_words(turns[i].text, language)
        start = 0
        for j, w in enumerate(words):
            if w.endswith(_QUESTION_END):
                need = max(need, start + math.ceil((j + 1 - start) / 2))
            if w.endswith(_SENTENCE_END):
                start = j + 1
        out.append(need)
    return out


def words_for(seconds: float, language: str) -> int:
    """How many words of `language` (`languages.words`) take about `seconds` to say (at least one)."""
    return max(1, round(seconds * load_lexicon(language).words_per_second))


def _listener_spans(
    turns: list[ScriptTurn], marks: list[Mark], mode: Mode, language: str = "en"
) -> list[tuple[int, int, int]]:
    """(turn, first, last) word positions where the listener may respond during a turn."""
    heard = {m.turn: m.heard_words for m in marks if isinstance(m, BargeIn)}
    lead, tail = words_for(LISTENER_LEAD_S, language), words_for(LISTENER_TAIL_S, language)
    spans = []
    for i, turn in enumerate(turns):
        if mode is Mode.assistant and turn.speaker is Channel.user:
            continue  # assistants rarely backchannel; the user responds during the agent's answers
        last = heard.get(i, len(lang_words(turn.text, language))) - tail  # not in the last words, nor near a cut
        if last >= lead:
            spans.append((i, lead, last))
    return spans


def speech_minutes(turns: list[ScriptTurn], language: str = "en") -> float:
    """Minutes of speech in `turns` at the language's speaking rate (`Lexicon.words_per_second`,
    words of `languages.words`: English 3.5 words a second, Japanese 1.4 accent phrases)."""
    return sum(len(lang_words(t.text, language)) for t in turns) / load_lexicon(language).words_per_second / 60


def plan_backchannels(
    turns: list[ScriptTurn],
    marks: list[Mark],
    rng: np.random.Generator,
    cfg: BehaviourSection,
    mode: Mode,
    language: str = "en",
) -> list[Backchannel]:
    """Listener responses during long turns, at `backchannels_per_minute` of estimated speech."""
    spans = _listener_spans(turns, marks, mode, language)
    expected = rate(cfg.backchannels_per_minute) * speech_minutes(turns, language)
    extra = dispersed_count(rng, max(expected - cfg.min_backchannels, 0.0), cfg.count_dispersion)
    count = cfg.min_backchannels + extra if spans else 0
    chosen: dict[tuple[int, int], Backchannel] = {}
    weights = np.array([hi - lo + 1 for _, lo, hi in spans], dtype=float)
    spacing = words_for(LISTENER_SPACING_S, language)
    for _ in range(count * 3):  # a few extra tries when positions collide
        if len(chosen) >= count:
            break
        turn, lo, hi = spans[int(rng.choice(len(spans), p=weights / weights.sum()))]
        j = int(rng.integers(lo, hi + 1))
        if any(t == turn and abs(k - j) < spacing for t, k in chosen):
            continue  # one backchannel per ~1.7 s of a turn at most
        chosen[(turn, j)] = Backchannel(turn=turn, word_index=j, token=str(rng.choice(tokens(cfg.backchannel_tokens))))
    return [chosen[k] for k in sorted(chosen)]


def _draw_free_word(
    spans: list[tuple[int, int, int]], taken: set[tuple[int, int]], rng: np.random.Generator
) -> tuple[int, int] | None:
    """A (turn, word) drawn from `spans` (turn, first, last word) and taken; None when it was
    taken already (the draw is lost, as a collision in a real conversation would be)."""
    turn, lo, hi = spans[int(rng.integers(len(spans)))]
    j = int(rng.integers(lo, hi + 1))
    if (turn, j) in taken:
        return None
    taken.add((turn, j))
    return turn, j


def plan_listener_marks(
    turns: list[ScriptTurn],
    marks: list[Mark],
    rng: np.random.Generator,
    cfg: BehaviourSection,
    mode: Mode,
    language: str = "en",
) -> list[ListenerMark]:
    """Backchannels, laughs and failed interruptions: short listener speech over a turn."""
    planned: list[ListenerMark] = list(plan_backchannels(turns, marks, rng, cfg, mode, language))
    spans = _listener_spans(turns, marks, mode, language)
    if not spans:
        return planned
    taken = {(m.turn, m.word_index) for m in planned}
    n_laughs = dispersed_count(rng, cfg.laughs_per_minute * speech_minutes(turns, language), cfg.count_dispersion)
    n_failed = dispersed_count(rng, cfg.failed_interruptions_per_dialogue, cfg.count_dispersion)
    for kind, count in ((Laugh, n_laughs), (FailedInterruption, n_failed)):
        for _ in range(count):
            if (slot := _draw_free_word(spans, taken, rng)) is None:
                continue
            turn, j = slot
            pool = tokens(cfg.laugh_tokens if kind is Laugh else cfg.failed_interruption_tokens)
            planned.append(kind(turn=turn, word_index=j, token=str(rng.choice(pool))))
    return planned


SpokenEvent = Literal["side_talk", "background_speech"]  # the events with phrases in a lexicon


def event_lines(kind: SpokenEvent, language: str) -> tuple[str, ...]:
    """The packaged phrases of one event kind in one language (its lexicon's `side_talk` or
    `background_speech` list, `factory/script/lexicon/<language>.yaml`)."""
    lines = getattr(load_lexicon(language), kind)
    if not lines:
        raise ValueError(f"no {kind} phrases for language {language!r}: add a `{kind}:` list to its lexicon file")
    return tuple(lines)


# Room for an event the agent keeps talking through, in seconds of the agent's speech: the
# timeline starts it 0.15 s after a word and wants the user's channel clear 0.4 s each side
# (`timeline.place.EVENT_DELAY_S`, `CHANNEL_GUARD_S`); not before the agent's first word is out,
# nor in its last ones (the user's next turn may overlap them, or a barge-in cuts there).
EVENT_GUARD_S = 0.55
EVENT_LEAD_S = 1 / 3.5
EVENT_TAIL_S = 2 / 3.5
SOUND_S = {"cough": 0.55, "knock": 0.8, "keyboard": 2.2}  # the synthesised sounds' longest (factory/audio/sounds)
REACTION_S = 0.6  # a listener reaction (backchannel, laugh) on the user's channel, about


def event_counts(rng: np.random.Generator, cfg: EventsSection) -> dict[IgnoredKind, int]:
    """The events of one dialogue per kind: Poisson with the configured means, the first draws of
    the dialogue's "events" generator (so the writer, asked for room before the script exists,
    and the planner, after, see the same counts)."""
    rates = (cfg.side_talk_per_dialogue, cfg.background_speech_per_dialogue, cfg.non_speech_per_dialogue)
    return {kind: int(rng.poisson(r)) if r > 0 else 0 for kind, r in zip(IGNORED_KINDS, rates)}


def _event_words(mark: IgnoredMark, language: str) -> int:
    """Words of the agent's speech an event takes, guards included."""
    if isinstance(mark, NonSpeech):
        return words_for(SOUND_S[mark.sound] + EVENT_GUARD_S, language)
    return len(lang_words(mark.text, language)) + words_for(EVENT_GUARD_S, language)


def event_host_words(speakers: list[Channel], counts: dict[IgnoredKind, int], language: str) -> dict[int, int]:
    """The words to ask of the writer for the agent turns that will hold the planned events, so
    the script has room for them: the events spread evenly over the agent's turns (not its
    opening greeting), each turn long enough for its share of the longest events of the
    language's lexicon. No random draws."""
    hosts = [i for i, s in enumerate(speakers) if s is Channel.agent and i > 0]
    n = sum(counts.values())
    if not n or not hosts:
        return {}
    lines = [*event_lines("side_talk", language), *event_lines("background_speech", language)]
    each = max(_event_words(SideTalk(turn=0, word_index=0, text=t), language) for t in lines)
    each = max(each, _event_words(NonSpeech(turn=0, word_index=0, sound="keyboard"), language))
    edges = words_for(EVENT_LEAD_S, language) + words_for(EVENT_TAIL_S, language)
    share = [n // len(hosts) + (k < n % len(hosts)) for k in range(len(hosts))]
    return {i: edges + k * each for i, k in zip(hosts, share) if k}


def _free_stretches(
    turns: list[ScriptTurn], marks: list[Mark], language: str, speaker: Channel = Channel.agent
) -> list[tuple[int, int, int]]:
    """(turn, first, end) word positions of `speaker`'s turns where an event may go: past its
    first words and before its last (or a barge-in cut); in the agent's turns, between the user's
    reactions (on the user's channel, as the events are; the agent's reactions to the user are on
    its own)."""
    lead, tail = words_for(EVENT_LEAD_S, language), words_for(EVENT_TAIL_S, language)
    guard, reaction = words_for(EVENT_GUARD_S / 2, language), words_for(REACTION_S, language)
    heard = {m.turn: m.heard_words for m in marks if isinstance(m, BargeIn)}
    out = []
    for i, turn in enumerate(turns):
        if turn.speaker is not speaker:
            continue
        lo, hi = lead, heard.get(i, len(lang_words(turn.text, language))) - tail
        reactions = [m.word_index for m in marks if isinstance(m, ListenerMark) and m.turn == i]
        for k in sorted(reactions) if speaker is Channel.agent else []:
            if k - guard > lo:
                out.append((i, lo, k - guard))
            lo = max(lo, k + reaction + guard)
        if hi > lo:
            out.append((i, lo, hi))
    return out


USER_GAP_EDGE = 2  # side talk in a user's turn: not before its 2nd word, nor after its 3rd-last


def _user_gaps(turns: list[ScriptTurn], marks: list[Mark], language: str) -> list[tuple[int, int]]:
    """(turn, word) where the user may stop inside its own turn to talk to someone else: after a
    word ending a clause or a sentence (any word of a turn without one), not in its first or last
    words, before a barge-in's cut, not at a planned pause nor within two words of a listener's
    reaction, and not in a turn that barges in (it starts over the agent)."""
    heard = {m.turn: m.heard_words for m in marks if isinstance(m, BargeIn)}
    taken = {(m.turn, m.word_index) for m in marks if isinstance(m, SilentPause)}
    near = {(m.turn, m.word_index + d) for m in marks if isinstance(m, ListenerMark) for d in range(-2, 3)}
    out = []
    for i, turn in enumerate(turns):
        if turn.speaker is not Channel.user or i - 1 in heard:
            continue
        words = lang_words(turn.text, language)
        last = heard.get(i, len(words)) - 1 - USER_GAP_EDGE
        free = [j for j in range(USER_GAP_EDGE - 1, last) if (i, j) not in taken and (i, j) not in near]
        ends = [j for j in free if words[j].endswith(CLAUSE_ENDS) or words[j].endswith(_SENTENCE_END)]
        out += [(i, j) for j in (ends or free)]
    return out


def plan_ignored_events(
    turns: list[ScriptTurn], marks: list[Mark], rng: np.random.Generator, cfg: EventsSection, language: str
) -> tuple[list[IgnoredMark], dict[IgnoredKind, int]]:
    """Side talk, background speech and non-speech sounds on the user's side, after a word inside
    one of the agent's turns (not in its first or last words, nor near a barge-in cut, nor over
    the user's reactions): the agent keeps talking through them, so no reply follows. Returns the
    marks and the counts drawn (`event_counts`). Each event, in random order, takes its length
    plus guards from a free stretch of any agent turn with room left (drawn by the room left),
    so a long turn holds several and a short one none: the quota goes where the room is; then
    each stretch spreads its slack at random between its events. An event that finds no room is
    left out (`no_room` against the counts). The timeline moves one to another word when the
    user's channel is busy there.

    Side talk goes, with probability `side_talk_user_share`, into the user's own turn instead
    (`_user_gaps`, one a turn): the user holds the floor, stops after a clause, talks to someone
    else and goes on; the timeline opens the pause for it, so it needs no room. Background speech
    and non-speech sounds go, with probability `background_user_share`, into a free stretch of the
    user's own turns (a TV or a cough while the user talks: the timeline mixes them under the
    user's speech), else into the agent's, taking room as there; where the drawn side has none
    left, the other's."""
    counts = event_counts(rng, cfg)
    if not any(counts.values()):
        return [], counts
    drawn: list[IgnoredMark] = []
    for kind in IGNORED_KINDS:
        for _ in range(counts[kind]):
            if kind == "non_speech":
                sound = cfg.non_speech_sounds[int(rng.integers(len(cfg.non_speech_sounds)))]
                drawn.append(NonSpeech(turn=0, word_index=0, sound=sound))
            else:
                text = str(rng.choice(event_lines(kind, language)))
                drawn.append((SideTalk if kind == "side_talk" else BackgroundSpeech)(turn=0, word_index=0, text=text))
    stretches = _free_stretches(turns, marks, language)
    n_agent = len(stretches)  # the agent's stretches, then the user's
    if cfg.background_user_share > 0:
        stretches += _free_stretches(turns, marks, language, Channel.user)
    room = [end - first for _, first, end in stretches]
    held: list[list[tuple[IgnoredMark, int]]] = [[] for _ in stretches]
    gaps = _user_gaps(turns, marks, language) if cfg.side_talk_user_share > 0 else []
    planned: list[IgnoredMark] = []
    for k in rng.permutation(len(drawn)):  # no kind takes the room first
        mark = drawn[int(k)]
        if isinstance(mark, SideTalk) and gaps and rng.random() < cfg.side_talk_user_share:
            turn, j = gaps[int(rng.integers(len(gaps)))]
            planned.append(mark.model_copy(update={"turn": turn, "word_index": j}))
            gaps = [g for g in gaps if g[0] != turn]
            continue
        need = _event_words(mark, language)
        fits = np.array([r if r >= need else 0 for r in room], dtype=float)
        agent, user = slice(0, n_agent), slice(n_agent, len(room))
        if n_agent < len(room) and isinstance(mark, (BackgroundSpeech, NonSpeech)):
            # under the user's speech or over the agent's, as drawn; the other where the drawn has no room
            mine, other = (user, agent) if rng.random() < cfg.background_user_share else (agent, user)
            if fits[mine].sum():
                fits[other] = 0
        else:
            fits[user] = 0
        if not fits.sum():
            continue
        at = int(rng.choice(len(room), p=fits / fits.sum()))
        room[at] -= need
        held[at].append((mark, need))
    for (turn, first, _), slack, events in zip(stretches, room, held):
        if not events:
            continue
        # the slack split at random into the gaps before each event (the rest after the last)
        gaps = np.diff(np.sort(rng.integers(0, slack + 1, size=len(events))), prepend=0)
        j = first
        for (mark, need), gap in zip(events, gaps):
            j += int(gap)
            planned.append(mark.model_copy(update={"turn": turn, "word_index": j}))
            j += need
    return planned, counts

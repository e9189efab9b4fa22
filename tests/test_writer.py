"""The content writer: cleaning/validation of malformed turns, retries, and the real model."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory.config import DialogueSection, LLMSection, load_config
from factory.llm import LLMUnavailable, get_llm
from factory.locations import dialogue_set_dir
from factory.models import Channel, Mode, Persona, Scenario, ScriptTurn
from factory.script.text_checks import TurnRejected, check_turn, clean_turn, truncate_words
from factory.script.writer import build_messages, turn_length, write_turn

NAMES = ["Maria", "Nova"]
SPEAKABLE = re.compile(r"^[\w\s.,!?;:'\-]+$")


def repaired(raw: str, *, min_words: int = 3, max_words: int = 40, references: tuple[str, ...] = ()) -> str:
    text = clean_turn(raw, names=NAMES, min_words=min_words, max_words=max_words)
    check_turn(text, min_words=min_words, references=references)
    assert SPEAKABLE.match(text), text
    assert text.endswith((".", "!", "?"))
    return text


def reason(raw: str, **kwargs: Any) -> str:
    with pytest.raises(TurnRejected) as info:
        repaired(raw, **kwargs)
    return info.value.reason


# --------------------------------------------------------------------------- repairs
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("User: Hi there, how are you doing today?", "Hi there, how are you doing today?"),
        ("Nova: Sure, the museum opens at nine.", "Sure, the museum opens at nine."),
        ('"I love that idea, let\'s go!"', "I love that idea, let's go!"),
        ("**Maria:** Well, I think we should go first.", "Well, I think we should go first."),
        ("Sure, I can help with that.\nMaria: Thanks, what about hotels?\nNova: Many.", "Sure, I can help with that."),
        (
            "Well, I think we should go to the park first. Maria: Sounds good!",
            "Well, I think we should go to the park first.",
        ),
        (
            "Here are my tips:\n\n1. Visit the old town.\n2. Try the local food\n- Take the tram!",
            "Here are my tips: Visit the old town. Try the local food. Take the tram!",
        ),
        ("## Great question\nThe museum opens at nine.", "Great question. The museum opens at nine."),
        (
            "I love that idea! *smiles warmly* (laughs) [pause] Let's do it \U0001f60a\U0001f389",
            "I love that idea! Let's do it.",
        ),
        (
            "It costs $15, about 20% less on Sundays & holidays.",
            "It costs 15 dollars, about 20 percent less on Sundays and holidays.",
        ),
        ("Check https://example.com/x?y=1 for the details, okay?", "Check the website for the details, okay?"),
        (
            "The food \u2014 well \u2014 it\u2019s \u201camazing\u201d\u2026 really.",
            "The food, well, it's amazing... really.",
        ),
        (
            "I think that is a great idea. I think that is a great idea. I think that is a great idea.",
            "I think that is a great idea.",
        ),
        ("What??!!  Really ,, that is   so cool!!!", "What? Really, that is so cool!"),
        ("`code` and ~~strike~~ are not for speech, are they?", "code and strike are not for speech, are they?"),
    ],
)
def test_repairs(raw: str, expected: str) -> None:
    assert repaired(raw) == expected


def test_unfinished_generation_drops_the_fragment() -> None:
    raw = "The old town is lovely in spring. You should also try the little bakery near the"
    assert repaired(raw) == "The old town is lovely in spring."


def test_unfinished_single_sentence_cuts_at_a_comma() -> None:
    raw = "I'd recommend trying the local pastries, especially the pastel de nata, which you find in every"
    assert repaired(raw) == "I'd recommend trying the local pastries, especially the pastel de nata."


def test_truncates_at_a_sentence_boundary() -> None:
    raw = "Lisbon is great. The trams are old and charming and slow. " + "You will love the food there a lot " * 3
    text = repaired(raw, max_words=12)
    assert text == "Lisbon is great. The trams are old and charming and slow."


def test_hard_truncation_ends_cleanly() -> None:
    text = truncate_words("we walked along the river and then into the old market and", 2, 8)
    assert text == "we walked along the river and then."
    assert truncate_words("short one.", 1, 8) == "short one."


# --------------------------------------------------------------------------- rejections
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", "empty"),
        ("   \n\n ", "empty"),
        ("\U0001f60a\U0001f60a\U0001f60a", "empty"),
        ("(laughs) *nods*", "empty"),
        ("Nova:", "empty"),
        ("Yes.", "too_short"),
        ("very very very very very very good", "repetition_loop"),
        ("I can plan it, I can plan it, I can plan it for you and for me.", "repetition_loop"),
        ("Il nostro lavoro viene sempre fatto bene. Esperienza delle persone è tutto.", "wrong_language"),
        ("我们今天去公园散步吧，天气很好。", "wrong_language"),
        ("Nous allons au parc demain matin avec les enfants.", "wrong_language"),
        ("Nova: As an AI language model, I cannot have opinions.", "meta"),
        ("Here's my response to the user about the trip.", "meta"),
    ],
)
def test_rejections(raw: str, expected: str) -> None:
    assert reason(raw) == expected


def test_prompt_echo() -> None:
    instructions = "Say your next line out loud in one short sentence. Plain spoken English only: no lists."
    assert (
        reason("Say your next line out loud in one short sentence, plain spoken English.", references=(instructions,))
        == "prompt_echo"
    )
    previous = "I have never been to Portugal but I would love to see Lisbon."
    assert reason(previous, references=(previous,)) == "prompt_echo"
    # mentioning the topic in a short turn is not an echo
    assert repaired("Lisbon, really? Tell me more!", references=("Topic: a weekend trip to Lisbon.",))


junk = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.sampled_from(list("ab .,!?:*#-()[]\n\"'%$&/\U0001f60a\u4e2d1") + ["Nova:", "User:", "the ", "\n1. "]),
        max_size=120,
    ).map("".join),
    st.lists(
        st.sampled_from(["Maria:", "Nova:", "hello", "the", "**", "(", ")", "\n", "- ", "I", "think", "...", "%"]),
        max_size=60,
    ).map(" ".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=junk, min_words=st.integers(0, 10), max_words=st.integers(0, 60))
def test_fuzz_only_turn_rejected(raw: str, min_words: int, max_words: int) -> None:
    text = clean_turn(raw, names=NAMES, min_words=min_words, max_words=max_words)
    assert isinstance(text, str)
    assert len(text.split()) <= max(max_words, 1)
    try:
        check_turn(text, min_words=min_words, references=[raw[:50]])
    except TurnRejected as rejected:
        assert rejected.reason in {
            "empty",
            "too_short",
            "prompt_echo",
            "repetition_loop",
            "wrong_language",
            "meta",
        }  # no previous: no "parrot"


# --------------------------------------------------------------------------- writer, fake LLM
def scenario(mode: Mode = Mode.assistant) -> Scenario:
    return Scenario(
        id="t1",
        mode=mode,
        topic="planning a weekend trip to Lisbon",
        setting="a phone call in the evening",
        style="casual and friendly",
        user=Persona(name="Maria", description="a nurse who has never been to Portugal"),
        agent=Persona(name="Nova", description="a travel booking assistant"),
        n_turns=4,
    )


class ScriptedLLM:
    """Returns canned outputs in order and records the seeds it was asked for."""

    name = "scripted"

    def __init__(self, outputs: list[str]) -> None:
        self.outputs = list(outputs)
        self.seeds: list[int] = []
        self.temperatures: list[float] = []
        self.messages: list[list[dict[str, str]]] = []

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        json_schema: dict[str, Any] | None = None,
        stop: list[str] | None = None,
    ) -> str:
        self.seeds.append(seed)
        self.temperatures.append(temperature)
        self.messages.append(messages)
        return self.outputs.pop(0)


def test_retries_with_derived_seeds_then_succeeds() -> None:
    llm = ScriptedLLM(["\U0001f60a", "Nova: Ciao bella, come stai oggi amico mio?", "Sure! Lisbon is lovely in May."])
    text = write_turn(llm, scenario(), [], Channel.user, seed=40, min_words=3, max_words=20)
    assert text == "Sure! Lisbon is lovely in May."
    assert llm.seeds == [40, 41, 42]


def test_raises_last_reason_after_all_attempts() -> None:
    llm = ScriptedLLM(["", "so so so so so good"])
    with pytest.raises(TurnRejected) as info:
        write_turn(llm, scenario(), [], Channel.user, seed=1, min_words=3, max_words=20, attempts=2)
    assert info.value.reason == "repetition_loop"


def test_rejects_a_copy_of_the_previous_turn() -> None:
    history = [ScriptTurn(speaker=Channel.user, text="I have never been to Portugal, where should I stay in Lisbon?")]
    llm = ScriptedLLM([history[0].text])
    with pytest.raises(TurnRejected, match="prompt_echo"):
        write_turn(llm, scenario(), history, Channel.agent, seed=1, min_words=3, max_words=60, attempts=1)


def test_messages_put_the_speaker_in_the_assistant_role() -> None:
    history = [
        ScriptTurn(speaker=Channel.user, text="Hi, I want to visit Lisbon."),
        ScriptTurn(speaker=Channel.agent, text="Great choice! When are you"),  # barged in on
    ]
    messages = build_messages(scenario(), history, Channel.user, max_words=20)
    assert [m["role"] for m in messages] == ["system", "assistant", "user"]
    assert messages[-1]["content"] == "Great choice! When are you..."
    assert "cut them off" in messages[0]["content"] and "Maria" in messages[0]["content"]
    assert build_messages(scenario(), [], Channel.agent, max_words=60)[-1]["role"] == "user"
    # the speaker's own last turn: the model is asked to go on, not to continue mid-message
    assert build_messages(scenario(), history[:1], Channel.user, max_words=20)[-1]["role"] == "user"


def test_turn_lengths_per_mode_come_from_the_config() -> None:
    defaults = DialogueSection()
    assert turn_length(Mode.assistant, Channel.agent) == defaults.assistant_agent_words
    assert turn_length(Mode.assistant, Channel.user) == defaults.assistant_user_words
    assert turn_length(Mode.peer, Channel.user) == turn_length(Mode.peer, Channel.agent) == defaults.peer_words
    assert turn_length(Mode.assistant, Channel.user)[1] <= 20 < turn_length(Mode.assistant, Channel.agent)[0] + 1
    custom = DialogueSection(assistant_agent_words=(30, 90), peer_words=(2, 9))
    assert turn_length(Mode.assistant, Channel.agent, custom) == (30, 90)
    assert turn_length(Mode.peer, Channel.agent, custom) == (2, 9)


def test_write_turn_sends_the_temperature_it_is_given() -> None:
    llm = ScriptedLLM(["Sure! Lisbon is lovely in May.", "Sure! Porto is lovely in May."])
    write_turn(llm, scenario(), [], Channel.user, seed=1, min_words=3, max_words=20)
    write_turn(llm, scenario(), [], Channel.user, seed=1, min_words=3, max_words=20, temperature=0.25)
    assert llm.temperatures == [LLMSection().temperature, 0.25]


class SentenceLLM(ScriptedLLM):
    """A different two-sentence answer for every call (the first sentence fits a user turn)."""

    ANSWERS: ClassVar[list[str]] = [
        (
            "I would love to see the old town first. Maybe we could walk up to the castle early, before the crowds "
            "arrive and the sun gets too strong for a long climb."
        ),
        (
            "The trams there are cheap and run all night. A day pass costs about seven euros and covers the funicular "
            "lifts as well, which saves your legs on those steep hills."
        ),
        (
            "Do you know any good seafood places near the river? My sister says the grilled sardines are the best "
            "thing she ate on her whole trip last summer."
        ),
        (
            "Belem has a famous bakery with custard tarts. People queue for an hour on weekends, so going on a Friday "
            "morning right after it opens is usually much quieter and quicker."
        ),
        (
            "What should I pack for the evenings in spring? I get cold easily and the wind from the ocean can feel "
            "sharp once the sun goes down behind the hills."
        ),
        (
            "Bring a light jacket and comfortable shoes. The pavements are polished stone, so they get slippery after "
            "rain and sandals with thin soles will not grip at all."
        ),
    ]

    def __init__(self) -> None:
        super().__init__([])

    def complete(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        self.outputs = [self.ANSWERS[len(self.seeds) % len(self.ANSWERS)]]
        return super().complete(messages, **kwargs)


def test_turns_mode_uses_the_configured_temperature() -> None:
    from factory.script.compose import write_script

    cfg = load_config(
        overrides=["llm.temperature=0.35", "behaviour.min_barge_ins=0", "behaviour.barge_ins_per_dialogue=0"]
    )
    llm = SentenceLLM()
    script = write_script(llm, scenario(), cfg, "train-0")
    assert len(script.turns) == 4 and llm.temperatures and set(llm.temperatures) == {0.35}


# --------------------------------------------------------------------------- writer, real model
@pytest.fixture(scope="module")
def real_llm():
    pytest.importorskip("llama_cpp")
    try:
        return get_llm("embedded")
    except LLMUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("mode", [Mode.assistant, Mode.peer])
def test_real_model_writes_clean_deterministic_turns(real_llm, mode: Mode) -> None:
    sc = scenario(mode)
    history: list[ScriptTurn] = []
    for i, speaker in enumerate([Channel.user, Channel.agent]):
        min_words, max_words = turn_length(mode, speaker)
        text = write_turn(real_llm, sc, history, speaker, seed=100 + i, min_words=min_words, max_words=max_words)
        assert SPEAKABLE.match(text) and min_words <= len(text.split()) <= max_words
        assert (
            write_turn(real_llm, sc, history, speaker, seed=100 + i, min_words=min_words, max_words=max_words) == text
        )
        history.append(ScriptTurn(speaker=speaker, text=text))


# --------------------------------------------------------------------------- answering, not parroting
def test_a_reply_that_parrots_the_previous_turn_is_redrawn() -> None:
    """After a barge-in the small model says the interrupter's words again: that attempt is
    rejected as `parrot` and the next seed's answer is kept."""
    history = [
        ScriptTurn(speaker=Channel.agent, text="The old town is lovely and the trams are —"),
        ScriptTurn(speaker=Channel.user, text="Wait, are the trams open late at night?"),
    ]
    llm = ScriptedLLM(
        [
            "Open late at night, the trams? The trams are open late at night, sure.",  # not a prompt_echo
            "Most lines stop around eleven, but the night buses run until five in the morning.",
        ]
    )
    text = write_turn(llm, scenario(), history, Channel.agent, seed=7, min_words=3, max_words=60)
    assert text.startswith("Most lines stop")
    assert llm.seeds == [7, 8]
    assert "They cut you off" in llm.messages[0][0]["content"]


def test_parrot_check_spares_short_turns_and_the_shipped_human_replies() -> None:
    repaired("Are the trams open late at night? Yes, the trams are.")  # no previous turn: nothing to parrot
    with pytest.raises(TurnRejected, match="parrot"):
        check_turn("The trams are open late at night.", min_words=3, previous="Are the trams open late at night?")
    check_turn("Yes, the trams are running.", min_words=3, previous="Trams, really?")  # 1 content word: too short
    # The replies of the human-written dialogue set pass, all but 1 of 175 ("What time is the first
    # bus in the morning?" -> "The first bus leaves at 4:30 in the morning..."): copies, not answers.
    flagged = []
    for dialogue in map(json.loads, (dialogue_set_dir() / "en-everyday.jsonl").read_text().splitlines()):
        for before, reply in itertools.pairwise(dialogue["turns"]):
            try:
                check_turn(reply["text"], min_words=1, previous=before["text"])
            except TurnRejected as rejected:
                flagged.append(rejected.reason)
    assert flagged == ["parrot"]


def test_the_prompt_stays_bounded_however_long_the_dialogue() -> None:
    """A 5-minute dialogue has ~60 turns: the writer sees the last HISTORY_TURNS of them, so its
    prompt (and memory) does not grow with the dialogue."""
    line = "I think we should take the early train and see the old town before lunch."
    history = [ScriptTurn(speaker=[Channel.user, Channel.agent][i % 2], text=line) for i in range(60)]
    sizes = [sum(len(m["content"]) for m in build_messages(scenario(), history[:n], Channel.user, 20)) for n in (8, 60)]
    assert sizes[0] == sizes[1] < 1500

"""Long dialogues (a running summary keeps late turns on the scenario, the prompt bounded) and the
writer's prompts written in the dialogue's language (factory/script/writer_prompts/)."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest

from factory.config import ConfigError, load_config
from factory.llm import get_llm
from factory.locations import dialogue_set_dir
from factory.models import Channel, Mode, Persona, Scenario, ScriptTurn
from factory.runtime import Runtime
from factory.script.compose import write_script
from factory.script.content import default_judge
from factory.script.scenario import draw_scenario
from factory.script.summary import MAX_SENTENCE_WORDS, RunningSummary, sentences
from factory.script.text_checks import TurnRejected, check_turn
from factory.script.writer import HISTORY_TURNS, build_messages, prompts_dir, writer_gaps, writer_prompts
from factory.seeding import derive_seed, rng_for
from tests.latency_server import LatencyServer, answer

LANGUAGES = ("en", "ja", "es", "fr", "de", "hi")


def hiking(n_turns: int = 40, mode: Mode = Mode.assistant) -> Scenario:
    return Scenario(
        id="long-t",
        mode=mode,
        topic="planning a weekend hiking trip in the mountains",
        setting="a phone call in the evening",
        style="casual and friendly",
        user=Persona(name="Maria", description="a nurse who likes the outdoors"),
        agent=Persona(name="Nova", description="a travel planning assistant"),
        n_turns=n_turns,
    )


# --------------------------------------------------------------------------- the running summary
def test_running_summary_keeps_the_sentences_nearest_the_scenario_in_the_order_said() -> None:
    """The judge (all-MiniLM-L6-v2, outside the writer) picks what the summary keeps: the hiking
    sentences, not the small talk, said again in their order, however many turns went by."""
    summary = RunningSummary(hiking(), default_judge(), size=2)
    summary.add(0, "We should take the mountain trail on Saturday morning. My cousin bakes great bread.")
    summary.add(1, "I watched a long film about the ocean last night.")
    summary.add(2, "Pack good hiking boots and a rain jacket for the climb —")
    for k in range(3, 60):
        summary.add(k, "The weather in the city was grey and the bus was late again today.")
    assert summary.text() == (
        "We should take the mountain trail on Saturday morning. Pack good hiking boots and a rain jacket for the climb"
    )
    assert len(summary._kept) == 2  # bounded: only the best `size` are held


def test_a_long_sentence_is_cut_and_short_ones_are_not_kept() -> None:
    assert sentences("Use about 1.5 cups of water. Then let it simmer. Okay!") == [
        "Use about 1.5 cups of water.",
        "Then let it simmer.",
    ]
    assert sentences("駅まで歩いて行きます。それから電車に乗ります。", "ja") == [
        "駅まで歩いて行きます。",
        "それから電車に乗ります。",
    ]
    summary = RunningSummary(hiking(), default_judge(), size=3)
    summary.add(0, "Yes. Oh, right. " + " ".join(["mountain"] * 60) + ".")
    assert len(summary.text().split()) == MAX_SENTENCE_WORDS


class RecordingLLM:
    """Answers like the HTTP stand-in (`tests/latency_server.answer`) and keeps every prompt."""

    name = "recording"

    def __init__(self) -> None:
        self.prompts: list[list[dict[str, str]]] = []

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, seed: int, **_: Any) -> str:
        self.prompts.append(messages)
        return answer(seed, max_tokens)


def test_a_five_minute_dialogue_carries_the_summary_and_its_prompt_stays_bounded() -> None:
    """40 turns: from `summary_from_turn` on, the system message holds sentences of turns that left
    the window (never one still in it), the prompt does not grow with the dialogue, and the same
    (seed, sample) writes the same script."""
    cfg = load_config(overrides=["behaviour.min_barge_ins=0", "events.side_talk_per_dialogue=0"])
    llm = RecordingLLM()
    script = write_script(llm, hiking(40), cfg, "long-t")
    assert len(script.turns) == 40 and len(llm.prompts) == 40  # the stand-in's answers pass the checks
    start = cfg.dialogue.summary_from_turn
    said_before = "Said earlier in this conversation: "
    for i, messages in enumerate(llm.prompts):
        system = messages[0]["content"]
        assert (said_before in system) == (i >= start), i
        if i >= start:
            summary = system.split(said_before)[1].split("\n")[0]
            window = " ".join(t.text for t in script.turns[i - HISTORY_TURNS : i])
            older = " ".join(t.text for t in script.turns[: i - HISTORY_TURNS])
            assert all(s.rstrip(".") in older for s in summary.split(". ")), (i, summary)
            assert summary not in window
    sizes = [sum(len(m["content"]) for m in messages) for messages in llm.prompts]
    assert max(sizes[start:]) < max(sizes[:start]) + 4 * (MAX_SENTENCE_WORDS * 10)
    assert max(sizes[30:]) <= max(sizes[start:30]) + 100  # flat: no growth past the summary's size
    assert write_script(RecordingLLM(), hiking(40), cfg, "long-t") == script


class FailsAt(RecordingLLM):
    """`RecordingLLM` whose answer to every attempt of turn `turn` of sample `key` is empty."""

    def __init__(self, key: str, turn: int, attempts: int) -> None:
        super().__init__()
        first = derive_seed(1234, key, f"llm-turn-{turn}")
        self.failing = set(range(first, first + attempts))

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, seed: int, **_: Any) -> str:
        return "" if seed in self.failing else super().complete(messages, max_tokens=max_tokens, seed=seed)


def test_a_long_dialogue_that_loses_a_late_turn_ends_before_it() -> None:
    """Past half its turns, a long dialogue whose turn fails every attempt keeps what it has (marks of
    later turns gone); a short one, or one failing before half, is lost as before."""
    cfg = load_config(overrides=["behaviour.min_barge_ins=0"])
    script = write_script(FailsAt("long-t", 30, cfg.llm.turn_attempts), hiking(40), cfg, "long-t")
    full = write_script(RecordingLLM(), hiking(40), cfg, "long-t")
    assert len(script.turns) in (29, 30) and script.turns == full.turns[: len(script.turns)]
    assert all(m.turn < len(script.turns) for m in script.marks)
    for n_turns, failing in ((40, 12), (8, 6)):
        with pytest.raises(TurnRejected, match="empty"):
            write_script(FailsAt("long-t", failing, cfg.llm.turn_attempts), hiking(n_turns), cfg, "long-t")


def test_dialogues_shorter_than_the_summary_turn_are_written_as_before() -> None:
    """A default run's 6-8 turns never reach `summary_from_turn`: same prompts as with no summary."""
    cfg = load_config(overrides=["behaviour.min_barge_ins=0"])
    off = load_config(overrides=["behaviour.min_barge_ins=0", "dialogue.summary_sentences=0"])
    on, without = RecordingLLM(), RecordingLLM()
    assert write_script(on, hiking(8), cfg, "s") == write_script(without, hiking(8), off, "s")
    assert on.prompts == without.prompts


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dialogue.summary_from_turn=6", "greater than or equal to 7"),
        ("dialogue.summary_sentences=13", "less than or equal to 12"),
        ("dialogue.summary_sentences=-1", "greater than or equal to 0"),
    ],
)
def test_summary_settings_are_validated(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


# --------------------------------------------------------------------------- prompts in the language
def test_every_language_has_its_writer_prompts_and_english_is_unchanged() -> None:
    assert sorted(p.stem for p in prompts_dir().glob("*.yaml")) == sorted(LANGUAGES)
    for language in LANGUAGES:
        assert writer_prompts(language).language == language
    assert writer_prompts("es-MX") is writer_prompts("es")
    # English as it was before the prompts became data (the TINY run's scripts depend on it).
    messages = build_messages(hiking(8), [ScriptTurn(speaker=Channel.user, text="Hi there.")], Channel.agent, 50)
    assert messages[0]["content"] == (
        "You are Nova, a travel planning assistant. You are a voice assistant talking with Maria, a nurse who likes "
        "the outdoors. Answer helpfully and concretely.\nSetting: a phone call in the evening. Topic: planning a "
        "weekend hiking trip in the mountains. Style: casual and friendly.\nSay your next line out loud in two to "
        "four sentences. Plain spoken English only: no lists, no markdown, no emojis, no names or labels.\nAnswer "
        "what they just said first, with something new, in your own words. Do not repeat their words."
    )


def _share(text: str, scripts: tuple[str, ...]) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(unicodedata.name(c, "").startswith(scripts) for c in letters) / max(len(letters), 1)


def _ja_reply(request: dict) -> str:
    """Three Japanese lines of the shipped dialogue set, by the request's seed."""
    lines = [
        t["text"]
        for line in (dialogue_set_dir() / "ja-everyday.jsonl").read_text().splitlines()
        for t in json.loads(line)["turns"]
    ]
    k = int(request.get("seed") or 0) % len(lines)
    return "".join(lines[k : k + 3]) if k + 3 <= len(lines) else "".join(lines[-3:])  # long enough for any turn


def test_a_japanese_dialogue_is_asked_for_in_japanese_on_the_http_route() -> None:
    """What a real HTTP server receives for a ja dialogue: every message Japanese (the system
    message, the opener, the fixed lines), none of the English instructions."""
    cfg = load_config(overrides=["dialogue.language=ja", "llm.backend=http", "behaviour.min_barge_ins=0"])
    assert writer_gaps(cfg) == []
    bank = Runtime(cfg).scenarios("ja")
    with LatencyServer(0.0, reply=_ja_reply, record=True) as server:
        llm = get_llm("http", base_url=server.base_url, concurrency=1)
        scenario = draw_scenario("ja-0", rng_for(1, "ja-0", "scenario"), {Mode.peer: 1.0}, (8, 8), bank, "ja")
        script = write_script(llm, scenario, cfg, "ja-0")
    assert len(script.turns) == 8
    requests = server.requests or []
    assert len(requests) >= 8
    ja = writer_prompts("ja")
    for request in requests:
        for message in request["messages"]:
            assert _share(message["content"], ("HIRAGANA", "KATAKANA", "CJK")) >= 0.9, message
            assert "Say your next line" not in message["content"] and "Topic:" not in message["content"]
    assert requests[0]["messages"][-1]["content"] == ja.open.format(topic=scenario.topic)
    assert any(ja.reply in r["messages"][0]["content"] for r in requests[1:])


def test_a_served_model_may_write_other_spaced_languages_in_their_script() -> None:
    check_turn("Claro, podemos salir el sábado por la mañana temprano.", min_words=3, language="es")
    check_turn("हाँ, हम शनिवार सुबह जल्दी निकल सकते हैं।", min_words=3, language="hi")
    for text, language in (
        ("Sure, I think we could go there next week if you like.", "es"),
        ("Sure, we could leave early on Saturday morning.", "hi"),
    ):
        with pytest.raises(TurnRejected, match="wrong_language"):
            check_turn(text, min_words=3, language=language)


def test_the_english_only_embedded_model_is_refused_for_another_language() -> None:
    gaps = writer_gaps(load_config(overrides=["dialogue.language={en: 1, ja: 1}"]))
    assert len(gaps) == 1 and "language ja: the packaged embedded model" in gaps[0] and "English only" in gaps[0]
    assert writer_gaps(load_config(overrides=["dialogue.language=ja", "llm.backend=http"])) == []
    dataset = "dialogue.sources=[{kind: dataset, path: ja-everyday}]"
    assert writer_gaps(load_config(overrides=["dialogue.language=ja", dataset])) == []
    with pytest.raises(ConfigError, match="English only"):
        Runtime(load_config(overrides=["dialogue.language=es"])).check_languages()
    it = writer_gaps(load_config(overrides=["dialogue.language=it", "llm.backend=http"]))
    assert it == [
        f"no writer prompts for language 'it': add {prompts_dir() / 'it.yaml'} (have: de, en, es, fr, hi, ja)"
    ]

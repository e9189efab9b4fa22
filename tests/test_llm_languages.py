"""The LLM's other prompts in the dialogue's language: the structured mode's whole-dialogue prompt
(`factory.script.response.script_messages`) and the dataset-rewrite prompt
(`factory.script.source.rewrite_turn_llm`), both from the one prompt store
(`factory/script/writer_prompts/<language>.yaml`), and what a language lacks for them is a
config error (`writer_gaps`)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from factory.config import load_config
from factory.languages import words
from factory.locations import dialogue_set_dir
from factory.models import Backchannel, BargeIn, Filler, Mode, Persona, Restart, Scenario, SilentPause
from factory.runtime import Runtime
from factory.script.compose import write_script_structured
from factory.script.lexicon import load_lexicon
from factory.script.parse import parse_script
from factory.script.response import filler_tokens, response_schema, script_messages, script_to_response
from factory.script.scenario import draw_scenario
from factory.script.source import read_dialogue_set, rewrite_turn_llm
from factory.script.text_checks import COMMON_ENGLISH, TurnRejected, check_turn
from factory.script.writer import WriterPromptError, _load_prompts, writer_gaps, writer_prompts
from factory.seeding import rng_for

SPACED = ("es", "fr", "de", "hi")
MARK_NAMES = {"filler", "restart", "pause", "backchannel", "laugh", "failed_interruption", "barge_in", "json"}


class RecordingLLM:
    """Answers with canned outputs in order; records every request's messages and schema."""

    name = "recording"

    def __init__(self, outputs: list[str]) -> None:
        self.outputs = list(outputs)
        self.messages: list[list[dict[str, str]]] = []
        self.schemas: list[dict[str, Any] | None] = []
        self.max_tokens: list[int] = []

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
        self.messages.append(messages)
        self.schemas.append(json_schema)
        self.max_tokens.append(max_tokens)
        return self.outputs.pop(0)


def _prose(message: str, language: str) -> list[str]:
    """The words of a prompt that are the language's prose: the example's JSON, the format's
    field names (`before_word`), its quoted speaker ids and mark types taken out."""
    prompts = writer_prompts(language).structured
    assert prompts is not None
    message = message.split(prompts.example)[0]
    message = re.sub(r"`[^`]*`|\"(?:user|agent)\"", " ", message)
    return [w for w in re.findall(r"[^\W\d_][\w'\-]*", message.lower()) if w not in MARK_NAMES]


def _in_language(message: str, language: str) -> None:
    words = _prose(message, language)
    assert len(words) >= 8, message
    english = [w for w in words if w in COMMON_ENGLISH]
    assert len(english) / len(words) < 0.1, english  # not English prose
    if language == "hi":
        letters = [c for c in " ".join(words) if c.isalpha()]
        assert sum(unicodedata.name(c, "").startswith("DEVANAGARI") for c in letters) / len(letters) >= 0.95


def _scenario(language: str, n_turns: int = 3) -> Scenario:
    cfg = load_config(overrides=[f"dialogue.language={language}", "llm.backend=http"])
    bank = Runtime(cfg).scenarios(language)
    key = f"{language}-0"
    return draw_scenario(key, rng_for(1, key, "scenario"), {Mode.peer: 1.0}, (n_turns, n_turns), bank, language)


# --------------------------------------------------------------------------- the structured prompt
def test_english_structured_prompt_is_the_prompt_before_it_became_data() -> None:
    """The vLLM structured fixture's and test_scripting_structured's scripts depend on it: the
    messages of the code before this change, hashed."""
    for mode, agent_opens, digest in (
        (Mode.assistant, False, "0c73f3a7bc3f9c455abf6c114c79bc7c5db91008f4cb6397b39d6dc23437ebbb"),
        (Mode.peer, True, "948013d89806c2416ff7c5e06152497f76efd5f1f2aa0efaffd37a8c2492ed84"),
    ):
        scenario = Scenario(
            id="x",
            mode=mode,
            topic="planning a weekend hiking trip",
            setting="a phone call",
            style="casual",
            user=Persona(name="Maria", description="a nurse"),
            agent=Persona(name="Nova", description="a planner"),
            n_turns=6,
        )
        messages = script_messages(scenario, 6, agent_opens=agent_opens)
        assert hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest() == digest
    assert response_schema(6) == response_schema(6, "en-GB")  # English's filler tokens, as before


def _answer(language: str) -> tuple[dict[str, Any], int]:
    """A model's answer in `language`: the first three turns of its packaged dialogue set, a filler
    (the lexicon's first) before word 1 of the first turn and a restart on the agent's first word
    with a letter outside ASCII (`é`, `ü`, Devanagari); that word's index."""
    dialogue = read_dialogue_set(dialogue_set_dir() / f"{language}-everyday.jsonl")[0]
    turns: list[dict[str, Any]] = [{"speaker": t.role.value, "text": t.text, "marks": []} for t in dialogue.turns[:3]]
    turns[0]["marks"].append({"type": "filler", "before_word": 1, "token": filler_tokens(language)[1]})
    word = next(i for i, w in enumerate(turns[1]["text"].split()) if not w.isascii())
    turns[1]["marks"].append({"type": "restart", "word": word})
    return {"turns": turns}, word


@pytest.mark.parametrize("language", SPACED)
def test_a_structured_run_asks_in_its_language_and_reads_the_answer_in_it(language: str) -> None:
    """What the LLM receives for a structured es/fr/de/hi dialogue is in the language (rules,
    roles, the example, the request) and its schema's fillers are the language's; an answer in
    the language parses into a script, its words checked as the language's, the proposed filler
    and a restart on a word with letters outside ASCII kept."""
    cfg = load_config(
        overrides=[
            f"dialogue.language={language}",
            "llm.backend=http",
            "llm.script_mode=structured",
            "behaviour.min_barge_ins=0",
        ]
    )
    assert writer_gaps(cfg) == []
    prompts = writer_prompts(language).structured
    assert prompts is not None
    scenario = _scenario(language)
    answer, restarted = _answer(language)
    llm = RecordingLLM([json.dumps(answer, ensure_ascii=False)])
    script = write_script_structured(llm, scenario, cfg, f"{language}-0")

    system, user = (m["content"] for m in llm.messages[0])
    _in_language(system, language)
    _in_language(user + " " + " ".join(prompts.rules), language)
    assert user == prompts.ask.format(
        setting=scenario.setting, topic=scenario.topic, style=scenario.style, n_turns=scenario.n_turns
    )
    for turn in prompts.example_response["turns"]:  # the example is the language's own speech
        check_turn(turn["text"], min_words=3, language=language)
        assert turn["text"] in system
    schema = llm.schemas[0]
    assert schema is not None
    fillers = [
        kind["properties"]["token"]["enum"]
        for kind in schema["properties"]["turns"]["items"]["properties"]["marks"]["items"]["anyOf"]
        if kind["properties"]["type"].get("const") == "filler"
    ]
    assert fillers == [list(filler_tokens(language))]
    assert set(load_lexicon(language).fillers) <= set(fillers[0])

    assert len(script.turns) == 3
    token = filler_tokens(language)[1]
    assert any(isinstance(m, Filler) and m.turn == 0 and m.token.rstrip(",") == token for m in script.marks)
    restart = next(m for m in script.marks if isinstance(m, Restart) and m.turn == 1)
    said = script.turns[1].text.split()
    assert said[restart.word_index + 1].strip(".,!?") == answer["turns"][1]["text"].split()[restarted].strip(".,!?।")


# A Japanese model's answer: its phrases space-separated, as the structured prompt asks, one of them
# (まっすぐ行って、) two words of the analyser.
JA_AGENT = "まっすぐ行って、 二つ目の 角を 右に 曲がって ください。 すぐ 見えますよ。"
JA_ANSWER: dict[str, Any] = {
    "turns": [
        {"speaker": "user", "text": "すみません、 駅まで どうやって 行けば いいですか？", "marks": []},
        {
            "speaker": "agent",
            "text": JA_AGENT,
            "marks": [
                {"type": "pause", "after_word": 0, "seconds": 0.4},  # after 行って、: the end of the phrase
                {"type": "filler", "before_word": 1, "token": "えーと、"},  # before 二つ目の
                {"type": "backchannel", "after_word": 2, "token": "うん"},  # after 角を
                {"type": "barge_in", "heard_words": 4},  # heard up to 右に
            ],
        },
        {"speaker": "user", "text": "右に 曲がるんですね。 わかりました、 すぐ 行って みます。", "marks": []},
    ]
}


def test_a_japanese_structured_run_marks_the_words_of_its_joined_text() -> None:
    """Japanese in structured mode: the prompt is Japanese and asks for the phrases separated by
    spaces; the model's marks index its own phrases, which need not be the analyser's
    ("まっすぐ行って、" is two words of `languages.words`); the script's text is joined, and each
    mark sits on the word of the joined text that holds the model's word."""
    cfg = load_config(
        overrides=[
            "dialogue.language=ja",
            "llm.backend=http",
            "llm.script_mode=structured",
            "behaviour.min_barge_ins=0",
        ]
    )
    assert writer_gaps(cfg) == []
    scenario = _scenario("ja")
    agent, answer = JA_AGENT, JA_ANSWER
    llm = RecordingLLM([json.dumps(answer, ensure_ascii=False)])
    script = write_script_structured(llm, scenario, cfg, "ja-0")

    system, user = (m["content"] for m in llm.messages[0])
    assert "文節ごとに半角スペースで区切ります" in system and "JSONで書いてください" in user
    schema = llm.schemas[0]
    assert schema is not None
    assert "えーと、" in json.dumps(schema, ensure_ascii=False)  # the lexicon's fillers
    # Room for the turns' accent phrases, several tokens each: twice a spaced language's budget.
    assert llm.max_tokens == [(30 + 30) * 3 * 2 + 256]

    turn = script.turns[1]
    said = words(turn.text, "ja")
    assert " " not in turn.text and turn.text.replace("えーと、", "") == agent.replace(" ", "")
    assert said[:5] == [
        "まっすぐ",
        "行って、",
        "えーと、",
        "二つ目の",
        "角を",
    ]  # the analyser's words, filler written in
    ours = [m for m in script.marks if m.turn == 1]
    assert [said[m.word_index] for m in ours if isinstance(m, Filler)] == ["えーと、"]
    assert [said[m.word_index] for m in ours if isinstance(m, SilentPause)] == ["行って、"]
    assert any(said[m.word_index] == "角を" for m in ours if isinstance(m, Backchannel) and m.token == "うん")
    assert [said[m.heard_words - 1] for m in ours if isinstance(m, BargeIn)] == ["右に"]  # cut after 右に
    assert all(" " not in t.text for t in script.turns)


def test_a_japanese_script_written_back_in_the_format_parses_to_itself() -> None:
    """`script_to_response` writes a Japanese script's words (`languages.words`) space-separated,
    its inserted filler taken out, as the prompt asks the model to: parsed again, the same script."""
    scenario = _scenario("ja")
    script, _ = parse_script(json.dumps(JA_ANSWER, ensure_ascii=False), scenario, min_words=5, max_words=30)
    response = script_to_response(script)
    assert response["turns"][1]["text"].startswith("まっすぐ 行って、 二つ目の 角を")  # no filler in the text
    again, _ = parse_script(json.dumps(response, ensure_ascii=False), scenario, min_words=5, max_words=30)
    assert again.turns == script.turns and again.marks == script.marks


def test_prompts_without_a_structured_section_are_a_gap_in_structured_mode_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new language's prompts may leave `structured` out; structured mode then
    names the file. A malformed example is refused, naming the language."""
    full = writer_prompts("en").model_dump(mode="json")
    english = {k: v for k, v in full.items() if k != "structured"} | {"language": "it"}
    (tmp_path / "it.yaml").write_text(json.dumps(english), encoding="utf-8")
    monkeypatch.setattr("factory.script.writer.prompts_dir", lambda: tmp_path)
    _load_prompts.cache_clear()
    try:
        base = ["dialogue.language=it", "llm.backend=http"]
        assert writer_gaps(load_config(overrides=base)) == []
        assert writer_gaps(load_config(overrides=[*base, "llm.script_mode=structured"])) == [
            f"language it: {tmp_path / 'it.yaml'} has no `structured` section (llm.script_mode=structured)"
        ]
        structured = full["structured"]
        structured["example_response"]["turns"][0]["marks"][0]["before_word"] = 40
        (tmp_path / "it.yaml").write_text(json.dumps(english | {"structured": structured}), encoding="utf-8")
        _load_prompts.cache_clear()
        from factory.script.response import example_response

        with pytest.raises(WriterPromptError, match="example_response of 'it'.*points past"):
            example_response("it")
    finally:
        _load_prompts.cache_clear()


# --------------------------------------------------------------------------- the rewrite prompt
REWRITES = {
    # language: (source line, a rewrite that keeps its content, one that drops it)
    "en": ("The museum opens at 9 on Mondays.", "The museum opens at nine on Mondays.", "Okay, bye now."),
    "es": (
        "El museo abre a las 9 los lunes.",
        "Pues el museo abre a las 9 los lunes.",
        "Vale, hasta luego.",
    ),
    "fr": (
        "Le musée ouvre à 9 heures le lundi.",
        "Bon, le musée ouvre à 9 heures le lundi.",
        "D'accord, à plus tard.",
    ),
    "de": (
        "Das Museum öffnet montags um 9 Uhr.",
        "Also, das Museum öffnet montags um 9 Uhr.",
        "Ja, bis später.",
    ),
    "hi": (
        "संग्रहालय सोमवार को सुबह 9 बजे खुलता है।",
        "संग्रहालय तो सोमवार सुबह 9 बजे खुलता है।",
        "हाँ, 9 बजे।",
    ),
    "ja": ("美術館は月曜日の朝九時に開きます。", "美術館は月曜日の朝九時に開きますよ。", "はい、そうですね。"),
}


@pytest.mark.parametrize("language", list(REWRITES))
def test_a_dataset_rewrite_is_asked_for_in_its_language_and_checked_in_it(language: str) -> None:
    """The rewrite's system message is the language's `rewrite` line (English's is the old one,
    word for word); a rewrite in the language that keeps the line's content is accepted, one that
    drops it is `content_lost`, one in English is `wrong_language`."""
    source, kept, lost = REWRITES[language]
    llm = RecordingLLM(["Sure, the museum opens at nine on Mondays.", kept] if language != "en" else [kept])
    attempts = 2 if language != "en" else 1
    out = rewrite_turn_llm(llm, source, seed=3, attempts=attempts, temperature=0.7, language=language)
    assert out.rstrip("。.") in kept
    system = llm.messages[0][0]["content"]
    assert system == writer_prompts(language).rewrite and llm.messages[0][1]["content"] == source
    if language == "en":
        assert system == (
            "You rewrite one line of a written dialogue the way the speaker would say it out loud: plain spoken "
            "English, contractions, short sentences. Keep every fact, name and number; add nothing new. "
            "Reply with the rewritten line only."
        )
    else:
        assert "English" not in system and "rewrite" not in system
        with pytest.raises(TurnRejected) as english:  # the first answer above, alone
            rewrite_turn_llm(
                RecordingLLM(["Sure, the museum opens at nine on Mondays."]),
                source,
                seed=3,
                attempts=1,
                temperature=0.7,
                language=language,
            )
        assert english.value.reason == "wrong_language"
    with pytest.raises(TurnRejected) as info:
        rewrite_turn_llm(RecordingLLM([lost]), source, seed=1, attempts=1, temperature=0.7, language=language)
    assert info.value.reason == "content_lost"


def test_a_dataset_rewritten_by_the_llm_needs_prompts_in_its_language() -> None:
    dataset = "dialogue.sources=[{kind: dataset, path: es-everyday, rewrite: llm}]"
    assert writer_gaps(load_config(overrides=["dialogue.language=es", "llm.backend=http", dataset])) == []
    gaps = writer_gaps(load_config(overrides=["dialogue.language=it", "llm.backend=http", dataset]))
    assert len(gaps) == 1 and gaps[0].startswith("no writer prompts for language 'it'")
    rules = "dialogue.sources=[{kind: dataset, path: es-everyday, rewrite: rules}]"
    assert writer_gaps(load_config(overrides=["dialogue.language=it", rules])) == []  # no LLM asked

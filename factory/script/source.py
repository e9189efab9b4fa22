"""Script sources besides the LLM: existing text dialogues rewritten into spoken style.

`dialogue.sources` mixes the LLM with datasets by weight. A dataset is a dialogue-set JSONL file
(`dialogues/README.md`: one `SourceDialogue` a line; a bare name is a set the package carries) or
any Hugging Face dataset with a column of messages and a role mapping (`DatasetSource`). Which
source a sample uses is drawn from (run seed, sample id, "source"), so a re-drawn attempt keeps its
source and the mix keeps its weights; which dialogue, from the attempt's key.

A dialogue becomes a script in two steps. `prepare_turns` (deterministic, no model): markup gone
(`text_checks.clean_turn`), consecutive messages of one side merged, turns longer than the
speaker's `turn_length` split at sentence (else clause, else word) boundaries. Then each turn is
rewritten into spoken style: by the LLM (`rewrite_turn_llm`: a rewrite prompt, the writer's
clean/check path, and the source's content words kept, else rejected) or by rules (`spoken_style`:
numbers to words, contractions). Either way the planner's marks (fillers, restarts, pauses,
backchannels, barge-ins) come from `calibrate.calibrate_marks`, at the configured rates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from num2words import num2words
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factory.config import ConfigError, DatasetSource, RunConfig
from factory.languages import base, join, spaced, words
from factory.llm.base import LLMBackend
from factory.locations import dialogue_set_dir
from factory.models import Channel, Mode, Scenario, Script, ScriptSource, ScriptTurn
from factory.script.calibrate import calibrate_marks
from factory.script.compose import with_ignored_events
from factory.script.lexicon import behaviour_for
from factory.script.text_checks import (
    TurnRejected,
    check_turn,
    check_turn_unspaced,
    clean_turn,
    clean_turn_unspaced,
    split_sentences,
)
from factory.script.text_checks import content_words as checked_content_words
from factory.script.writer import turn_length, writer_prompts
from factory.seeding import derive_seed, rng_for

MAX_TURNS = 64  # Scenario.n_turns' limit: a longer source dialogue keeps its first turns


# --------------------------------------------------------------------------- the dialogue-set format
class SourceTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Channel
    text: str = Field(min_length=1)


class SourceDialogue(BaseModel):
    """One line of a dialogue-set JSONL file (`dialogues/README.md`)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    language: str = "en"
    mode: Mode
    topic: str = Field(min_length=1)
    license: str = Field(min_length=1, description="SPDX id, e.g. CC0-1.0")
    source: str = Field(min_length=1, description="who wrote it, or where it was taken from")
    turns: list[SourceTurn] = Field(min_length=2)


class SourceError(ConfigError):
    """A dataset source that cannot be read as configured (path, column, role mapping): a config error."""


# --------------------------------------------------------------------------- reading a source
def _resolve(path: str) -> Path | None:
    """A local file or folder, else a packaged dialogue set of that name, else None (a Hub name)."""
    local = Path(path).expanduser()
    if local.exists():
        return local
    packaged = dialogue_set_dir() / f"{path}.jsonl"
    return packaged if packaged.is_file() else None


@dataclass
class DialogueSet:
    """A loaded dataset source: `dialogue(i)` for i < `len(self)`. Hugging Face rows are converted
    on demand, so a large dataset is not held as Python objects."""

    config: DatasetSource
    dialogues: list[SourceDialogue] | None = None
    rows: Any = None  # a datasets.Dataset

    def __len__(self) -> int:
        return len(self.dialogues) if self.dialogues is not None else len(self.rows)

    def dialogue(self, i: int) -> SourceDialogue:
        if self.dialogues is not None:
            return self.dialogues[i]
        return _hf_dialogue(self.config, self.rows[i], i)


def load_source(src: DatasetSource) -> DialogueSet:
    """Reads a dataset source; raises `SourceError` naming the path, column or speaker that is wrong."""
    where = f"dialogue.sources ({src.label}): "
    local = _resolve(src.path)
    if src.turns_column is None:
        if local is None or not local.is_file():
            raise SourceError(f"{where}path {src.path!r} is neither a file nor a packaged dialogue set")
        return DialogueSet(src, dialogues=read_dialogue_set(local, where))
    rows = _load_hf(src, local, where)
    if src.turns_column not in rows.column_names:
        raise SourceError(
            f"{where}turns_column {src.turns_column!r} is not a column of {src.path} ({rows.column_names})"
        )
    if src.id_column is not None and src.id_column not in rows.column_names:
        raise SourceError(f"{where}id_column {src.id_column!r} is not a column of {src.path} ({rows.column_names})")
    if len(rows) == 0:
        raise SourceError(f"{where}{src.path} has no rows")
    for i in range(min(len(rows), 32)):  # the mapping checked where it is cheap; a later bad row rejects its sample
        _hf_dialogue(src, rows[i], i)
    return DialogueSet(src, rows=rows)


def read_dialogue_set(path: Path, where: str = "") -> list[SourceDialogue]:
    dialogues = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            dialogues.append(SourceDialogue.model_validate_json(line))
        except ValidationError as exc:
            raise SourceError(f"{where}{path}:{n}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    if not dialogues:
        raise SourceError(f"{where}{path} holds no dialogue")
    return dialogues


def _load_hf(src: DatasetSource, local: Path | None, where: str) -> Any:  # a datasets.Dataset
    # lazy: `datasets` takes seconds to import; only a Hugging Face source needs it.
    import datasets

    try:
        if local is not None and local.is_file():
            kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(local.suffix)
            if kind is None:
                raise SourceError(f"{where}{local} is not a .jsonl, .json, .parquet or .csv file")
            return datasets.load_dataset(kind, data_files=str(local), split=src.hf_split)
        if local is not None and (local / "dataset_info.json").is_file():  # a Dataset.save_to_disk folder
            return datasets.load_from_disk(str(local))
        return datasets.load_dataset(str(local) if local is not None else src.path, split=src.hf_split)
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever datasets raises (no network, no such split) is the path's fault
        raise SourceError(
            f"{where}cannot load {src.path!r} (split {src.hf_split!r}): {type(exc).__name__}: {exc}"
        ) from None


def _hf_dialogue(src: DatasetSource, row: dict[str, Any], i: int) -> SourceDialogue:
    where = f"dialogue.sources ({src.label}) row {i}: "
    messages = row.get(src.turns_column or "")
    if isinstance(messages, str):
        messages = json.loads(messages)
    if not isinstance(messages, list):
        raise SourceError(f"{where}{src.turns_column!r} holds {type(messages).__name__}, not a list of messages")
    turns = []
    for m in messages:
        if not isinstance(m, dict) or src.role_key not in m or src.text_key not in m:
            raise SourceError(f"{where}a message lacks role_key {src.role_key!r} or text_key {src.text_key!r}: {m!r}")
        role = src.roles.get(str(m[src.role_key]))
        if role is None:
            raise SourceError(f"{where}speaker {m[src.role_key]!r} is not in roles {sorted(src.roles)}")
        if role != "skip" and str(m[src.text_key]).strip():
            turns.append(SourceTurn(role=Channel(role), text=str(m[src.text_key])))
    if len(turns) < 2:
        raise SourceError(f"{where}fewer than two turns after the role mapping")
    first_user = next((t.text for t in turns if t.role is Channel.user), turns[0].text if turns else "")
    return SourceDialogue(
        id=str(row[src.id_column]) if src.id_column else str(i),
        language=src.language,
        mode=src.mode,
        topic=" ".join(first_user.split()[:12]) or "a conversation",
        license=src.license or "unknown",
        source=src.path,
        turns=turns,
    )


# --------------------------------------------------------------------------- spoken style by rules
_CONTRACTIONS = [  # (written, spoken); "be/will" forms only before another word ("that's what it is.")
    (r"do not", "don't"),
    (r"does not", "doesn't"),
    (r"did not", "didn't"),
    (r"is not", "isn't"),
    (r"are not", "aren't"),
    (r"was not", "wasn't"),
    (r"were not", "weren't"),
    (r"have not", "haven't"),
    (r"has not", "hasn't"),
    (r"had not", "hadn't"),
    (r"will not", "won't"),
    (r"would not", "wouldn't"),
    (r"should not", "shouldn't"),
    (r"could not", "couldn't"),
    (r"cannot", "can't"),
    (r"can not", "can't"),
    (r"let us", "let's"),
    (r"I am(?= \w)", "I'm"),
    (r"(it|that|there|what|he|she) is(?= \w)", r"\1's"),
    (r"(you|we|they) are(?= \w)", r"\1're"),
    (r"(I|you|we|they|he|she|it) will(?= \w)", r"\1'll"),
]
_CONTRACTION_RES = [(re.compile(rf"\b{w}\b", re.IGNORECASE), s) for w, s in _CONTRACTIONS]


def _contract(text: str) -> str:
    def sub(pattern: re.Pattern[str], spoken: str):
        def one(m: re.Match[str]) -> str:
            out = m.expand(spoken)
            if m.group(0)[0].isupper():
                out = out[0].upper() + out[1:]
            return out if out[:2] != "i'" else "I" + out[1:]

        return one

    for pattern, spoken in _CONTRACTION_RES:
        text = pattern.sub(sub(pattern, spoken), text)
    return text


def _words(n: str, to: str = "cardinal") -> str:
    value = int(n.replace(",", "")) if "." not in n else float(n.replace(",", ""))
    return num2words(value, to=to).replace(",", "")  # "one thousand, two hundred": no clause break


_NUMBER_RULES: list[tuple[re.Pattern[str], Any]] = [
    (
        re.compile(r"\$(\d[\d,]*)(?:\.(\d\d))?\b"),
        lambda m: _words(m[1]) + " dollars" + (f" {_words(m[2])} cents" if m[2] and m[2] != "00" else ""),
    ),
    (re.compile(r"\b(\d[\d,]*(?:\.\d+)?)\s?%"), lambda m: _words(m[1]) + " percent"),
    (
        re.compile(r"\b(\d{1,2}):(\d\d)\b"),
        lambda m: (
            _words(m[1]) + ("" if m[2] == "00" else f" oh {_words(m[2])}" if m[2][0] == "0" else f" {_words(m[2])}")
        ),
    ),
    (re.compile(r"\b(\d+)(?:st|nd|rd|th)\b"), lambda m: _words(m[1], "ordinal")),
    (re.compile(r"\b(1[1-9]\d0|20\d0)s\b"), lambda m: _plural(num2words(int(m[1]), to="year"))),
    (
        re.compile(r"\b(?:in|since|of|from|by|until) (1[1-9]\d\d|20\d\d)\b"),
        lambda m: m[0][:-4] + num2words(int(m[1]), to="year"),
    ),
    (re.compile(r"\b\d[\d,]*(?:\.\d+)?\b"), lambda m: _words(m[0])),
]


def _plural(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def numbers_to_words(text: str) -> str:
    """Digits as a speaker says them: money, percentages, clock times, ordinals, years after a
    preposition, then plain numbers ("$5" -> "five dollars", "10:30" -> "ten thirty")."""
    for pattern, spoken in _NUMBER_RULES:
        text = pattern.sub(spoken, text)
    return text


def spoken_style(text: str, language: str = "en") -> str:
    """A written line as spoken, by rules: numbers to words, contractions. The rules are
    English's; a line in another language is kept as written (its set should be spoken already,
    as `ja-everyday` is, or rewritten by the LLM)."""
    if base(language) != "en":
        return text
    return _contract(numbers_to_words(text))


def content_words(text: str, language: str = "en") -> set[str]:
    """The words a rewrite must keep: `text_checks.content_words` in the language (its function
    words left out; Japanese morphemes as dictionary forms, so a politer ending keeps the verb),
    with numbers said as words in English."""
    return checked_content_words(numbers_to_words(text) if base(language) == "en" else text, language)


def kept_share(source: str, rewritten: str, language: str = "en") -> float:
    """The share of `source`'s content words found in `rewritten` (1.0 when it has none)."""
    want = content_words(source, language)
    return len(want & content_words(rewritten, language)) / len(want) if want else 1.0


# --------------------------------------------------------------------------- turns of a script
def _split_long(text: str, max_words: int, language: str = "en") -> list[str]:
    """`text` in pieces of at most `max_words` words (`languages.words`): at sentence ends, else
    at commas, else words."""
    if not spaced(language):
        return _split_unspaced(text, max_words, language)
    pieces: list[str] = []
    for sentence in split_sentences(text):
        parts = [sentence]
        if len(sentence.split()) > max_words:
            parts = [p.strip() + "," for p in re.split(r"(?<=,)\s+", sentence)]
            parts[-1] = parts[-1][:-1]
        for part in parts:
            part_words = part.split()
            chunks = [" ".join(part_words[k : k + max_words]) for k in range(0, len(part_words), max_words)]
            for chunk in chunks:
                if pieces and len(pieces[-1].split()) + len(chunk.split()) <= max_words:
                    pieces[-1] += " " + chunk
                else:
                    pieces.append(chunk)
    return [_end(p) for p in pieces]


def _split_unspaced(text: str, max_words: int, language: str) -> list[str]:
    """`_split_long` for a language written without spaces: whole sentences (。！？) while they
    fit, else runs of `max_words` words (the analyser's phrases carry their punctuation)."""
    pieces: list[list[str]] = []
    for sentence in (s for s in re.split(r"(?<=[。！？!?])", text) if s.strip()):
        sentence_words = words(sentence, language)
        for k in range(0, len(sentence_words), max_words):
            chunk = sentence_words[k : k + max_words]
            if pieces and len(pieces[-1]) + len(chunk) <= max_words:
                pieces[-1] += chunk
            else:
                pieces.append(chunk)
    return [_end(join(p, language), "。") for p in pieces]


def _end(text: str, stop: str = ".") -> str:
    text = text.rstrip(" ,;:、")
    return text if text.endswith((".", "!", "?", "。", "！", "？")) else text + stop


def prepare_turns(dialogue: SourceDialogue, cfg: RunConfig) -> list[ScriptTurn]:
    """A source dialogue's turns before the spoken-style rewrite: markup gone, consecutive
    messages of one side merged, overlong turns split (as consecutive turns of one speaker), at
    most `MAX_TURNS` (whole turns from the start). Deterministic: the plan counts them."""
    language = dialogue.language
    merged: list[tuple[Channel, str]] = []
    for t in dialogue.turns:
        if spaced(language):
            text = clean_turn(t.text, min_words=1, max_words=10_000)
        else:
            text = clean_turn_unspaced(t.text, language, min_words=1, max_words=10_000)
        if not text:
            continue
        if merged and merged[-1][0] is t.role:
            merged[-1] = (t.role, join([merged[-1][1], text], language))
        else:
            merged.append((t.role, text))
    turns: list[ScriptTurn] = []
    for speaker, text in merged:
        _, high = turn_length(dialogue.mode, speaker, cfg.dialogue)
        for piece in _split_long(text, high, language):
            turns.append(ScriptTurn(speaker=speaker, text=piece, responds_to=len(turns) - 1 if turns else None))
    return turns[:MAX_TURNS]


def scenario_for(base: Scenario, dialogue: SourceDialogue, n_turns: int) -> Scenario:
    """The drawn scenario (personas, setting, style) carrying the source dialogue's topic, mode and language."""
    return base.model_copy(
        update={"topic": dialogue.topic, "mode": dialogue.mode, "language": dialogue.language, "n_turns": n_turns}
    )


MIN_KEPT = 0.8  # share of the source line's content words an LLM rewrite must keep


def rewrite_turn_llm(
    llm: LLMBackend, text: str, *, seed: int, attempts: int, temperature: float, language: str = "en"
) -> str:
    """The LLM's spoken version of `text`, asked for in `language` (its writer prompts' `rewrite`
    line), cleaned and checked as the writer's turns in that language are, keeping at least
    `MIN_KEPT` of its content words (`content_words`); raises `TurnRejected` when no attempt does."""
    system = writer_prompts(language).rewrite
    n = len(words(text, language))
    # Room for a rewrite up to 1.5x the source; a Japanese phrase (languages.words) is several tokens.
    max_tokens = int(n * (2 if spaced(language) else 4)) + 16
    last = TurnRejected("empty", "no attempt made")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    for attempt in range(attempts):
        raw = llm.complete(messages, max_tokens=max_tokens, temperature=temperature, seed=seed + attempt)
        try:
            if spaced(language):
                out = spoken_style(clean_turn(raw, min_words=1, max_words=int(n * 1.5) + 4), language)
                check_turn(out, min_words=1, references=[system], language=language)
            else:
                out = clean_turn_unspaced(raw, language, min_words=1, max_words=int(n * 1.5) + 4)
                check_turn_unspaced(out, language, min_words=1, references=[system])
            share = kept_share(text, out, language)
            if share < MIN_KEPT:
                raise TurnRejected("content_lost", f"kept {share:.0%} of the source's content words: {out!r}")
            return out
        except TurnRejected as rejected:
            last = rejected
    raise last


def write_from_source(
    llm: LLMBackend | None,
    scenario: Scenario,
    dialogue: SourceDialogue,
    provenance: ScriptSource,
    cfg: RunConfig,
    sample_key: str,
) -> Script:
    """A source dialogue as a marked script: rewritten turn by turn (by `llm`, or by rules when
    None), then the planner's marks at the configured rates. Raises `TurnRejected`."""
    seed = cfg.run.seed
    turns = []
    for i, t in enumerate(prepare_turns(dialogue, cfg)):
        if llm is None:
            text = spoken_style(t.text, dialogue.language)
        else:
            text = rewrite_turn_llm(
                llm,
                t.text,
                seed=derive_seed(seed, sample_key, f"llm-source-{i}"),
                attempts=cfg.llm.turn_attempts,
                temperature=cfg.llm.temperature,
                language=dialogue.language,
            )
        turns.append(t.model_copy(update={"text": text}))
    plain = Script(scenario_id=scenario.id, turns=turns, llm=llm.name if llm is not None else "")
    behaviour = behaviour_for(cfg.behaviour, scenario.language)  # the language's fillers and aizuchi
    script = calibrate_marks(
        plain,
        rng_for(seed, sample_key, "behaviour"),
        behaviour,
        cfg.timing.pause_median,
        mode=scenario.mode,
        language=scenario.language,
        written_whole=True,  # a cut hears what the dataset's later turns refer to
    )
    have = sum(m.type == "barge_in" for m in script.marks)
    if have < cfg.behaviour.min_barge_ins:
        raise TurnRejected("too_few_turns", f"{len(turns)} turns hold {have} barge-ins < {cfg.behaviour.min_barge_ins}")
    # the events the agent must not answer, as in the LLM's scripts (rates 0: the script unchanged)
    return with_ignored_events(script, scenario, cfg, sample_key).model_copy(update={"source": provenance})


def provenance(src: DatasetSource, dialogue: SourceDialogue, rewrite: Literal["llm", "rules"]) -> ScriptSource:
    return ScriptSource(
        kind="dataset",
        dataset=src.label,
        path=src.path,
        dialogue_id=dialogue.id,
        license=dialogue.license,
        rewrite=rewrite,
    )


__all__ = [
    "DialogueSet",
    "SourceDialogue",
    "SourceError",
    "SourceTurn",
    "content_words",
    "kept_share",
    "load_source",
    "numbers_to_words",
    "prepare_turns",
    "provenance",
    "read_dialogue_set",
    "rewrite_turn_llm",
    "scenario_for",
    "spoken_style",
    "write_from_source",
]

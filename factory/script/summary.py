"""The running summary a long dialogue's writer carries: what was said before its window.

The turn writer sees the last `writer.HISTORY_TURNS` turns. In a dialogue of five minutes (about
40 turns) everything older is gone, so late turns drift from the scenario. The summary brings the
gist back while the prompt stays bounded: it is *extractive*, the `size` sentences of the turns
that left the window that are nearest the scenario (its topic and setting, as the content judge
all-MiniLM-L6-v2 embeds them, `factory.script.content`), said again in the order they were said.
The 135M embedded model cannot summarise (its summaries copy the last turn or invent;
benchmarks/results/content.md), and an extract is a pure function of the turns: no LLM call, no
random draw, the same bytes for the same (seed, sample). Memory is bounded too: only the best
`size` sentences are kept, each cut to `MAX_SENTENCE_WORDS` words, whatever the dialogue's length.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np

from factory.languages import join, spaced, words
from factory.models import Scenario

MAX_SENTENCE_WORDS = 24  # one sentence of the summary, cut at a word: the prompt stays bounded
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？।])\s*")  # "1.5 cups" is one sentence


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


def anchor_text(scenario: Scenario) -> str:
    """What the summary keeps near: the scenario's topic and setting."""
    return f"{scenario.topic}. {scenario.setting}."


def sentences(text: str, language: str = "en") -> list[str]:
    """`text`'s sentences, each cut to `MAX_SENTENCE_WORDS` words of its language; the heard-text
    dash of a cut-off turn dropped."""
    out = []
    for sentence in _SENTENCE_END.split(text.strip().removesuffix("—").strip()):
        parts = words(sentence, language)
        if len(parts) >= (3 if spaced(language) else 2):  # "Yes." "Oh, right." "はい。" carry nothing to remember
            out.append(join(parts[:MAX_SENTENCE_WORDS], language))
    return out


class RunningSummary:
    """The best `size` sentences so far (cosine with the scenario, ties to the later turn), kept
    in the order said. `add` a turn as it leaves the writer's window; `text` is the summary."""

    def __init__(self, scenario: Scenario, judge: Embedder, size: int) -> None:
        self.size = size
        self.language = scenario.language
        self._judge = judge
        self._anchor = judge.embed([anchor_text(scenario)])[0]
        self._kept: list[tuple[float, int, int, str]] = []  # (cosine, turn, position in turn, sentence)

    def add(self, turn: int, text: str) -> None:
        found = sentences(text, self.language)
        if not found or self.size <= 0:
            return
        scores = self._judge.embed(found) @ self._anchor
        for k, (sentence, score) in enumerate(zip(found, scores, strict=True)):
            # Rounded: the ranking must not turn on a BLAS library's last bit.
            self._kept.append((round(float(score), 4), turn, k, sentence))
        self._kept.sort(key=lambda s: (-s[0], -s[1], s[2]))
        del self._kept[self.size :]

    def text(self) -> str:
        """The kept sentences in the order they were said ("" before any)."""
        return join([s for _, _, _, s in sorted(self._kept, key=lambda s: (s[1], s[2]))], self.language)

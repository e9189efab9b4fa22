"""The one hesitation writer both script paths use: tokens written into the words, marks at
the written tokens, and where each original word ends up."""

from __future__ import annotations

from factory.models import Filler, Restart
from factory.script.marks import write_hesitations


def test_filler_and_restart_written_into_the_words():
    written = write_hesitations("So I think it works.".split(), 2, {0: "um,", 3: "uh"}, {3})
    assert written.text == "Um, so I think uh it- it works."
    assert written.marks == [
        Filler(turn=2, word_index=0, token="Um,"),
        Filler(turn=2, word_index=4, token="uh"),
        Restart(turn=2, word_index=5),
    ]
    assert written.position == [1, 2, 3, 6, 7]
    assert [written.words[j] for j in written.position] == ["so", "I", "think", "it", "works."]


def test_turn_initial_filler_keeps_the_capital_i_and_cuts_off_without_punctuation():
    written = write_hesitations("I'm sure, yes.".split(), 0, {0: "uh"}, {1})
    assert written.text == "Uh I'm sure- sure, yes."
    assert written.marks == [Filler(turn=0, word_index=0, token="Uh"), Restart(turn=0, word_index=2)]


def test_nothing_to_write_leaves_the_turn_alone():
    words = "Fine, thanks.".split()
    written = write_hesitations(words, 1, {}, set())
    assert (written.text, written.marks, written.position) == ("Fine, thanks.", [], [0, 1])

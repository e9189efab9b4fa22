"""nemo-duplex rules that need no lhotse (the export itself runs in the torch env:
tests/coqui/test_export_nemo.py against lhotse, and tests/coqui/test_nemo_dataset.py through NeMo 3.0.0's own
DuplexS2SDataset and lhotse dataloader).

NeMo's rules restated (NVIDIA/NeMo@8cfedd7 nemo/collections/speechlm2/data/s2s_dataset.py
build_token_channel): frames by lhotse's compute_num_frames (round half up at 80 ms); EOS only
when its frame is inside the cut; later supervisions overwrite earlier tokens."""

from __future__ import annotations

import importlib.util

import pytest

from factory.export import nemo
from factory.export.errors import ExportError
from factory.export.options import ExportOptions
from factory.export.report import RuleCounter
from tests.export_fixtures import make_japanese_sample, make_sample


def test_frames_round_half_up_at_80_ms() -> None:
    assert [nemo.frame(t, 16000) for t in (0.0, 0.039, 0.04, 0.119, 0.12, 1.0)] == [
        0,
        0,
        1,
        1,
        2,
        13,
    ]  # 12.5 frames rounds up


@pytest.mark.skipif(importlib.util.find_spec("lhotse") is not None, reason="lhotse is installed here")
def test_main_env_says_where_to_run_it(tmp_path) -> None:
    with pytest.raises(ExportError, match="torch environment") as err:
        nemo.NemoDuplex().export([make_sample(0)], tmp_path, ExportOptions(text_tokenizer_obj=object()))
    assert err.value.exit_code == 3


def test_length_is_padded_to_20_ms_and_leaves_room_for_the_last_eos() -> None:
    s = make_sample(0)
    c = RuleCounter(nemo.NemoDuplex().rules())
    d = nemo.dialogue_length(s, 16000, c)
    assert round(d / 0.02, 9).is_integer() and d >= s.duration
    last = max(t.end for t in s.timeline.turns)
    assert nemo.frame(last, 16000) < nemo.frame(d, 16000)
    # cut the audio 5 ms after the last turn: the EOS frame would be the cut's length
    short = s.model_copy(deep=True)
    short.stems = short.stems[: round((last + 0.005) * s.sample_rate)]
    c = RuleCounter(nemo.NemoDuplex().rules())
    d = nemo.dialogue_length(short, 16000, c)
    assert c.counts["turn_end_needs_a_frame"] == 1 and nemo.frame(last, 16000) < nemo.frame(d, 16000)


def test_overwrites_are_counted() -> None:
    s = make_sample(0)
    tl = s.meta.timeline.model_copy(deep=True)
    c = RuleCounter(nemo.NemoDuplex().rules())
    nemo.count_token_rules(tl, lambda text: text.split(), 16000, c)
    assert c.counts["text_longer_than_turn"] == 0 and c.counts["eos_overwritten"] == 0
    # The agent channel's entries in the order the rules read them (turns and its reactions alike).
    agent = sorted((t for t in tl.turns if t.channel.value == "agent"), key=lambda t: t.start)
    k = next(i for i in range(1, len(agent)) if agent[i].kind.value == "turn")
    agent[k].start = agent[k - 1].end  # starts in the frame of the previous agent entry's EOS
    agent[k].end = agent[k].start + 0.2  # and is too short for its words
    c = RuleCounter(nemo.NemoDuplex().rules())
    nemo.count_token_rules(tl, lambda text: text.split(), 16000, c)
    assert c.counts["eos_overwritten"] == 1 and c.counts["text_longer_than_turn"] == 1


def test_sample_rates_without_whole_frames_and_unknown_options_are_refused(tmp_path) -> None:
    for bad in ({"target_sample_rate": 11025}, {"source_sample_rate": 12345}, {"timestamps": True}):
        with pytest.raises(ExportError, match="no whole number of samples|nemo-duplex format options"):
            nemo.NemoDuplex().export(
                [make_sample(0)], tmp_path, ExportOptions(text_tokenizer_obj=object(), format_options=bad)
            )


def test_japanese_turn_texts_fit_their_turns_with_whisper_vocabulary() -> None:
    """[BOS] + a Japanese turn's tokens fit its frames with Whisper's vocabulary (the default for a
    Japanese run, tests/test_export_moshi.py): no text overwritten by the EOS; SmolLM2's does not."""
    from factory.tokenize import get_text_tokenizer

    counts = {}
    for name in ("whisper", None):
        tok, c = get_text_tokenizer(name), RuleCounter(nemo.NemoDuplex().rules())
        for seed in range(3):
            nemo.count_token_rules(make_japanese_sample(seed).meta.timeline, tok.encode, 16000, c)
        counts[name] = c.counts["text_longer_than_turn"]
    assert counts["whisper"] == 0 and counts[None] > 0

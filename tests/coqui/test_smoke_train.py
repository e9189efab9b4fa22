"""The smoke-train (factory/vap) on a small dgslm export of dialogues that carry a turn-taking cue,
and the break-checks: the same exporter changed on purpose to delay the agent channel, or the user
channel, by 2 s gets the failing verdict.

The dialogues are tests/export_fixtures' `make_cued_sample` (the real timeline planner over
word-shaped noise bursts), each with its own random script (one fixed script makes who speaks next
learnable from the position in the dialogue alone, shifted or not), and with one change that makes
turn-taking learnable from the audio: the last word of every turn is a low-passed burst (like a
turn-final fall), so the end of a turn differs from a pause inside it. Plain white bursts
carry no such cue, and there the model rightly does no better than the control. The truth the
measures use is the samples' own timelines, not the export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from factory.export import dgslm
from factory.export.options import ExportOptions
from factory.export.output import UNITS_CODEBOOK
from factory.vap.report import PLOT, REPORT, margin
from factory.vap.smoke import smoke_train
from tests.export_fixtures import make_cued_sample

N_DIALOGUES = 20  # every 3rd in the dev split, the held-out split: >= 20 shift/hold events after each speaker
HELD_OUT = len(range(0, N_DIALOGUES, 3))
RATE = 25.0
TURNS = 8
STEPS = 80
BATCH = 8
SEEDS = 2  # training seeds of each model (the fewest the rule takes; the default is TRAIN_SEEDS, 5)


@pytest.fixture(scope="module")
def samples():
    return [make_cued_sample(i, "dev" if i % 3 == 0 else "train", TURNS) for i in range(N_DIALOGUES)]


def _export(samples, out: Path, codebook: Path | None = None) -> Path:
    tokenizer = {"codebook": str(codebook)} if codebook else {}
    options = ExportOptions(
        units_k=32, units_fit_samples=4, audio_tokenizer_options=tokenizer, format_options={"frame_rate": RATE}
    )
    dgslm.Dgslm().export(samples, out, options)
    return out


@pytest.fixture(scope="module")
def exported(samples, tmp_path_factory) -> Path:
    return _export(samples, tmp_path_factory.mktemp("dgslm"))


def _delayed(samples, exported: Path, out: Path, channel: int) -> Path:
    """The dgslm exporter changed on purpose: one channel's codes (0 user, 1 agent) delayed by 2 s
    (the first frames repeat its first code), as a one-off channel-offset bug would."""
    k = round(2.0 * RATE)
    real = dgslm.tokenized

    def delayed(*args, **kwargs):
        for s, codes in real(*args, **kwargs):
            c = codes[channel]
            codes = list(codes)
            codes[channel] = np.concatenate([np.repeat(c[..., :1], k, -1), c[..., :-k]], -1)
            yield s, codes

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dgslm, "tokenized", delayed)
        return _export(samples, out, exported / UNITS_CODEBOOK)


def test_the_model_beats_the_majority_and_the_shifted_control(exported, samples) -> None:
    report = smoke_train(
        exported,
        steps=STEPS,
        batch=BATCH,
        train_seeds=SEEDS,
        threads=1,
        timelines={s.id: s.meta.timeline for s in samples},
    )
    sh = report.measures["shift_hold"]
    assert report.learnable, report.verdict
    assert report.verdict.startswith("this data carries learnable turn-taking")
    assert sh.model is not None and sh.control is not None
    assert report.seeds == [0, 1] and len(sh.model_seeds) == len(sh.control_seeds) == len(sh.user_control_seeds) == 2
    assert sh.model_seeds[0] != sh.model_seeds[1] or sh.control_seeds[0] != sh.control_seeds[1]  # two trainings
    for speaker, split in report.shift_hold_by_last_speaker.items():  # both judged, each against its control
        control, control_sd = (
            (split.control, split.control_sd) if speaker == "agent" else (split.user_control, split.user_control_sd)
        )
        assert split.model is not None and control is not None and split.events >= 20, (speaker, split)
        need = margin(split.events, split.positives, split.model_sd or 0.0, control_sd or 0.0, SEEDS)
        assert split.model >= 0.5 + need and split.model >= control + need, (speaker, split)
    assert sorted(report.shift_hold_by_last_speaker) == ["agent", "user"]
    assert sum(m.events for m in report.shift_hold_by_last_speaker.values()) == sh.events
    assert report.held_out_dialogues == HELD_OUT and sh.events >= 20
    saved = json.loads((exported / "smoke-train" / REPORT).read_text())
    assert saved["learnable"] is True and saved["measures"]["shift_hold"]["model"] == sh.model
    assert (exported / "smoke-train" / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("channel", ["user", "agent"])
def test_an_exporter_that_delays_a_channel_by_2_s_gets_the_failing_verdict(
    samples, exported, tmp_path_factory, channel
) -> None:
    broken = _delayed(
        samples, exported, tmp_path_factory.mktemp(f"dgslm-{channel}-delayed"), ("user", "agent").index(channel)
    )
    report = smoke_train(
        broken,
        steps=STEPS,
        batch=BATCH,
        train_seeds=SEEDS,
        threads=1,
        plot_dialogues=0,
        timelines={s.id: s.meta.timeline for s in samples},
    )
    assert not report.learnable, report.verdict
    assert report.verdict.startswith("it does not")


def test_the_same_export_and_seeds_give_the_same_numbers(exported, samples, tmp_path) -> None:
    timelines = {s.id: s.meta.timeline for s in samples}
    reports = [
        smoke_train(
            exported,
            out_dir=tmp_path / str(k),
            steps=10,
            batch=BATCH,
            train_seeds=SEEDS,
            seed=5,
            threads=1,
            plot_dialogues=0,
            timelines=timelines,
        )  # fmt: skip
        for k in range(2)
    ]
    first, again = (r.model_dump(exclude={"seconds", "phase_seconds"}) for r in reports)
    assert first == again and first["seeds"] == [5, 6]
    sh = reports[0].measures["shift_hold"]
    assert sh.model_seeds[0] != sh.model_seeds[1] or sh.thresholds[0] != sh.thresholds[1]  # each seed its own

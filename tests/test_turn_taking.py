"""Turn-taking of planned dialogues against human conversation, measured from the audio.

The session's planner-path corpus (tests/corpus.py): 500 dialogues through the real planner path
(`write_script` with a synthetic LLM), word-shaped noise bursts stand in for TTS
(tests/test_timeline.py), the pieces are mixed into stereo, and the audit's Heldner & Edlund
measures run on per-channel 10 ms voice activity of that audio
(`factory.audit.measures.measure_stereo`): nothing is read off the timeline. Targets:
../shared/reference/conversation.md (Switchboard).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from factory.config import RunConfig, load_config
from factory.models import BargeInEvent
from factory.script.planner import barge_in_count, dispersed_count
from factory.timeline.timing import (
    SWITCHBOARD,
    TimingFitError,
    TimingModel,
    TransitionContext,
    timing_defaults,
    timing_model,
)
from tests.corpus import PlannedDialogue, planned_dialogue

SWITCHBOARD_FTO = {0.10: -0.35, 0.25: -0.11, 0.50: 0.13, 0.75: 0.35, 0.90: 0.65}
# Human ranges (conversation.md): transitions in overlap "about 30-40 %" (Switchboard 34 %);
# overlap share of speech "~4-5 %"; backchannels: 19 % of Switchboard's dialogue acts, ~27 acts a
# minute (SWDA: ~205K acts in 1,155 conversations of ~6.5 min), so ~5 a minute; band +/- 50 %.
TRANSITIONS_IN_OVERLAP = (0.30, 0.40)
OVERLAP_SHARE = (0.04, 0.05)
BACKCHANNELS_PER_MINUTE = (2.5, 7.5)


@pytest.fixture(scope="module")
def measured(planned_corpus: list[PlannedDialogue]) -> dict:
    fto, both, speech, duration, backchannels, barge_ins = [], 0.0, 0.0, 0.0, 0, []
    for d in planned_corpus:
        m = d.measures
        fto += m.fto
        both, speech, duration = both + m.both_s, speech + m.speech_s, duration + m.duration
        backchannels += len(m.backchannels)
        barge_ins.append(sum(isinstance(e, BargeInEvent) for e in d.timeline.events))
    fto = np.asarray(fto)
    return {
        "fto": fto,
        "quantiles": dict(zip(SWITCHBOARD_FTO, np.quantile(fto, list(SWITCHBOARD_FTO)))),
        "transitions_in_overlap": float(np.mean(fto < 0)),
        "overlap_share": both / speech,
        "backchannels_per_minute": backchannels / (duration / 60),
        "barge_ins": np.asarray(barge_ins),
    }


def test_fto_quantiles_match_switchboard_from_audio(measured):
    assert len(measured["fto"]) > 2500
    off = {q: round(measured["quantiles"][q] - x, 3) for q, x in SWITCHBOARD_FTO.items()}
    assert all(abs(d) <= 0.060 for d in off.values()), (measured["quantiles"], off)
    gaps = measured["fto"][measured["fto"] > 0]
    assert 0.03 <= np.mean(gaps > 1.0) <= 0.10  # the long "thinking" tail: ~6 % of gaps > 1 s


def test_overlap_and_backchannels_in_human_ranges_from_audio(measured):
    lo, hi = TRANSITIONS_IN_OVERLAP
    assert lo <= measured["transitions_in_overlap"] <= hi, measured["transitions_in_overlap"]
    lo, hi = OVERLAP_SHARE
    assert lo <= measured["overlap_share"] <= hi, measured["overlap_share"]
    lo, hi = BACKCHANNELS_PER_MINUTE
    assert lo <= measured["backchannels_per_minute"] <= hi, measured["backchannels_per_minute"]


def test_barge_in_counts_vary_across_dialogues(measured):
    counts = measured["barge_ins"]  # spoken barge-ins per dialogue, at the default config
    assert counts.var() > 0 and (counts == 0).any() and (counts >= 2).any(), np.bincount(counts)
    share = float(np.mean(counts > 0))
    assert 0.5 <= share <= 0.7, share  # default barge_in_dialogue_share 0.6


# --------------------------------------------------------------------------- the model itself
def test_english_defaults_are_the_fit_to_the_audio():
    english = timing_defaults("en")
    assert timing_model(RunConfig().timing) == english == timing_defaults("en-GB")
    # the audio adds short transitions of its own (tokens and turn starts in pauses), so the
    # planned draw is wider than the corpus it measures as
    planned = english.quantiles()
    assert planned[0.10] < SWITCHBOARD_FTO[0.10] and planned[0.90] > SWITCHBOARD_FTO[0.90], planned


# Stivers et al. 2009 (PNAS 106:10587): mean response offsets, ten languages; English (Switchboard)
# is taken to stand at the ten-language mean.
STIVERS_MEAN_S = {"all": 0.208, "ja": 0.007, "da": 0.469}


def _pooled_fto(model: TimingModel, n: int = 30000) -> np.ndarray:
    rng = np.random.default_rng(5)
    out = []
    for _ in range(n // 30):
        tempo = model.draw_tempo(rng)
        out += [model.sample(rng, TransitionContext(tempo=tempo)) for _ in range(30)]
    return np.asarray(out)


@pytest.mark.parametrize("language", ["da"])
def test_language_defaults_move_english_by_the_published_mean(language):
    english, model = _pooled_fto(timing_defaults("en")), _pooled_fto(timing_defaults(language))
    shift = STIVERS_MEAN_S[language] - STIVERS_MEAN_S["all"]
    assert np.median(model) - np.median(english) == pytest.approx(shift, abs=0.02)
    # the mean less closely: the refitted mixture is not an exact shift, and the caps trim its tails
    assert model.mean() - english.mean() == pytest.approx(shift, abs=0.06)
    assert timing_defaults(f"{language}-XX") == timing_defaults(language)


def test_japanese_defaults_are_its_own_fit_to_the_audio():
    """Japanese has its own fit to its rendered audio (timing_languages.yaml `fitted`, made by
    benchmarks/timing_fit.py --language ja): those fields, English's for the rest, and the planned
    draw sits well below English's (Stivers et al.: Japanese +7 ms against the +208 ms mean)."""
    from factory.timeline.timing import language_timing

    fitted = language_timing().languages["ja"].fitted
    assert fitted is not None and "timing_fit.py" in fitted.how
    japanese = timing_defaults("ja")
    for name, value in fitted.model_dump(exclude={"how"}).items():
        assert getattr(japanese, name) == value
    assert japanese.tempo_sigma == timing_defaults("en").tempo_sigma
    assert timing_defaults("ja-JP") == japanese
    english, model = _pooled_fto(timing_defaults("en")), _pooled_fto(japanese)
    assert np.mean(model) < np.mean(english) - 0.1


def test_a_language_without_figures_gets_english_timing_with_a_note(caplog):
    timing_defaults.cache_clear()  # the note is logged once per language
    with caplog.at_level(logging.INFO, logger="duplex_factory"):
        model = timing_defaults("sw-KE")
    assert model == timing_defaults("en")
    assert "no published turn-timing figures for language 'sw-KE'" in caplog.text


def test_config_fields_and_model_file_override_the_language_defaults(tmp_path):
    japanese = timing_defaults("ja")
    assert timing_model(RunConfig().timing, "ja") == japanese
    model = timing_model(load_config(None, ["timing.gap_median=0.5"]).timing, "ja")
    assert model.gap_median == 0.5 and model.overlap_probability == japanese.overlap_probability
    fitted = tmp_path / "t.json"
    fitted.write_text(TimingModel.fit(SWITCHBOARD).model_dump_json())
    assert timing_model(load_config(None, [f"timing.model_file={fitted}"]).timing, "ja") == TimingModel.fit(SWITCHBOARD)


def test_fit_recovers_a_model_from_its_own_transitions():
    true = TimingModel.fit(SWITCHBOARD)
    rng = np.random.default_rng(0)
    fto, conv = [], []
    for c in range(400):
        tempo = true.draw_tempo(rng)
        for _ in range(40):
            fto.append(true.sample(rng, TransitionContext(tempo=tempo)))
            conv.append(c)
    fitted = TimingModel.fit({"fto": fto, "conversation": conv})
    assert fitted.overlap_probability == pytest.approx(true.overlap_probability, abs=0.02)
    assert fitted.gap_median == pytest.approx(true.gap_median, rel=0.05)
    assert fitted.gap_sigma == pytest.approx(true.gap_sigma, abs=0.05)
    assert fitted.overlap_median == pytest.approx(true.overlap_median, rel=0.05)
    assert fitted.tempo_sigma == pytest.approx(true.tempo_sigma, abs=0.05)


def test_context_changes_the_draw():
    model = TimingModel.fit(SWITCHBOARD, agent_latency_median=0.8)

    def median_gap(**ctx) -> float:
        rng = np.random.default_rng(1)
        x = np.array([model.sample(rng, TransitionContext(overlap_probability=0.0, **ctx)) for _ in range(4000)])
        return float(np.median(x))

    base = median_gap()
    assert median_gap(after_question=True) < 0.9 * base
    assert median_gap(topic_shift=True) > 1.3 * base
    assert median_gap(previous_turn_s=20.0) > 1.15 * base
    assert median_gap(agent_response=True) == pytest.approx(0.8, rel=0.05)


def test_dispersed_counts_are_overdispersed_with_zeros():
    rng = np.random.default_rng(2)
    x = np.array([dispersed_count(rng, 2.0, 2.0) for _ in range(20000)])
    assert x.mean() == pytest.approx(2.0, rel=0.05)
    assert x.var() == pytest.approx(2.0 + 2.0**2 / 2.0, rel=0.1)  # negative binomial, not Poisson
    assert (x == 0).mean() > 0.1


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_share_of_dialogues_with_a_barge_in_is_configurable(share):
    cfg = load_config(None, [f"behaviour.barge_in_dialogue_share={share}", "behaviour.barge_ins_per_dialogue=1.5"])
    rng = np.random.default_rng(3)
    counts = np.array([barge_in_count(rng, cfg.behaviour) for _ in range(4000)])
    assert np.mean(counts > 0) == pytest.approx(share, abs=0.03)
    if share:
        assert counts.mean() == pytest.approx(1.5, rel=0.06)


def test_barge_in_stop_latency_is_configurable():
    cfg = load_config(None, ["timing.barge_in_stop_median=0.5", "timing.barge_in_stop_sigma=0.1"])
    stops = []
    for k in range(60):
        _, _, tl, _ = planned_dialogue(cfg, k)
        stops += [e.victim_stop - e.onset for e in tl.events if isinstance(e, BargeInEvent)]
    assert len(stops) > 20
    assert np.median(stops) == pytest.approx(0.5, abs=0.1)  # tempo and the turn-length caps spread it


def _synthetic_corpus(model: TimingModel, n_conv: int, rng: np.random.Generator) -> dict[str, list[tuple]]:
    """Two-speaker conversations whose floor transfers are drawn from `model`: (speaker, start, end)."""
    convs = {}
    for c in range(n_conv):
        tempo, t, rows = model.draw_tempo(rng), 0.5, []
        for k in range(30):
            dur = float(rng.uniform(2.0, 4.0))
            rows.append((f"spk{k % 2}", t, t + dur))
            t = t + dur + max(model.sample(rng, TransitionContext(tempo=tempo)), -0.9 * min(dur, 2.0))
        convs[f"conv{c}"] = rows
    return convs


def test_fit_from_rttm_and_lhotse_manifests(tmp_path):
    true = TimingModel.fit(SWITCHBOARD)
    corpus = _synthetic_corpus(true, 120, np.random.default_rng(4))
    rttm = tmp_path / "corpus.rttm"
    rttm.write_text(
        "".join(
            f"SPEAKER {c} 1 {s:.3f} {e - s:.3f} <NA> <NA> {spk} <NA> <NA>\n"
            for c, rows in corpus.items()
            for spk, s, e in rows
        )
    )
    sups = tmp_path / "supervisions.jsonl"
    sups.write_text(
        "".join(
            json.dumps(
                {"id": f"{c}-{i}", "recording_id": c, "start": s, "duration": e - s, "channel": 0, "speaker": spk}
            )
            + "\n"
            for c, rows in corpus.items()
            for i, (spk, s, e) in enumerate(rows)
        )
    )
    for path in (rttm, sups):
        fitted = TimingModel.fit(path)
        assert fitted.overlap_probability == pytest.approx(true.overlap_probability, abs=0.03), path
        assert fitted.gap_median == pytest.approx(true.gap_median, rel=0.1), path
        assert fitted.overlap_median == pytest.approx(true.overlap_median, rel=0.1), path
        assert fitted.gap_sigma == pytest.approx(true.gap_sigma, abs=0.1), path


def test_corpus_errors_are_named(tmp_path):
    bad = tmp_path / "three.rttm"
    bad.write_text("".join(f"SPEAKER f 1 {i}.0 0.5 <NA> <NA> s{i % 3} <NA> <NA>\n" for i in range(9)))
    with pytest.raises(TimingFitError, match="3 speakers"):
        TimingModel.fit(bad)
    broken = tmp_path / "broken.rttm"
    broken.write_text("SPEAKER f 1 abc 0.5 <NA> <NA> s0\n")
    with pytest.raises(TimingFitError, match="broken.rttm:1"):
        TimingModel.fit(broken)
    with pytest.raises(TimingFitError, match="at least 10 gaps"):
        TimingModel.fit([0.2, -0.1])


def test_fit_timing_cli_writes_a_model_file_the_config_uses(tmp_path):
    from typer.testing import CliRunner

    from factory.cli import app

    corpus = _synthetic_corpus(
        TimingModel.fit(SWITCHBOARD).model_copy(update={"gap_median": 0.5}), 60, np.random.default_rng(8)
    )
    rttm = tmp_path / "c.rttm"
    rttm.write_text(
        "".join(
            f"SPEAKER {c} 1 {s:.3f} {e - s:.3f} <NA> <NA> {k} <NA> <NA>\n"
            for c, rows in corpus.items()
            for k, s, e in rows
        )
    )
    out = tmp_path / "timing.json"
    result = CliRunner().invoke(app, ["fit-timing", str(rttm), "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = timing_model(load_config(None, [f"timing.model_file={out}"]).timing)
    assert model == TimingModel.model_validate_json(out.read_text())
    assert model.gap_median == pytest.approx(0.5, rel=0.12)  # the corpus's, not the default 0.26
    assert CliRunner().invoke(app, ["fit-timing", str(tmp_path / "none.rttm"), "--out", str(out)]).exit_code == 1

"""Preference pairs from a real run, checked from the audio of both sides (energy VAD per
channel): the chosen agent stops within the latency after the user's onset, the rejected one
talks on, stops late, or starts before the user has finished; no TTS is called."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from factory.audio.vad import energy_vad
from factory.config import load_config
from factory.models import BargeInEvent, Channel, PieceSource, Timeline
from factory.preference.export import export_pairs
from factory.run.read import read_samples
from factory.run.rebuild import SourceMissing, load_source
from tests.test_samples import no_tts  # noqa: F401  (fixture)

MAX_STOP, LATE, EARLY = 1.0, 1.5, 1.0


def _active(audio: np.ndarray, sr: int, ch: Channel) -> np.ndarray:
    return energy_vad(np.ascontiguousarray(audio[:, ch.index]), sr)


def _last_active(active: np.ndarray, start: float, end: float) -> float:
    idx = np.flatnonzero(active[int(start / 0.01) : int(end / 0.01)])
    return start + (idx[-1] + 1) * 0.01 if len(idx) else start


def test_pairs_from_a_run_checked_from_the_audio(tiny_run: Path, no_tts: None, tmp_path: Path) -> None:  # noqa: F811
    cfg = load_config(tiny_run / "config.yaml", [])
    out = tmp_path / "pairs.parquet"
    n = export_pairs(read_samples(tiny_run), cfg.tts.cache_dir, out, max_stop_s=MAX_STOP, late_s=LATE, early_s=EARLY)
    rows = pq.read_table(out).to_pylist()
    assert n == len(rows) and rows
    kinds = {r["kind"] for r in rows}
    assert {"answers_early", "talks_over"} <= kinds, kinds
    for r in rows:
        sr = r["sample_rate"]
        chosen, _ = sf.read(io.BytesIO(r["chosen_audio"]), dtype="float32", always_2d=True)
        rejected, _ = sf.read(io.BytesIO(r["rejected_audio"]), dtype="float32", always_2d=True)
        tc, tr = (
            Timeline.model_validate_json(r["chosen_timeline"]),
            Timeline.model_validate_json(r["rejected_timeline"]),
        )
        n = min(len(chosen), len(rejected))  # the user side is the same audio (silence past the shorter end)
        assert np.array_equal(chosen[:n, 0], rejected[:n, 0])
        assert not chosen[n:, 0].any() and not rejected[n:, 0].any()
        agent_c, agent_r = _active(chosen, sr, Channel.agent), _active(rejected, sr, Channel.agent)
        user_r = _active(rejected, sr, Channel.user)
        turn_c, turn_r = tc.turn(r["turn"]), tr.turn(r["turn"])
        if r["kind"] in ("talks_over", "stops_late"):
            event = next(e for e in tc.events if isinstance(e, BargeInEvent) and e.victim_turn == r["turn"])
            stop_c = _last_active(agent_c, turn_c.start, turn_c.end + 0.05) - event.onset
            stop_r = _last_active(agent_r, turn_r.start, turn_r.end + 0.05) - event.onset
            assert stop_c <= MAX_STOP + 0.03, (r["sample_id"], stop_c)  # chosen: stops in time
            assert stop_r > MAX_STOP and stop_r >= stop_c + 0.3, (r["kind"], stop_r)  # rejected: too late
            assert abs(stop_r + event.onset - turn_r.end) <= 0.03  # the rejected timeline says where it stops
            if r["kind"] == "stops_late":
                assert stop_r >= LATE - 0.03
        else:  # answers_early: the agent's first speech comes before the user's last
            user = max(
                (
                    t
                    for t in tr.turns
                    if t.channel is Channel.user and t.kind.value == "turn" and t.start < turn_c.start
                ),
                key=lambda t: t.end,
            )
            onset_c = turn_c.start + np.argmax(agent_c[int(turn_c.start / 0.01) :]) * 0.01
            onset_r = turn_r.start + np.argmax(agent_r[int(turn_r.start / 0.01) :]) * 0.01
            user_end = _last_active(user_r, user.start, user.end + 0.05)
            assert onset_c >= user_end - 0.28 and onset_r <= user_end - EARLY + 0.05, (onset_c, onset_r, user_end)


def test_a_cached_render_without_a_cache_folder_is_missing_not_a_crash() -> None:
    # a recipe that names a cache entry, read with a config whose tts.cache_dir is null
    source = PieceSource(
        cache_key="ab" * 32,
        backend="espeak",
        voice_id="v",
        text="hi",
        rate=1.0,
        sample_rate=22050,
        n_samples=0,
        sha256="-",
    )
    with pytest.raises(SourceMissing, match="no tts.cache_dir"):
        load_source(None, source, 24000)

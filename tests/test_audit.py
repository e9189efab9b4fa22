"""The audit from the outside: a real run audited through the CLI and its numbers checked against
the timeline the run placed; gates that catch broken audio; every bad-input case with its
message; pooling and bands on constructed rows."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from factory.atomic import sha256_file
from factory.audit.gates import pool, sample_flags, shard_report
from factory.audit.measures import audit_sample
from factory.audit.run import AuditInputError, audit_run, gate_shard, iter_samples, worst
from factory.cli import app
from factory.config import ConfigError, load_config
from factory.conversation.bands import BANDS
from factory.models import BargeInEvent, WordKind
from tests.conftest import AuditedRun


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def audited(audited_run: AuditedRun) -> dict:
    """The session's copy of the tiny run audited through the CLI with an HTML report (conftest)."""
    return {"run": audited_run.run, "output": audited_run.output, "frame": audited_run.frame}


def test_audit_table_parquet_and_card(audited: dict) -> None:
    run, frame, out = audited["run"], audited["frame"], audited["output"]
    manifest = pl.read_parquet(run / "manifest.parquet").filter(pl.col("status") == "ok")
    assert sorted(frame["id"].to_list()) == sorted(manifest["id"].to_list())
    for col in ("energy_fto_p50_s", "webrtc_fto_p50_s", "energy_fto", "planned_found", "asr_wer", "lufs_user"):
        assert col in frame.columns, col
    assert "fto_p50_s" in out and "transitions_in_overlap" in out and "WER per voice" in out
    card = (run / "README.md").read_text()
    assert "## Audit (measured from the audio)" in card and "(audit_fto.png)" in card
    assert (run / "audit_fto.png").stat().st_size > 1000
    assert card.startswith("---\n")  # front matter survives the rewrite


def test_audio_measures_agree_with_the_placed_timeline(audited: dict) -> None:
    """What the audio shows (per-channel VAD) against what the run planned: speech, fillers,
    barge-ins and the interrupted speaker's stop latency."""
    frame = audited["frame"].sort("id")
    samples = {s.id: s for _, s in iter_samples(audited["run"])}
    for row in frame.iter_rows(named=True):
        tl = samples[row["id"]].timeline
        assert row["planned_found"] >= 0.97 and row["audio_explained"] >= 0.97, row["id"]
        spoken_fillers = sum(w.kind is WordKind.filler and w.spoken for w in tl.words)
        assert row["fillers_planned"] == spoken_fillers
        assert row["fillers_found"] == spoken_fillers  # clean stems: every filler is in the audio
        events = [e for e in tl.events if isinstance(e, BargeInEvent)]
        assert row["barge_ins_planned"] == len(events) == row["barge_ins_found"], row["id"]
        planned = sorted(e.victim_stop - e.onset for e in events)
        assert sorted(row["stop_latency"]) == pytest.approx(planned, abs=0.03)
        assert row["lufs_user"] == pytest.approx(-23.0, abs=1.5) or row["peak_dbfs_user"] > -1.6
        assert len(row["asr_wers"]) <= 1 and all(0 <= w <= 1.5 for w in row["asr_wers"])
        # the two detectors agree on most frames of clean speech
        assert row["vad_agreement"] > 0.85


def test_generation_flags_in_manifest_and_shard_records(tiny_run: Path) -> None:
    manifest = pl.read_parquet(tiny_run / "manifest.parquet")
    assert "audit_flags" in manifest.columns
    for record in sorted((tiny_run / "shards").glob("*.json")):
        audit = json.loads(record.read_text())["audit"]
        assert audit["pooled"]["n_samples"] == json.loads(record.read_text())["n_ok"]
        assert isinstance(audit["problems"], list)


def test_gates_catch_broken_audio(tiny_run: Path) -> None:
    """A sample whose agent channel is silenced, or whose user channel is 12 dB too loud, is
    flagged with the reason; the untouched sample is not."""
    cfg = load_config(tiny_run / "config.yaml")
    good = next(s for _, s in iter_samples(tiny_run))
    silenced = good.model_copy(update={"stems": good.stems * np.array([1.0, 0.0], np.float32)})
    loud = good.model_copy(update={"stems": good.stems * np.array([4.0, 1.0], np.float32)})
    for s, name in ((silenced, "silenced"), (loud, "loud")):
        s.meta = s.meta.model_copy(update={"id": name})
    flags, report = gate_shard([good, silenced, loud], cfg, "test")
    assert good.id not in flags
    assert "agent channel is silent" in flags["silenced"] and "planned speech found" in flags["silenced"]
    assert "user loudness" in flags["loud"] and "user peak" in flags["loud"]
    assert report["flagged"] == 2 and any("samples flagged" in p for p in report["problems"])


def test_audit_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"audit.shard_bands: unknown measure\(s\) \['fto_median'\]"):
        load_config(overrides=["audit.shard_bands=[fto_median]"])
    with pytest.raises(ConfigError, match="audit.vad"):
        load_config(overrides=["audit.vad=loud"])
    with pytest.raises(ConfigError, match="audit.min_planned_found"):
        load_config(overrides=["audit.min_planned_found=1.5"])


# --------------------------------------------------------------------------- bad input
def test_missing_and_empty_folders(tmp_path: Path) -> None:
    result = _invoke("audit", str(tmp_path / "nope"))
    assert result.exit_code == 1 and "nope: no such folder" in " ".join(result.output.split())
    result = _invoke("audit", str(tmp_path))
    assert result.exit_code == 1 and "neither shard records" in " ".join(result.output.split())
    with pytest.raises(AuditInputError, match="no such folder"):
        audit_run(tmp_path / "nope")


def _rewrite_shard(path: Path, edit) -> None:
    table = pq.read_table(path)
    rows = table.to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def _fix_record(run: Path, shard: Path) -> None:
    record = run / "shards" / f"{shard.stem}.json"
    info = json.loads(record.read_text())
    info["sha256"] = sha256_file(shard)
    record.write_text(json.dumps(info))


def test_partial_damaged_old_and_corrupt_runs_are_audited_as_far_as_they_go(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shards = sorted((run / "data").glob("*.parquet"))
    assert len(shards) == 2
    first_ids = [r["id"] for r in pq.read_table(shards[0], columns=["id"]).to_pylist()]
    second_ids = [r["id"] for r in pq.read_table(shards[1], columns=["id"]).to_pylist()]

    # corrupt audio in one row, an older timeline schema in another (records fixed: the bytes are "valid")
    def corrupt(rows):
        rows[0]["audio"] = {**rows[0]["audio"], "bytes": b"fLaC" + b"\x00" * 64}
        if len(rows) > 1:
            tl = json.loads(rows[1]["timeline"])
            tl["schema_version"] = "1.0"
            rows[1]["timeline"] = json.dumps(tl)

    _rewrite_shard(shards[0], corrupt)
    _fix_record(run, shards[0])
    result = audit_run(run, asr_turns=0)
    assert any(str(shards[0]) in p and first_ids[0] in p and "audio could not be decoded" in p for p in result.problems)
    if len(first_ids) > 1:
        assert any(first_ids[1] in p and "timeline schema '1.0'" in p for p in result.problems)
    assert sorted(r["id"] for r in result.rows) == sorted(first_ids[2:] + second_ids)

    # a shard that no longer matches its record is skipped, named
    shards[1].write_bytes(shards[1].read_bytes()[:-10] + b"0123456789")
    result = audit_run(run, asr_turns=0)
    assert any(str(shards[1]) in p and "does not match the sha256" in p for p in result.problems)
    assert not any(r["id"] in second_ids for r in result.rows)

    # a partial run: the second shard intact again, the first one's record gone, no manifest yet
    shutil.copy(tiny_run / "data" / shards[1].name, shards[1])
    (run / "shards" / f"{shards[0].stem}.json").unlink()
    (run / "manifest.parquet").unlink()
    out = _invoke("audit", str(run), "--asr-turns", "0")
    assert out.exit_code == 0, out.output
    assert "partial run (1 of 2 shards finished, no manifest.parquet)" in " ".join(out.output.split())
    assert sorted(pl.read_parquet(run / "audit.parquet")["id"].to_list()) == sorted(second_ids)
    assert not (run / "README.md").read_text().count("## Audit")  # no manifest: the card is left alone

    # a dataset folder: data files without shard records are read, unverified
    shutil.rmtree(run / "shards")
    result = audit_run(run, asr_turns=0)
    assert any("unverified" in n for n in result.notes)


# --------------------------------------------------------------------------- pooling and bands
def _row(fto, both, speech, **kw) -> dict:
    return {
        "id": kw.pop("id", "x"),
        "duration_s": kw.pop("duration_s", 60.0),
        "energy_fto": fto,
        "energy_gaps": [x for x in fto if x > 0],
        "energy_between_overlaps": [-x for x in fto if x < 0],
        "energy_both_s": both,
        "energy_speech_s": speech,
        **kw,
    }


def test_pool_weighs_events_not_dialogues() -> None:
    rows = [_row([0.1, 0.2, -0.3], 1.0, 40.0, words=100.0, fillers_found=3), _row([0.5], 3.0, 10.0, words=0.0)]
    p = pool(rows, "energy")
    assert p["fto_p50_s"] == pytest.approx(0.15)
    assert p["transitions_in_overlap"] == pytest.approx(0.25)
    assert p["fto_within_500ms"] == pytest.approx(1.0)
    assert p["overlap_share"] == pytest.approx(4.0 / 50.0)
    assert p["gap_median_s"] == pytest.approx(0.2)
    assert p["fillers_per_100_words"] == pytest.approx(3.0)
    assert math.isnan(p["asr_wer"])


def test_shard_report_names_measures_out_of_band() -> None:
    gates = load_config(overrides=["audit.shard_bands=[overlap_share, fto_p50_s]"]).audit
    rows = [_row([0.1, 0.15, 0.2], 1.0, 10.0, flags=[])]  # overlap share 10 %: above [0.03, 0.06]
    report = shard_report(rows, gates, "energy")
    assert report["problems"] == ["overlap_share 0.100 outside [0.03, 0.06]"]
    assert BANDS["fto_p50_s"].contains(report["pooled"]["fto_p50_s"])


def test_sample_flags_and_worst() -> None:
    cfg = load_config()
    row = {
        "planned_found": 0.5,
        "audio_explained": 0.99,
        "barge_ins_planned": 2,
        "barge_ins_found": 1,
        "stop_latency": [0.3, 1.4],
        "asr_wer": 0.9,
    }
    flags = sample_flags(row, cfg.audit, cfg.audio)
    assert len(flags) == 4
    assert "planned speech found in audio 0.500 < 0.9" in flags and "barge-ins found in audio 1/2" in flags
    frame = pl.DataFrame({"id": ["a", "b", "c"], "energy_overlap_share": [0.05, 0.2, 0.01]})
    assert worst(frame, "overlap_share", 2, "energy_overlap_share") == ["b", "c"]


def test_audit_sample_needs_a_detector(tiny_run: Path) -> None:
    sample = next(s for _, s in iter_samples(tiny_run))
    with pytest.raises(ValueError, match="at least one VAD"):
        audit_sample(sample, vads=())

"""The typed run format and its one reader: records on disk keep their bytes, and every
run-reading command works on a run at an `s3://` URL (moto's S3 server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.run.read import read_audit_table, read_samples
from factory.run.records import FailureRecord, ShardRecord, ShardStats, failed_shards, utilisation
from factory.run.store import RunStore
from tests.hub_server import FakeHub

BUCKET = "run-format"  # test_crash makes runs-bucket on the same moto server
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
PROBLEM = "overlap_share 0.900 outside [0.00, 0.20] (planted in the published copy)"


@pytest.fixture(scope="module")
def s3_run(tiny_run: Path, moto_server: str):
    """The shared tiny run published to moto's S3 server, with one shard record carrying an audit
    problem and one failure record (planted in the published copy only). Yields (url, endpoint)."""
    import s3fs

    endpoint = moto_server
    old = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)  # credentials from the environment, as in production
    try:
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
        fs.mkdir(BUCKET)
        prefix = f"{BUCKET}/runs/tiny"
        for path in sorted(tiny_run.rglob("*")):
            rel = path.relative_to(tiny_run).as_posix()
            if path.is_file() and not rel.startswith(("plots/", "exports/")) and rel != "audit.parquet":
                fs.pipe_file(f"{prefix}/{rel}", path.read_bytes())
        first = sorted(p for p in fs.ls(f"{prefix}/shards") if p.endswith(".json"))[0]
        record = json.loads(fs.cat_file(first))
        record["audit"]["problems"] = [PROBLEM]
        fs.pipe_file(first, json.dumps(record, indent=2).encode())
        failure = {"shard": "train-00009-of-00010", "error": "RuntimeError: planted", "attempts": 3}
        fs.pipe_file(f"{prefix}/failures/train-00009-of-00010.json", json.dumps(failure).encode())
        yield f"s3://{prefix}", endpoint
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cli(*args: str, endpoint: str):
    result = CliRunner().invoke(app, [*args, "--storage-options", json.dumps({"endpoint_url": endpoint})])
    return result


def _store(s3_run) -> RunStore:
    url, endpoint = s3_run
    return RunStore(url, {"endpoint_url": endpoint})


def test_shard_records_on_disk_are_the_models_dump_byte_for_byte(tiny_run: Path) -> None:
    records = sorted((tiny_run / "shards").glob("*.json"))
    assert records
    for path in records:
        raw = path.read_text()
        record = ShardRecord.model_validate_json(raw)
        assert json.dumps(record.model_dump(mode="json"), indent=2) == raw, path
        data = (tiny_run / "data" / f"{path.stem}.parquet").read_bytes()
        assert record.sha256 == hashlib.sha256(data).hexdigest()
        assert record.n_ok == pq.ParquetFile(tiny_run / "data" / f"{path.stem}.parquet").metadata.num_rows


def test_shard_stats_dump_rounds_and_utilisation_pools_as_the_summary_did() -> None:
    a = ShardStats(
        seconds={"script": 1.23456, "tts": 2.0004},
        audio_s=59.99951,
        llm_requests=7,
        llm_busy_s=3.33333,
        llm_max_in_flight=4,
        tts_calls=2,
        tts_renders=9,
        tts_batches={"piper": {"batches": 3, "items": 9, "capacity": 12}},
    )
    assert a.model_dump()["seconds"] == {"script": 1.235, "tts": 2.0}
    assert (a.model_dump()["audio_s"], a.model_dump()["llm_busy_s"]) == (60.0, 3.333)
    use = utilisation([a, None, ShardStats(seconds={"script": 0.765}, audio_s=60.0, llm_max_in_flight=6)]).model_dump()
    # by hand: 2 audio minutes; script 1.235 + 0.765 = 2.0 s; busy 3.333 over 2.0 s of script
    assert use["audio_minutes"] == 2.0
    assert use["seconds_per_audio_minute"] == {"script": 1.0, "tts": 1.0}
    assert use["llm"] == {"requests": 7, "mean_in_flight": 1.667, "max_in_flight": 6}
    assert use["tts"] == {
        "calls": 2,
        "renders_per_call": 4.5,
        "batches": {"piper": {"batches": 3, "items": 9, "capacity": 12, "fill": 0.75}},
    }


def test_summary_of_an_s3_run_shows_its_audit_problems_and_failed_shards(s3_run) -> None:
    url, endpoint = s3_run
    result = _cli("summary", url, endpoint=endpoint)
    assert result.exit_code == 0, result.output
    assert "planted in the published copy" in result.output
    assert "failed shard train-00009-of-00010 (3 attempts): RuntimeError: planted" in result.output
    assert failed_shards(_store(s3_run)) == {
        "train-00009-of-00010": FailureRecord(shard="train-00009-of-00010", error="RuntimeError: planted", attempts=3)
    }


def test_storage_options_come_from_the_environment_too(s3_run, monkeypatch) -> None:
    url, endpoint = s3_run
    monkeypatch.setenv("DUPLEX_STORAGE_OPTIONS", json.dumps({"endpoint_url": endpoint}))
    result = CliRunner().invoke(app, ["summary", url])
    assert result.exit_code == 0, result.output
    assert "dialogues" in result.output


def test_audit_of_an_s3_run_writes_audit_parquet_to_the_store(s3_run, tiny_run: Path) -> None:
    url, endpoint = s3_run
    result = _cli("audit", url, "--asr-turns", "0", endpoint=endpoint)
    assert result.exit_code == 0, result.output
    assert "dataset card left as it is" in result.output
    table = read_audit_table(url, {"endpoint_url": endpoint})
    ok = pl.read_parquet(tiny_run / "manifest.parquet").filter(pl.col("status") == "ok")["id"].to_list()
    assert sorted(table["id"].to_list()) == sorted(ok)


def test_plot_of_an_s3_run_puts_the_png_in_the_store(s3_run) -> None:
    url, endpoint = s3_run
    result = _cli("plot", url, endpoint=endpoint)
    assert result.exit_code == 0, result.output
    pngs = _store(s3_run).names("plots", ".png")
    assert len(pngs) == 1 and _store(s3_run).read_bytes(f"plots/{pngs[0]}").startswith(b"\x89PNG")


def test_augment_of_an_s3_run_gives_a_local_run_of_the_same_samples(s3_run, tiny_run: Path, tmp_path: Path) -> None:
    url, endpoint = s3_run
    out = tmp_path / "reaugmented"
    result = _cli("augment", url, "--out", str(out), endpoint=endpoint)  # the run's own augment section
    assert result.exit_code == 0, result.output
    theirs = {s.id: s for s in read_samples(tiny_run)}
    ours = list(read_samples(out))
    assert sorted(s.id for s in ours) == sorted(theirs)
    assert all((s.stems == theirs[s.id].stems).all() for s in ours)
    # redrawn with the run's own section and seeds: the stored augmented audio again
    assert [s.augmented is None for s in ours] == [theirs[s.id].augmented is None for s in ours]
    assert all((s.augmented == theirs[s.id].augmented).all() for s in ours if s.augmented is not None)
    assert (out / "manifest.parquet").read_bytes() == (tiny_run / "manifest.parquet").read_bytes()


def test_preference_of_an_s3_run_matches_the_local_run(s3_run, tiny_run: Path, tmp_path: Path) -> None:
    url, endpoint = s3_run
    local = CliRunner().invoke(app, ["preference", str(tiny_run), "--out", str(tmp_path / "local.parquet")])
    assert local.exit_code == 0, local.output
    remote = _cli("preference", url, "--out", str(tmp_path / "remote.parquet"), endpoint=endpoint)
    assert remote.exit_code == 0, remote.output
    assert (tmp_path / "remote.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()


def test_push_of_an_s3_run_through_the_cli(s3_run, tiny_run: Path, tmp_path: Path) -> None:
    url, endpoint = s3_run
    token = "hf_DuplexFactoryFakeToken0123456789abcdef"
    with FakeHub(token) as hub:
        env = dict(os.environ) | CREDS
        env |= {
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": token,
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "DUPLEX_STORAGE_OPTIONS": json.dumps({"endpoint_url": endpoint}),
        }
        cli = Path(sys.executable).parent / "duplex-factory"
        proc = subprocess.run(
            [str(cli), "push", url, "--repo", "lab/from-s3"], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for rel in sorted(p.relative_to(tiny_run).as_posix() for p in (tiny_run / "data").glob("*.parquet")):
            assert hub.file_bytes("lab/from-s3", rel) == (tiny_run / rel).read_bytes(), rel


def test_export_of_an_s3_run_through_the_cli(s3_run, tiny_run: Path, tmp_path: Path) -> None:
    url, endpoint = s3_run
    out = tmp_path / "export"
    result = _cli("export", url, "--format", "units-1s", "--out", str(out), endpoint=endpoint)
    assert result.exit_code == 0, result.output
    local = CliRunner().invoke(app, ["export", str(tiny_run), "--format", "units-1s", "--out", str(tmp_path / "l")])
    assert local.exit_code == 0, local.output
    assert sorted(p.name for p in out.rglob("*.parquet")) == sorted(p.name for p in (tmp_path / "l").rglob("*.parquet"))

"""Crash safety and failures, through the real CLI in subprocesses.

- Kill test: `duplex-factory generate` is SIGKILLed (from outside, by this test) at 3 points, one
  drawn with a fixed seed from each of shard writing, manifest writing and finalize
  (`factory.crash` holds the process at the point so the kill lands there deterministically).
  The kills are chained on one output folder, each run resuming the last one's wreckage, then a
  plain re-run finishes it: every file must equal an uninterrupted run's, byte for byte, and no
  process of a killed run (its Prefect server included) may outlive it. `benchmarks/kill.py`
  does 20 points.
- A shard whose task raises is retried, recorded with its error, the run goes on and exits 5;
  `--retry-failed` reruns only that shard and the run becomes identical to the uninterrupted one.
- Shard completeness checks content (hashes and row counts), stale temporary files are cleaned,
  `finalize_run` is idempotent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from factory.atomic import HOST
from factory.config import load_config
from factory.run.records import shard_files
from factory.run.shards import finalize_run, plan_shards, verify_shard
from factory.run.store import RunStore, clean_stale_tmp
from tests.latency_server import LatencyServer
from tests.scale import ROOT, cli, cli_args, fast, kill_tree, reporting_to, run_until_flag, tree, wait_gone

N_SAMPLES = 4  # one sample per shard: every kill before finalize still finds work to interrupt
RUN = "k"
KILL_SEED = 2026

# (point, n): the n-th pass through the point in the killed process (factory.crash).
KILL_POINTS = {
    "shard writing": ["sample:1", "atomic_write:1", "shard.data:1"],
    "manifest writing": ["atomic_write:2", "shard.manifest:1", "shard.signatures:1", "shard.record:1"],
    "finalize": ["finalize.manifest:1", "finalize.config:1"],
}


def pick_points(seed: int, n: int) -> list[str]:
    """One point of each phase, the rest drawn from all; shard-phase kills first (a finalize
    kill leaves every shard done, so no shard point could be reached after it)."""
    rng = np.random.default_rng(seed)
    picks = [str(rng.choice(points)) for points in KILL_POINTS.values()]
    rest = [p for points in KILL_POINTS.values() for p in points if p not in picks]
    picks += [str(p) for p in rng.choice(rest, n - len(picks), replace=False)]
    return sorted(picks, key=lambda p: p.startswith("finalize"))


def overrides(shared: dict) -> list[str]:
    """The module's runs: FAST's dialogues, scripted by the module's stand-in LLM server (what is
    under test is the run around the script, not the model's words; the embedded model cost each
    of the module's ~10 CLI processes its load and every script again)."""
    llm = ["llm.backend=http", f"llm.base_url={shared['llm']}"]
    return fast(shared["cache"], f"run.n_samples={N_SAMPLES}", f"run.run_id={RUN}", *llm)


def env_for(home: Path, token: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPLEX_CRASH") and k != "PREFECT_API_URL"}
    return {**env, "PREFECT_HOME": str(home), "DUPLEX_TEST_TOKEN": token, **extra}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("crash")
    (base / "home").mkdir()
    with LatencyServer(latency_s=0.0) as llm:  # in this process: the killed runs are its clients
        yield {"cache": base / "cache", "home": base / "home", "base": base, "llm": llm.base_url}


@pytest.fixture(scope="module")
def baseline(shared, prefect_server) -> Path:
    """An uninterrupted run (relative --out, so its config.yaml is the other runs' too)."""
    work = shared["base"] / "baseline"
    work.mkdir()
    with reporting_to(prefect_server[0], work):
        result = cli(overrides(shared), "--out", "out")
    assert result.exit_code == 0, result.output
    return work / "out" / RUN


def test_kill_at_three_points_then_resume_gives_identical_bytes(shared, baseline, prefect_server, tmp_path):
    points = pick_points(KILL_SEED, 3)  # one per phase; benchmarks/kill.py does 20
    assert [next(ph for ph, ps in KILL_POINTS.items() if p in ps) for p in points] == list(KILL_POINTS), points
    args = cli_args(overrides(shared), "--out", "out")
    token = uuid.uuid4().hex
    run = tmp_path / "out" / RUN
    try:
        for i, point in enumerate(points):
            flag = tmp_path / f"flag-{i}"
            env = env_for(shared["home"], token, DUPLEX_CRASH_AT=point, DUPLEX_CRASH_FLAG=str(flag))
            if i:  # the first run starts its own Prefect server (the orphan case); the others share one
                env["PREFECT_API_URL"] = prefect_server[0]
            proc, reached = run_until_flag(args, env, tmp_path, flag)
            assert reached, f"{point}: the run exited ({proc.returncode}) without reaching it"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            left = wait_gone(token)
            assert not left, f"killed at {point}, these processes outlived the run: {left}"
            assert tree(run) != tree(baseline), f"killed at {point}, yet the run was already complete"
    finally:
        kill_tree(token)
    with reporting_to(prefect_server[0], tmp_path):
        final = cli(overrides(shared), "--out", "out")
    assert final.exit_code == 0, final.output
    ours, theirs = tree(run), tree(baseline)
    assert sorted(ours) == sorted(theirs)  # no stale temporary file, nothing missing
    for name in theirs:
        assert ours[name] == theirs[name], name


def test_failing_shard_is_retried_recorded_and_retried_alone(shared, baseline, prefect_server, tmp_path):
    run = tmp_path / "out" / RUN
    cfg = load_config(None, [*overrides(shared), f"run.output_dir={tmp_path / 'out'}"])
    victim = plan_shards(cfg)[2].name
    # A real OS failure at publish time: a folder where the shard's data file must go.
    blocker = run / "data" / f"{victim}.parquet"
    blocker.mkdir(parents=True)
    (blocker / "in-the-way").write_text("x")
    with reporting_to(prefect_server[0], tmp_path):
        first = cli(overrides(shared), "--out", "out")
        assert first.exit_code == 5, first.output
        assert f"shard {victim} failed" in first.output and "--retry-failed" in first.output
        failure = json.loads((run / "failures" / f"{victim}.json").read_text())
        assert failure["attempts"] == 2, failure  # shard_retries=1: the first try and one retry
        assert "Is a directory" in failure["error"], failure
        manifest = pl.read_parquet(run / "manifest.parquet")
        assert len(manifest) == N_SAMPLES - 1 and not manifest["id"].is_in(["train-0000002"]).any()
        from typer.testing import CliRunner

        from factory.cli import app

        summary = CliRunner().invoke(app, ["summary", str(run)])
        assert f"failed shard {victim}" in summary.output, summary.output
        others = {p: p.stat().st_mtime_ns for p in (run / "data").glob("*.parquet") if p.is_file()}

        shutil.rmtree(blocker)
        again = cli(overrides(shared), "--out", "out", "--retry-failed")
        assert again.exit_code == 0, again.output
        assert f"retrying 1 failed shard(s): {victim}" in again.output
        assert {p: p.stat().st_mtime_ns for p in others} == others  # the other shards were not rewritten
        assert not (run / "failures" / f"{victim}.json").exists()
        ours, theirs = tree(run), tree(baseline)
        assert sorted(ours) == sorted(theirs)
        assert all(ours[name] == theirs[name] for name in theirs)
        nothing = cli(overrides(shared), "--out", "out", "--retry-failed")
        assert nothing.exit_code == 0 and "nothing to retry" in nothing.output


def _copy(baseline: Path, tmp_path: Path) -> Path:
    run = tmp_path / "out" / RUN
    shutil.copytree(baseline, run)
    return run


def test_completeness_checks_content_not_existence(baseline, tmp_path):
    run = _copy(baseline, tmp_path)
    store = RunStore(str(run))
    names = [p.stem for p in sorted((run / "shards").glob("*.json"))]
    assert all(verify_shard(store, n) is None for n in names)
    first, second = names[0], names[1]
    files, other = shard_files(first), shard_files(second)

    # a manifest part from another shard (valid parquet, right row count) is not this shard's
    shutil.copy(run / other["manifest"], run / files["manifest"])
    assert "manifest file does not match" in verify_shard(store, first)
    shutil.copy(baseline / files["manifest"], run / files["manifest"])
    shutil.copy(run / other["signatures"], run / files["signatures"])
    assert "signatures file does not match" in verify_shard(store, first)
    shutil.copy(baseline / files["signatures"], run / files["signatures"])
    assert verify_shard(store, first) is None

    record = json.loads((run / files["record"]).read_text())
    (run / files["record"]).write_text(json.dumps({**record, "n_ok": record["n_ok"] + 1}))
    assert "row counts" in verify_shard(store, first)
    old_format = {k: record[k] for k in ("shard", "sha256", "n_ok", "n_rejected")}
    (run / files["record"]).write_text(json.dumps(old_format))
    assert "older format" in verify_shard(store, first)
    (run / files["record"]).write_text('{"shard": "cut sh')
    assert "unreadable" in verify_shard(store, first)
    (run / files["data"]).unlink()
    (run / files["record"]).write_text(json.dumps(record))
    assert verify_shard(store, first) == "data file missing"


def test_stale_temporary_files_are_cleaned_live_ones_kept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "data").mkdir()
    stale = tmp_path / "data" / f".train-00000-of-00001.parquet.{HOST}.{dead.pid}.tmp"
    live = tmp_path / "data" / f".train-00001-of-00002.parquet.{HOST}.{os.getpid()}.tmp"
    foreign = tmp_path / "data" / ".train-00002-of-00003.parquet.otherhost.123.tmp"
    for path in (stale, live, foreign):
        path.write_bytes(b"half")
    old = foreign.stat().st_mtime - 7 * 3600
    assert clean_stale_tmp(tmp_path, ("data",)) == 1
    assert not stale.exists() and live.exists() and foreign.exists()  # a recent file of another machine stays
    os.utime(foreign, (old, old))
    assert clean_stale_tmp(tmp_path, ("data",)) == 1 and not foreign.exists()


def test_finalize_is_idempotent_and_repairs_a_half_finalized_run(shared, baseline, tmp_path, monkeypatch):
    from flows.generate import _from_store

    run = _copy(baseline, tmp_path)
    monkeypatch.chdir(tmp_path)  # the baseline's output_dir is the relative "out"
    cfg = load_config(None, [*overrides(shared), "run.output_dir=out"])
    results = [_from_store(cfg, spec, {}) for spec in plan_shards(cfg)]
    assert all(r.skipped for r in results)
    finalize_run(cfg, results)
    finalize_run(cfg, results)
    (run / "README.md").unlink()  # as after a kill between the manifest and the card
    (run / "manifest.parquet").write_bytes(b"PAR1 cut")
    finalize_run(cfg, results)
    ours, theirs = tree(run), tree(baseline)
    assert ours.keys() == theirs.keys() and all(ours[k] == theirs[k] for k in theirs)


def test_kill_points_are_documented():
    doc = (ROOT / "factory" / "crash.py").read_text()
    for points in KILL_POINTS.values():
        for point in points:
            assert f"`{point.split(':')[0]}`" in doc, point


@pytest.fixture(scope="module")
def s3_server(moto_server: str):
    """The session's moto S3 server with this module's bucket; yields (endpoint, credentials env)."""
    import s3fs

    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    s3fs.S3FileSystem(endpoint_url=moto_server, key="testing", secret="testing").mkdir("runs-bucket")
    return moto_server, creds


def test_s3_destination_killed_mid_upload_resumes_to_the_same_objects(
    shared, baseline, s3_server, prefect_server, tmp_path, monkeypatch
):
    import s3fs

    from factory.run.read import read_samples

    endpoint, creds = s3_server
    dest = [
        "run.destination=s3://runs-bucket/nightly",
        f"run.storage_options={{endpoint_url: '{endpoint}'}}",
    ]
    args = cli_args([*overrides(shared), *dest], "--out", "out")
    token = uuid.uuid4().hex
    flag = tmp_path / "flag"
    # the 5th object put: shard 0 is published (data, manifest, signatures, record), shard 1 has
    # its data and manifest at the store but no record.
    env = env_for(shared["home"], token, DUPLEX_CRASH_AT="store.put:5", DUPLEX_CRASH_FLAG=str(flag), **creds)
    env["PREFECT_API_URL"] = prefect_server[0]
    try:
        proc, reached = run_until_flag(args, env, tmp_path, flag)
        assert reached, f"exited {proc.returncode} before the 5th upload"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not wait_gone(token)
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
        prefix = "runs-bucket/nightly/k"
        s0, s1 = (spec.name for spec in plan_shards(load_config(None, overrides(shared)))[:2])
        assert fs.exists(f"{prefix}/shards/{s0}.json") and not fs.exists(f"{prefix}/shards/{s1}.json")
        assert fs.exists(f"{prefix}/manifests/{s1}.parquet")  # uploaded, but without its record it does not count
        local = tmp_path / "out" / RUN
        # streamed out and deleted: only the shard in flight is on local disk
        in_flight = {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()}
        assert in_flight == {f"data/{s1}.parquet", f"manifests/{s1}.parquet", f"signatures/{s1}.npz"}
    finally:
        kill_tree(token)
    for key, value in creds.items():
        monkeypatch.setenv(key, value)
    with reporting_to(prefect_server[0], tmp_path):
        final = cli([*overrides(shared), *dest], "--out", "out")
    assert final.exit_code == 0, final.output
    assert not (tmp_path / "out" / RUN).exists()  # nothing left locally once published
    fs.invalidate_cache()
    objects = {p.removeprefix(prefix + "/"): fs.cat_file(p) for p in fs.find(prefix)}
    theirs = tree(baseline)
    assert sorted(objects) == sorted(theirs)
    for name in theirs:
        if name != "config.yaml":  # names the destination
            assert objects[name] == theirs[name], name
    url = f"s3://{prefix}"
    samples = list(read_samples(url, storage_options={"endpoint_url": endpoint}))
    local_samples = list(read_samples(baseline))
    assert [s.id for s in samples] == [s.id for s in local_samples] and samples
    assert all(np.array_equal(a.stems, b.stems) for a, b in zip(samples, local_samples))
    store = RunStore(url, {"endpoint_url": endpoint})
    assert all(verify_shard(store, spec.name) is None for spec in plan_shards(load_config(None, overrides(shared))))

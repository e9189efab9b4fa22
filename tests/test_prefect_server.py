"""Against a real `prefect server start` on 127.0.0.1 (the session `prefect_server` fixture):

- `duplex-factory deploy` registers the nightly deployment on a process work pool; the server's
  scheduler creates its scheduled runs from the cron; a triggered run is picked up by
  `prefect worker start --run-once`, which runs it to completion into its dated folder with the
  hashed seed.

Dask and Ray, reporting to that server, are tested as real multi-process clusters
(`tests/test_cluster.py`: their bytes equal the thread runner's).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from factory.config import load_config
from factory.seeding import derive_seed
from tests.scale import fast

PREFECT = str(Path(sys.executable).parent / "prefect")


def _client(url: str):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(url)


def test_deploy_schedule_trigger_and_worker_run_once(prefect_server, tmp_path):
    url, env = prefect_server
    out = tmp_path / "out"
    items = fast(tmp_path / "cache", "run.n_samples=2", "run.samples_per_shard=2", f"run.output_dir={out}")
    items += ["run.processes=1", "tts.processes=1"]  # what is under test is Prefect's, not the worker pools
    args = [sys.executable, "-m", "factory.cli", "deploy", "--name", "nightly", "--pool", "duplex-test"]
    args += ["--cron", "0 2 * * *"]
    for item in items:
        args += ["--set", item]
    deployed = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    with _client(url) as client:
        deployment = client.read_deployment_by_name("duplex-generate/nightly")
        assert deployment.work_pool_name == "duplex-test"
        assert client.read_work_pool("duplex-test").type == "process"
        assert deployment.schedules[0].schedule.cron == "0 2 * * *"
        assert deployment.parameters["per_day"] is True
        assert deployment.parameters["config"]["run"]["n_samples"] == 2
        # The scheduler service (every 2 s on the test server) fills in the next nights at 02:00 UTC.
        scheduled = _wait_for_scheduled(client, deployment.id)
        assert len(scheduled) >= 3
        times = sorted(r.next_scheduled_start_time.astimezone(UTC) for r in scheduled)
        assert all(t.hour == 2 and t.minute == 0 for t in times)
        assert times[0] > datetime.now(UTC) and times[1] - times[0] == timedelta(days=1)

        triggered = client.create_flow_run_from_deployment(deployment.id)
    worker = subprocess.run(
        [PREFECT, "worker", "start", "--pool", "duplex-test", "--run-once", "--type", "process"],
        cwd=tmp_path,
        env={**env, "PREFECT_LOGGING_LEVEL": "INFO"},  # as a deployment logs: the flow's progress lines
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    with _client(url) as client:
        state = client.read_flow_run(triggered.id).state
        assert state.is_completed(), (state, worker.stdout[-3000:] + worker.stderr[-3000:])
        day = client.read_flow_run(triggered.id).expected_start_time.strftime("%Y%m%d")
    run = out / f"demo-seed5-{day}"
    cfg = load_config(run / "config.yaml")
    assert cfg.run.seed == derive_seed(5, day, "schedule")
    assert sorted(p.name for p in (run / "shards").glob("*.json")) == ["train-00000-of-00001.json"]
    from factory.run.read import read_samples

    samples = list(read_samples(run))
    assert len(samples) + _rejected(run) == 2 and all(s.stems.shape[1] == 2 for s in samples)
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    # the run's artifacts: a per-shard table and a markdown summary, kept by the server
    with _client(url) as client:
        table, summary = (_artifact(client, f"demo-seed5-{day}-{kind}") for kind in ("shards", "summary"))
        # progress: the flow's log has its lines, and its progress artifact went from 0 to done
        progress = _artifact(client, f"demo-seed5-{day}-progress")
        only_this_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[triggered.id]))
        logs = [log.message for log in client.read_logs(log_filter=only_this_run)]
    assert progress.type == "progress" and float(progress.data) == 100.0, progress
    assert progress.description and progress.description.startswith("generate: 2/2 dialogues"), progress.description
    assert any(m.startswith("generate: 2/2 dialogues") for m in logs), logs
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(r["shard"], r["status"], r["ok"]) for r in rows] == [("train-00000-of-00001", "written", len(samples))]
    assert table.flow_run_id == triggered.id and summary.type == "markdown"
    assert f"**{len(samples)} dialogues**" in summary.data and "failed shards: 0" in summary.data
    if samples:  # utilisation: seconds per audio-minute of each stage the shard ran, LLM and TTS fill
        assert "## Utilisation" in summary.data, summary.data
        for stage in ("script", "tts", "assemble"):
            assert f"| {stage} |" in summary.data, summary.data
        assert "LLM:" in summary.data and "TTS:" in summary.data


def _artifact(client, key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    (found,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found


def _rejected(run: Path) -> int:
    import polars as pl

    return int((pl.read_parquet(run / "manifest.parquet")["status"] == "rejected").sum())


def _wait_for_scheduled(client, deployment_id, timeout_s: float = 120):
    import time

    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout_s
    while True:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
        )
        if runs or time.monotonic() > deadline:
            return runs
        time.sleep(1)

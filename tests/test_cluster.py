"""Real multi-process clusters on this machine, each running a run whose destination and TTS
cache are on S3 (moto's server), with no shared local folder:

- a `dask scheduler` and two `dask worker` processes, each started in its own working directory
  (so the run's relative `output_dir` is a different local folder per worker); one worker is
  SIGKILLed mid-shard, after it published part of its shard to S3, and the scheduler hands the
  shard to the other worker, which redoes it;
- `ray start --head` (no CPUs: it runs no task) and two `ray start` worker nodes, each its own
  process tree with its own temp dir and working directory.

Each run's published bytes equal the in-process thread runner's, a run reports its shards to the
session's Prefect server, and the renders the workers wrote to the S3 TTS cache rebuild every
sample's clean audio, from a process in yet another working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from factory.config import RunConfig, load_config
from flows.server import free_port
from tests.scale import FAST, ROOT, kill_tree, wait_gone

BUCKET = "cluster"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
BIN = Path(sys.executable).parent
KILL_AT = "store.put:2"
PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-grpc-port",
    "--dashboard-agent-listen-port",
    "--runtime-env-agent-port",
)  # the shard's data file is on S3, its manifest part and record are not


@pytest.fixture(scope="module")
def s3(moto_server: str) -> Iterator[str]:
    """The module's bucket on the session's moto server, and S3 credentials in the environment
    (this process's and the cluster processes'); yields the endpoint."""
    import s3fs

    saved = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)
    s3fs.S3FileSystem(endpoint_url=moto_server, key="testing", secret="testing").mkdir(BUCKET)
    try:
        yield moto_server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _config(endpoint: str, kind: str, address: str | None = None) -> RunConfig:
    options = json.dumps({"endpoint_url": endpoint})
    items = [
        *FAST,
        "run.n_samples=4",
        "run.samples_per_shard=2",
        "run.workers=2",
        "run.processes=1",
        "tts.processes=1",
        "run.run_id=r",
        "run.output_dir=outputs",  # relative: each worker's own working directory
        f"run.destination=s3://{BUCKET}/{kind}",
        f"run.storage_options={options}",
        f"tts.cache_dir=s3://{BUCKET}/tts-{kind}",  # each run renders and writes its own
        f"tts.cache_storage_options={options}",
        f"run.task_runner={'thread' if kind == 'thread' else kind.split('-')[0]}",
    ]
    if address:
        items.append(f"run.cluster_address={address}")
    return load_config(None, items)


def _published(endpoint: str, kind: str) -> dict[str, bytes]:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
    root = f"{BUCKET}/{kind}/r/"
    fs.invalidate_cache()
    return {p.removeprefix(root): fs.cat_file(p) for p in sorted(fs.find(root))}


def _run(cfg: RunConfig, cwd: Path, prefect_api: str):
    from flows.generate import run_generate

    cwd.mkdir(parents=True, exist_ok=True)
    before = Path.cwd()
    os.chdir(cwd)
    try:
        seen: list = []
        summary = run_generate(cfg, on_shard=seen.append)
    finally:
        os.chdir(before)
    assert summary.shards == 2 and not summary.failed, summary
    assert sorted(r.name for r in seen) == ["train-00000-of-00002", "train-00001-of-00002"], seen
    return summary


def _same_run(ours: dict[str, bytes], thread: dict[str, bytes], kind: str) -> None:
    assert sorted(ours) == sorted(thread), kind
    assert any(name.startswith("data/") for name in thread)
    for name, content in thread.items():
        if name == "config.yaml":  # names the runner, the cluster, the destination and the cache
            mine, base = (yaml.safe_load(c) for c in (ours[name], content))
            for section, key in (("run", "task_runner"), ("run", "cluster_address"), ("run", "destination")):
                mine[section].pop(key), base[section].pop(key)
            assert mine["tts"].pop("cache_dir") != base["tts"].pop("cache_dir")
            assert mine == base, kind
        else:
            assert ours[name] == content, (kind, name)


@pytest.fixture(scope="module")
def thread_run(s3: str, prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    _run(_config(s3, "thread"), tmp_path_factory.mktemp("thread-driver"), prefect_api)
    return _published(s3, "thread")


def _env(token: str, prefect_api: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, **CREDS, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": prefect_api, token: "1"}
    env |= {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **extra}
    env["RAY_raylet_start_wait_time_s"] = "180"  # a node's start on a busy 2-core machine
    env.pop("DUPLEX_CRASH_AT", None)
    return env


def _start(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    log = open(cwd / "process.log", "ab")  # noqa: SIM115 - kept by the child
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(token: str, procs: list[subprocess.Popen]) -> None:
    """Every process this cluster started (found by its environment token), by id."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if wait_gone(token, timeout_s=10):
        kill_tree(token)


def _wait_for(check, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not ready in {timeout_s} s"
        time.sleep(1)


# ---- Dask: a scheduler and two worker processes --------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster(s3: str, prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    """`dask scheduler` + two `dask worker`s (no nanny: a killed worker stays dead), each in its
    own folder. Worker w0 blocks at `KILL_AT` and writes its pid to the flag, for the test to kill."""
    from distributed import Client

    base, token = tmp_path_factory.mktemp("dask"), f"DUPLEX_CLUSTER_{uuid.uuid4().hex}"
    port, flag = free_port(), base / "killed.flag"
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        _start(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            base / "scheduler",
            _env(token, prefect_api),
        )
    ]
    for i in range(2):
        crash = {"DUPLEX_CRASH_AT": KILL_AT, "DUPLEX_CRASH_FLAG": str(flag)} if i == 0 else {}
        argv = [str(BIN / "dask"), "worker", address, "--name", f"w{i}", "--nthreads", "1", "--no-nanny"]
        argv += ["--no-dashboard", "--local-directory", str(base / f"w{i}" / "dask")]
        procs.append(_start(argv, base / f"w{i}", {**_env(token, prefect_api), **crash}))
    try:
        with Client(address, timeout=120) as client:
            _wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, "two dask workers")
        yield address, base, flag, procs
    finally:
        _stop(token, procs)


def test_dask_cluster_run_on_s3_survives_a_killed_worker_with_the_thread_runners_bytes(
    dask_cluster, thread_run: dict[str, bytes], s3: str, prefect_api: str
) -> None:
    address, base, flag, procs = dask_cluster
    killed: list[int] = []

    def killer() -> None:  # SIGKILL worker w0 once it holds its shard half published
        deadline = time.monotonic() + 600
        while not flag.exists() and time.monotonic() < deadline and procs[1].poll() is None:
            time.sleep(0.1)
        if flag.exists():
            pid = int(flag.read_text().split("pid")[1])
            assert pid == procs[1].pid  # the worker process itself ran the shard
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    _run(_config(s3, "dask", address), base / "driver", prefect_api)
    watcher.join(timeout=5)
    assert killed and procs[1].wait(timeout=10) == -signal.SIGKILL, (flag.exists(), procs[1].poll())
    _same_run(_published(s3, "dask"), thread_run, "dask")
    # each worker produced in its own working directory (relative output_dir), nothing left there
    for w in ("w0", "w1"):
        local = base / w / "outputs" / "r"
        assert local.is_dir(), w
    assert not [p for p in (base / "w1" / "outputs").rglob("*") if p.is_file()]


# ---- Ray: a head and two worker nodes --------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster(s3: str, prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    """`ray start --head` with no CPUs (it runs no task) and two `ray start` worker nodes of one
    CPU each, each with its own temp dir and working directory; yields the head's address."""
    base, token = tmp_path_factory.mktemp("ray"), f"DUPLEX_CLUSTER_{uuid.uuid4().hex}"
    # Ray's temp dirs hold its AF_UNIX sockets, whose paths may not pass 107 bytes: under
    # pytest-xdist the basetemp (.../pytest-N/popen-gw0/ray0/) left too little for Ray's
    # session_<date>_<pid>/sockets/plasma_store, so they live in a short folder of their own.
    sockets = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    taken: set[int] = set()

    def new_port() -> int:
        # free_port() asks the OS for a free port and closes it, so two calls can get the same one:
        # Ray refused a node whose node manager and metrics export had been given one port
        while (port := free_port()) in taken:
            pass
        taken.add(port)
        return port

    port = new_port()
    address = f"127.0.0.1:{port}"
    ray = str(BIN / "ray")
    procs = []
    try:
        for i, name in enumerate(("head", "n0", "n1")):
            if i == 0:
                argv = [ray, "start", "--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false"]
                argv += ["--ray-client-server-port", str(new_port())]
            else:
                argv = [ray, "start", "--address", address, "--num-cpus", "1"]
            # every port given, each its own: three nodes on one machine must not share the fixed defaults (52365...)
            for flag in PORT_FLAGS:
                argv += [flag, str(new_port())]
            argv += ["--temp-dir", str(sockets / name), "--block", "--disable-usage-stats"]
            procs.append(_start_node(argv, base / name, _env(token, prefect_api)))
        assert _ray_nodes(address, token, prefect_api) == 3
        yield address, base
    finally:
        _stop(token, procs)
        shutil.rmtree(sockets, ignore_errors=True)


def _start_node(argv: list[str], cwd: Path, env: dict[str, str], tries: int = 3) -> subprocess.Popen:
    """`ray start --block` once its node is up. Ray 2.60's raylet gives its node's agents (Python
    processes) 15 s to start and then gives up; on a busy 2-core machine that can be too short,
    so a node that gave up is started again."""
    for attempt in range(tries):
        proc = _start(argv, cwd, env)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            log = (cwd / "process.log").read_text(errors="replace")
            if log.count("Ray runtime started") > attempt:
                return proc
            if proc.poll() is not None:
                break
            time.sleep(1)
        else:
            raise AssertionError(f"{argv[:3]} did not start in 240 s: {log[-2000:]}")
    raise AssertionError(f"{argv[:3]} failed {tries} times: {log[-2000:]}")


def _ray_nodes(address: str, token: str, prefect_api: str) -> int:
    """Alive nodes of the cluster, asked from a separate driver process."""
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
    code += "print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(token, prefect_api), capture_output=True, text=True, timeout=120
    )
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def test_ray_cluster_run_on_s3_gives_the_thread_runners_bytes(
    ray_cluster, thread_run: dict[str, bytes], s3: str, prefect_api: str
) -> None:
    address, base = ray_cluster
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    _run(_config(s3, "ray", address), base / "driver", prefect_api)
    _same_run(_published(s3, "ray"), thread_run, "ray")
    # the flow and both shard tasks, run on the worker nodes, reported to the Prefect server
    flow_state, task_states = _last_flow_run(prefect_api, f"s3://{BUCKET}/ray")
    assert flow_state == "COMPLETED" and task_states == ["COMPLETED", "COMPLETED"], (flow_state, task_states)
    assert not (base / "driver" / "outputs" / "r" / "data").exists()  # the driver ran no shard


def _last_flow_run(prefect_api: str, destination: str) -> tuple[str, list[str]]:
    """The state of the server's latest flow run publishing to `destination` (the session's
    server is shared by every test worker, so the latest of all may be another test's) and of its
    shard task runs (task runs arrive as events, so a moment after the flow returned)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + 60
    with SyncPrefectClient(prefect_api) as client:
        latest = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=50)
        flow_run = next(r for r in latest if r.parameters["config"]["run"]["destination"] == destination)
        while True:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            states = sorted(t.state.type.value for t in tasks if t.name.startswith("generate-shard") and t.state)
            if states == ["COMPLETED", "COMPLETED"] or time.monotonic() > deadline:
                return flow_run.state.type.value if flow_run.state else "", states
            time.sleep(1)


# ---- the renders the workers wrote: read from anywhere ---------------------------------------------


def test_rebuild_augment_and_preference_of_an_s3_run_from_another_folder(
    dask_cluster, thread_run: dict[str, bytes], s3: str, tmp_path: Path
) -> None:
    """The Dask run (its renders written to the S3 TTS cache by the worker processes) read at its
    URL by a fresh process in an empty folder: `rebuild_clean` gives every sample's stored clean
    audio, `augment` its stored augmented audio, `preference` the thread run's pairs."""
    code = """
import json, sys
from typer.testing import CliRunner
from factory.cli import app
from factory.run.read import read_config, read_samples
from factory.run.rebuild import rebuild_clean
from factory.tts_cache import open_cache
url, options = sys.argv[1], {"endpoint_url": sys.argv[2]}
cfg = read_config(url, options)
cache = open_cache(cfg.tts.cache_dir, cfg.tts.cache_storage_options)
samples = list(read_samples(url, storage_options=options))
for s in samples:
    assert (rebuild_clean(s.meta.recipe, cache) == s.stems).all(), s.id
opts = ["--storage-options", json.dumps(options)]
for args in (["augment", url, "--out", "augmented"], ["preference", url, "--out", "pairs.parquet"]):
    result = CliRunner().invoke(app, [*args, *opts])
    assert result.exit_code == 0, result.output
again = {s.id: s for s in read_samples("augmented")}
assert sorted(again) == sorted(s.id for s in samples)
for s in samples:
    assert (s.augmented is None) == (again[s.id].augmented is None), s.id
    assert s.augmented is None or (again[s.id].augmented == s.augmented).all(), s.id
print(json.dumps({"samples": len(samples), "cache": cache.url}))
"""
    env = {**os.environ, **CREDS, "PYTHONPATH": str(ROOT)}
    env.pop("DUPLEX_CRASH_AT", None)
    url = f"s3://{BUCKET}/dask/r"
    out = subprocess.run(
        [sys.executable, "-c", code, url, s3], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    done = json.loads(out.stdout.strip().splitlines()[-1])
    assert done["samples"] >= 1 and done["cache"] == f"s3://{BUCKET}/tts-dask", done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["augmented", "pairs.parquet"]
    # the thread run's pairs (its own cache, written by threads of this process) are the same bytes
    from typer.testing import CliRunner

    from factory.cli import app

    options = json.dumps({"endpoint_url": s3})
    thread = tmp_path / "thread-pairs.parquet"
    result = CliRunner().invoke(
        app, ["preference", f"s3://{BUCKET}/thread/r", "--out", str(thread), "--storage-options", options]
    )
    assert result.exit_code == 0, result.output
    assert thread.read_bytes() == (tmp_path / "pairs.parquet").read_bytes()


def test_an_unreachable_tts_cache_url_stops_the_run_before_any_shard(s3: str, tmp_path: Path) -> None:
    """A cache URL the workers could not write (no such bucket) is refused by the preflight,
    naming the cache and the fix, before a shard starts; nothing is written anywhere."""
    from factory.doctor import PreflightError
    from factory.runtime import Runtime

    cfg = _config(s3, "thread").model_copy(deep=True)
    cfg.tts.cache_dir = "s3://no-such-bucket/tts"
    cfg.run.destination = f"s3://{BUCKET}/never"
    cfg.run.output_dir = tmp_path / "outputs"
    with pytest.raises(PreflightError) as err:
        Runtime(cfg).check_paths()
    assert "TTS cache" in str(err.value) and "tts.cache_dir" in str(err.value), err.value
    assert not _published(s3, "never") and not (tmp_path / "outputs").exists()


def test_babble_draws_the_same_pool_from_the_s3_cache_as_from_a_local_copy(
    thread_run: dict[str, bytes], s3: str, tmp_path: Path
) -> None:
    """Babble's voices come from the TTS cache: the thread run's S3 cache gives the same pool
    (keys, audio) as a folder copy of it, the layout the local cache is tested at."""
    import s3fs

    from factory.augment.babble import babble_pool
    from factory.tts_cache import CacheStore

    fs = s3fs.S3FileSystem(endpoint_url=s3, key="testing", secret="testing")
    fs.get(f"{BUCKET}/tts-thread/", str(tmp_path / "copy"), recursive=True)
    remote = babble_pool(CacheStore(f"s3://{BUCKET}/tts-thread", {"endpoint_url": s3}), 16000, 50, 0.5)
    local = babble_pool(CacheStore(tmp_path / "copy"), 16000, 50, 0.5)
    assert len(remote) >= 3 and [k for k, _ in remote] == [k for k, _ in local]
    assert all(a.tobytes() == b.tobytes() for (_, a), (_, b) in zip(remote, local, strict=True))

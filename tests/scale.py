"""Helpers of the deployment-at-scale tests: a fast run config, the CLI in a subprocess, a real
Prefect server on 127.0.0.1, and the checks that compare runs and look for orphan processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock

from factory.run.store import pid_alive
from factory.workers import tied_to_parent
from tests.latency_server import STAND_IN_SYNTHESIS

ROOT = Path(__file__).resolve().parents[1]

# Two-turn dialogues in two espeak voices without Whisper QA: each sample costs ~1-3 s, so the
# tests spend their time on what they test (servers, kills, resumes), not on synthesis.
FAST = [
    "run.seed=5",
    "run.samples_per_shard=1",
    "dialogue.n_turns=[2, 2]",
    "dialogue.assistant_agent_words=[5, 12]",
    "dialogue.assistant_user_words=[3, 8]",
    "dialogue.peer_words=[4, 10]",
    *STAND_IN_SYNTHESIS,
    "run.shard_retries=1",
    "run.retry_delay_s=0",
]


def fast(cache: Path, *extra: str) -> list[str]:
    return [*FAST, f"tts.cache_dir={cache}", *extra]


def cli_args(overrides: list[str], *extra: str) -> list[str]:
    args = [sys.executable, "-m", "factory.cli", "generate", *extra]
    for item in overrides:
        args += ["--set", item]
    return args


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path (the bytes a consumer of the run would see)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def processes_with(token: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment holds `token` (inherited by
    all descendants of the process it was given to, whatever they re-parent to)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if token.encode() in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append((int(proc.name), cmd))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def wait_gone(token: str, timeout_s: float = 15.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout_s
    while (left := processes_with(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill_tree(token: str) -> None:
    """Clean up after a failed test: SIGKILL what is left of its processes."""
    for pid, _ in processes_with(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_until_flag(
    args: list[str], env: dict[str, str], cwd: Path, flag: Path, timeout_s: float = 600
) -> tuple[subprocess.Popen, bool]:
    """Start the CLI; return once it reached its crash point (flag written) or exited."""
    log = open(cwd / f"log-{time.monotonic_ns()}.txt", "wb")  # noqa: SIM115 - kept by the child
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if flag.exists():
            return proc, True
        if proc.poll() is not None:
            return proc, False
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"{args} neither reached its crash point nor exited in {timeout_s} s")


def prefect_server_env(home: Path) -> dict[str, str]:
    """This process's environment for a `prefect server start` with its database in `home` (and
    for the clients of that server: add `PREFECT_API_URL`)."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # The scheduler creates the next scheduled runs every 2 s instead of every minute.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    env.pop("PREFECT_API_URL", None)
    return env


def start_prefect_server(home: Path):
    """`prefect server start` in its own process group; yields (api url, env), then stops it."""
    import httpx

    from flows.server import free_port

    port = free_port()
    env = prefect_server_env(home)
    log = open(home / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        tied_to_parent([str(Path(sys.executable).parent / "prefect"), "server", "start"])
        + ["--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 240
    with httpx.Client(timeout=2) as client:  # one client for every poll: each httpx.get loads the CA bundle
        while True:
            try:
                if client.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
    try:
        yield url, {**env, "PREFECT_API_URL": url}
    finally:
        from flows.server import drain_prefect_clients

        drain_prefect_clients()  # or this process hangs at exit retrying the stopped server
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def shared_prefect_server(folder: Path, lock: FileLock):
    """One `prefect server start` for every process of a test session that asks (the xdist
    workers): yields (api url, env) like `start_prefect_server`. The first process to ask starts
    it, in `folder`, and its child it stays (killed by the kernel if that process dies); at the
    end of its session that process waits until no other live process still uses the server,
    then stops it. A process that asks after that starts another. Each server costs ~13 CPU-s to
    start and ~1.6 CPU-s a minute while it idles (its services poll), on a 2-core CI machine."""
    import json

    from flows.server import drain_prefect_clients

    users, info = folder / "users", folder / "server.json"
    mine = users / str(os.getpid())
    server = None
    with lock:
        shared = json.loads(info.read_text()) if info.exists() else None
        if shared is None or not pid_alive(shared["owner"]):  # none yet, or its process died with it
            home = folder / f"home-{os.getpid()}"
            home.mkdir(parents=True)
            server = start_prefect_server(home)
            url, _ = next(server)
            shared = {"url": url, "home": str(home), "owner": os.getpid()}
            info.write_text(json.dumps(shared))
        users.mkdir(parents=True, exist_ok=True)
        mine.touch()
    try:
        yield shared["url"], {**prefect_server_env(Path(shared["home"])), "PREFECT_API_URL": shared["url"]}
    finally:
        drain_prefect_clients()  # while the server is still up (or this process hangs at exit)
        with lock:
            mine.unlink()
        while server is not None:
            with lock:
                if not any(pid_alive(int(p.name)) for p in users.iterdir()):
                    info.unlink()  # under the lock: a process asking from now on starts its own
                    break
            time.sleep(1)
        if server is not None:
            server.close()  # the generator's `finally`: stops the server


@contextlib.contextmanager
def reporting_to(url: str, cwd: Path | None = None):
    """Run the flow in this process against the server at `url` (and from `cwd`)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    before_env, before_cwd = os.environ.get("PREFECT_API_URL"), Path.cwd()
    os.environ["PREFECT_API_URL"] = url
    try:
        if cwd is not None:
            os.chdir(cwd)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    finally:
        os.chdir(before_cwd)
        if before_env is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before_env


def cli(overrides: list[str], *extra: str):
    """`duplex-factory generate` in this process (typer's CliRunner): models stay loaded between runs."""
    from typer.testing import CliRunner

    from factory.cli import app

    args = ["generate", *extra]
    for item in overrides:
        args += ["--set", item]
    return CliRunner().invoke(app, args)

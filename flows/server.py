"""A Prefect API server for one `duplex-factory generate`, tied to the run's life.

Prefect's own ephemeral server (`SubprocessASGIServer`) is a uvicorn child that outlives a
SIGKILLed parent: a run killed by hand, the OOM killer or a scheduler left it running. This one
is started through `factory.workers.tied_to_parent` (`PR_SET_PDEATHSIG` before exec'ing uvicorn),
so the kernel kills it the moment the run dies, however it dies; a normal exit stops it politely.
When `PREFECT_API_URL` already names a server (a deployment's worker, a shared server for Dask or
Ray workers), that server is used and nothing is started.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from factory.workers import tied_to_parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """A Prefect API server (no UI) on 127.0.0.1:`port` that dies with this process."""
    import prefect  # lazy: only to find the installed server's app dir; the CLI's --help stays fast

    args = [
        "--app-dir",
        str(Path(prefect.__file__).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        tied_to_parent([sys.executable, "-m", "uvicorn", *args]),
        env={**env, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"},
        stdout=out,
        stderr=out,
    )


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    # One client for every poll: `httpx.get` builds a client, and with it an SSL context that
    # loads the CA bundle (~0.1 CPU-s), on each call, even for plain http (a 20 s wait on a busy
    # machine spent ~8 CPU-s that way).
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with code {proc.returncode} before it was ready")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"the Prefect server at {url} was not ready within {timeout_s:.0f} s")


def drain_prefect_clients(timeout_s: float = 15.0) -> None:
    """Deliver this process's queued Prefect logs and events while their server is still up. Left
    queued, they are retried against the stopped server at interpreter exit, and the process hangs
    there ("Still processing items"), which a test session and a CLI run both hit."""
    try:
        from prefect.events.worker import EventsWorker  # lazy: only at the end of a run with a server
        from prefect.logging.handlers import APILogWorker  # lazy: as above

        APILogWorker.drain_all(timeout=timeout_s)
        EventsWorker.drain_all(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - delivery is best effort; stopping the server is not
        pass


@contextmanager
def run_server() -> Iterator[str]:
    """Yield a Prefect API URL for this run: `PREFECT_API_URL` if set, else a server of our own
    that stops when the block ends and is killed by the kernel if this process dies."""
    from prefect.settings import PREFECT_API_URL, temporary_settings  # lazy: imports all of Prefect

    existing = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if existing:
        yield existing
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    proc = start_server(port, dict(os.environ))
    try:
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
        wait_healthy(url, proc, timeout)
        os.environ["PREFECT_API_URL"] = url  # inherited by Dask/Ray worker processes
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        drain_prefect_clients()
        os.environ.pop("PREFECT_API_URL", None)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

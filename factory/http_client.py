"""The one HTTP client stack: httpx's `AsyncClient` on one private event loop per process, run
by one daemon thread. The LLM client (`factory.llm.http`) and the TTS service's client
(`factory.render.service_backend`) both send from it, so a sync call works from any thread,
including one whose own loop is running (Prefect tasks), and neither starts loops of its own.

(The TTS service's server, `factory.render.service`, is aiohttp's web server: httpx is a client
only. Nothing here is used by it.)
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


@dataclass
class _LoopThread:
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    pid: int = field(default_factory=os.getpid)


_state: _LoopThread | None = None
_state_lock = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    """The process's HTTP loop, started on first use (and anew in a forked child, where the
    parent's loop thread does not exist)."""
    global _state
    with _state_lock:
        if _state is None or _state.pid != os.getpid():
            new = asyncio.new_event_loop()
            thread = threading.Thread(target=new.run_forever, name="http-client", daemon=True)
            thread.start()
            _state = _LoopThread(new, thread)
        return _state.loop


def on_loop_thread() -> bool:
    return _state is not None and threading.current_thread() is _state.thread


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the HTTP loop and wait for its result (from any thread but the loop's own)."""
    target = loop()
    if on_loop_thread():
        coro.close()
        raise RuntimeError("a blocking HTTP call from the HTTP loop's own thread would deadlock; await it instead")
    return asyncio.run_coroutine_threadsafe(coro, target).result()


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` run on the HTTP loop, from another event loop."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop()))


def new_client(
    *, concurrency: int, timeout_s: float, connect_timeout_s: float | None = None, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    """A client for the HTTP loop (build it there: `run(build())`), with a connection and a
    keep-alive slot for each of `concurrency` requests in flight, so bursts reuse connections."""
    return httpx.AsyncClient(
        headers=headers or {},
        timeout=httpx.Timeout(timeout_s, connect=timeout_s if connect_timeout_s is None else connect_timeout_s),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )

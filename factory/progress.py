"""Progress of long work, one way for every command (generate, export, audit, push, augment) and
the Prefect flow: a `Tracker` counts (items done of a total, accepted / rejected, audio minutes)
and hands `Snapshot`s to what shows them.

- In a terminal: rich bars, updated on every step (`track` with a terminal console).
- Without one (stdout not a tty: Prefect deployments, cron, CI, `| tee`): a plain line at most
  every `every_s` seconds, and at least that often while the work runs (a ticker thread), so a
  log shows a quiet run is alive; and a last line when it ends.
- In a Prefect flow: the same lines in the flow's log and a progress artifact (`flows.generate`).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from factory.models import ManifestRow


# What a tracker reads of the engine's results, as protocols: exporters and tokenizers use this
# module and must not import the engine (import-linter contracts).
class SampleOutcome(Protocol):
    @property
    def manifest(self) -> ManifestRow: ...


class _AudioStats(Protocol):
    @property
    def audio_s(self) -> float: ...


class ShardOutcome(Protocol):
    @property
    def n_ok(self) -> int: ...

    @property
    def n_rejected(self) -> int: ...

    @property
    def stats(self) -> _AudioStats | None: ...


DEFAULT_EVERY_S = 30.0  # the config's `run.progress_every_s` default: a log line per half minute


class Snapshot(BaseModel):
    """Where the work stands: what one progress line says."""

    label: str
    unit: str
    done: int
    total: int | None
    ok: int | None = None
    rejected: int | None = None
    audio_minutes: float | None = None
    elapsed_s: float

    @property
    def rate_per_min(self) -> float:
        return self.done / self.elapsed_s * 60 if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.total is None or not self.done:
            return None
        return max(0.0, (self.total - self.done) * self.elapsed_s / self.done)

    def status(self) -> str:
        """The counts beside the bar: "3 ok, 1 rejected, 2.4 audio min"."""
        parts = []
        if self.ok is not None:
            parts.append(f"{self.ok} ok, {self.rejected or 0} rejected")
        if self.audio_minutes is not None:
            parts.append(f"{self.audio_minutes:.1f} audio min")
        return ", ".join(parts)

    def line(self) -> str:
        """One plain log line, e.g. "generate: 12/60 dialogues (10 ok, 2 rejected, 6.3 audio min),
        1.9 dialogues/min, elapsed 6m20s, ETA 25m12s"."""
        of = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        counts = f" ({self.status()})" if self.status() else ""
        eta = self.eta_s
        return (
            f"{self.label}: {of} {self.unit}{counts}, {self.rate_per_min:.1f} {self.unit}/min, "
            f"elapsed {_clock(self.elapsed_s)}, ETA {_clock(eta) if eta is not None else '?'}"
        )


def _clock(seconds: float) -> str:
    s = round(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s"


Sink = Callable[[Snapshot], None]


class Tracker:
    """Thread-safe counts of one piece of work. `on_change` sees every step (a bar); `on_line`
    sees a snapshot at most every `every_s` seconds, from a ticker thread while the work runs
    (steps or not), and once more at `close`."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "items",
        every_s: float = DEFAULT_EVERY_S,
        on_line: Sink | None = None,
        on_change: Sink | None = None,
        counts: bool = False,
    ) -> None:
        self.label, self.unit, self.total, self.every_s = label, unit, total, every_s
        self.on_line, self.on_change = on_line, on_change
        self.done, self.ok, self.rejected, self.audio_s = 0, 0, 0, 0.0
        self.counts = counts  # accepted / rejected and audio minutes mean something for this work
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if on_line is not None:
            # In the creating thread's context: a Prefect flow's settings and run (its API, its logger)
            # live in context variables, which a new thread would not see.
            context = contextvars.copy_context()
            self._ticker = threading.Thread(
                target=context.run, args=(self._tick,), name=f"progress-{label}", daemon=True
            )
            self._ticker.start()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                label=self.label,
                unit=self.unit,
                done=self.done,
                total=self.total,
                ok=self.ok if self.counts else None,
                rejected=self.rejected if self.counts else None,
                audio_minutes=self.audio_s / 60 if self.counts else None,
                elapsed_s=time.monotonic() - self._start,
            )

    def advance(self, n: int = 1, *, ok: int = 0, rejected: int = 0, audio_s: float = 0.0) -> None:
        with self._lock:
            self.done += n
            self.ok += ok
            self.rejected += rejected
            self.audio_s += audio_s
        if self.on_change is not None:
            self.on_change(self.snapshot())

    def sample_done(self, result: SampleOutcome) -> None:
        """One dialogue finished (accepted or rejected), as the engine reports it."""
        ok = result.manifest.status.value == "ok"
        self.advance(ok=int(ok), rejected=int(not ok), audio_s=(result.manifest.duration or 0.0) if ok else 0.0)

    def shard_done(self, result: ShardOutcome) -> None:
        """A whole shard's dialogues at once (runners whose workers cannot call back per sample,
        and shards skipped as complete)."""
        audio_s = result.stats.audio_s if result.stats is not None else 0.0
        self.advance(result.n_ok + result.n_rejected, ok=result.n_ok, rejected=result.n_rejected, audio_s=audio_s)

    def update(self, done: int, total: int | None = None) -> None:
        """Set the count (work that reports how far it is rather than each step)."""
        with self._lock:
            self.done = done
            self.total = total if total is not None else self.total
        if self.on_change is not None:
            self.on_change(self.snapshot())

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.on_line is not None:
                self.on_line(self.snapshot())

    def close(self) -> Snapshot:
        """Stop the ticker; the last line says where the work ended."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        last = self.snapshot()
        if self.on_line is not None:
            self.on_line(last)
        return last


@contextmanager
def track(
    console: Console,
    label: str,
    total: int | None = None,
    *,
    unit: str = "items",
    every_s: float = DEFAULT_EVERY_S,
    counts: bool = False,
    transient: bool = False,
) -> Iterator[Tracker]:
    """A Tracker shown on `console`: a rich bar in a terminal, plain lines every `every_s` s
    elsewhere."""
    if not console.is_terminal:
        tracker = Tracker(
            label,
            total,
            unit=unit,
            every_s=every_s,
            counts=counts,
            on_line=lambda s: console.print(s.line(), highlight=False, markup=False, soft_wrap=True),
        )
        try:
            yield tracker
        finally:
            tracker.close()
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=transient) as bar:
        task = bar.add_task(label, total=total, status="")

        def show(s: Snapshot) -> None:
            bar.update(task, completed=s.done, total=s.total, status=s.status())

        tracker = Tracker(label, total, unit=unit, every_s=every_s, counts=counts, on_change=show)
        try:
            yield tracker
        finally:
            tracker.close()

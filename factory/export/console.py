"""What `duplex-factory export` and `inspect` print: the progress bar, the report table and an
exported sequence rendered back as a per-frame timeline (rich). The commands in factory/cli.py
stay thin; the logic is here and in the format modules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from factory.export.errors import ExportError
from factory.export.fdb import FdbReport
from factory.export.output import read_sidecar
from factory.export.registry import get_format
from factory.export.report import ExportReport


def parse_options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs -> a dict; values parsed as JSON where they are (0.5, true, "x"), else strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ExportError(f"format option {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def run_with_progress(work: Callable[[Callable[[int, int | None], None]], ExportReport]) -> ExportReport:
    """`work(progress)` under a progress bar; `progress(done, total)` moves it (total: the run's
    ok samples, from its manifest)."""
    columns = [TextColumn("export"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("export", total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


def print_report(console: Console, report: ExportReport) -> None:
    console.print(
        f"[green]{report.format}[/green]: {report.samples_out} of {report.samples_in} samples, "
        f"{report.dialogue_seconds / 60:.1f} dialogue-minutes, {len(report.shards)} shards -> {report.out_dir} "
        f"({report.seconds_total:.1f} s, tokenization {report.seconds_tokenize:.1f} s)",
        highlight=False,
    )
    applied = {k: v for k, v in report.rules.items() if v}
    if applied:
        table = Table(title="bad-input rules applied")
        for header in ("rule", "action", "count"):
            table.add_column(header)
        for rule, n in applied.items():
            table.add_row(rule, report.rule_actions.get(rule, ""), str(n))
        console.print(table)
    for d in report.dropped[:10]:
        console.print(f"[yellow]dropped {d.id}: {d.rule} {d.detail}[/yellow]", highlight=False)
    if isinstance(report, FdbReport):
        print_tasks(console, report)


def print_tasks(console: Console, report: FdbReport) -> None:
    """Full-Duplex-Bench: per task, the items written and why samples and events gave none."""
    table = Table(title=f"{report.out_dir}: Full-Duplex-Bench items from {report.samples_in} samples")
    for header in ("task", "items", "samples used", "samples without (reason)", "events left out (reason)"):
        table.add_column(header)
    for name, c in report.tasks.items():
        table.add_row(
            name,
            str(c.items),
            str(c.samples_with_items),
            "\n".join(f"{n} {r}" for r, n in c.samples_without.items()),
            "\n".join(f"{n} {r}" for r, n in c.events_left_out.items()),
        )
    Console(width=max(console.width, 120)).print(table)


def render_decoded(console: Console, export_dir: Path, sample_id: str, start: float, end: float | None) -> None:
    sidecar = read_sidecar(export_dir)
    decoded = get_format(sidecar.format).decode(Path(export_dir), sample_id)
    n = max((len(v) for v in decoded.tracks.values()), default=0)
    rate = decoded.frame_rate
    table = Table(title=f"{sidecar.format} {sample_id} @ {rate:g} Hz", show_lines=False)
    table.add_column("frame", justify="right")
    table.add_column("t (s)", justify="right")
    for name in decoded.tracks:
        table.add_column(name)
    for f in range(n):
        t = f / rate
        if t < start or (end is not None and t >= end):
            continue
        table.add_row(str(f), f"{t:.2f}", *(v[f] if f < len(v) else "" for v in decoded.tracks.values()))
    Console(width=max(console.width, 100)).print(table)

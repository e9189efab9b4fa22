"""What the commands print, built from the typed values they read (run summaries, shard and
failure records, the manifest, export and push reports): tables are returned, lines printed on the
console passed in. Nothing here decides what is read or written, or where.

Types only the annotations need are imported under TYPE_CHECKING: their modules pull in polars,
datasets or the export formats, which `duplex-factory --help` must not pay for."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from factory.export.report import ExportReport
from factory.run.records import FailureRecord, LLMHttp, RunSummary, ShardRecord, Utilisation

if TYPE_CHECKING:
    import polars as pl

    from factory.doctor import Diagnosis
    from factory.export.fdb import FdbReport
    from factory.export.output import Decoded
    from factory.publish.hub import PushReport
    from factory.vap.report import SmokeReport

SHOWN_ROWS = 20  # dialogues (and rejections) listed by a run summary; the manifest has the rest


def wide(console: Console, width: int) -> Console:
    """A console at least `width` columns wide: a table wider than a pipe's 80 columns beats a squashed one."""
    return Console(width=max(console.width, width))


# --------------------------------------------------------------------------- doctor
STATUS_STYLE = {"ok": "green", "missing": "red", "unreachable": "red"}


def doctor_table(run_id: str, diagnosis: Diagnosis) -> Table:
    """One row per check; a failed check this config does not need is dimmed (it cannot stop the run)."""
    table = Table(title=f"doctor: what this machine can do for {run_id}", title_justify="left")
    for column in ("area", "check", "status", "needed", "found", "fix"):
        table.add_column(column, overflow="fold")
    for c in diagnosis.checks:
        style = STATUS_STYLE[c.status.value] if c.required or c.status.value == "ok" else "yellow"
        table.add_row(
            c.area, c.name, f"[{style}]{c.status.value}[/{style}]", "yes" if c.required else "no", c.detail, c.fix
        )
    return table


# --------------------------------------------------------------------------- generate
def llm_http_note(stats: LLMHttp | None) -> str:
    """The HTTP LLM's retries and failures this run, e.g. "; LLM 40 requests, 3 retries (http_429 2, timeout 1)"."""
    if not stats:
        return ""

    def by_cause(counts: dict[str, int]) -> str:
        return f" ({', '.join(f'{cause} {n}' for cause, n in counts.items())})" if counts else ""

    retries, failures = stats.retries, stats.failures
    return (
        f"; LLM {stats.requests} requests, {sum(retries.values())} retries{by_cause(retries)}, "
        f"{sum(failures.values())} failed{by_cause(failures)}"
    )


def print_utilisation(console: Console, use: Utilisation) -> None:
    """Where the time went: seconds per audio-minute per stage, LLM requests in flight, TTS batches."""
    if not use.audio_minutes:
        return
    per_min = use.seconds_per_audio_minute
    stages = ", ".join(f"{stage} {seconds:g}" for stage, seconds in per_min.items())
    total = sum(per_min.values())
    console.print(
        f"stages, wall s per audio minute: {stages} (sum {total:.1f}: "
        f"{60 / total if total else 0:.2f} dialogue-min per stage-min); "
        f"LLM {use.llm.mean_in_flight} in flight on average (max {use.llm.max_in_flight}); "
        f"TTS {use.tts.renders_per_call} renders per batch call",
        highlight=False,
    )


def print_run_done(console: Console, summary: RunSummary) -> None:
    """A generate run's counts, its LLM HTTP stats and its utilisation."""
    console.print(
        f"[green]done[/green]: {summary.ok} dialogues, {summary.rejected} rejected, "
        f"{summary.skipped}/{summary.shards} shards already complete -> {summary.run_dir}"
        + llm_http_note(summary.llm_http)
    )
    print_utilisation(console, summary.utilisation)


def print_shard_errors(console: Console, failed: dict[str, str]) -> None:
    """The shards of this generate run whose task kept failing (RunSummary.failed)."""
    for name, error in failed.items():
        console.print(f"[red]shard {name} failed: {error}[/red]", highlight=False)
    console.print(f"[red]{len(failed)} shard(s) failed: rerun with --retry-failed[/red]")


# --------------------------------------------------------------------------- run summary
def print_failures(console: Console, failures: dict[str, FailureRecord]) -> None:
    """The failure records a run's store holds."""
    for name, failure in failures.items():
        console.print(f"[red]failed shard {name} ({failure.attempts} attempts): {failure.error}[/red]")


def dialogues_table(name: str, ok: pl.DataFrame) -> Table:
    """The first of a run's produced dialogues (`ok`: their manifest rows), titled with their count and duration."""
    table = Table(title=f"{name}: {len(ok)} dialogues, {ok['duration'].sum() or 0:.1f} s")
    for header in ("id", "mode", "s", "turns", "barge-ins", "backch.", "fillers", "overlap", "voices (user / agent)"):
        table.add_column(header, no_wrap=True)
    for r in ok.head(SHOWN_ROWS).iter_rows(named=True):
        table.add_row(
            r["id"],
            r["mode"],
            f"{r['duration']:.1f}",
            str(r["n_turns"]),
            str(r["n_barge_ins"]),
            str(r["n_backchannels"]),
            str(r["n_fillers"]),
            f"{r['overlap_share']:.2f}",
            f"{r['user_voice']} / {r['agent_voice']}",
        )
    return table


def print_run_summary(
    console: Console,
    name: str,
    manifest_path: str,
    manifest: pl.DataFrame,
    records: list[tuple[str, ShardRecord | Exception]],
) -> None:
    """A finalized run: its dialogues, the audit gates' findings and its rejections by kind."""
    ok = manifest.filter(manifest["status"] == "ok")
    wide(console, 120).print(dialogues_table(name, ok))
    if len(ok) > SHOWN_ROWS:
        console.print(f"... and {len(ok) - SHOWN_ROWS} more dialogues: {manifest_path}")
    print_audit_gates(console, manifest, records)
    rejected = manifest.filter(manifest["status"] == "rejected")
    for row in rejected.head(SHOWN_ROWS).iter_rows(named=True):
        console.print(f"[yellow]rejected {row['id']}: {row['reason']}[/yellow]")
    if len(rejected):
        console.print(f"[yellow]{rejection_counts(rejected['reason'].to_list())}[/yellow]", highlight=False)


def print_audit_gates(
    console: Console, manifest: pl.DataFrame, records: list[tuple[str, ShardRecord | Exception]]
) -> None:
    """Samples the audit gates flagged, and shards whose pooled measures left their band (records)."""
    if "audit_flags" in manifest.columns:
        flagged = manifest.filter(manifest["audit_flags"].is_not_null())
        for row in flagged.head(10).iter_rows(named=True):
            console.print(f"[yellow]audit flag {row['id']}: {row['audit_flags']}[/yellow]", highlight=False)
        if len(flagged):
            console.print(f"[yellow]{len(flagged)} samples flagged by the audit gates (manifest: audit_flags)[/yellow]")
    for name, record in records:
        if isinstance(record, Exception):
            console.print(f"[red]shard {name}: record unreadable ({record})[/red]", highlight=False)
        elif record.audit.problems:
            console.print(f"[yellow]shard {name} audit: {'; '.join(record.audit.problems)}[/yellow]", highlight=False)


def rejection_counts(reasons: list[str | None]) -> str:
    """E.g. "5 rejected: behaviour_minimum x 3, internal_error x 2": reasons by kind (the text
    before the first colon), most frequent first, so a run's main failure is read at a glance."""
    kinds = Counter((reason or "unknown").split(":", 1)[0].strip() for reason in reasons)
    return f"{len(reasons)} rejected: " + ", ".join(f"{kind} x {n}" for kind, n in kinds.most_common())


# --------------------------------------------------------------------------- push
def print_push_report(console: Console, report: PushReport) -> None:
    console.print(
        f"{report.repo_id}@{report.revision}: {len(report.uploaded)} files pushed in {report.commits} commits "
        f"({report.bytes_uploaded / 1e6:.1f} MB), {len(report.skipped)} already there",
        highlight=False,
    )


# --------------------------------------------------------------------------- export / inspect
def print_export_report(console: Console, report: ExportReport) -> None:
    """An export's counts and timings, the bad-input rules it applied and the first samples it dropped."""
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


def fdb_tasks_table(report: FdbReport) -> Table:
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
    return table


def decoded_table(format_name: str, sample_id: str, decoded: Decoded, start: float, end: float | None) -> Table:
    """An exported sequence decoded back: per frame in [start, end), each track's tokens, text and states."""
    n = max((len(v) for v in decoded.tracks.values()), default=0)
    rate = decoded.frame_rate
    table = Table(title=f"{format_name} {sample_id} @ {rate:g} Hz", show_lines=False)
    table.add_column("frame", justify="right")
    table.add_column("t (s)", justify="right")
    for name in decoded.tracks:
        table.add_column(name)
    for f in range(n):
        t = f / rate
        if t < start or (end is not None and t >= end):
            continue
        table.add_row(str(f), f"{t:.2f}", *(v[f] if f < len(v) else "" for v in decoded.tracks.values()))
    return table


def smoke_table(report: SmokeReport) -> Table:
    """The smoke-train's held-out measures: balanced accuracy of the model, the agent- and
    user-shifted controls (mean ± standard deviation over the training seeds) and the majority
    class, with the event counts; shift/hold also per last speaker (the rows the verdict judges,
    each against the control that shifts that speaker)."""
    table = Table(
        title=f"{report.format} export: {report.train_dialogues} train / {report.held_out_dialogues} held-out "
        f"dialogues, {report.steps} steps x {len(report.seeds)} seeds, {report.seconds:.0f} s"
    )
    headers = ("measure (balanced accuracy)", "events (positive)", "model", "agent-shifted", "user-shifted", "majority")
    for header in headers:
        table.add_column(header)

    def acc(x: float | None, sd: float | None = None) -> str:
        return "-" if x is None else f"{x:.3f}" if sd is None else f"{x:.3f} ± {sd:.3f}"

    rows = [*report.measures.items()]
    rows += [(f"shift_hold after {sp} (judged)", m) for sp, m in report.shift_hold_by_last_speaker.items()]
    for name, m in rows:
        accs = (
            acc(m.model, m.model_sd),
            acc(m.control, m.control_sd),
            acc(m.user_control, m.user_control_sd),
            acc(m.majority),
        )
        table.add_row(name, f"{m.events} ({m.positives})", *accs)
    return table

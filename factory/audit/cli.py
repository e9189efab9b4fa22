"""The `duplex-factory audit` command's body: progress, tables, audit.parquet, card, HTML report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from factory.audio.vad import VAD_METHODS
from factory.audit.gates import row_language, wer_per_voice
from factory.audit.report import update_card, write_report
from factory.audit.run import AuditInputError, RunAudit, audit_run, count_samples, write_audit
from factory.progress import track


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}"


def measures_table(result: RunAudit, language: str | None = None) -> Table | Group:
    """The headline measures of `language`'s samples against its bands; a band borrowed from
    English says "(English band)". Without a language: the run's, one table per language."""
    if language is None:
        tables = [measures_table(result, lang) for lang in result.languages]
        return tables[0] if len(tables) == 1 else Group(*tables)
    primary = result.vads[0]
    n = sum(1 for r in result.rows if row_language(r) == language)
    mixed = len(result.languages) > 1
    scope = f"pooled over its {language} samples" if mixed else "pooled over the run"
    title = f"{result.run_dir.name}: {n} dialogues audited ({scope})"
    if language != "en" or mixed:
        title += f"; bands for {language}"
    table = Table(title=title)
    table.add_column("measure", no_wrap=True)
    for v in result.vads:
        table.add_column(f"{v}{' (primary)' if v == primary else ''}", justify="right")
    table.add_column("band", no_wrap=True)
    table.add_column("in band", justify="center")
    table.add_column("reference")
    for row in result.headline(language):
        band, ok = row.band, row.in_band
        mark = {"yes": "[green]yes[/green]", "no": "[red]no[/red]"}.get(ok, ok)
        cells = [_fmt(v) for v in row.values]
        table.add_row(
            row.measure, *cells, band.shown(), mark, band.source if band.human else f"[dim]{band.source}[/dim]"
        )
    return table


def shards_table(result: RunAudit) -> Table:
    table = Table(title="shards")
    for h in ("shard", "samples", "flagged", "FTO p50", "overlap share", "problems"):
        table.add_column(h)
    for name, rep in result.shards.items():
        p = rep["pooled"]
        table.add_row(
            name,
            str(int(p["n_samples"])),
            str(rep["flagged"]),
            _fmt(p["fto_p50_s"]),
            _fmt(p["overlap_share"]),
            ("[red]" + "; ".join(rep["problems"]) + "[/red]" if rep["problems"] else "[green]none[/green]")
            + (f" [yellow]not gated: {', '.join(rep['not_gated'])}[/yellow]" if rep.get("not_gated") else ""),
        )
    return table


def run_audit_command(
    console: Console,
    run_dir: Path | str,
    html: Path | None,
    asr_turns: int | None,
    vads: list[str] | None,
    players: int,
    audio_format: str,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Returns the exit code: 0 audited (gates may fail: they are reported), 1 nothing to audit.
    `run_dir` may be a URL (`s3://...`): audit.parquet is written there through fsspec; the
    dataset card is updated only in a local run folder (rewriting a published card is `push`'s
    business), and the HTML report goes to the local --html folder either way."""
    if audio_format not in ("flac", "ogg"):
        console.print(f"[red]--audio-format must be flac or ogg, got {audio_format!r}[/red]")
        return 2
    bad = [v for v in vads or [] if v not in VAD_METHODS]
    if bad:
        console.print(f"[red]--vad: unknown detector(s) {bad}; choose from {list(VAD_METHODS)}[/red]")
        return 2
    total = count_samples(run_dir, storage_options)
    try:
        with track(console, "audit", total, unit="samples") as progress:
            result = audit_run(
                run_dir,
                vads=tuple(vads) if vads else None,
                asr_turns=asr_turns,
                on_sample=lambda _: progress.advance(),
                storage_options=storage_options,
            )
    except AuditInputError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    for note in result.notes:
        console.print(f"[yellow]note: {note}[/yellow]", highlight=False)
    for problem in result.problems:
        console.print(f"[red]problem: {problem}[/red]", highlight=False)
    if not result.rows:
        console.print(f"[red]{run_dir}: no sample could be audited[/red]")
        return 1
    wide = Console(width=max(console.width, 140))
    wide.print(measures_table(result))
    wide.print(shards_table(result))
    voices = wer_per_voice(result.rows)
    if voices:
        metrics = "/".join(sorted({r.get("asr_metric") or "WER" for r in result.rows if r.get("asr_wers")}))
        console.print(
            f"ASR round trip, {metrics} per voice: "
            + ", ".join(f"{v} {d['wer']:.2f} ({int(d['turns'])} turns)" for v, d in voices.items())
        )
    flagged = [r for r in result.rows if r.get("flags")]
    for r in flagged[:10]:
        console.print(f"[yellow]flagged {r['id']}: {r['flag_reason']}[/yellow]", highlight=False)
    if len(flagged) > 10:
        console.print(f"[yellow]... {len(flagged) - 10} more flagged samples (audit.parquet: flag_reason)[/yellow]")
    path = write_audit(result)
    console.print(f"wrote {path}")
    if result.is_remote:
        console.print("dataset card left as it is: the run is remote (audit a local copy to update its card)")
    elif card := update_card(result):
        console.print(f"dataset card updated with the audit: {card}")
    if html is not None:
        index = write_report(result, Path(html), players=players, audio_format=audio_format)
        console.print(f"HTML report: {index}")
    return 0

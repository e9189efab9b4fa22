"""`duplex-factory` command line: the typer `app` and what the commands share (`app`), one module
per group of commands (`generate`, `runs`, `export`, `configure`) and what they print
(`present`). The commands are registered here, in the order `--help` lists them."""

from __future__ import annotations

from factory.cli import configure, export, generate, runs
from factory.cli.app import app

app.command()(generate.generate)
app.command("config")(configure.show_config)
app.command()(configure.doctor)
app.command()(configure.schemas)
app.command()(runs.summary)
app.command()(generate.deploy)
app.command("tts-serve")(generate.tts_serve)
app.command()(runs.plot)
app.command()(runs.push)
app.command()(runs.audit)
app.command()(runs.augment)
app.command()(runs.preference)
app.command("fit-timing")(configure.fit_timing)
app.command("export")(export.export_cmd)
app.command()(export.inspect)
app.command("smoke-train")(export.smoke_train)
app.command("export-request", hidden=True)(export.export_request)

__all__ = ["app"]

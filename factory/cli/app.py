"""The typer app, its console, and what every command shares: `--verbose` (where the libraries'
logs go, `factory.cli.logs`), the config options and their loading, the run argument and
`--storage-options`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from factory.cli import logs
from factory.config import ConfigError, RunConfig, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Synthesise two-channel conversational speech.")
console = Console()


@app.callback()
def _every_command(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="the libraries' own logs (llama.cpp, onnxruntime, Prefect...) on the console, "
            f"instead of the log file (${logs.LOG_FILE_ENV}, default ~/.cache/duplex-factory/logs/duplex-factory.log)",
        ),
    ] = False,
) -> None:
    logs.setup(verbose)


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override, e.g. --set run.seed=7")]
# Every command that reads a run takes RUN as a folder or an fsspec URL, and this one option for
# the URL's filesystem (credentials stay in the environment, e.g. AWS_ACCESS_KEY_ID).
RunArg = Annotated[str, typer.Argument(help="run folder or fsspec URL (s3://bucket/runs/<id>)")]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-options",
        envvar="DUPLEX_STORAGE_OPTIONS",
        help='fsspec options of a run URL as JSON, e.g. \'{"endpoint_url": "http://minio:9000"}\' (no secrets)',
    ),
]


def parse_storage(value: str | None) -> dict | None:
    """`--storage-options` as a dict (exit 2 when it is not a JSON object)."""
    if not value:
        return None
    try:
        options = json.loads(value)
    except ValueError as exc:
        console.print(f"[red]--storage-options is not JSON: {exc}[/red]")
        raise typer.Exit(2) from None
    if not isinstance(options, dict):
        console.print("[red]--storage-options must be a JSON object[/red]")
        raise typer.Exit(2)
    return options


def load(config: Path | None, overrides: list[str] | None, **shortcuts: object) -> RunConfig:
    """The run config from --config and --set, plus `run.<key>` shortcut options (exit 2 when invalid)."""
    extra = [f"run.{k}={v}" for k, v in shortcuts.items() if v is not None]
    try:
        return load_config(config, [*(overrides or []), *extra])
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None

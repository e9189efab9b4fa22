"""Commands on what a run is made from: `config` (the resolved run config), `doctor` (what this
machine can do for it), `schemas` (the JSON Schemas from the models, and docs/configuration.md
from the config model) and `fit-timing` (the turn-taking model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from factory import config_doc
from factory.atomic import atomic_write_text
from factory.cli import present
from factory.cli.app import ConfigOpt, SetOpt, console, load
from factory.schemas import write_all


def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved run config (defaults <- file <- overrides) as YAML."""
    console.print(load(config, set_).to_yaml(), highlight=False)


def doctor(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """What this machine can do for this config: environments, voices, languages, LLM, TTS
    service, GPU, Prefect API, destination; exit 3 when the config cannot run (2: invalid config)."""
    cfg = load(config, set_)
    # lazy: the checks build backends (onnxruntime, llama.cpp, the voices): only when this runs.
    from factory.doctor import diagnose
    from factory.runtime import Runtime

    diagnosis = diagnose(Runtime(cfg))
    present.wide(console, 140).print(present.doctor_table(cfg.run_id, diagnosis))
    if diagnosis.failed:
        console.print(f"[red]{len(diagnosis.failed)} check(s) this config needs failed: it cannot run[/red]")
    raise typer.Exit(diagnosis.exit_code)


def schemas(
    out: Annotated[Path, typer.Option(help="folder to write")] = Path("schemas"),
    docs: Annotated[Path, typer.Option(help="folder of configuration.md")] = Path("docs"),
) -> None:
    """Regenerate the JSON Schemas and docs/configuration.md from the models."""
    for path in [*write_all(out), config_doc.write(docs / "configuration.md")]:
        console.print(str(path))


def fit_timing(
    source: Annotated[str, typer.Argument(help="two-speaker .rttm, lhotse .jsonl(.gz) manifest, or 'switchboard'")],
    out: Annotated[Path, typer.Option(help="JSON of the fitted model, for timing.model_file")],
) -> None:
    """Fit the turn-taking model (floor-transfer offsets) to a corpus or the published numbers."""
    # lazy: the timing model's fit pulls in scipy (seconds): imported when this runs.
    from factory.timeline.timing import SWITCHBOARD, TimingFitError, TimingModel

    try:
        model = TimingModel.fit(SWITCHBOARD if source.lower() == "switchboard" else Path(source))
    except TimingFitError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    atomic_write_text(out, model.model_dump_json(indent=2))
    q = ", ".join(f"p{round(k * 100)} {v:+.3f}" for k, v in model.quantiles().items())
    console.print(f"{out}: overlap share {model.overlap_probability:.3f}; FTO {q} s")

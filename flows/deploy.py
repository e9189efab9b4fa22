"""Scheduled runs: a Prefect deployment of the generate flow with a run config baked in.

    .venv/bin/python -m flows.deploy my-config.yaml --cron "0 2 * * *" --name nightly

serves the deployment from this process (a Prefect server must be running: `prefect server
start`, and PREFECT_API_URL pointing at it). Each scheduled run gets its own folder and seed,
`<run id>-<YYYYMMDD>` and seed + YYYYMMDD of its scheduled date, so nights differ; re-running a
failed night (same scheduled date) resumes at its first unfinished shard.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from factory.config import load_config
from flows.generate import generate


def build_deployment(config: Path | None, name: str, cron: str, overrides: list[str] | None = None) -> RunnerDeployment:
    cfg = load_config(config, overrides)
    return generate.to_deployment(
        name=name,
        cron=cron,
        parameters={"config": cfg.model_dump(mode="json"), "per_day": True},
        tags=["duplex-factory"],
        description=f"duplex-factory generate: {cfg.run.n_samples} dialogues, seed {cfg.run.seed}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, nargs="?")
    parser.add_argument("--cron", default="0 2 * * *")
    parser.add_argument("--name", default="nightly")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    serve(build_deployment(args.config, args.name, args.cron, args.overrides))


if __name__ == "__main__":
    main()

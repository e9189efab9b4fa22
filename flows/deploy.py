"""Scheduled runs: the generate flow as a Prefect deployment on a work pool, with a run config
baked in (`duplex-factory deploy`; the same deployment is declared in `prefect.yaml` for
`prefect deploy`).

A worker of the pool (`prefect worker start --pool duplex-factory`) runs each scheduled night
from this checkout. Each night gets its own folder and seed, `<run id>-<YYYYMMDD>` and a seed
hashed from (run seed, date) (`flows.generate.dated`), so nights differ; re-running a failed
night (same scheduled date) resumes at its first unfinished shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import Flow, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron

from factory.config import load_config

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/generate.py:generate"


def build_deployment(
    config: Path | None,
    name: str,
    cron: str,
    overrides: list[str] | None = None,
    timezone: str = "UTC",
) -> RunnerDeployment:
    """The deployment: the flow loaded from this checkout (a process worker runs it from here)."""
    cfg = load_config(config, overrides)
    # Called outside an event loop, prefect's sync-or-async methods return their result (not a coroutine).
    flow = cast(Flow, Flow.from_source(source=str(ROOT), entrypoint=ENTRYPOINT))
    return cast(
        RunnerDeployment,
        flow.to_deployment(
            name=name,
            schedules=[Cron(cron, timezone=timezone)],
            parameters={"config": cfg.model_dump(mode="json"), "per_day": True},
            tags=["duplex-factory"],
            description=f"duplex-factory generate: {cfg.run.n_samples} dialogues, seed {cfg.run.seed}",
        ),
    )


def ensure_pool(pool: str) -> None:
    """Create the process work pool if the server does not have it yet."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(deployment: RunnerDeployment, pool: str) -> UUID:
    """Register the deployment (and its schedule) with the server at PREFECT_API_URL."""
    ensure_pool(pool)
    return cast(UUID, deployment.apply(work_pool_name=pool))  # outside an event loop: the id itself

"""A schedule can be built and checked without a Prefect server."""

from flows.deploy import build_deployment
from flows.generate import dated


def test_nightly_deployment_carries_config_and_schedule() -> None:
    deployment = build_deployment(None, "nightly", "0 2 * * *", ["run.n_samples=400", "run.seed=9"])
    assert deployment.name == "nightly"
    assert deployment.parameters["config"]["run"]["n_samples"] == 400
    schedule = deployment.schedules[0].schedule
    assert schedule.cron == "0 2 * * *"


def test_scheduled_runs_get_their_own_folder_and_seed() -> None:
    deployment = build_deployment(None, "nightly", "0 2 * * *", ["run.seed=9"])
    assert deployment.parameters["per_day"] is True
    night = dated(deployment.parameters["config"], "20261122")
    assert night["run"]["run_id"] == "demo-seed9-20261122" and night["run"]["seed"] == 9 + 20261122
    assert dated(deployment.parameters["config"], "20261122") == night  # a re-run resumes the same folder

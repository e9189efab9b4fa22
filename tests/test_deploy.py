"""A schedule can be built and checked without a Prefect server (tests/test_prefect_server.py
runs the deployment on a real one)."""

from pathlib import Path

import yaml

from factory.config import RunConfig
from factory.seeding import derive_seed
from flows.deploy import build_deployment
from flows.generate import dated

ROOT = Path(__file__).resolve().parents[1]


def test_nightly_deployment_carries_config_and_schedule() -> None:
    deployment = build_deployment(None, "nightly", "0 2 * * *", ["run.n_samples=400", "run.seed=9"])
    assert deployment.name == "nightly"
    assert deployment.parameters["config"]["run"]["n_samples"] == 400
    schedule = deployment.schedules[0].schedule
    assert schedule.cron == "0 2 * * *" and schedule.timezone == "UTC"
    assert deployment.storage.to_pull_step() == {
        "prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}
    }


def test_scheduled_runs_get_their_own_folder_and_hashed_seed() -> None:
    deployment = build_deployment(None, "nightly", "0 2 * * *", ["run.seed=9"])
    assert deployment.parameters["per_day"] is True
    night = dated(deployment.parameters["config"], "20261122")
    assert night["run"]["run_id"] == "demo-seed9-20261122"
    assert night["run"]["seed"] == derive_seed(9, "20261122", "schedule")
    assert dated(deployment.parameters["config"], "20261122") == night  # a re-run resumes the same folder
    # seed + YYYYMMDD made seed s on day d+1 collide with seed s+1 on day d; hashing does not
    ten = build_deployment(None, "nightly", "0 2 * * *", ["run.seed=10"]).parameters["config"]
    assert dated(ten, "20261122")["run"]["seed"] != dated(deployment.parameters["config"], "20261123")["run"]["seed"]


def test_prefect_yaml_declares_the_nightly_deployment() -> None:
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (nightly,) = project["deployments"]
    assert nightly["entrypoint"] == "flows/generate.py:generate" and nightly["work_pool"]["name"] == "duplex-factory"
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    assert nightly["parameters"]["per_day"] is True
    RunConfig.model_validate(nightly["parameters"]["config"])  # a config the flow accepts
    module, func = nightly["entrypoint"].split(":")
    assert func in (ROOT / module).read_text()

"""From `deploy` to a Completed run: real server, real worker, code from storage."""

import os

from conftest import git
from deploy_helpers import run_flow_script

import local_prefect
from toolkit.deployer.naming import branch_slug


def test_worker_runs_the_deployed_copy_to_completion(
    checkout, prefect_api_url, tmp_path, monkeypatch
):
    """A process worker pulls the stored copy, not the checkout, and the run completes."""
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "process")
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "output"))  # the worker's
    git(checkout, "switch", "-q", "-c", "feature/e2e")
    deployed = run_flow_script(checkout, "deploy")
    assert deployed.returncode == 0, deployed.stderr
    # The summary's first line: "Deployed <flow>/<deployment> as dev (<branch>), ..."
    first_line = deployed.stdout.splitlines()[0]
    deployment_name = first_line.removeprefix("Deployed ").split(" as ")[0]
    slug = branch_slug("feature/e2e")
    assert deployment_name == f"fixture-flow/demo | {slug} | fixture_flow"
    # What runs must be the stored copy: break the checkout after deploying.
    (checkout / "flows" / "fixture_flow.py").write_text("raise SystemExit(3)\n")

    log_path = tmp_path / "worker.log"
    flow_run = local_prefect.run_deployment_once(
        deployment_name,
        os.environ["FLOWS_WORK_POOL"],
        prefect_api_url,
        log_path,
    )

    log = log_path.read_text(encoding="utf-8")
    assert flow_run.state.is_completed(), log
    assert "Pulled code using block" in log
    delivered = sorted(path.name for path in (tmp_path / "output" / "dev").iterdir())
    assert delivered == [
        "customer_totals.csv",
        "orders_2024-08-01.csv",
    ]

"""From `deploy` to a Completed run in a container of the runtime image, through
prefect-docker's worker (`prefect worker start --type docker`).

The worker's API is on 127.0.0.1, so on Linux it gives its containers the host's
network (`network_mode: host`), which is also the only one the tests' daemon has.
Each run writes its files to a folder of the test mounted at /flows-output (the
run's own job variables), so the test reads them whole, owned by the image's user.
"""

import os
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from conftest import git
from deploy_helpers import read_deployment, run_flow_script
from docker_support import (  # pylint: disable=unused-import
    docker_daemon,
    image_name,
    run_in_containers,
    runtime_image,
    worker_log_lines,
    REGISTRY,
)
from fixture_data import fixture_rows
from fixture_flow import shape_orders, summarize_customers
import test_scale

# pylint: disable=redefined-outer-name
pytestmark = pytest.mark.docker
OUTPUT_IN_CONTAINER = "/flows-output"
RUNS_ON_TWO_WORKERS = 8


@pytest.fixture
def docker_deploy(checkout, runtime_image, prefect_api_url, monkeypatch):
    """Deploy the fixture flow from a branch to the test's Docker pool; a function
    of (branch, extra deploy arguments) giving the deployment's name."""
    del runtime_image, prefect_api_url  # the image the deployment names, the API
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "docker")
    monkeypatch.setenv("FLOWS_DOCKER_REGISTRY", REGISTRY)

    def deploy(branch: str, *arguments: str) -> str:
        git(checkout, "switch", "-q", "-c", branch)
        deployed = run_flow_script(checkout, "deploy", *arguments)
        assert deployed.returncode == 0, deployed.stderr
        return deployed.stdout.splitlines()[0].split(" as ")[0][len("Deployed ") :]

    return deploy


def output_folder(tmp_path: Path) -> Path:
    """A folder the image's user may write into, mounted into each run's container."""
    folder = tmp_path / "output"
    folder.mkdir()
    folder.chmod(0o777)  # the image's user is not this machine's
    return folder


def output_variables(output: Path, storage_volumes=()) -> dict:
    """A run's own job variables: where it writes, next to the deployment's mounts
    (a run's `volumes` replace the deployment's)."""
    return {
        "env": {"FLOWS_OUTPUT_DIR": OUTPUT_IN_CONTAINER},
        "volumes": [*storage_volumes, f"{output}:{OUTPUT_IN_CONTAINER}"],
    }


def assert_files_whole(folder: Path) -> None:
    """The run's two files, with every row the flow computes, owned by a non-root
    user (the image's)."""
    rows = pd.DataFrame(fixture_rows())
    expected = {
        "customer_totals.csv": summarize_customers(
            rows[["order_id", "customer", "amount_cents"]]
        ),
        "orders_2024-08-01.csv": shape_orders(rows[rows["placed_on"] == "2024-08-01"]),
    }
    assert sorted(path.name for path in folder.iterdir()) == sorted(expected)
    for name, frame in expected.items():
        assert_frame_equal(
            pd.read_csv(folder / name), frame.reset_index(drop=True), check_dtype=False
        )
        assert (folder / name).stat().st_uid not in (0, os.getuid())


def assert_ran_in_image(run, label: str) -> None:
    """Completed, in a container of the image `label`, as its non-root user, on the
    host's network."""
    assert run.flow_run.state.is_completed(), run.logs[-3000:]
    assert run.inspected["Config"]["Image"] == image_name(label)
    assert run.inspected["Config"]["User"] not in ("", "0", "root")
    assert run.inspected["HostConfig"]["NetworkMode"] == "host"


def test_a_docker_worker_runs_the_copy_from_a_read_only_folder(
    docker_deploy, prefect_api_url, tmp_path
):
    """The folder storage root is mounted read-only (the deployment's job variables);
    the run completes in the image and its files are whole."""
    name = docker_deploy("feature/docker-folder")
    root = os.environ["FLOWS_STORAGE_ROOT"]
    volumes = read_deployment(name.split("/", 1)[1]).job_variables["volumes"]
    assert volumes == [f"{root}:{root}:ro"]
    log = tmp_path / "worker" / "worker.log"
    output = output_folder(tmp_path)

    (run,) = run_in_containers(
        name,
        os.environ["FLOWS_WORK_POOL"],
        prefect_api_url,
        {"docker-worker": log},
        job_variables=output_variables(output, volumes),
    )

    assert_ran_in_image(run, "main")
    mounts = {mount["Destination"]: mount["RW"] for mount in run.inspected["Mounts"]}
    assert mounts == {root: False, OUTPUT_IN_CONTAINER: True}
    assert "Pulled code using block" in run.logs
    assert_files_whole(output / "dev")
    print("\n".join(worker_log_lines(log, run.flow_run)))


def test_a_docker_worker_pulls_the_copy_from_s3_and_never_shows_the_key(
    docker_deploy, s3_bucket, prefect_api_url, tmp_path
):
    """The container pulls from the bucket with the key its block holds; neither the
    container's environment, its output nor the worker's log shows the key."""
    name = docker_deploy("feature/docker-s3")
    log = tmp_path / "worker" / "worker.log"
    output = output_folder(tmp_path)

    (run,) = run_in_containers(
        name,
        os.environ["FLOWS_WORK_POOL"],
        prefect_api_url,
        {"docker-worker": log},
        job_variables=output_variables(output),
    )

    assert_ran_in_image(run, "main")
    assert f"Pulled code from '{s3_bucket.root}/dev/" in run.logs
    assert_files_whole(output / "dev")
    environment = "\n".join(run.inspected["Config"]["Env"])
    worker_log = log.read_text(encoding="utf-8")
    for text in (str(run.inspected), environment, run.logs, worker_log):
        assert s3_bucket.secret_access_key not in text
        assert s3_bucket.access_key_id not in text
    print("\n".join(worker_log_lines(log, run.flow_run)))


def test_a_docker_label_runs_in_the_image_of_that_tag(
    docker_deploy, prefect_api_url, tmp_path
):
    """`deploy --docker-label b1` registers the image tagged b1, and the run's
    container (the API's infrastructure pid, the worker's log) runs it."""
    name = docker_deploy("feature/docker-b1", "--docker-label", "b1")
    deployment = read_deployment(name.split("/", 1)[1])
    assert deployment.job_variables["image"] == image_name("b1")
    log = tmp_path / "worker" / "worker.log"
    output = output_folder(tmp_path)

    (run,) = run_in_containers(
        name,
        os.environ["FLOWS_WORK_POOL"],
        prefect_api_url,
        {"docker-worker": log},
        job_variables=output_variables(output, deployment.job_variables["volumes"]),
    )

    assert_ran_in_image(run, "b1")
    assert run.flow_run.infrastructure_pid.endswith(f":{run.inspected['Id']}")
    lines = worker_log_lines(log, run.flow_run)
    assert f"Creating Docker container '{run.inspected['Name'].lstrip('/')}'..." in (
        "\n".join(lines)
    )
    print(f"container {run.inspected['Name']} image {run.inspected['Config']['Image']}")
    print("\n".join(lines))


def test_two_docker_workers_share_the_runs_of_one_pool(
    docker_deploy, prefect_api_url, tmp_path
):
    """8 runs at once on two Docker workers (limit 1 each): both take some, every
    run completes in its own container."""
    name = docker_deploy("feature/docker-scale")
    deployment = read_deployment(name.split("/", 1)[1])
    logs = {
        worker: tmp_path / worker / "worker.log"
        for worker in ("docker-worker-a", "docker-worker-b")
    }

    runs = run_in_containers(
        name,
        os.environ["FLOWS_WORK_POOL"],
        prefect_api_url,
        logs,
        runs=RUNS_ON_TWO_WORKERS,
        job_variables=output_variables(
            output_folder(tmp_path), deployment.job_variables["volumes"]
        ),
    )

    for run in runs:
        assert_ran_in_image(run, "main")
    by_worker = test_scale.worker_by_log(logs)
    assert sorted(by_worker) == sorted(str(run.flow_run.id) for run in runs)
    counts = Counter(by_worker.values())
    print(f"runs per worker: {dict(sorted(counts.items()))}")
    assert set(counts) == set(logs) and sum(counts.values()) == RUNS_ON_TWO_WORKERS

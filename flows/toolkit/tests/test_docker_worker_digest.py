"""main's deployment runs the image digest that was pushed, through prefect-docker's
worker: the runtime image pushed to a real registry on 127.0.0.1, main deployed on
its digest, a run; then the tag `main` moved to another image, and a second run still
starts the digest main was deployed with."""

import json
import os
import subprocess
from dataclasses import dataclass

import pytest

from conftest import REPO_NAME
from deploy_helpers import read_deployment, run_flow_script
from docker_images import docker
from docker_support import (  # pylint: disable=unused-import
    docker_daemon,
    image_name,
    run_in_containers,
    runtime_image,
    worker_log_lines,
)
from test_docker_worker import output_folder, output_variables

# pylint: disable=redefined-outer-name
pytestmark = [pytest.mark.docker, pytest.mark.registry]


def push(name: str) -> str:
    """`docker push name`; the digest the registry gave it."""
    subprocess.run(
        ["docker", "push", "--quiet", name],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    inspected = json.loads(docker("image", "inspect", name))[0]
    repository = name.rsplit(":", 1)[0]
    (digest,) = [
        found.split("@", 1)[1]
        for found in inspected["RepoDigests"]
        if found.startswith(f"{repository}@")
    ]
    return digest


def move_tag(name: str) -> str:
    """Point the tag `name` at a new image (the old one plus a label); its id."""
    built = subprocess.run(
        [
            "docker",
            "build",
            "--quiet",
            "--label",
            "flows.test=moved",
            "--tag",
            name,
            "-",
        ],
        input=f"FROM {name}\n",
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return built.stdout.strip()


@dataclass(frozen=True)
class MainOnDigest:
    """main deployed on the pushed image's digest."""

    tagged: str
    pinned: str
    image_id: str
    deployment: str
    job_variables: dict


@pytest.fixture
def registry_settings(image_registry, monkeypatch):
    """A Docker pool whose images are in the test registry; main needs the digest."""
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "docker")
    monkeypatch.setenv("FLOWS_DOCKER_REGISTRY", image_registry.host)
    monkeypatch.setenv("FLOWS_IMAGE_DIGEST", "require")


@pytest.fixture
def main_on_digest(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    runtime_image,
    image_registry,
    registry_settings,
    checkout,
    prefect_api_url,
    tmp_path,
):
    """Push the runtime image as the tag main, deploy main (which must find the
    digest), read what the deployment recorded."""
    del registry_settings, prefect_api_url  # the deploy's settings and API
    tagged = f"{image_registry.host}/{REPO_NAME.lower()}:main"
    docker("tag", runtime_image.name, tagged)
    pinned = f"{tagged.rsplit(':', 1)[0]}@{push(tagged)}"
    planned = run_flow_script(checkout, "deploy", "--dry-run")
    assert json.loads(planned.stdout)["image"] == pinned, planned.stderr
    deployed = run_flow_script(checkout, "deploy")
    assert deployed.returncode == 0, deployed.stderr
    name = deployed.stdout.splitlines()[0].split(" as ")[0][len("Deployed ") :]
    deployment = read_deployment(name.split("/", 1)[1])
    assert deployment.job_variables["image"] == pinned
    return MainOnDigest(
        tagged=tagged,
        pinned=pinned,
        image_id=json.loads(docker("image", "inspect", pinned))[0]["Id"],
        deployment=name,
        job_variables=output_variables(
            output_folder(tmp_path), deployment.job_variables["volumes"]
        ),
    )


def test_main_runs_the_pushed_digest_after_its_tag_moves(
    main_on_digest, prefect_api_url, tmp_path
):
    """A run of main starts the pushed digest; the tag moves to another image; the
    next run of the same deployment starts the same image, not the tag's new one."""
    main = main_on_digest
    image_ids = []
    for moment in ("deployed", "tag moved"):
        if moment == "tag moved":
            moved_id = move_tag(main.tagged)
            push(main.tagged)
            assert moved_id != main.image_id
        log = tmp_path / moment.replace(" ", "-") / "worker.log"
        # env=dev: the fixture flow's own sample database, as on a dev branch.
        (run,) = run_in_containers(
            main.deployment,
            os.environ["FLOWS_WORK_POOL"],
            prefect_api_url,
            {"docker-worker": log},
            job_variables=main.job_variables,
            parameters={"env": "dev"},
        )
        assert run.flow_run.state.is_completed(), run.logs[-3000:]
        assert run.inspected["Config"]["Image"] == main.pinned
        image_ids.append(run.inspected["Image"])
        print(f"{moment}: container image {run.inspected['Config']['Image']}")
        print("\n".join(worker_log_lines(log, run.flow_run)))
    assert image_ids == [main.image_id, main.image_id]

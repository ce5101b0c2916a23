"""main's deployment runs the image digest that was pushed, through prefect-docker's
worker: the runtime image pushed to a real registry on 127.0.0.1, main deployed on
its digest, a run; then the tag `main` moved to another image, and a second run still
starts the digest main was deployed with."""

import json
import os
import subprocess

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


def test_main_runs_the_pushed_digest_after_its_tag_moves(
    runtime_image, image_registry, checkout, prefect_api_url, monkeypatch, tmp_path
):
    """Push, deploy main on the digest, run it; move the tag; the next run of the
    same deployment starts the same image, not the tag's new one."""
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "docker")
    monkeypatch.setenv("FLOWS_DOCKER_REGISTRY", image_registry.host)
    monkeypatch.setenv("FLOWS_IMAGE_DIGEST", "require")
    tagged = f"{image_registry.host}/{REPO_NAME.lower()}:main"
    docker("tag", runtime_image.name, tagged)
    digest = push(tagged)
    pinned = f"{tagged.rsplit(':', 1)[0]}@{digest}"
    tested_id = json.loads(docker("image", "inspect", pinned))[0]["Id"]

    planned = run_flow_script(checkout, "deploy", "--dry-run")
    assert json.loads(planned.stdout)["image"] == pinned, planned.stderr
    deployed = run_flow_script(checkout, "deploy")
    assert deployed.returncode == 0, deployed.stderr
    name = deployed.stdout.splitlines()[0].split(" as ")[0][len("Deployed ") :]
    deployment = read_deployment(name.split("/", 1)[1])
    assert deployment.job_variables["image"] == pinned
    variables = output_variables(
        output_folder(tmp_path), deployment.job_variables["volumes"]
    )
    pool = os.environ["FLOWS_WORK_POOL"]

    runs = {}
    for moment in ("deployed", "tag moved"):
        if moment == "tag moved":
            moved_id = move_tag(tagged)
            push(tagged)
            assert moved_id != tested_id
        log = tmp_path / moment.replace(" ", "-") / "worker.log"
        # env=dev: the fixture flow's own sample database, as on a dev branch.
        (run,) = run_in_containers(
            name,
            pool,
            prefect_api_url,
            {"docker-worker": log},
            job_variables=variables,
            parameters={"env": "dev"},
        )
        runs[moment] = run
        assert run.flow_run.state.is_completed(), run.logs[-3000:]
        assert run.inspected["Config"]["Image"] == pinned
        assert run.inspected["Image"] == tested_id
        print(f"{moment}: container image {run.inspected['Config']['Image']}")
        print("\n".join(worker_log_lines(log, run.flow_run)))
    assert runs["deployed"].inspected["Image"] == runs["tag moved"].inspected["Image"]

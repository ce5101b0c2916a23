"""Fixtures and helpers of the tests that run the runtime image (marker `docker`).

The Docker daemon is the machine's, or one the session starts (no bridge, no
iptables) and stops; the image is built from image/ with its own Dockerfile and
tagged as the test deployments name it. Each flow run's container is read
(`docker inspect`, `docker logs`) and removed once its run is final.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

import docker_images
import local_prefect
from conftest import REPO_NAME, serve, service_unavailable
from services import ServiceUnavailable

# Deployments of the tests name their image {registry}/{repository}:{label}: a local
# name, never pushed, that the built image is tagged with.
REGISTRY = "flows-template-test"
IMAGE_LABELS = ("main", "b1")
RUNS_TIMEOUT_SECONDS = 300


def image_name(label: str) -> str:
    """The image a test deployment of `label` runs."""
    return f"{REGISTRY}/{REPO_NAME}:{label}"


@pytest.fixture(scope="session")
def docker_daemon():
    """A Docker daemon for the session: the running one, or one started and stopped."""
    yield from serve(docker_images.running_dockerd)


@pytest.fixture(scope="session")
def runtime_image(docker_daemon):
    """The image built from image/, tagged as `main` and `b1` of the test repository;
    how long the build took and how big it is are printed."""
    del docker_daemon
    try:
        built = docker_images.build_runtime_image(
            tuple(image_name(label) for label in IMAGE_LABELS)
        )
    except ServiceUnavailable as error:
        service_unavailable(str(error))
    print(built.describe())
    return built


@dataclass
class ContainerRun:
    """A flow run's final state, and its container as Docker saw it."""

    flow_run: object
    inspected: dict
    logs: str


async def _create_runs_and_wait(
    deployment_name, runs: int, job_variables: dict, parameters: dict
):
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name)
        created = [
            await client.create_flow_run_from_deployment(
                deployment.id, job_variables=job_variables, parameters=parameters
            )
            for _ in range(runs)
        ]
        return await local_prefect.wait_for_final_states(
            client, created, RUNS_TIMEOUT_SECONDS
        )


def read_and_remove_container(flow_run) -> ContainerRun:
    """The run's container (its id ends the API's infrastructure pid), inspected and
    its output read, then removed."""
    if not flow_run.infrastructure_pid:
        return ContainerRun(flow_run, {}, "")
    container = flow_run.infrastructure_pid.rsplit(":", 1)[1]
    try:
        (inspected,) = json.loads(docker_images.docker("inspect", container))
        logs = subprocess.run(
            ["docker", "logs", container],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return ContainerRun(flow_run, inspected, logs.stdout + logs.stderr)
    finally:
        subprocess.run(
            ["docker", "rm", "--force", container],
            capture_output=True,
            timeout=60,
            check=False,
        )


def run_in_containers(  # pylint: disable=too-many-arguments
    deployment_name: str,
    pool: str,
    url: str,
    logs: dict[str, Path],
    *,
    runs: int = 1,
    job_variables: dict | None = None,
    parameters: dict | None = None,
) -> list[ContainerRun]:
    """Start a Docker worker per log (limit 1 each when there are several), create
    `runs` runs of the deployment at once (with the runs' own job variables and
    parameters), wait until each is final, stop the workers; each run with its
    container, read and removed."""
    limit = 1 if len(logs) > 1 else None
    with ExitStack() as workers:
        for name, log_path in logs.items():
            workers.enter_context(
                local_prefect.running_worker(
                    pool, url, log_path, name=name, limit=limit, worker_type="docker"
                )
            )
        flow_runs = asyncio.run(
            _create_runs_and_wait(
                deployment_name, runs, job_variables or {}, parameters or {}
            )
        )
    return [read_and_remove_container(flow_run) for flow_run in flow_runs]


def worker_log_lines(log_path: Path, flow_run) -> list[str]:
    """The worker's lines about one run: its submission and its container."""
    container = flow_run.name
    text = log_path.read_text(encoding="utf-8")
    return [
        line.strip()
        for line in text.splitlines()
        if str(flow_run.id) in line or f"'{container}'" in line
    ]

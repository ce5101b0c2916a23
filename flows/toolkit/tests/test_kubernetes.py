"""A Kubernetes work pool without a cluster: the pool a deploy makes, the deployment's
job variables, and the job manifest a worker would submit, rendered by
prefect-kubernetes itself from what the API holds.
"""

import asyncio
import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_KEY, temporary_settings

try:
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration
except ModuleNotFoundError:  # the opt-in extra, absent from `make venv` alone
    KubernetesWorkerJobConfiguration = None  # pylint: disable=invalid-name

import locks
from conftest import REPO_NAME, service_unavailable
from deploy_helpers import run_command_line
from test_scale import SLOW_FLOW_FILE, SLOW_FLOW_SOURCE, deploy_slow_flow

from toolkit.deployer import prefect_api
from toolkit.errors import UserError
from toolkit.deployer.kubernetes import has_resource_requests
from toolkit.deployer.storage import VERIFY_STEP

# pylint: disable=redefined-outer-name
pytestmark = pytest.mark.kubernetes
NAMESPACE = "flows-nightly"
IMAGE = f"localhost:5000/{REPO_NAME}:main"
# Stands in for a Prefect Cloud key: the rendered manifest carries the process's
# Prefect settings, this one included.
API_KEY = "pnu_" + "k8stestkey0123456789abcdefghijklmnop"
# Env entries whose value is never printed.
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD", re.IGNORECASE)
REDACTED = "<redacted>"


@pytest.fixture(autouse=True)
def kubernetes_extra():
    """The extra installed (`make venv KUBERNETES=1`): else each test skips, or fails
    under REQUIRE_SERVICES=1, and the module still collects for the other markers."""
    if KubernetesWorkerJobConfiguration is None:
        service_unavailable(
            "prefect-kubernetes is not installed: `make venv KUBERNETES=1` installs "
            "requirements-kubernetes.lock"
        )


# Three tasks at once and a result read back: what failed on the extra's first
# resolution (prefect 2.20.25 with anyio 4.16: GatherTaskGroup is abstract).
CONCURRENT_FLOW = textwrap.dedent(
    """
    import asyncio, importlib.metadata
    import anyio, prefect
    from prefect import flow, task

    @task
    def square(number):
        return number * number

    @flow
    def squares():
        futures = [square.submit(number) for number in range(3)]
        return sorted(future.result() for future in futures)

    @flow
    async def gathered():
        async with anyio.create_task_group() as group:
            for number in range(3):
                group.start_soon(anyio.sleep, 0.01 * number)
        return "gathered"

    anyio_version = importlib.metadata.version("anyio")
    print(prefect.__version__, anyio_version, *squares(), asyncio.run(gathered()))
    """
)


def test_the_extra_s_environment_runs_flows_with_concurrent_tasks(prefect_api_url):
    """A flow whose tasks run concurrently completes in the Kubernetes lock's
    environment, against a real Prefect server."""
    del prefect_api_url  # the flow's API, in its environment
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENT_FLOW],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    prefect_version, anyio_version, *answers = result.stdout.split()
    print(f"prefect {prefect_version}, anyio {anyio_version}: {answers}")
    assert answers == ["0", "1", "4", "gathered"]


def test_the_extra_runs_the_prefect_release_of_the_image_lock():
    """Installed with the extra, Prefect is the very release image/requirements.lock
    holds, and so is every package the two share: the extra was resolved with the
    runtime, not layered on top of it."""
    runtime = locks.pins_for(locks.REPOSITORY_DIR / locks.RUNTIME.path)
    assert importlib.metadata.version("prefect") == runtime["prefect"]
    assert importlib.metadata.version("anyio") == runtime["anyio"]
    kubernetes = locks.pins_for(locks.REPOSITORY_DIR / locks.KUBERNETES.path)
    assert importlib.metadata.version("prefect-kubernetes") == (
        kubernetes["prefect-kubernetes"]
    )


def redacted(manifest: dict) -> dict:
    """A copy of the manifest whose secret-looking env values read <redacted>."""
    copy = json.loads(json.dumps(manifest))
    for container in copy["spec"]["template"]["spec"]["containers"]:
        for item in container.get("env", []):
            if SECRET_NAME.search(item["name"]):
                item["value"] = REDACTED
    return copy


async def render_job_manifest(deployment_name: str, values=None) -> dict:
    """The manifest a Kubernetes worker would submit for a new run of the deployment,
    built as the worker builds it: the pool's template, the deployment's job
    variables (or `values`), then the run's own fields."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name)
        pool = await client.read_work_pool(deployment.work_pool_name)
        flow = await client.read_flow(deployment.flow_id)
        flow_run = await client.create_flow_run_from_deployment(deployment.id)
        try:
            configuration = (
                await KubernetesWorkerJobConfiguration.from_template_and_values(
                    pool.base_job_template,
                    deployment.job_variables if values is None else values,
                    client=client,
                )
            )
            configuration.prepare_for_flow_run(flow_run, deployment, flow)
        finally:  # no worker serves the pool: the run would wait forever
            await client.delete_flow_run(flow_run.id)
        return {"flow_run_id": str(flow_run.id), **configuration.job_manifest}


def container_of(manifest: dict) -> dict:
    """The flow run's container."""
    return manifest["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.usefixtures("s3_bucket")
def test_deployment_on_kubernetes_renders_image_namespace_requests_command(
    checkout, prefect_api_url, monkeypatch, capsys
):
    """The registered job variables reach the manifest; the API key is redacted."""
    del prefect_api_url  # the deploy and the rendering use the session's server
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "kubernetes")
    monkeypatch.setenv("FLOWS_KUBERNETES_NAMESPACE", NAMESPACE)
    deployment_name = deploy_slow_flow(checkout, "k8s", capsys)

    deployment = asyncio.run(read_deployment(deployment_name))
    assert deployment.job_variables == {
        "image": IMAGE,
        "namespace": NAMESPACE,
        "cpu_request": "500m",
        "memory_request": "1Gi",
    }
    fetch, verify = deployment.pull_steps
    assert list(fetch) == ["prefect.deployments.steps.pull_from_remote_storage"]
    assert verify == VERIFY_STEP

    with temporary_settings(updates={PREFECT_API_KEY: API_KEY}):
        manifest = asyncio.run(render_job_manifest(deployment_name))
    flow_run_id = manifest.pop("flow_run_id")
    container = container_of(manifest)
    assert container["image"] == IMAGE
    assert manifest["metadata"]["namespace"] == NAMESPACE
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}}
    assert container["args"] == ["prefect", "flow-run", "execute"]  # in the image
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["PREFECT__FLOW_RUN_ID"] == flow_run_id
    assert env["PREFECT_API_KEY"] == API_KEY  # what the worker would submit

    shown = json.dumps(redacted(manifest), indent=2)
    assert API_KEY not in shown
    assert {"name": "PREFECT_API_KEY", "value": REDACTED} in container_of(
        json.loads(shown)
    )["env"]
    print(f"\nrendered job manifest (redacted):\n{shown}")


async def read_deployment(deployment_name: str):
    """The deployment `flow/name` from the API."""
    async with get_client() as client:
        return await client.read_deployment_by_name(deployment_name)


@pytest.mark.usefixtures("s3_bucket")
def test_unset_requests_drop_out_of_the_manifest(checkout, monkeypatch, capsys):
    """The pool's template names the request variables; one left unset is not
    rendered at all (no `cpu: None`, no placeholder left)."""
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "kubernetes")
    deployment_name = deploy_slow_flow(checkout, "k8s-unset", capsys)
    deployment = asyncio.run(read_deployment(deployment_name))
    assert deployment.job_variables["namespace"] == "default"
    variables = {
        name: value
        for name, value in deployment.job_variables.items()
        if name != "cpu_request"
    }
    only_memory = asyncio.run(render_job_manifest(deployment_name, variables))
    del variables["memory_request"]
    neither = asyncio.run(render_job_manifest(deployment_name, variables))
    assert container_of(only_memory)["resources"] == {"requests": {"memory": "1Gi"}}
    assert container_of(neither)["resources"] == {"requests": {}}


def test_template_comes_from_the_installed_package_only(monkeypatch):
    """Prefect's online registry is never asked: an unknown type is refused here."""

    def offline(*_args, **_kwargs):
        raise AssertionError("Prefect's online registry was asked")

    monkeypatch.setattr(
        "prefect.client.collections.get_collections_metadata_client", offline
    )
    assert has_resource_requests(prefect_api.base_job_template("kubernetes"))
    assert not has_resource_requests(prefect_api.base_job_template("docker"))
    with pytest.raises(UserError, match="install its worker package"):
        prefect_api.base_job_template("no-such-type")


@pytest.mark.parametrize(
    "setting, mistake",
    [
        ('cpu_request="half"', "cpu_request 'half' is not a Kubernetes quantity"),
        ('memory_request="512m"', "memory_request '512m' is not a Kubernetes"),
        ("", "is a folder of this machine, which a Kubernetes pod cannot read"),
        ("", "FLOWS_KUBERNETES_NAMESPACE 'Flows_Prod' is not a Kubernetes namespace"),
    ],
)
def test_kubernetes_mistakes_are_refused_before_anything_moves(
    checkout, capsys, monkeypatch, setting, mistake
):
    """`deploy --dry-run` already lists each with the others (exit 2, no traceback)."""
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "kubernetes")
    if "NAMESPACE" in mistake:
        monkeypatch.setenv("FLOWS_KUBERNETES_NAMESPACE", "Flows_Prod")
    source = f"util.DeploymentSettings({setting})"
    flow_file = checkout / "flows" / SLOW_FLOW_FILE
    flow_file.write_text(
        re.sub(r"util\.DeploymentSettings\(.*\)", source, SLOW_FLOW_SOURCE), "utf-8"
    )
    code, out, err = run_command_line(
        checkout,
        "deploy",
        "--dry-run",
        capsys=capsys,
        flow_file=SLOW_FLOW_FILE,
        function="slow_flow",
    )
    assert code == 2, out + err
    assert mistake in err and "Traceback" not in err, err

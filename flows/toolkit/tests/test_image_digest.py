"""A deployment of main records its image by digest (`name@sha256:...`), read from a
real registry (Debian's docker-registry on 127.0.0.1) when it deploys; dev
deployments keep their tag, and with no registry the deploy says it uses the tag.

The registry's images here are pushed through its HTTP API (a config blob and a
manifest); test_docker_worker_digest.py pushes the runtime image with Docker and runs
it through a Docker worker.
"""

import hashlib
import json
import os

import httpx
import pytest

from conftest import REPO_NAME, git
from deploy_helpers import read_deployment, run_flow_script
from services import free_port

# pylint: disable=redefined-outer-name
pytestmark = pytest.mark.registry
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push_manifest(host: str, repository: str, tag: str, content: str) -> str:
    """Push an image of one config blob (`content`) as repository:tag; its digest."""
    base = f"http://{host}/v2/{repository}"
    config = json.dumps({"architecture": "amd64", "os": "linux", "note": content})
    blob_digest = "sha256:" + hashlib.sha256(config.encode()).hexdigest()
    with httpx.Client(timeout=30) as client:
        started = client.post(f"{base}/blobs/uploads/")
        assert started.status_code == 202, started.text
        # The upload's own query (its state) stays: params= would replace it.
        location = httpx.URL(f"http://{host}").join(started.headers["Location"])
        uploaded = client.put(
            location.copy_merge_params({"digest": blob_digest}),
            content=config.encode(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert uploaded.status_code == 201, uploaded.text
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob_digest,
                "size": len(config.encode()),
            },
            "layers": [],
        }
        body = json.dumps(manifest).encode()
        pushed = client.put(
            f"{base}/manifests/{tag}",
            content=body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert pushed.status_code == 201, pushed.text
    return "sha256:" + hashlib.sha256(body).hexdigest()


def dry_run_image(checkout) -> tuple[str, str]:
    """(the image `deploy --dry-run` plans, its stderr)."""
    planned = run_flow_script(checkout, "deploy", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    return json.loads(planned.stdout)["image"], planned.stderr


@pytest.fixture
def registry_env(image_registry, monkeypatch):
    """Deployments name their image in the test registry; its host."""
    monkeypatch.setenv("FLOWS_DOCKER_REGISTRY", image_registry.host)
    return image_registry.host


def test_main_is_deployed_on_the_digest_its_tag_has_when_it_deploys(
    checkout, registry_env, prefect_api_url
):
    """--dry-run shows main's image by digest; the deployment records that digest,
    and keeps it when the tag `main` moves to another image; the next deploy of main
    takes the tag's new digest."""
    del prefect_api_url
    repository = REPO_NAME.lower()
    first = push_manifest(registry_env, repository, "main", "tested image")
    planned, stderr = dry_run_image(checkout)
    assert planned == f"{registry_env}/{repository}@{first}"
    assert stderr == ""

    deployed = run_flow_script(checkout, "deploy")
    assert deployed.returncode == 0, deployed.stderr
    assert f"  image {planned}" in deployed.stdout.splitlines()
    name = deployed.stdout.splitlines()[0].split(" as ")[0].split("/", 1)[1]
    assert read_deployment(name).job_variables["image"] == planned

    moved = push_manifest(registry_env, repository, "main", "a later image")
    assert moved != first
    assert read_deployment(name).job_variables["image"] == planned
    redeployed = run_flow_script(checkout, "deploy")
    assert redeployed.returncode == 0, redeployed.stderr
    assert read_deployment(name).job_variables["image"].endswith(f"@{moved}")
    print(f"deployed {planned}; after the tag moved and a new deploy: {moved}")


def test_a_dev_deploy_keeps_its_label(checkout, registry_env):
    """A branch runs its docker label's tag: dev images move with the branch."""
    push_manifest(registry_env, REPO_NAME.lower(), "main", "main's image")
    git(checkout, "switch", "-q", "-c", "feature/tagged")
    image, stderr = dry_run_image(checkout)
    assert image == f"{registry_env}/{REPO_NAME.lower()}:main"
    assert stderr == ""


def test_with_no_registry_main_says_in_one_line_that_it_uses_the_tag(
    checkout, monkeypatch
):
    """Nothing listens where the registry should be (a laptop, `make demo`): the deploy
    goes on with the tag and says so in one line."""
    host = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("FLOWS_DOCKER_REGISTRY", host)
    image, stderr = dry_run_image(checkout)
    assert image == f"{host}/{REPO_NAME.lower()}:main"
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith(f"note: no registry answered at {host} (")
    assert stderr.rstrip().endswith("by its tag, which can move")


@pytest.mark.parametrize("registry_up", [False, True])
def test_a_main_deploy_without_a_digest_is_refused_in_one_line(
    checkout, image_registry, monkeypatch, prefect_api_url, registry_up
):
    """FLOWS_IMAGE_DIGEST=require and no registry, or a registry without the image:
    exit status 2, one line, and nothing deployed."""
    del prefect_api_url
    host = image_registry.host if registry_up else f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("FLOWS_DOCKER_REGISTRY", host)
    monkeypatch.setenv("FLOWS_IMAGE_DIGEST", "require")
    # A name no test pushed: the session's registry holds the others.
    monkeypatch.setenv("FLOWS_REPO_NAME", "acme-data-flows-unpushed")
    storage = os.environ["FLOWS_STORAGE_ROOT"]

    refused = run_flow_script(checkout, "deploy")

    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    expected = "is not in its registry" if registry_up else "no registry answered"
    assert expected in refused.stderr and "Traceback" not in refused.stderr
    assert not os.path.exists(storage) or not os.listdir(storage)

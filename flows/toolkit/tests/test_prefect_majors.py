"""The toolkit on both Prefect majors: 2.20 (this venv) and 3 (`make venv PREFECT=3`),
each against a real server of its own major.

Prefect 3.3 removed the `fetch` that the transient-fault rule read a failed state
with; 3.x then logs the TypeError and does not retry, so every task with
TRANSIENT_RETRIES would run once, silently. These tests run the same flow on each
major and count its task's attempts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import prefect
import pytest
from conftest import api_url_pointed_at, git
from deploy_helpers import call_command_line, run_command_line
import util

pytestmark = pytest.mark.prefect3

FLOWS_DIR = os.path.dirname(os.path.abspath(util.__file__))
RUN_SECONDS = 180

# A task with the toolkit's transient-fault rule, failing on its first attempt with
# the error named on the command line, then succeeding: prints its attempts and the
# flow run's final state.
FLAKY_FLOW = """
import json, sys
sys.path.insert(0, sys.argv[1])
from prefect import flow, task
from toolkit.retries import TRANSIENT_RETRIES

FIRST_ERRORS = {
    "refused": ConnectionRefusedError(111, "Connection refused"),
    "bad input": ValueError("could not convert 'n/a' to a number"),
}
attempts = []

@task(**{**TRANSIENT_RETRIES, "retry_delay_seconds": 1})
def fetch(first_error: str) -> str:
    attempts.append(first_error)
    if len(attempts) == 1:
        raise FIRST_ERRORS[first_error]
    return "fetched"

@flow
def nightly(first_error: str) -> str:
    return fetch(first_error)

state = nightly(sys.argv[2], return_state=True)
print(json.dumps({"attempts": len(attempts), "final": state.type.value}))
"""


def major_environment(request, major: str) -> tuple[str, str]:
    """(the Python, a server's API URL) of `major`."""
    if major == "3":
        return (
            str(request.getfixturevalue("prefect3_python")),
            request.getfixturevalue("prefect3_server"),
        )
    return sys.executable, request.getfixturevalue("prefect_server")


@pytest.mark.parametrize("major", ["2", "3"])
@pytest.mark.parametrize(
    "first_error, attempts, final",
    [("refused", 2, "COMPLETED"), ("bad input", 1, "FAILED")],
)
def test_a_transient_fault_is_retried_on_each_major(  # pylint: disable=R0913,R0917
    request, tmp_path, major, first_error, attempts, final
):
    """A refused connection is tried again and the run completes; a bad value is
    tried once and fails the run: on 2.20 and on 3, with their own servers."""
    python, api_url = major_environment(request, major)
    script = tmp_path / "flaky_flow.py"
    script.write_text(FLAKY_FLOW)
    completed = subprocess.run(
        [python, str(script), FLOWS_DIR, first_error],
        env={
            **os.environ,
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
        },
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"Prefect {major}: {first_error}: {outcome}")
    assert outcome == {"attempts": attempts, "final": final}, completed.stderr[-3000:]


# Each runtime block's fields: required or with their default, and which are secret.
BLOCK_FIELDS = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
BLOCKS = {
    "toolkit.database": "DatabaseConnection",
    "toolkit.sftp": "SftpConnection",
    "toolkit.rest": "ApiConnection",
    "toolkit.mail": "SmtpConnection",
    "toolkit.object_storage": "S3Connection",
    "toolkit.smb": "SmbConnection",
}
fields = {}
for module, name in BLOCKS.items():
    block = getattr(importlib.import_module(module), name)
    schema = block.schema()
    fields[name] = {
        "required": sorted(schema.get("required", [])),
        "defaults": {
            field: spec["default"]
            for field, spec in sorted(schema["properties"].items())
            # pydantic 2 writes an optional field's default None, pydantic.v1 not.
            if spec.get("default") is not None
        },
    }
print(json.dumps(fields, sort_keys=True))
"""


def test_the_blocks_declare_the_same_fields_on_each_major(prefect3_python):
    """Every runtime block has the same required fields and defaults on 2.20 and on
    3: declared with 2.20's pydantic.v1 fields on 3, a required field would become
    one whose default is a field object."""
    declared = {}
    for major, python in (("2", sys.executable), ("3", str(prefect3_python))):
        completed = subprocess.run(
            [python, "-c", BLOCK_FIELDS, FLOWS_DIR],
            capture_output=True,
            text=True,
            timeout=RUN_SECONDS,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        declared[major] = json.loads(completed.stdout.strip().splitlines()[-1])
    assert declared["3"] == declared["2"]
    assert declared["2"]["SftpConnection"]["required"] == [
        "host",
        "known_hosts",
        "username",
    ]


def server_holds(api_url: str) -> dict[str, int]:
    """How many work pools, block documents and deployments the server holds."""
    return {
        kind: len(httpx.post(f"{api_url}/{kind}/filter", json={}, timeout=30).json())
        for kind in ("work_pools", "block_documents", "deployments")
    }


def test_a_deploy_or_setup_against_the_other_major_is_one_line_and_changes_nothing(
    checkout, prefect3_server, monkeypatch, capsys
):
    """This venv's Prefect 2.20 against a Prefect 3 server: deploy and setup each
    exit 2 with one line naming both versions, and the server holds what it held."""
    before = server_holds(prefect3_server)
    served = httpx.get(f"{prefect3_server}/admin/version", timeout=30).json()
    assert served.startswith("3.")
    with api_url_pointed_at(prefect3_server, monkeypatch):
        deploy = run_command_line(checkout, "deploy", capsys=capsys)
        setup = call_command_line(
            lambda: util.run_repository_command_line_interface(
                ["setup", "--no-prompt"]
            ),
            capsys,
        )
    for code, _, err in (deploy, setup):
        assert code == 2
        assert err == (
            f"error: the Prefect API at {prefect3_server} runs Prefect {served}, and "
            f"this venv has Prefect {prefect.__version__}: nothing was changed; "
            "point PREFECT_API_URL at a Prefect 2 server\n"
        )
    assert server_holds(prefect3_server) == before
    storage = os.environ["FLOWS_STORAGE_ROOT"]
    assert not os.path.exists(storage) or not os.listdir(storage)


def run_on(python: str, checkout, api_url: str, *command: str):
    """`command` with the `python` of a major, in `checkout`, against `api_url`."""
    return subprocess.run(
        [python, *command],
        cwd=checkout,
        env={**os.environ, "PREFECT_API_URL": api_url},
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )


def test_a_branch_deploys_twice_and_its_flow_runs_on_prefect_3(
    checkout, prefect3_python, prefect3_server, monkeypatch
):
    """On Prefect 3, from its venv: a dev branch's flow deploys, deploys again (the
    pointer switched to the new copy), and a process worker runs it to Completed
    from the copy in flow storage."""
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "process")
    git(checkout, "switch", "-q", "-c", "on-prefect-3")
    python = str(prefect3_python)
    for _ in range(2):
        deployed = run_on(
            python, checkout, prefect3_server, "flows/fixture_flow.py", "deploy"
        )
        assert deployed.returncode == 0, deployed.stderr[-3000:]
    copies = list(
        (Path(os.environ["FLOWS_STORAGE_ROOT"]) / "dev").glob("*/on-prefect-3/*")
    )
    assert len(copies) == 1, copies
    prefect = str(prefect3_python.parent / "prefect")
    name = "fixture-flow/demo | on-prefect-3 | fixture_flow"
    started = run_on(prefect, checkout, prefect3_server, "deployment", "run", name)
    assert started.returncode == 0, started.stderr[-3000:]
    worker = run_on(
        prefect,
        checkout,
        prefect3_server,
        "worker",
        "start",
        "--pool",
        os.environ["FLOWS_WORK_POOL"],
        "--run-once",
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    runs = httpx.post(f"{prefect3_server}/flow_runs/filter", json={}, timeout=30)
    states = [run["state"]["type"] for run in runs.json() if run["deployment_id"]]
    assert states == ["COMPLETED"], worker.stdout[-3000:] + worker.stderr[-3000:]
    deployment = httpx.get(f"{prefect3_server}/deployments/name/{name}", timeout=30)
    pull = deployment.json()["pull_steps"][0][
        "prefect.deployments.steps.pull_with_block"
    ]
    block = httpx.get(
        f"{prefect3_server}/block_types/slug/local-file-system/block_documents/name/"
        f"{pull['block_document_name']}",
        timeout=30,
    )
    assert block.json()["data"]["basepath"] == str(copies[0])


def test_prefect_3_refuses_a_prefect_2_server_in_one_line(
    checkout, prefect3_python, prefect_server
):
    """The other way round: the Prefect 3 venv's deploy against a 2.20 server is one
    line and exit 2."""
    refused = run_on(
        str(prefect3_python),
        checkout,
        prefect_server,
        "flows/fixture_flow.py",
        "deploy",
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        f"error: the Prefect API at {prefect_server} runs Prefect 2.20."
    )
    assert refused.stderr.endswith(
        "nothing was changed; point PREFECT_API_URL at a Prefect 3 server\n"
    )
    assert len(refused.stderr.splitlines()) == 1


def test_setup_saves_a_database_block_once_and_it_loads_on_prefect_3(
    checkout, prefect3_python, prefect3_server, monkeypatch
):
    """`setup --database` from the Prefect 3 venv: the block and its password's
    Secret are created, a second setup leaves them unchanged (the secret compared,
    never shown), and a run on 3 loads the block with its password."""
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "process")
    monkeypatch.setenv("FLOWS_SHOP_DATABASE_URL", "postgresql://reader@127.0.0.1/shop")
    monkeypatch.setenv("FLOWS_SHOP_DATABASE_PASSWORD", "pw-on-3")
    python = str(prefect3_python)
    setup = ("flows/util.py", "setup", "--no-prompt", "--database", "shop")
    outcomes = []
    for _ in range(2):
        done = run_on(python, checkout, prefect3_server, *setup)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "pw-on-3" not in done.stdout + done.stderr
        outcomes.append([line for line in done.stdout.splitlines() if "shop" in line])
    assert outcomes == [
        [
            "block secret/shop-database-main-password: created",
            "block flows-database-connection/shop-database-main: created",
        ],
        [
            "block secret/shop-database-main-password: unchanged",
            "block flows-database-connection/shop-database-main: unchanged",
        ],
    ]
    loaded = run_on(
        python,
        checkout / "flows",
        prefect3_server,
        "-c",
        "from toolkit.database import DatabaseConnection\n"
        "block = DatabaseConnection.load('shop-database-main')\n"
        "print(block.url, block.password.get() == 'pw-on-3')",
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split() == ["postgresql://reader@127.0.0.1/shop", "True"]

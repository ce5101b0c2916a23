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

import httpx
import prefect
import pytest
from conftest import api_url_pointed_at
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

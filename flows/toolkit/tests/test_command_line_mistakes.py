"""Every user mistake: one line on stderr, exit status 2, nothing changed anywhere."""

import os
import shutil
from pathlib import Path

import pytest
import util
from conftest import git
from deploy_helpers import (
    call_command_line,
    count_deployments,
    run_command_line,
    run_flow_script,
)

import local_prefect
from services import free_port


def modify_tracked_file(checkout):
    """Main with an uncommitted change to a tracked file."""
    with open(checkout / "flows" / "fixture_flow.py", "a", encoding="utf-8") as file:
        file.write("# unreviewed\n")


def commit_without_push(checkout):
    """Main one commit ahead of origin."""
    (checkout / "flows" / "local_only.py").write_text("VALUE = 1\n")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "not pushed")


def remove_origin(checkout):
    """Main with no remote at all."""
    git(checkout, "remote", "remove", "origin")


def detach_head(checkout):
    """A detached HEAD outside CI: no branch to decide the deployment."""
    git(checkout, "switch", "-q", "--detach")


def leave_git(checkout):
    """The same flows/, but in a folder that is no git repository."""
    shutil.rmtree(checkout / ".git")


def flow_file_outside_flows(checkout):
    """A flow file at the top of the repository, not in flows/."""
    shutil.copy(checkout / "flows" / "fixture_flow.py", checkout / "fixture_flow.py")


def no_change(_checkout):
    """The checkout as cloned."""


MISTAKES = {
    "unknown command": (no_change, ["frobnicate"], {}, "invalid choice"),
    "unknown option": (no_change, ["deploy", "--bogus"], {}, "unrecognized"),
    "no command": (no_change, [], {}, "required"),
    "file outside flows": (
        flow_file_outside_flows,
        ["deploy"],
        {"flow_file": "../fixture_flow.py"},
        "not in a flows/ folder",
    ),
    "missing function": (
        no_change,
        ["deploy"],
        {"function": "no_such_flow"},
        "defines no function 'no_such_flow'",
    ),
    "not a flow": (
        no_change,
        ["deploy"],
        {"function": "summarize_customers"},
        "is not a flow",
    ),
    "not a git repository": (leave_git, ["deploy"], {}, "not inside a git repository"),
    "detached HEAD": (detach_head, ["deploy"], {}, "HEAD is detached"),
    "dirty main": (modify_tracked_file, ["deploy"], {}, "uncommitted changes"),
    "unpushed main": (commit_without_push, ["deploy"], {}, "is not origin/main"),
    "no origin": (remove_origin, ["deploy"], {}, "no remote named origin"),
    "docker label on main": (
        no_change,
        ["deploy", "--docker-label", "my-branch"],
        {},
        "--docker-label is refused on main",
    ),
    "param without value": (no_change, ["run", "--param", "env"], {}, "NAME=VALUE"),
    "param of wrong type": (
        no_change,
        ["run", "--param", "env=staging"],
        {},
        "Input should be 'dev' or 'main'",
    ),
    "unknown param": (no_change, ["run", "--param", "colour=red"], {}, "colour"),
}


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistake_is_one_line_and_exit_2(mistake, checkout, capsys):
    """Each mistake: exit 2, one line naming the problem, no storage, no deployment."""
    prepare, args, where, expected = MISTAKES[mistake]
    prepare(checkout)
    deployments_before = count_deployments()

    code, out, err = run_command_line(checkout, *args, capsys=capsys, **where)

    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and expected in err
    assert not Path(os.environ["FLOWS_STORAGE_ROOT"]).exists()
    assert count_deployments() == deployments_before


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize(
    "mistake",
    [
        (
            "FLOWS_DEPLOY_LEASE_SECONDS",
            "soon",
            "is not a number of seconds of at least 1",
        ),
        ("FLOWS_DEPLOY_WAIT_SECONDS", "-1", "is not a number of seconds of at least 0"),
    ],
)
def test_a_lease_setting_that_is_no_number_is_refused(
    mistake, checkout, capsys, monkeypatch
):
    """The lease's times are read before anything is written: one line, exit 2."""
    setting, value, expected = mistake
    monkeypatch.setenv(setting, value)
    git(checkout, "switch", "-q", "-c", "feature/lease-setting")
    deployments_before = count_deployments()
    code, _, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {setting} {value!r} {expected}"
    ]
    assert not Path(os.environ["FLOWS_STORAGE_ROOT"]).exists()
    assert count_deployments() == deployments_before


def test_no_api_configured_says_how_to_get_one(checkout, capsys, monkeypatch):
    """Deploying into Prefect's ephemeral API is refused with the ways out."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    git(checkout, "switch", "-q", "-c", "feature/no-api")
    with temporary_settings(updates={PREFECT_API_URL: None}):
        code, _, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "prefect cloud login" in err and "PREFECT_API_URL" in err
    assert not Path(os.environ["FLOWS_STORAGE_ROOT"]).exists()


def test_unreachable_api_names_the_address(checkout, capsys, monkeypatch):
    """An API that does not answer is one line naming the address tried."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = local_prefect.api_url(free_port())
    monkeypatch.setenv("PREFECT_API_URL", url)
    git(checkout, "switch", "-q", "-c", "feature/offline")
    with temporary_settings(updates={PREFECT_API_URL: url}):
        code, _, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"the Prefect API at {url} is not reachable" in err
    assert not Path(os.environ["FLOWS_STORAGE_ROOT"]).exists()


def test_real_command_line_prints_no_traceback(checkout):
    """The flow file run as a script: one line, exit 2, no traceback."""
    completed = run_flow_script(checkout, "deploy", "--docker-label", "x")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "error: --docker-label is refused on main: main only runs the main image"
    ]


@pytest.mark.parametrize(
    "args",
    [
        [
            "setup",
            "--notfy",
            "https://hooks.example.invalid/services/T0/B0/tok3n-s3cret",
        ],
        ["setup", "--notfy=https://hooks.example.invalid/services/T0/B0/tok3n-s3cret"],
        ["deploy-all", "https://hooks.example.invalid/services/T0/B0/tok3n-s3cret"],
    ],
)
def test_a_mistyped_option_does_not_echo_its_value(args, capsys):
    """A value given to a misspelt option may be a secret: the line names the option
    only."""
    code, out, err = call_command_line(
        lambda: util.run_repository_command_line_interface(args), capsys
    )
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "unrecognized arguments" in err
    assert "tok3n-s3cret" not in err
    if args[1].startswith("--notfy"):
        assert "--notfy" in err

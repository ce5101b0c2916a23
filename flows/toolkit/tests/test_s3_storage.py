"""Flow storage on an S3-compatible server (moto on 127.0.0.1), against a real API."""

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from prefect.deployments.steps.core import StepExecutionError, run_steps
from conftest import REPO_NAME, git, without_aws_credential_chain
from deploy_helpers import (
    deploy_with_registration_refused,
    count_deployments,
    work_pool_names,
    read_deployment,
    read_flow_run_logs,
    run_command_line,
    run_flow_script,
    run_script,
)
from test_deploy import expected_files

import local_prefect
from toolkit.deployer.naming import pointer_block_name, relative_storage_path
from toolkit.deployer.naming import branch_slug
from toolkit.deployer.storage import MANIFEST_NAME, VERIFY_STEP


def copies_of(s3_bucket, relative: str) -> list[str]:
    """The version prefixes (copies) below `relative`, sorted."""
    return sorted(
        {key.split("/")[len(relative.split("/"))] for key in s3_bucket.keys(relative)}
    )


def files_of_copy(s3_bucket, relative: str) -> list[str]:
    """The files of flows/ in the one copy below `relative`, relative to that copy."""
    (copy,) = copies_of(s3_bucket, relative)
    prefix = f"{relative}/{copy}/"
    stored = [key.removeprefix(prefix) for key in s3_bucket.keys(f"{relative}/{copy}")]
    assert MANIFEST_NAME in stored, stored  # every whole copy has its manifest
    return [name for name in stored if name != MANIFEST_NAME]


def pointer_of(relative: str) -> str:
    """Where the branch's RemoteFileSystem block points: the copy runs pull."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.filesystems import RemoteFileSystem

    return RemoteFileSystem.load(pointer_block_name(relative)).basepath


def test_deploy_to_s3_uploads_flows_minus_ignored_files(checkout, s3_bucket, capsys):
    """main -> main/{repo}/{copy}/: the deployable files, and no test or cache file."""
    code, out, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert (code, err) == (0, ""), err

    relative = relative_storage_path(REPO_NAME, "main", "main")
    stored = files_of_copy(s3_bucket, relative)
    assert stored == expected_files(checkout)
    assert not [name for name in stored if name.startswith("tests/")]
    (copy,) = copies_of(s3_bucket, relative)
    assert pointer_of(relative) == f"{s3_bucket.root}/{relative}/{copy}"
    assert f"copied to {s3_bucket.root}/{relative}/{copy}" in out

    manifest = s3_bucket.filesystem().cat(
        f"{s3_bucket.root}/{relative}/{copy}/{MANIFEST_NAME}"
    )
    assert [line.split("  ", 1)[1] for line in manifest.decode().splitlines()] == stored

    deployment = read_deployment("demo | main | fixture_flow")
    fetch, verify = deployment.pull_steps
    pull = fetch["prefect.deployments.steps.pull_from_remote_storage"]
    block = f"prefect.blocks.flows-s3-credentials.{s3_bucket.credentials_block}"
    assert pull == {
        "url": "{{ prefect.blocks.remote-file-system."
        f"{pointer_block_name(relative)}.basepath }}}}",
        "key": f"{{{{ {block}.aws_access_key_id }}}}",
        "secret": f"{{{{ {block}.aws_secret_access_key }}}}",
        "client_kwargs": {"endpoint_url": s3_bucket.endpoint_url},
    }
    assert verify == VERIFY_STEP
    # A Docker run needs no folder of this machine mounted.
    assert "volumes" not in deployment.job_variables


def test_redeploy_replaces_the_copy_and_removes_the_old_one(
    checkout, s3_bucket, capsys
):
    """A file deleted from flows/ is gone from the bucket; one copy per branch remains."""
    git(checkout, "switch", "-q", "-c", "feature/cleanup")
    relative = relative_storage_path(REPO_NAME, "dev", branch_slug("feature/cleanup"))
    (checkout / "flows" / "old_helper.py").write_text("VALUE = 1\n")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    assert "old_helper.py" in files_of_copy(s3_bucket, relative)
    (first_copy,) = copies_of(s3_bucket, relative)

    (checkout / "flows" / "old_helper.py").unlink()
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0

    (second_copy,) = copies_of(s3_bucket, relative)
    assert second_copy != first_copy
    assert files_of_copy(s3_bucket, relative) == expected_files(checkout)
    assert pointer_of(relative).endswith(f"/{second_copy}")


def test_failed_registration_keeps_the_old_copy_and_pointer(
    checkout, s3_bucket, capsys, monkeypatch
):
    """The new copy is removed again, and runs keep pulling the old one."""
    git(checkout, "switch", "-q", "-c", "fragile")
    relative = relative_storage_path(REPO_NAME, "dev", "fragile")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    keys_before, pointer_before = s3_bucket.keys(relative), pointer_of(relative)

    deploy_with_registration_refused(checkout, capsys, monkeypatch)

    assert s3_bucket.keys(relative) == keys_before
    assert pointer_of(relative) == pointer_before


def test_credential_chain_uploads_when_there_is_no_block(
    checkout, s3_bucket, capsys, monkeypatch
):
    """AWS_* variables suffice; the pull step then leaves the key to the worker's chain."""
    monkeypatch.setenv("FLOWS_S3_CREDENTIALS_BLOCK", "no-such-block")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_bucket.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_bucket.secret_access_key)
    git(checkout, "switch", "-q", "-c", "chain")
    code, _, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert (code, err) == (0, ""), err
    relative = relative_storage_path(REPO_NAME, "dev", "chain")
    assert files_of_copy(s3_bucket, relative) == expected_files(checkout)
    step = read_deployment("demo | chain | fixture_flow").pull_steps[0]
    assert set(step["prefect.deployments.steps.pull_from_remote_storage"]) == {
        "url",
        "client_kwargs",
    }


@pytest.mark.parametrize(
    "mistake",
    [
        ("FLOWS_S3_CREDENTIALS_BLOCK", "no-such-block", "no credentials for s3://"),
        ("FLOWS_STORAGE_ROOT", "s3://no-such-bucket/prefect", "does not exist"),
        ("FLOWS_STORAGE_ROOT", "s3:///prefect", "names no bucket"),
        ("FLOWS_STORAGE_ROOT", "gs://flows/prefect", "use a folder or s3://"),
        ("FLOWS_S3_ENDPOINT_URL", "http://127.0.0.1:9", "Could not connect"),
        ("FLOWS_S3_ENDPOINT_URL", "127.0.0.1:9", "Invalid endpoint"),
        ("FLOWS_S3_CREDENTIALS_BLOCK", "Flows_Key", "is not a block name"),
        ("AWS_PROFILE", "no-such-profile", "could not be found"),
    ],
)
def test_storage_mistakes_change_nothing(
    checkout, s3_bucket, capsys, monkeypatch, mistake
):
    """Each is one line and exit 2; nothing registered, nothing uploaded."""
    setting, value, message = mistake
    before = count_deployments(), work_pool_names()
    monkeypatch.setenv(setting, value)
    code, out, err = run_command_line(checkout, "deploy", capsys=capsys)
    monkeypatch.delenv("AWS_PROFILE", raising=False)  # the checks below read the bucket
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err
    assert (count_deployments(), work_pool_names()) == before
    assert s3_bucket.keys() == []


def test_delete_branch_removes_its_copies_and_block(checkout, s3_bucket, capsys):
    """The branch's prefix and pointer block go; main's copy stays."""
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    git(checkout, "switch", "-q", "-c", "short-lived")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    relative = relative_storage_path(REPO_NAME, "dev", "short-lived")
    assert copies_of(s3_bucket, relative)

    deleted = run_script(checkout, "flows/util.py", "delete-branch", "short-lived")
    assert deleted.returncode == 0, deleted.stderr
    assert s3_bucket.keys(relative) == []
    with pytest.raises(ValueError):
        pointer_of(relative)
    assert files_of_copy(s3_bucket, f"main/{REPO_NAME}") == expected_files(checkout)


def test_worker_elsewhere_pulls_from_s3_and_never_shows_the_key(
    checkout, s3_bucket, prefect_api_url, tmp_path, monkeypatch
):
    """A process worker outside the repository runs the S3 copy to completion.

    Neither the deploy's output, nor `prefect deployment inspect`, nor the worker's
    and the run's logs hold the key: the deployment names the block only.
    """
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "process")
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "output"))
    git(checkout, "switch", "-q", "-c", "feature/s3-e2e")
    deployed = run_flow_script(checkout, "deploy")
    assert deployed.returncode == 0, deployed.stderr
    deployment_name = deployed.stdout.splitlines()[0].split(" as ")[0][
        len("Deployed ") :
    ]
    # What runs must be the copy in the bucket: break the checkout after deploying.
    (checkout / "flows" / "fixture_flow.py").write_text("raise SystemExit(3)\n")

    elsewhere = tmp_path / "worker"
    log_path = elsewhere / "worker.log"
    flow_run = local_prefect.run_deployment_once(
        deployment_name, os.environ["FLOWS_WORK_POOL"], prefect_api_url, log_path
    )

    worker_log = log_path.read_text(encoding="utf-8")
    assert flow_run.state.is_completed(), worker_log
    assert f"Pulled code from '{s3_bucket.root}/dev/{REPO_NAME}/" in worker_log
    assert not (elsewhere / "flows").exists()
    assert sorted(p.name for p in (tmp_path / "output" / "dev").iterdir()) == [
        "customer_totals.csv",
        "orders_2024-08-01.csv",
    ]
    inspected = subprocess.run(
        [local_prefect.PREFECT_EXECUTABLE, "deployment", "inspect", deployment_name],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert s3_bucket.credentials_block in inspected
    run_logs = "\n".join(read_flow_run_logs(flow_run.id))
    assert "Finished in state Completed" in run_logs
    for text in (deployed.stdout, deployed.stderr, inspected, worker_log, run_logs):
        assert s3_bucket.access_key_id not in text
        assert s3_bucket.secret_access_key not in text


def test_without_credentials_the_worker_cannot_pull(s3_bucket, monkeypatch):
    """The fixture's empty chain is real: s3fs alone finds no key (so the e2e run used
    the block's)."""
    without_aws_credential_chain(monkeypatch)
    # pylint: disable-next=import-outside-toplevel
    import s3fs

    anonymous = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s3_bucket.endpoint_url},
        skip_instance_cache=True,
    )
    with pytest.raises(Exception, match="(?i)credentials"):
        anonymous.ls(s3_bucket.bucket)


def test_plan_compares_with_the_copy_in_the_bucket(checkout, s3_bucket, capsys):
    """`plan` lists the files the bucket's current copy lacks or has in excess."""
    del s3_bucket  # the storage root the commands use
    git(checkout, "switch", "-q", "-c", "planned")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    code, out, _ = run_command_line(checkout, "plan", capsys=capsys)
    assert (code, out.split()[0]) == (0, "unchanged"), out

    (checkout / "flows" / "extra_helper.py").write_text("VALUE = 3\n")
    code, out, _ = run_command_line(checkout, "plan", capsys=capsys)
    assert code == 0
    assert out.splitlines()[0].startswith("change ")
    assert "  file added: extra_helper.py" in out.splitlines()


def test_the_pull_refuses_a_copy_with_a_file_missing(
    checkout, s3_bucket, capsys, tmp_path, monkeypatch
):
    """The deployment's own pull steps fetch a whole copy, and fail on a partial one."""
    git(checkout, "switch", "-q", "-c", "partial")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    steps = read_deployment("demo | partial | fixture_flow").pull_steps
    relative = relative_storage_path(REPO_NAME, "dev", "partial")

    monkeypatch.chdir(tmp_path)
    pulled = asyncio.run(run_steps(steps, print_function=lambda *_a, **_k: None))
    assert (Path(pulled["directory"]) / "fixture_flow.py").is_file()

    # As if a redeploy removed the copy while this run was fetching it.
    s3_bucket.filesystem().rm(f"{pointer_of(relative)}/sql/all_orders.sql")
    (tmp_path / "second-run").mkdir()
    monkeypatch.chdir(tmp_path / "second-run")
    with pytest.raises(StepExecutionError) as failed:
        asyncio.run(run_steps(steps, print_function=lambda *_a, **_k: None))
    assert "sql/all_orders.sql" in str(failed.value.__cause__)

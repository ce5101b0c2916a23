"""Faults of a nightly run beyond the database, against real servers and a real worker.

- The partner's SFTP server refuses the rename that makes an upload visible.
- The local folder's disk is full.

Both fail the run once, clean: a refusal or a full disk is not something a retry a
few seconds later mends.
"""

import functools
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import serve, service_unavailable, sftp_connection_to
from test_faults import SLOW_RETRIES, connection_to, deliver_with, run_in_a_flow

import services
from toolkit import delivery

# What a locked-down partner's server refuses: both ways of renaming a file.
REFUSED_SFTP_REQUESTS = ("rename", "posix-rename")
ORDERS = pd.DataFrame(
    {
        "order_id": range(1, 2001),
        "customer": ["acme", "globex"] * 1000,
        "amount_cents": [(number * 7919) % 100_000 for number in range(2000)],
    }
)
# A disk that holds the first few MB of the fault tests' 20 MB extract, not all.
TINY_DISK_BYTES = 4 * 1024 * 1024


def final_names_and_parts(folder: Path) -> tuple[list[str], list[str]]:
    """The names in `folder` a partner sees, and the temporary upload names."""
    names = sorted(os.listdir(folder)) if folder.exists() else []
    return (
        [name for name in names if ".part-" not in name],
        [name for name in names if ".part-" in name],
    )


@pytest.fixture(scope="module")
def renameless_sshd():
    """An sshd of this module's own whose SFTP server refuses every rename."""
    yield from serve(
        functools.partial(services.running_sshd, sftp_refuses=REFUSED_SFTP_REQUESTS)
    )


@pytest.mark.faults
@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("yesterdays_file", [False, True], ids=["new", "replacing"])
def test_refused_rename_fails_once_and_leaves_the_folder_as_it_was(
    fault, renameless_sshd, yesterdays_file, tmp_path
):
    """The partner's server refuses renames: the run fails at once, one line names the
    file and the refusal, the temporary file is removed, and the final name holds what
    it held before (nothing, or yesterday's file untouched)."""
    fault.expect("failed clean")
    partner = tmp_path / "partner"
    partner.mkdir()
    if yesterdays_file:
        (partner / "orders.csv").write_bytes(b"yesterday's orders\n")
    sink = delivery.SftpSink(sftp_connection_to(renameless_sshd, str(partner)))

    flow_state, task_state, run_count = run_in_a_flow(
        delivery.deliver_frame.with_options(**SLOW_RETRIES),
        sink,
        ORDERS,
        "orders.csv",
    )

    assert flow_state.is_failed()
    assert run_count == 1  # a retry would run it again after 30 s
    message = str(task_state.result(raise_on_failure=False))
    assert "\n" not in message
    assert "refused to rename" in message and "Permission denied" in message
    assert f"to {partner / 'orders.csv'}" in message
    assert message in task_state.message  # the line the task run's page shows
    assert final_names_and_parts(partner)[1] == []
    if yesterdays_file:
        assert os.listdir(partner) == ["orders.csv"]
        assert (partner / "orders.csv").read_bytes() == b"yesterday's orders\n"
    else:
        assert os.listdir(partner) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A folder on a tmpfs of TINY_DISK_BYTES, mounted for this test alone."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    # As a CI runner's user, through its password-free sudo, as .ci/run installs.
    as_root = [] if os.geteuid() == 0 else ["sudo", "-n"]
    options = f"size={TINY_DISK_BYTES},mode=1777"
    mounted = subprocess.run(
        [*as_root, "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        service_unavailable(f"no tmpfs for a full disk: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run([*as_root, "umount", str(mount_point)], check=True)


@pytest.mark.faults
@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("path", ["frame", "chunks", "as_is"])
def test_full_disk_fails_once_and_leaves_nothing(fault, path, postgres, tiny_disk):
    """A local folder's disk fills up mid-file, in each delivery path: the run fails
    once (a full disk stays full for a retry's seconds), with one line naming the file
    and ENOSPC, and the folder holds nothing, not even the temporary file."""
    fault.expect("failed clean")
    folder = tiny_disk / "out"
    sink = delivery.LocalFolderSink(str(folder))

    flow_state, task_state, run_count = deliver_with(
        path, connection_to(postgres), sink, "extract.csv"
    )

    assert flow_state.is_failed()
    assert run_count == 1  # QUICK_RETRIES would have run it again after 1 s
    message = str(task_state.result(raise_on_failure=False))
    assert "\n" not in message
    assert "No space left on device" in message
    assert str(folder / "extract.csv") in message
    assert message in task_state.message  # the line the task run's page shows
    assert os.listdir(folder) == []

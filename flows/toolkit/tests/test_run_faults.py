"""Faults of a nightly run beyond the database, against real servers and a real worker.

- The partner's SFTP server refuses the rename that makes an upload visible.

It fails the run once, clean: a refusal is not something a retry a few seconds later
mends.
"""

import functools
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import serve, sftp_connection_to
from test_faults import SLOW_RETRIES, run_in_a_flow

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

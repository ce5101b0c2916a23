"""The SFTP tasks against a real OpenSSH sshd on 127.0.0.1."""

import os
import threading
import time
from pathlib import Path

import paramiko
import pytest
from conftest import sftp_connection_to
from prefect import flow
from prefect.blocks.system import Secret

import services
from toolkit import sftp


def remote_folder(tmp_path: Path) -> Path:
    """A folder this test owns on the server (the server's disk is this disk)."""
    folder = tmp_path / "partner"
    folder.mkdir()
    return folder


def test_bytes_round_trip_into_new_folders(sshd, tmp_path):
    """Bytes uploaded into folders that do not exist yet come back exactly."""
    partner = remote_folder(tmp_path)
    connection = sftp_connection_to(sshd, str(partner))
    payload = os.urandom(3 * 1024 * 1024 + 17)

    assert sftp.upload_bytes.fn(connection, payload, "in/2024/data.bin") == len(payload)
    sftp.download_file.fn(connection, "in/2024/data.bin", str(tmp_path / "back.bin"))

    assert (tmp_path / "back.bin").read_bytes() == payload
    assert (partner / "in" / "2024" / "data.bin").read_bytes() == payload
    assert sftp.list_files.fn(connection, "in/2024") == ["data.bin"]
    assert os.listdir(partner / "in" / "2024") == ["data.bin"]


def test_file_upload_replaces_the_old_file(sshd, tmp_path):
    """A second upload to the same name replaces the file whole."""
    partner = remote_folder(tmp_path)
    connection = sftp_connection_to(sshd, str(partner))
    local = tmp_path / "report.csv"
    local.write_text("a,b\n1,2\n")
    sftp.upload_file.fn(connection, str(local), "report.csv")
    local.write_text("a,b\n3,4\n5,6\n")
    sftp.upload_file.fn(connection, str(local), "report.csv")
    assert (partner / "report.csv").read_text() == "a,b\n3,4\n5,6\n"
    assert os.listdir(partner) == ["report.csv"]


def test_non_atomic_connection_writes_the_final_name_directly(sshd, tmp_path):
    """With atomic_uploads off (drop boxes), no temporary name is ever used."""
    partner = remote_folder(tmp_path)
    connection = sftp_connection_to(sshd, str(partner), atomic_uploads=False)
    sftp.upload_bytes.fn(connection, b"x" * 10, "drop.txt")
    assert os.listdir(partner) == ["drop.txt"]


def test_unknown_host_key_is_refused(sshd, tmp_path):
    """A server whose key is not in known_hosts gets nothing, and is not added."""
    partner = remote_folder(tmp_path)
    other_host = "[127.0.0.2]:22 " + " ".join(sshd.known_hosts_line.split()[1:])
    connection = sftp_connection_to(sshd, str(partner), known_hosts=other_host)
    with pytest.raises(
        sftp.HostKeyRefused, match="not in the connection's known_hosts"
    ):
        sftp.upload_bytes.fn(connection, b"secret rows", "data.csv")
    assert os.listdir(partner) == []


def test_changed_host_key_is_refused(sshd, tmp_path):
    """A server presenting another key than the one on record is refused."""
    partner = remote_folder(tmp_path)
    other_key = tmp_path / "other_key"
    services._keygen(other_key)  # pylint: disable=protected-access
    key_type, key_text = other_key.with_suffix(".pub").read_text().split()[:2]
    changed = f"[127.0.0.1]:{sshd.port} {key_type} {key_text}"
    connection = sftp_connection_to(sshd, str(partner), known_hosts=changed)
    with pytest.raises(paramiko.BadHostKeyException):
        sftp.upload_bytes.fn(connection, b"secret rows", "data.csv")
    assert os.listdir(partner) == []


def test_wrong_key_gives_a_clear_error(sshd, tmp_path):
    """A key the server does not know: the error names the login and what to check."""
    stranger = tmp_path / "stranger_key"
    services._keygen(stranger)  # pylint: disable=protected-access
    connection = sftp_connection_to(
        sshd, str(tmp_path), private_key=Secret(value=stranger.read_text())
    )
    with pytest.raises(paramiko.AuthenticationException) as refused:
        sftp.list_files.fn(connection)
    message = str(refused.value)
    assert f"SFTP login as {sshd.user}@127.0.0.1:{sshd.port} refused" in message
    assert "password or private key" in message


def test_wrong_password_gives_a_clear_error(sshd, tmp_path):
    """A wrong password is refused with the same clear error."""
    connection = sftp_connection_to(
        sshd, str(tmp_path), private_key=None, password=Secret(value="not-it")
    )
    with pytest.raises(paramiko.AuthenticationException, match="refused"):
        sftp.list_files.fn(connection)


@pytest.mark.usefixtures("prefect_api_url")
def test_refused_login_is_not_retried(sshd, tmp_path):
    """Retrying a refused login only locks accounts: the task fails at once."""
    connection = sftp_connection_to(
        sshd, str(tmp_path), private_key=None, password=Secret(value="not-it")
    )
    quick = sftp.list_files.with_options(retry_delay_seconds=30)

    @flow
    def list_once():
        return quick(connection)

    started = time.monotonic()
    state = list_once(return_state=True)
    assert state.is_failed()
    assert time.monotonic() - started < 30  # a retry would have waited 30 s


@pytest.mark.usefixtures("prefect_api_url")
def test_interrupted_upload_leaves_no_file_and_the_retry_completes_it(
    own_sshd, tmp_path, fault
):
    """sshd killed mid-upload: nothing at the final name; the retried task delivers."""
    fault.expect("recovered")
    partner = remote_folder(tmp_path)
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(96 * 1024 * 1024))
    connection = sftp_connection_to(own_sshd, str(partner))
    started = time.monotonic()
    sftp.upload_file.fn(connection, str(local), "calm.bin")
    calm_seconds = time.monotonic() - started
    (partner / "calm.bin").unlink()
    seen = {}

    def crash_server_mid_upload():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            parts = [p for p in partner.glob(".big.bin.part-*") if p.stat().st_size]
            if parts and parts[0].stat().st_size > 8 * 1024 * 1024:
                own_sshd.stop()
                seen["final name after crash"] = (partner / "big.bin").exists()
                seen["restarted"] = services.start_sshd(own_sshd.folder)
                return
            time.sleep(0.002)

    crasher = threading.Thread(target=crash_server_mid_upload)
    upload = sftp.upload_file.with_options(retry_delay_seconds=1)

    @flow
    def deliver():
        return upload(connection, str(local), "big.bin")

    crasher.start()
    started = time.monotonic()
    state = deliver(return_state=True)
    fault.cost(time.monotonic() - started - calm_seconds)
    crasher.join()

    assert "restarted" in seen, "the upload finished before the server could crash"
    assert seen["final name after crash"] is False
    assert state.is_completed()
    assert (partner / "big.bin").read_bytes() == local.read_bytes()
    assert os.listdir(partner) == ["big.bin"]  # the crashed attempt's part is gone
    seen["restarted"].stop()

"""The fault tests' secret scan finds a secret wherever a run could leak it."""

import secrets

import pytest
from prefect import flow, get_run_logger

import fault_record


@flow
def leaky(password: str):
    """A flow that does what no flow may: logs a secret, takes it as a parameter."""
    get_run_logger().info("connecting with %s", password)


@pytest.mark.usefixtures("prefect_api_url")
def test_scan_finds_a_secret_in_output_files_and_the_api(tmp_path):
    """A password logged by a flow, passed as its parameter, printed and written to
    a watched file is found in each place, and the report names places only."""
    password = f"pw-{secrets.token_hex(8)}"
    record = fault_record.FaultRecord(test="leak")
    record.secret(password)
    leaky(password)
    log_file = tmp_path / "worker.log"
    log_file.write_text(f"a worker said {password}\n", encoding="utf-8")
    record.watch(log_file)

    leaks = record.scan(f"stderr: {password}", api_reachable=True)

    assert set(leaks) == {"captured output", str(log_file), "API logs", "flow runs"}
    assert password not in fault_record.redacted(leaks)
    assert record.places_scanned == 6


def test_a_private_key_is_found_by_any_line_of_its_body():
    """A leak of one line of a key is a leak; its armour lines are not secrets."""
    key = "\n".join(
        [
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
            "QyNTUxOQAAACDxMvs3nQ1c0EqhmG2Sx5rQRn5EoRZ1zJwz6dE5QIgcYAAAAJgAAAAAAAAA",
            "-----END OPENSSH PRIVATE KEY-----",
        ]
    )
    fault_record.remember_private_key(key)
    second_line = key.splitlines()[2]
    assert fault_record.secrets_in(f"...{second_line}...", fault_record.KNOWN_SECRETS)
    assert not fault_record.secrets_in("-----BEGIN", fault_record.KNOWN_SECRETS)

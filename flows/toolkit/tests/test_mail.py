"""Mail through a real SMTP server: aiosmtpd on 127.0.0.1 with STARTTLS (or implicit
TLS) on a certificate this module makes and trusts, and AUTH.

The received message is checked byte for byte; the password is looked for in every
log line, the test's and the flow run's in the Prefect API. A 4xx reply is retried
by the task, a 5xx (a refused recipient, a failed login) is not.
"""

import asyncio
import datetime
import email
import ipaddress
import json
import logging
import os
import smtplib
import ssl
import subprocess
import sys
import textwrap
from email import policy
from pathlib import Path

import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from guide_snippets import guide_module
from prefect import get_client
from prefect.blocks.system import Secret
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from test_faults import QUICK_RETRIES, SLOW_RETRIES, run_in_a_flow

from services import free_port
from toolkit import connections, retries
from toolkit.mail import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MessageRefused,
    SmtpConnection,
    build_message,
    frame_as_csv,
    send_email,
)

pytestmark = pytest.mark.email

LOGIN = "flows-mailer"
PASSWORD = "smtp-Pa55-never-logged-7c1e"
SENDER = "flows@campus.example"
TO = ["registrar@campus.example", "dean@campus.example"]
SUMMARY = pd.DataFrame(
    {"school": ["arts", "science"], "students": [1204, 987], "share": [0.55, 0.45]}
)
ROSTER = pd.DataFrame(
    {"id": [1, 2, 3], "name": ["Ann", 'Bob "B" Jr.', None], "credits": [30, 12.5, 0]}
)
ROSTER_CSV = b'id,name,credits\n1,"Ann",30\n2,"Bob ""B"" Jr.",12.5\n3,,0\n'
FLOWS_DIR = Path(__file__).resolve().parents[2]


def make_certificate(folder: Path) -> tuple[Path, Path, str]:
    """A CA and a certificate it signs for 127.0.0.1: the files of the server's
    key and certificate, and the CA's PEM the client trusts."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flows test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_file, certificate_file = folder / "server.key", folder / "server.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return (
        key_file,
        certificate_file,
        ca.public_bytes(serialization.Encoding.PEM).decode(),
    )


class Mailbox:
    """aiosmtpd's handler: keeps what it accepts, answers DATA with the replies
    queued in `data_replies` first, and refuses the recipients in `refused`."""

    def __init__(self):
        self.received: list = []
        self.data_replies: list[str] = []
        self.refused: set[str] = set()
        self.data_attempts = 0
        self.logins: list[bool] = []
        self.greetings: list[str] = []

    # pylint: disable-next=invalid-name,too-many-arguments,too-many-positional-arguments
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        """Count the clients that greet: smtplib says EHLO on every connection, so
        none here means none connected."""
        del server, envelope
        self.greetings.append(hostname)
        # aiosmtpd leaves the session's name to the hook once there is one.
        session.host_name = hostname
        return responses

    # pylint: disable-next=invalid-name,too-many-arguments,too-many-positional-arguments
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Refuse the addresses in `refused` (550), take the others."""
        del server, session, rcpt_options
        if address in self.refused:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # pylint: disable=C0103
        """The next queued reply, else keep the message."""
        del server, session
        self.data_attempts += 1
        if self.data_replies:
            return self.data_replies.pop(0)
        self.received.append(envelope)
        return "250 2.0.0 accepted"

    # pylint: disable-next=too-many-arguments,too-many-positional-arguments
    def authenticate(self, server, session, envelope, mechanism, auth_data):
        """AUTH: the one login and password, nothing else."""
        del server, session, envelope, mechanism
        accepted = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == LOGIN.encode()
            and auth_data.password == PASSWORD.encode()
        )
        self.logins.append(accepted)
        # handled=False: aiosmtpd answers the refusal itself (535).
        return AuthResult(success=accepted, handled=False)


class SmtpServer:  # pylint: disable=too-few-public-methods
    """A running aiosmtpd and what a client needs to reach it."""

    def __init__(self, mailbox: Mailbox, port: int, ca_pem: str):
        self.mailbox = mailbox
        self.port = port
        self.ca_pem = ca_pem

    def connection(self, **overrides) -> SmtpConnection:
        """An unsaved block to this server, the password in a Secret block."""
        settings = {
            "host": "127.0.0.1",
            "port": self.port,
            "sender": SENDER,
            "username": LOGIN,
            "password": Secret(value=PASSWORD),
            "trusted_certificates": self.ca_pem,
            "timeout_seconds": 10,
        }
        return SmtpConnection(**{**settings, **overrides})


def start_smtp(tmp_path: Path, implicit_tls: bool):
    """aiosmtpd with STARTTLS required before AUTH (or TLS from the first byte)."""
    key_file, certificate_file, ca_pem = make_certificate(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate_file, key_file)
    mailbox = Mailbox()
    port = free_port()
    # aiosmtpd's AUTH-only-over-TLS check knows STARTTLS only: implicit TLS is TLS
    # from the first byte anyway.
    if implicit_tls:
        options = {"ssl_context": tls, "auth_require_tls": False}
    else:
        options = {"tls_context": tls, "require_starttls": True}
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        ready_timeout=10,
        **options,
    )
    controller.start()
    return controller, SmtpServer(mailbox, port, ca_pem)


@pytest.fixture
def smtp_server(tmp_path):
    """aiosmtpd with STARTTLS and AUTH on 127.0.0.1, for this test."""
    controller, server = start_smtp(tmp_path, implicit_tls=False)
    yield server
    controller.stop()


@pytest.fixture
def attachment(tmp_path) -> Path:
    """A binary file to attach."""
    path = tmp_path / "transcript.pdf"
    path.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n")
    return path


def flow_run_logs(flow_state) -> list[str]:
    """The messages the flow run and its task runs sent to the Prefect API."""

    async def read():
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(
                        any_=[flow_state.state_details.flow_run_id]
                    )
                )
            )
            return [log.message for log in logs]

    return asyncio.run(read())


@pytest.mark.usefixtures("prefect_api_url")
def test_the_received_message_is_what_was_sent(smtp_server, attachment, caplog):
    """Over STARTTLS and AUTH: headers, text, HTML table and both attachments arrive
    byte for byte; the password is in no log line, the test's or the flow run's."""
    caplog.set_level(logging.DEBUG)
    flow_state, _, run_count = run_in_a_flow(
        send_email,
        smtp_server.connection(),
        TO,
        "Enrolment summary, 2026-12-02",
        "Enrolment by school is below.\nThe roster is attached.",
        table=SUMMARY,
        files=[str(attachment)],
        frames={"roster.csv": ROSTER},
    )
    assert flow_state.is_completed() and run_count == 1
    assert smtp_server.mailbox.logins == [True]
    [envelope] = smtp_server.mailbox.received
    assert envelope.mail_from == SENDER and envelope.rcpt_tos == TO
    message = email.message_from_bytes(envelope.original_content, policy=policy.default)
    print("\nreceived headers:\n" + "\n".join(f"{k}: {v}" for k, v in message.items()))
    assert message["From"] == SENDER
    assert message["To"] == ", ".join(TO)
    assert message["Subject"] == "Enrolment summary, 2026-12-02"
    assert message["Message-ID"].endswith("@campus.example>")
    assert email.utils.parsedate_to_datetime(message["Date"]).tzinfo is not None
    text = message.get_body(("plain",)).get_content()
    # As it crossed the wire, line ends and all.
    assert text == "Enrolment by school is below.\r\nThe roster is attached.\r\n"
    html = message.get_body(("html",)).get_content()
    assert "<table" in html and "<td>science</td>" in html and "<td>987</td>" in html
    attachments = {part.get_filename(): part for part in message.iter_attachments()}
    assert list(attachments) == ["transcript.pdf", "roster.csv"]
    assert attachments["transcript.pdf"].get_content_type() == "application/pdf"
    assert attachments["transcript.pdf"].get_content() == attachment.read_bytes()
    assert attachments["roster.csv"].get_content_type() == "text/csv"
    roster = attachments["roster.csv"].get_payload(decode=True)
    assert roster == ROSTER_CSV == frame_as_csv(ROSTER)
    logged = [record.getMessage() for record in caplog.records]
    logged += flow_run_logs(flow_state)
    assert any("sent 'Enrolment summary" in line for line in logged)
    assert not [line for line in logged if PASSWORD in line]


@pytest.mark.usefixtures("prefect_api_url")
def test_implicit_tls_on_its_own_port(tmp_path):
    """security="tls": TLS from the first byte (port 465's way), then AUTH."""
    controller, server = start_smtp(tmp_path, implicit_tls=True)
    try:
        send_email.fn(server.connection(security="tls"), TO[:1], "tls", "over TLS")
    finally:
        controller.stop()
    [envelope] = server.mailbox.received
    assert b"Subject: tls" in envelope.original_content


def test_a_message_over_the_limit_fails_before_connecting(attachment, tmp_path):
    """Over max_message_bytes: one line, and no connection is made (nothing listens
    at the block's port, so a connection would fail otherwise)."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 900_000)  # about 1.2 MB once in base64
    nowhere = SmtpConnection(host="127.0.0.1", port=free_port(), sender=SENDER)
    with pytest.raises(MessageRefused) as refused:
        send_email.fn(
            nowhere,
            TO,
            "big",
            "see attached",
            files=[big, attachment],
            max_message_bytes=1_000_000,
        )
    assert str(refused.value) == (
        "the message is at least 1.2 MB, over the limit of 1.0 MB: the attachment "
        f"{big} is 0.9 MB; nothing was read or sent; deliver the files to a sink and "
        "mail a link, or raise max_message_bytes if the server allows it"
    )
    assert DEFAULT_MAX_MESSAGE_BYTES == 10_000_000


@pytest.mark.usefixtures("prefect_api_url")
def test_the_limit_is_measured_exactly_once_the_message_is_built(smtp_server, tmp_path):
    """The reckoning from sizes on disk leaves out the MIME headers, so it never
    refuses a message that fits: a limit 100 bytes over the built message sends it,
    one 20 bytes under refuses it (the Message-ID's number varies by a few digits)."""
    exact = tmp_path / "exact.bin"
    exact.write_bytes(bytes(range(256)) * 4000)
    built = build_message(SENDER, TO, "exact", "see attached", files=[exact])
    size = len(built.as_bytes())
    with pytest.raises(MessageRefused) as refused:
        send_email.fn(
            smtp_server.connection(),
            TO,
            "exact",
            "see attached",
            files=[exact],
            max_message_bytes=size - 20,
        )
    assert str(refused.value).startswith("the message is 1.4 MB, over the limit")
    assert smtp_server.mailbox.greetings == []
    send_email.fn(
        smtp_server.connection(),
        TO,
        "exact",
        "see attached",
        files=[exact],
        max_message_bytes=size + 100,
    )
    [envelope] = smtp_server.mailbox.received
    print(f"\n{size:,} bytes built, sent under a limit of {size + 100:,}")
    assert b"Subject: exact" in envelope.original_content


def test_a_missing_attachment_is_one_line_and_nothing_is_sent(smtp_server, tmp_path):
    """A file that is not there: one line naming it; no client greeted the server."""
    missing = tmp_path / "transcript.pdf"
    with pytest.raises(MessageRefused) as refused:
        send_email.fn(
            smtp_server.connection(), TO, "missing", "see attached", files=[missing]
        )
    assert str(refused.value) == (
        f"the attachment {missing} does not exist: nothing was sent"
    )
    assert smtp_server.mailbox.greetings == []
    assert smtp_server.mailbox.received == []


# The child process of the memory test: send_email with a 3 GB attachment, then its
# own figures as JSON. A process of its own: reading the file would take 3 GB (and 4
# GB of base64) from the test's process, and its peak RSS would mix with the suite's.
SEND_AND_MEASURE = textwrap.dedent(
    """
    import json, os, time
    from toolkit.streams import peak_rss_bytes
    from prefect.blocks.system import Secret
    from toolkit.mail import MessageRefused, SmtpConnection, send_email

    # The peak the imports reach (Prefect, pandas, Arrow): the baseline.
    imported_peak = peak_rss_bytes()

    settings = json.loads(os.environ["MAIL_SETTINGS"])
    connection = SmtpConnection(
        **settings["block"], password=Secret(value=os.environ["MAIL_PASSWORD"])
    )
    started = time.monotonic()
    try:
        send_email.fn(connection, settings["to"], "export", "see attached",
                      files=[settings["file"]])
        outcome = "sent"
    except MessageRefused as error:
        outcome = str(error)
    print(json.dumps({
        "outcome": outcome,
        "seconds": time.monotonic() - started,
        "peak_rss": peak_rss_bytes(),
        "imported_peak": imported_peak,
    }))
    """
)


def test_a_3_gb_attachment_is_refused_unread(smtp_server, tmp_path):
    """A 3 GB file attached by mistake: refused in one line from its size on disk,
    in a process whose peak RSS stays that of its imports; no client greeted the
    server."""
    export = tmp_path / "export.csv"
    with export.open("wb") as file:
        file.truncate(3 * 1024**3)  # sparse: 3 GB long, no blocks written
    block = smtp_server.connection().dict(include={"host", "port", "sender"})
    block |= {"username": LOGIN, "trusted_certificates": smtp_server.ca_pem}
    settings = {"block": block, "to": TO, "file": str(export)}
    completed = subprocess.run(
        [sys.executable, "-c", SEND_AND_MEASURE],
        env={
            **os.environ,
            "MAIL_SETTINGS": json.dumps(settings),
            "MAIL_PASSWORD": PASSWORD,
        },
        cwd=FLOWS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    mib = 2**20
    over_imports = (found["peak_rss"] - found["imported_peak"]) / mib
    print(
        f"\n3 GB attachment refused in {found['seconds']:.3f} s; peak RSS "
        f"{found['peak_rss'] / mib:.0f} MiB ({over_imports:.1f} MiB over the imports)"
    )
    assert found["outcome"] == (
        "the message is at least 4,351.5 MB, over the limit of 10.0 MB: the "
        f"attachment {export} is 3,221.2 MB; nothing was read or sent; deliver the "
        "files to a sink and mail a link, or raise max_message_bytes if the server "
        "allows it"
    )
    # Reading the file would hold 3,072 MiB, its base64 4,096 more.
    assert over_imports < 64
    assert smtp_server.mailbox.greetings == []
    assert smtp_server.mailbox.logins == [] and smtp_server.mailbox.received == []


@pytest.mark.usefixtures("prefect_api_url")
def test_a_4xx_reply_is_retried(fault, smtp_server):
    """The server answers DATA `451 try again later` once: the task runs again and
    the message arrives once."""
    fault.expect("recovered")
    fault.secret(PASSWORD)
    smtp_server.mailbox.data_replies.append("451 4.3.0 try again later")
    flow_state, _, run_count = run_in_a_flow(
        send_email.with_options(**QUICK_RETRIES),
        smtp_server.connection(),
        TO,
        "retried",
        "a greylisted first try",
    )
    print(f"\n451 then 250: the task took {run_count} attempts")
    assert flow_state.is_completed() and run_count == 2
    assert smtp_server.mailbox.data_attempts == 2
    assert len(smtp_server.mailbox.received) == 1


@pytest.mark.usefixtures("prefect_api_url")
def test_a_refused_recipient_is_tried_once(fault, smtp_server):
    """Every recipient refused with 550: the task fails at once, nothing was sent."""
    fault.expect("failed clean")
    fault.secret(PASSWORD)
    smtp_server.mailbox.refused.add("nobody@campus.example")
    flow_state, task_state, run_count = run_in_a_flow(
        send_email.with_options(**SLOW_RETRIES),
        smtp_server.connection(),
        ["nobody@campus.example"],
        "refused",
        "to nobody",
    )
    print(f"\n550 recipient refused: the task took {run_count} attempt")
    assert flow_state.is_failed() and run_count == 1
    assert "550" in str(task_state.result(raise_on_failure=False))
    assert smtp_server.mailbox.data_attempts == 0


@pytest.mark.usefixtures("prefect_api_url")
def test_a_failed_login_is_tried_once_and_never_logs_the_password(
    fault, smtp_server, caplog
):
    """A wrong password (535): the task fails at once; neither password is logged."""
    fault.expect("failed clean")
    wrong = "wrong-Pa55-also-secret-91"
    fault.secret(PASSWORD)
    fault.secret(wrong)
    caplog.set_level(logging.DEBUG)
    flow_state, task_state, run_count = run_in_a_flow(
        send_email.with_options(**SLOW_RETRIES),
        smtp_server.connection(password=Secret(value=wrong)),
        TO,
        "never sent",
        "wrong password",
    )
    print(f"\n535 login refused: the task took {run_count} attempt")
    assert flow_state.is_failed() and run_count == 1
    assert smtp_server.mailbox.logins == [False]
    assert str(task_state.result(raise_on_failure=False)) == (
        f"SMTP login as {LOGIN} at 127.0.0.1:{smtp_server.port} refused (535 5.7.8 "
        "Authentication credentials invalid): check the username and password of "
        "the SMTP block"
    )
    logged = [record.getMessage() for record in caplog.records]
    logged += flow_run_logs(flow_state)
    assert not [line for line in logged if wrong in line or PASSWORD in line]


@pytest.mark.usefixtures("prefect_api_url")
def test_no_mail_block_is_one_line_naming_setup():
    """A mail server has no dev stand-in: a missing block names the setup command."""
    with pytest.raises(ValueError) as missing:
        connections.mail_server_for("registrar", "dev")
    assert str(missing.value) == (
        "no Flows SMTP Connection block named 'registrar-smtp-dev': create it with "
        "`python3 flows/util.py setup --env dev --smtp registrar`"
    )


@pytest.mark.usefixtures("prefect_api_url")
def test_the_guides_mail_flow_runs(smtp_server, tmp_path):
    """The guide's mail snippet, as a flow run, with block registrar-smtp-dev saved:
    the registrar gets the table and the CSV."""
    flow_module = guide_module("sources-and-sinks.md", "mail_summary.py", tmp_path)
    smtp_server.connection().save("registrar-smtp-dev", overwrite=True)
    flow_module.mail_summary(env="dev")
    [envelope] = smtp_server.mailbox.received
    assert envelope.rcpt_tos == ["registrar@campus.example"]
    message = email.message_from_bytes(envelope.original_content, policy=policy.default)
    [totals] = message.iter_attachments()
    assert totals.get_payload(decode=True) == (
        b'school,students\n"arts",1204\n"science",987\n'
    )


@pytest.mark.parametrize(
    "error, transient",
    [
        (smtplib.SMTPDataError(451, b"try again later"), True),
        (smtplib.SMTPSenderRefused(421, b"closing", SENDER), True),
        (smtplib.SMTPRecipientsRefused({"a@x": (450, b"greylisted")}), True),
        (smtplib.SMTPRecipientsRefused({"a@x": (550, b"no such user")}), False),
        (smtplib.SMTPDataError(554, b"rejected"), False),
        (smtplib.SMTPAuthenticationError(535, b"invalid"), False),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (smtplib.SMTPNotSupportedError("STARTTLS extension not supported"), False),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (MessageRefused("the message is 12.0 MB, over the limit"), False),
    ],
)
def test_smtp_errors_are_classified(error, transient):
    """4xx replies and broken connections are transient; 5xx and refusals are not."""
    assert retries.is_transient(error) is transient

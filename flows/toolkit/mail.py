"""E-mail through an SMTP server: small extracts and run summaries to people.

(Not `email.py`: that name would hide the standard library's email package.)

`send_email` sends one message to a list of addresses: a text body, optionally an
HTML table of a small frame, and attachments, files as they are or frames written as
CSV by the same writer the deliveries use. Before a file is read, the message's
size is reckoned from the files' sizes on disk: a file far over the limit (a 3 GB
export attached by mistake) fails at once, in one line, without being read. The
message is then built and measured before any connection is made. The password is
read from its Secret block only to log in, and is never logged.
"""

from __future__ import annotations

import io
import mimetypes
import os
import smtplib
import ssl
import stat
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Literal, Mapping, Optional, Sequence

import pandas as pd
from prefect import task
from prefect.blocks.core import Block
from prefect.blocks.system import Secret

from toolkit.prefect_majors import Field
from toolkit import arrow_csv
from toolkit import retries
from toolkit.logs import run_logger
from toolkit.streams import MEGABYTE

DEFAULT_MAX_MESSAGE_BYTES = 10 * MEGABYTE
# An HTML table is for a summary a person reads in the mail; more rows belong in a
# CSV attachment.
MOST_TABLE_ROWS = 500


class MessageRefused(retries.PermanentFailure, ValueError):
    """A message that no server will take as it is (too large, a table too long)."""


class LoginRefused(smtplib.SMTPAuthenticationError):
    """The server refused the login (535): one line that says what to check."""

    def __init__(self, error: smtplib.SMTPResponseException, where: str):
        super().__init__(error.smtp_code, error.smtp_error)
        reply = error.smtp_error
        reply = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        self.line = (
            f"SMTP login as {where} refused ({error.smtp_code} {reply}): check the "
            "username and password of the SMTP block"
        )

    def __str__(self) -> str:
        return self.line


class SmtpConnection(Block):
    """A mail server to send through: address, TLS, login, and the sender."""

    _block_type_name = "Flows SMTP Connection"
    _description = "Host, port, TLS and login of an SMTP server, password apart."

    host: str = Field(..., description="Server name or address.")
    port: int = Field(587, description="587 for STARTTLS, 465 for implicit TLS.")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="starttls (upgrade after connecting), tls (implicit, port 465), "
        "or none (a relay on a trusted network only; no login is sent then).",
    )
    sender: str = Field(..., description="The From address.")
    username: Optional[str] = Field(None, description="Login name, if one is needed.")
    password: Optional[Secret] = Field(None, description="Secret holding the password.")
    trusted_certificates: str = Field(
        "",
        description="PEM certificates to trust besides the system's (a campus CA); "
        "the server's name is always checked.",
    )
    timeout_seconds: float = Field(30, description="Connect and reply timeout.")

    def describe(self) -> str:
        """host:port, for logs and errors; never a secret."""
        return f"{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        """A verifying TLS context: the system's CAs and the block's own."""
        context = ssl.create_default_context()
        # pylint: disable-next=no-member  # a field's value once made
        if self.trusted_certificates.strip():
            context.load_verify_locations(cadata=self.trusted_certificates)
        return context


def frame_as_csv(frame: pd.DataFrame) -> bytes:
    """A frame as the CSV a delivery of it writes."""
    buffer = io.BytesIO()
    arrow_csv.write_frames_as_csv([frame], buffer)
    return buffer.getvalue()


def _attach_file(message: EmailMessage, path: Path) -> None:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    maintype, subtype = kind.split("/", 1)
    message.add_attachment(
        path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name
    )


def _file_sizes(files: Sequence[str | Path]) -> list[tuple[Path, int]]:
    """Each file and its size on disk, from its metadata alone: a missing file (or a
    folder) is one line before anything is read or sent."""
    sizes = []
    for name in files:
        path = Path(name)
        try:
            status = os.stat(path)
        except FileNotFoundError:
            raise MessageRefused(
                f"the attachment {path} does not exist: nothing was sent"
            ) from None
        if not stat.S_ISREG(status.st_mode):
            raise MessageRefused(
                f"the attachment {path} is not a file: nothing was sent"
            )
        sizes.append((path, status.st_size))
    return sizes


def _base64_bytes(size: int) -> int:
    """What `size` bytes become in the message: base64 (4 characters for every 3
    bytes), in lines of 76 characters (57 bytes) each with its line end, as the
    email package writes attachments."""
    return 4 * -(-size // 3) + -(-size // 57)


def _check_estimate(
    text: EmailMessage, attachments: Sequence[tuple[str | Path, int]], max_bytes: int
) -> None:
    """Refuse from sizes alone: the text part as it is, plus each attachment in
    base64. The MIME headers and boundaries are left out, so this is a floor of the
    size `_check_size` measures and never refuses a message that would fit."""
    least = len(text.as_bytes())
    least += sum(_base64_bytes(size) for _, size in attachments)
    if least <= max_bytes or not attachments:
        return  # a text too long on its own: the exact measure says so, once built
    largest, size = max(attachments, key=lambda attachment: attachment[1])
    raise MessageRefused(
        f"the message is at least {least / MEGABYTE:,.1f} MB, over the limit of "
        f"{max_bytes / MEGABYTE:.1f} MB: the attachment {largest} is "
        f"{size / MEGABYTE:,.1f} MB; nothing was read or sent; "
        "deliver the files to a sink and mail a link, or raise max_message_bytes if "
        "the server allows it"
    )


def build_message(  # pylint: disable=too-many-arguments
    sender: str,
    to: Sequence[str],
    subject: str,
    body: str,
    *,
    table: pd.DataFrame | None = None,
    files: Sequence[str | Path] = (),
    frames: Mapping[str, pd.DataFrame] | None = None,
    max_bytes: int | None = None,
) -> EmailMessage:
    """The message: text body, optional HTML table, files, and frames as CSV files.

    With `max_bytes`, a message that cannot fit is refused from the files' sizes on
    disk before any file is read (a file is read whole to attach it)."""
    sizes = _file_sizes(files)
    csv_files = {name: frame_as_csv(frame) for name, frame in (frames or {}).items()}
    message = _text_message(sender, to, subject, body, table)
    if max_bytes is not None:
        csv_sizes = [(name, len(csv)) for name, csv in csv_files.items()]
        _check_estimate(message, sizes + csv_sizes, max_bytes)
    for path, _ in sizes:
        _attach_file(message, path)
    for file_name, csv in csv_files.items():
        message.add_attachment(csv, maintype="text", subtype="csv", filename=file_name)
    return message


def _text_message(
    sender: str, to: Sequence[str], subject: str, body: str, table: pd.DataFrame | None
) -> EmailMessage:
    """The headers, the text body and the optional HTML table: no attachments yet."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(body)
    if table is not None:
        if len(table) > MOST_TABLE_ROWS:
            raise MessageRefused(
                f"the table has {len(table):,} rows, more than {MOST_TABLE_ROWS} a "
                "mail should show: attach it as a CSV (frames=) instead"
            )
        html = table.to_html(index=False, border=1, na_rep="")
        message.add_alternative(f"<p>{_html_text(body)}</p>\n{html}", subtype="html")
    return message


def _html_text(text: str) -> str:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("\n", "<br>\n")


def _check_size(message: EmailMessage, max_bytes: int) -> int:
    size = len(message.as_bytes())
    if size > max_bytes:
        raise MessageRefused(
            f"the message is {size / MEGABYTE:.1f} MB, over the limit of "
            f"{max_bytes / MEGABYTE:.1f} MB: nothing was sent; deliver the files to a "
            "sink and mail a link, or raise max_message_bytes if the server allows it"
        )
    return size


def _open_smtp(connection: SmtpConnection) -> smtplib.SMTP:
    """A session to the server, TLS set up and logged in."""
    timeout = connection.timeout_seconds
    if connection.security == "tls":
        context = connection.tls_context()
        session = smtplib.SMTP_SSL(
            connection.host, connection.port, timeout=timeout, context=context
        )
    else:
        session = smtplib.SMTP(connection.host, connection.port, timeout=timeout)
    try:
        if connection.security == "starttls":
            session.starttls(context=connection.tls_context())
        if connection.username and connection.security != "none":
            _log_in(session, connection.username, _password(connection))
    except smtplib.SMTPAuthenticationError as error:
        session.close()
        where = f"{connection.username} at {connection.describe()}"
        raise LoginRefused(error, where) from None
    except BaseException:
        session.close()
        raise
    return session


def _log_in(session: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH PLAIN where offered, else smtplib's choice. smtplib's login() tries each
    mechanism in turn after a refusal: a wrong password would count as several
    failed logins against the account's lockout."""
    session.ehlo_or_helo_if_needed()
    offered = session.esmtp_features.get("auth", "").upper().split()
    if "PLAIN" not in offered:
        session.login(username, password)
        return
    session.user, session.password = username, password
    code, reply = session.auth("PLAIN", session.auth_plain)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)


def _password(connection: SmtpConnection) -> str:
    return connection.password.get() if connection.password is not None else ""


@task(**retries.TRANSIENT_RETRIES)
def send_email(  # pylint: disable=too-many-arguments
    connection: SmtpConnection,
    to: Sequence[str],
    subject: str,
    body: str,
    *,
    table: pd.DataFrame | None = None,
    files: Sequence[str | Path] = (),
    frames: Mapping[str, pd.DataFrame] | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> dict[str, tuple[int, str]]:
    """Send one message to the addresses `to`; the recipients the server refused.

    `table`: a small frame shown as an HTML table under the text; `files`: paths
    attached as they are; `frames`: {file name: frame} attached as CSV. A message over
    `max_message_bytes` fails before connecting, and one whose files alone are over
    it fails before they are read. When the server takes the message for some
    recipients and refuses others, the refused are logged and returned, not retried:
    a retry would send it twice to the rest.
    """
    if not to:
        raise MessageRefused("send_email needs at least one address in `to`")
    message = build_message(
        connection.sender,
        to,
        subject,
        body,
        table=table,
        files=files,
        frames=frames,
        max_bytes=max_message_bytes,
    )
    # The estimate leaves out MIME headers and boundaries: the built message is
    # measured once more, exactly.
    size = _check_size(message, max_message_bytes)
    session = _open_smtp(connection)
    try:
        refused = session.send_message(message, to_addrs=list(to))
    finally:
        session.close()
    return _report_sent(connection, subject, size, len(to), refused)


def _report_sent(connection, subject, size, addresses, refused) -> dict:
    """Log what was sent and who refused it; the refused, replies as text."""
    refused = {
        address: (code, reply.decode(errors="replace"))
        for address, (code, reply) in refused.items()
    }
    logger = run_logger()
    for address, (code, reply) in refused.items():
        logger.warning(
            "%s refused by %s: %d %s", address, connection.describe(), code, reply
        )
    logger.info(
        "sent %r (%d bytes) to %d of %d addresses through %s",
        subject,
        size,
        addresses - len(refused),
        addresses,
        connection.describe(),
    )
    return refused

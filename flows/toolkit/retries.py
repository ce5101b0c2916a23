"""Which failures a task retries: the transient ones of every source and sink shipped.

Retried, with exponential backoff: a database connection lost, a server restarting or
shut down by its administrator or full of clients for now, a serialization failure or
deadlock, and SFTP network faults. Never retried: whatever a retry cannot mend or
would make worse (bad SQL, a missing table, permission denied, a refused login or host
key, a missing file, a name already taken, a folder where a file should be, an SFTP
request the server refuses or does not support, a full disk).

The other systems, by the same rule:
- S3: throttling (SlowDown, 503), a store's internal error (500) and connection
  faults are retried; access denied, a bad key, a missing bucket or key never.
- SMTP: connection faults and 4xx replies (greylisting, "try again later") are
  retried; 5xx replies (a refused recipient, a failed login) and TLS refusals never.
- REST APIs: 429 and 5xx (503 included) and connection faults are retried; 400, 401,
  403, 404 and other 4xx never. rest.py waits out a Retry-After in place first.
- SMB shares: a lost connection is retried; a refused login, access denied and any
  other answer of the server never.
- MariaDB and MySQL: lost connections, a server shutting down, too many connections,
  lock wait timeouts and deadlocks are retried; other codes never.

Rule for errors without a SQLSTATE: a server that could not be reached (refused,
timed out, closed the connection) is retried; a server that answered and said no is
not. So a refused port is retried, even at the first connect: at 2 a.m. a restart or a
failover looks exactly like it, while a wrong port in a block fails its first manual
run anyway and costs a retry only the backoff's minutes, and locks no account.
"""

from __future__ import annotations

import errno
import ssl
import sys
from typing import Iterator

import httpx
import paramiko
from prefect.tasks import exponential_backoff

from toolkit import prefect_majors

# SQLSTATEs a retry can outlive: connection exceptions (class 08), admin shutdown,
# crash shutdown, cannot connect now (57P01-57P03), serialization failure, deadlock,
# too many connections (53300: a burst of scheduled runs at 05:00).
TRANSIENT_SQLSTATE_CLASSES = ("08",)
TRANSIENT_SQLSTATES = ("57P01", "57P02", "57P03", "40001", "40P01", "53300")

# MariaDB's and MySQL's codes a retry can outlive: too many connections (1040), a
# shutdown under way (1053), a lock wait timeout or deadlock (1205, 1213), a session
# killed (1927), and the client's: cannot connect (2002, 2003), server gone or the
# connection lost (2006, 2013, 2055), disconnected for inactivity (4031).
MYSQL_TRANSIENT_CODES = (
    1040,
    1053,
    1205,
    1213,
    1927,
    2002,
    2003,
    2006,
    2013,
    2055,
    4031,
)

# libpq's words when it raises without a SQLSTATE. Refusals are read first: the
# message of a refused login also begins "connection to server at ... failed".
REFUSED_PHRASES = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "password is required",
    "certificate",
)
UNREACHABLE_PHRASES = (
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    # A server full for now: what a burst of scheduled runs meets at connect time.
    "too many clients already",
    "too many connections for role",
    "remaining connection slots are reserved",
    "connection refused",
    "could not connect to server",
    "could not receive data from server",
    "could not send data to server",
    "could not translate host name",
    "no connection to the server",
    "connection already closed",
    "connection timed out",
    "timeout expired",
    "ssl syscall error",
    "ssl connection has been closed unexpectedly",
    # psycopg2, when the connection breaks mid-COPY before libpq has read why:
    # a server that refused something always says what.
    "no message from the libpq",
)

# paramiko raises an SFTP server's answers as OSErrors: "permission denied" as a
# PermissionError, the others with no errno and the server's words for the status.
SFTP_REFUSED_PHRASES = ("unsupported", "bad message")
# A full disk or quota stays full for a retry's seconds: someone must free space.
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# S3's answers that a retry can outlive: throttling and a store's own trouble.
S3_TRANSIENT_CODES = (
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
)
S3_TRANSIENT_STATUSES = (500, 502, 503, 504)
# HTTP statuses of an API that a retry can outlive: too many requests, server faults.
HTTP_TRANSIENT_STATUSES = (429,)


class PermanentFailure(Exception):
    """Mixed into an error class whose errors no retry can mend (a refused host key)."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then the errors it wraps: SQLAlchemy's `orig`, then `__cause__`."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [getattr(current, "orig", None), current.__cause__]


def _sqlstate_verdict(sqlstate: str) -> bool:
    return sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES) or (
        sqlstate in TRANSIENT_SQLSTATES
    )


def _connection_lost(error: BaseException) -> bool:
    """The driver's connection closed under the error (psycopg2: `closed` non-zero)."""
    cursor = getattr(error, "cursor", None)
    connection = getattr(cursor, "connection", None)
    return bool(getattr(connection, "closed", 0))


def _mysql_verdict(error: BaseException) -> bool | None:
    """PyMySQL's errors (MariaDB, MySQL): by the server's or the client's code."""
    pymysql_errors = loaded("pymysql.err")
    if pymysql_errors is None or not isinstance(error, pymysql_errors.MySQLError):
        return None
    code = error.args[0] if error.args and isinstance(error.args[0], int) else 0
    return code in MYSQL_TRANSIENT_CODES


def _driver_verdict(error: BaseException) -> bool | None:
    """A database driver's error: by SQLSTATE, else by connection state and message."""
    mysql = _mysql_verdict(error)
    if mysql is not None:
        return mysql
    sqlstate = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return _sqlstate_verdict(sqlstate)
    if not hasattr(error, "pgcode"):
        return None  # not a psycopg2 error: let the chain or the network rule decide
    message = str(error).lower()
    if any(phrase in message for phrase in REFUSED_PHRASES):
        return False
    return _connection_lost(error) or any(
        phrase in message for phrase in UNREACHABLE_PHRASES
    )


def _refused_or_full(error: OSError) -> bool:
    """An SFTP server's refusal (it answered), or a full disk."""
    if error.errno in FULL_DISK_ERRNOS:
        return True
    message = str(error).lower()
    return error.errno is None and any(
        phrase in message for phrase in SFTP_REFUSED_PHRASES
    )


def _network_verdict(error: BaseException) -> bool | None:
    """SFTP, sockets and disks: network faults are transient; refusals, missing files
    and full disks are not."""
    permanent = (
        PermanentFailure,
        paramiko.AuthenticationException,
        paramiko.BadHostKeyException,
        FileNotFoundError,
        FileExistsError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
    )
    if isinstance(error, permanent):
        return False
    if isinstance(error, OSError) and _refused_or_full(error):
        return False
    if isinstance(error, (OSError, EOFError, paramiko.SSHException)):
        return True
    return None


def loaded(module_name: str):
    """The module if a run has imported it, else None. An error of a library never
    imported cannot have been raised, so the rules of S3 and mail read their
    libraries' error classes from here, and importing this module (every runtime
    module does) imports neither botocore nor smtplib."""
    return sys.modules.get(module_name)


def _s3_verdict(error: BaseException) -> bool | None:
    """botocore's errors: an S3 answer by its code and status, else its network."""
    botocore_errors = loaded("botocore.exceptions")
    if botocore_errors is None:
        return None
    if isinstance(error, botocore_errors.ClientError):
        answer = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return answer.get("Code") in S3_TRANSIENT_CODES or (
            status in S3_TRANSIENT_STATUSES
        )
    transient = (
        botocore_errors.ConnectionError,  # refused, closed, timed out connecting
        botocore_errors.HTTPClientError,  # read timeouts, cut connections
        botocore_errors.ResponseStreamingError,
        botocore_errors.IncompleteReadError,
    )
    if isinstance(error, transient):
        return True
    if isinstance(error, botocore_errors.BotoCoreError):
        return False  # no credentials, a bad parameter: a retry repeats it
    return None


def _smb_verdict(error: BaseException) -> bool | None:
    """smbprotocol's errors that are not OSErrors: a lost connection is retried; a
    refused login or any other answer of the server is not (one try: a wrong
    password tried again could lock the account)."""
    smb_errors = loaded("smbprotocol.exceptions")
    if smb_errors is None or isinstance(error, OSError):
        return None
    if isinstance(error, smb_errors.SMBConnectionClosed):
        return True
    if isinstance(error, smb_errors.SMBException):
        return False
    return None


def _smtp_verdict(error: BaseException) -> bool | None:
    """smtplib's errors (OSErrors all): a reply by its code, a broken link retried."""
    smtplib = loaded("smtplib")
    if smtplib is not None:
        if isinstance(error, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in error.recipients.values()]
            return bool(codes) and all(400 <= code < 500 for code in codes)
        if isinstance(error, smtplib.SMTPResponseException):
            return 400 <= error.smtp_code < 500
        if isinstance(error, smtplib.SMTPServerDisconnected):
            return True
        if isinstance(error, smtplib.SMTPException):
            return False  # STARTTLS or AUTH not offered
    if isinstance(error, ssl.SSLCertVerificationError):
        return False  # a certificate not trusted
    return None


def _http_verdict(error: BaseException) -> bool | None:
    """httpx's errors: a status by its number, a broken connection retried."""
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return status in HTTP_TRANSIENT_STATUSES or status >= 500
    if isinstance(error, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return False
    if isinstance(error, httpx.TransportError):
        return not _certificate_refused(error)
    return None


def _certificate_refused(error: BaseException | None) -> bool:
    """Whether a connection failed on a certificate that is not trusted: httpx
    wraps ssl's error in its own, twice, and a retry meets the same certificate."""
    while error is not None:
        if isinstance(error, ssl.SSLCertVerificationError):
            return True
        error = error.__cause__ or error.__context__
    return False


def _system_verdict(error: BaseException) -> bool | None:
    """S3, SMTP and HTTP APIs: read before the network rule, which would take
    smtplib's errors (OSErrors) for network faults."""
    for verdict in (_s3_verdict, _smb_verdict, _smtp_verdict, _http_verdict):
        found = verdict(error)
        if found is not None:
            return found
    return None


def is_transient(error: BaseException | None) -> bool:
    """Whether a retry can outlive `error`; the outermost error that tells decides."""
    if error is None:
        return False
    for current in _chain(error):
        verdict = _driver_verdict(current)
        if verdict is None:
            verdict = _system_verdict(current)
        if verdict is None:
            verdict = _network_verdict(current)
        if verdict is not None:
            return verdict
    return False


async def is_transient_failure(task, task_run, state) -> bool:  # pylint: disable=W0613
    """Prefect's retry condition: retry the failed run only if its error is transient."""
    error = await prefect_majors.failed_state_error(state)
    return isinstance(error, BaseException) and is_transient(error)


# The task options of everything that reaches a server: `@task(**TRANSIENT_RETRIES)`.
# Waits of about 5, 10 and 20 s (jittered): longer than a database restart takes.
TRANSIENT_RETRIES = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": is_transient_failure,
}

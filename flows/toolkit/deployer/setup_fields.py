"""The values `setup` reads for each kind of connection block, and how the values of
object storage (`--s3`), mail (`--smtp`), Windows share (`--smb`) and API (`--api`)
blocks become blocks.

Each kind's values come from FLOWS_<SYSTEM>_<KIND>_<FIELD>; `setup --help` lists the
fields. A builder checks its values (one line naming the variable, exit 2) and
returns the block; its secrets go through `secret(suffix, value)`, which makes the
Secret block `<block name>-<suffix>`, or keeps the saved one when the value is empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prefect.blocks.core import Block
from prefect.blocks.system import Secret

from toolkit.errors import UserError
from toolkit.mail import SmtpConnection
from toolkit.object_storage import S3Connection
from toolkit.rest import ApiConnection
from toolkit.smb import SmbConnection

SecretMaker = Callable[[str, str | None], Secret | None]


@dataclass(frozen=True)
class Field:
    """One value setup asks for: its variable suffix, whether secret, its default."""

    suffix: str
    prompt: str
    secret: bool = False
    default: str | None = None  # None: required


KEEP = "(empty: keep the saved one)"
SYSTEM_FIELDS = {
    "s3": (
        Field("BUCKET", "bucket name"),
        Field("PREFIX", "folder in the bucket", default=""),
        Field("ENDPOINT_URL", "S3 API address (empty: AWS)", default=""),
        Field("REGION", "region", default="us-east-1"),
        Field("ADDRESSING_STYLE", "addressing: auto, path or virtual", default="auto"),
        Field("ACCESS_KEY_ID", f"access key id {KEEP}", True, ""),
        Field("SECRET_ACCESS_KEY", f"secret access key {KEEP}", True, ""),
    ),
    "smtp": (
        Field("HOST", "SMTP host"),
        Field("PORT", "SMTP port", default="587"),
        Field("SECURITY", "starttls, tls or none", default="starttls"),
        Field("SENDER", "From address"),
        Field("USERNAME", "login name (empty: none)", default=""),
        Field("PASSWORD", f"SMTP password {KEEP}", True, ""),
        Field("TRUSTED_CERTIFICATES_FILE", "PEM file of a CA to trust", default=""),
    ),
    "smb": (
        Field("HOST", "SMB server name or address"),
        Field("SHARE", "share name"),
        Field("PORT", "SMB port", default="445"),
        Field("DOMAIN", "Windows domain (empty: none)", default=""),
        Field("USERNAME", "login name"),
        Field("PASSWORD", f"SMB password {KEEP}", True, ""),
        Field("REMOTE_DIR", "folder in the share", default=""),
        Field("ENCRYPT", "require encryption: yes or no", default="no"),
    ),
    "api": (
        Field("BASE_URL", "API base URL"),
        Field("BEARER_TOKEN", f"bearer token {KEEP}", True, ""),
        Field("USERNAME", "basic-auth login (empty: none)", default=""),
        Field("PASSWORD", f"basic-auth password {KEEP}", True, ""),
        Field(
            "HEADERS",
            f'headers as a JSON object ({{"X-Api-Key": ...}}), kept secret {KEEP}',
            True,
            "",
        ),
    ),
}


def read_file(path: str, variable: str) -> str:
    """The text of the file a variable names; one line when it cannot be read."""
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"{variable}: cannot read {path}: {error.strerror}") from None


def _choice(values: dict, suffix: str, prefix: str, choices: tuple[str, ...]) -> str:
    value = values[suffix].lower()
    if value not in choices:
        raise UserError(
            f"{prefix}{suffix} must be one of {', '.join(choices)}, not {value!r}"
        )
    return value


def _web_address(value: str, variable: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise UserError(f"{variable} must start with http:// or https://")
    return value


def s3_block(values: dict, secret: SecretMaker, prefix: str) -> S3Connection:
    """An S3Connection block; both keys or neither (then AWS's own chain)."""
    key_id, secret_key = values["ACCESS_KEY_ID"], values["SECRET_ACCESS_KEY"]
    if bool(key_id) != bool(secret_key):
        raise UserError(
            f"set both {prefix}ACCESS_KEY_ID and {prefix}SECRET_ACCESS_KEY, or neither"
        )
    endpoint = values["ENDPOINT_URL"]
    return S3Connection(
        bucket=values["BUCKET"],
        prefix=values["PREFIX"].strip("/"),
        endpoint_url=(
            _web_address(endpoint, f"{prefix}ENDPOINT_URL") if endpoint else None
        ),
        region=values["REGION"],
        addressing_style=_choice(
            values, "ADDRESSING_STYLE", prefix, ("auto", "path", "virtual")
        ),
        access_key_id=secret("access-key-id", key_id),
        secret_access_key=secret("secret-access-key", secret_key),
    )


def smtp_block(values: dict, secret: SecretMaker, prefix: str) -> SmtpConnection:
    """An SmtpConnection block."""
    if not values["PORT"].isdigit():
        raise UserError(f"{prefix}PORT must be a number, not {values['PORT']!r}")
    certificates = values["TRUSTED_CERTIFICATES_FILE"]
    return SmtpConnection(
        host=values["HOST"],
        port=int(values["PORT"]),
        security=_choice(values, "SECURITY", prefix, ("starttls", "tls", "none")),
        sender=values["SENDER"],
        username=values["USERNAME"] or None,
        password=secret("password", values["PASSWORD"]),
        trusted_certificates=(
            read_file(certificates, f"{prefix}TRUSTED_CERTIFICATES_FILE")
            if certificates
            else ""
        ),
    )


def smb_block(values: dict, secret: SecretMaker, prefix: str) -> SmbConnection:
    """An SmbConnection block, its password in a Secret block."""
    if not values["PORT"].isdigit():
        raise UserError(f"{prefix}PORT must be a number, not {values['PORT']!r}")
    return SmbConnection(
        host=values["HOST"],
        share=values["SHARE"].strip("\\/"),
        port=int(values["PORT"]),
        domain=values["DOMAIN"],
        username=values["USERNAME"],
        password=secret("password", values["PASSWORD"]),
        remote_dir=values["REMOTE_DIR"].strip("/"),
        encrypt=_choice(values, "ENCRYPT", prefix, ("yes", "no")) == "yes",
    )


def api_block(values: dict, secret: SecretMaker, prefix: str) -> ApiConnection:
    """An ApiConnection block; its headers (a JSON object of strings, where an API
    key often goes) in a Secret block, as the token is."""
    if values["HEADERS"]:
        try:
            headers = json.loads(values["HEADERS"])
        except json.JSONDecodeError:
            headers = None
        if not isinstance(headers, dict) or not all(
            isinstance(value, str) for value in headers.values()
        ):
            raise UserError(
                f'{prefix}HEADERS must be a JSON object of strings: {{"Accept": '
                '"application/json"}'
            )
    return ApiConnection(
        base_url=_web_address(values["BASE_URL"], f"{prefix}BASE_URL"),
        bearer_token=secret("bearer-token", values["BEARER_TOKEN"]),
        username=values["USERNAME"] or None,
        password=secret("password", values["PASSWORD"]),
        secret_headers=secret("headers", values["HEADERS"]),
    )


BUILDERS: dict[str, Callable[[dict, SecretMaker, str], Block]] = {
    "s3": s3_block,
    "smtp": smtp_block,
    "smb": smb_block,
    "api": api_block,
}

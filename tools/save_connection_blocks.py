"""Save the Prefect blocks a flow's `env` reads its connections from.

    python3 tools/save_connection_blocks.py database --system example --env prod \\
        --url postgresql+psycopg2://reader@db.example.edu:5432/warehouse
    python3 tools/save_connection_blocks.py sftp --system example --env prod \\
        --host sftp.partner.example --username drop --known-hosts-file partner.pub \\
        --private-key-file ~/.ssh/partner_ed25519 --remote-dir incoming

Blocks: `<system>-database-<env>` and `<system>-sftp-<env>`, with the password or key
in a Secret block `<same name>-password` or `-private-key`. A password comes from the
environment variable FLOWS_DATABASE_PASSWORD or FLOWS_SFTP_PASSWORD, else from a prompt
that does not echo; it is never an argument (shell history, process lists).
Runs against the Prefect API in force (PREFECT_API_URL or the active profile).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "flows"))

# pylint: disable=wrong-import-position
from prefect.blocks.system import Secret  # noqa: E402

from database import DatabaseConnection  # noqa: E402
from sftp import SftpConnection  # noqa: E402


def _password(variable: str, prompt: str, wanted: bool) -> str | None:
    if os.environ.get(variable):
        return os.environ[variable]
    if wanted and sys.stdin.isatty():
        return getpass.getpass(prompt) or None
    return None


def _save_secret(name: str, value: str | None) -> Secret | None:
    if value is None:
        return None
    secret = Secret(value=value)
    secret.save(name, overwrite=True)
    return secret


def save_database(options) -> str:
    """The database block (and its password's Secret); its name."""
    name = f"{options.system}-database-{options.env}"
    password = _password(
        "FLOWS_DATABASE_PASSWORD", f"Password for {options.url}: ", options.ask
    )
    DatabaseConnection(
        url=options.url, password=_save_secret(f"{name}-password", password)
    ).save(name, overwrite=True)
    return name


def save_sftp(options) -> str:
    """The SFTP block (and its key's or password's Secret); its name."""
    name = f"{options.system}-sftp-{options.env}"
    key = None
    if options.private_key_file:
        key = Path(options.private_key_file).expanduser().read_text(encoding="utf-8")
    password = _password(
        "FLOWS_SFTP_PASSWORD",
        f"Password for {options.username}@{options.host}: ",
        options.ask and key is None,
    )
    SftpConnection(
        host=options.host,
        port=options.port,
        username=options.username,
        password=_save_secret(f"{name}-password", password),
        private_key=_save_secret(f"{name}-private-key", key),
        known_hosts=Path(options.known_hosts_file).read_text(encoding="utf-8"),
        remote_dir=options.remote_dir,
        atomic_uploads=not options.no_atomic_uploads,
    ).save(name, overwrite=True)
    return name


def main(arguments: list[str]) -> None:
    """The command line above."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--system", required=True, help="e.g. example")
    parser.add_argument("--env", required=True, choices=["dev", "prod"])
    parser.add_argument(
        "--no-prompt", dest="ask", action="store_false", help="never ask for a password"
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    database = kinds.add_parser("database", help="a SQLAlchemy source")
    database.add_argument("--url", required=True, help="SQLAlchemy URL, no password")
    sftp = kinds.add_parser("sftp", help="an SFTP sink")
    sftp.add_argument("--host", required=True)
    sftp.add_argument("--port", type=int, default=22)
    sftp.add_argument("--username", required=True)
    sftp.add_argument(
        "--known-hosts-file",
        required=True,
        help="the server's known_hosts lines (ssh-keyscan, checked with the partner)",
    )
    sftp.add_argument("--private-key-file")
    sftp.add_argument("--remote-dir", default=".")
    sftp.add_argument(
        "--no-atomic-uploads",
        action="store_true",
        help="for drop boxes that refuse stat or rename (see flows/sftp.py)",
    )
    options = parser.parse_args(arguments)
    saved = save_database(options) if options.kind == "database" else save_sftp(options)
    print(f"saved block {saved}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Which database and which sink a flow uses, per environment (`env`: dev or prod).

Connection settings live in Prefect blocks named `<system>-<env>` (for example
`example-database-prod`, `example-sftp-prod`), passwords and keys in Secret blocks
they point to; `python3 flows/util.py setup --database SYSTEM --sftp SYSTEM` creates
them. For `env=dev` a missing block falls back to the embedded default: the SQLite
sample database and a local folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import delivery
from database import DatabaseConnection
from sample_data import ensure_sample_database
from sftp import SftpConnection

ENVIRONMENTS = ("dev", "prod")
FLOWS_DIR = Path(__file__).resolve().parent
# Where `env=dev` writes, and keeps the sample database, unless a block says otherwise.
OUTPUT_DIR_VARIABLE = "FLOWS_OUTPUT_DIR"
DEFAULT_OUTPUT_DIR = FLOWS_DIR / "output"


class UnknownEnvironment(ValueError):
    """`env` is neither dev nor prod."""


def _check(env: str) -> None:
    if env not in ENVIRONMENTS:
        raise UnknownEnvironment(f"env must be one of {ENVIRONMENTS}, not {env!r}")


def _load_block(block_class, system: str, env: str):
    """The block `<system>-<env>`, or None where dev may use the embedded default."""
    name = f"{system}-{env}"
    try:
        return block_class.load(name)
    except ValueError as missing:
        if env == "dev":
            return None
        raise ValueError(
            f"no {block_class.get_block_type_name()} block named {name!r}: create it "
            f"with `python3 flows/util.py setup --env {env}` and --database or --sftp"
        ) from missing


def output_dir(override: str | None = None) -> Path:
    """The local folder of dev output: the argument, FLOWS_OUTPUT_DIR, or flows/output."""
    chosen = override or os.environ.get(OUTPUT_DIR_VARIABLE) or DEFAULT_OUTPUT_DIR
    return Path(chosen).expanduser().resolve()


def database_for(system: str, env: str) -> DatabaseConnection:
    """The database of `system` in `env`."""
    _check(env)
    block = _load_block(DatabaseConnection, f"{system}-database", env)
    if block is not None:
        return block
    sample = ensure_sample_database(output_dir() / "sample_university.sqlite")
    return DatabaseConnection(url=f"sqlite:///{sample}")


def sink_for(system: str, env: str, folder: str | None = None) -> delivery.Sink:
    """Where the files of `system` go in `env`: its SFTP server, or a local folder."""
    _check(env)
    block = _load_block(SftpConnection, f"{system}-sftp", env)
    if block is not None:
        return delivery.SftpSink(block)
    return delivery.LocalFolderSink(str(output_dir(folder) / env))

"""Which database and which sink a flow uses, per environment (`env`: dev or prod).

Connection settings live in Prefect blocks named `<system>-<env>` (for example
`example-database-prod`, `example-sftp-prod`), passwords and keys in Secret blocks
they point to; `python3 flows/util.py setup --database SYSTEM --sftp SYSTEM` creates
them. For `env=dev` a missing block falls back to an embedded default: the database
the flow names (a sample it makes, for example) and a local folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from toolkit import delivery
from toolkit.database import DatabaseConnection
from toolkit.sftp import SftpConnection

ENVIRONMENTS = ("dev", "prod")
FLOWS_DIR = Path(__file__).resolve().parents[1]
# Where `env=dev` writes (and a flow may keep its sample data) unless a block says
# otherwise.
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


def database_for(
    system: str,
    env: str,
    dev_default: Optional[Callable[[Path], DatabaseConnection]] = None,
) -> DatabaseConnection:
    """The database of `system` in `env`.

    Without a dev block, `dev_default(output_dir())` makes the embedded default (a
    sample database in that folder, say); without one either, the block is required.
    """
    _check(env)
    block = _load_block(DatabaseConnection, f"{system}-database", env)
    if block is not None:
        return block
    if dev_default is None:
        raise ValueError(
            f"no {DatabaseConnection.get_block_type_name()} block named "
            f"'{system}-database-dev' and no embedded default for {system}: create it "
            "with `python3 flows/util.py setup --env dev --database "
            f"{system}`"
        )
    return dev_default(output_dir())


def sink_for(system: str, env: str, folder: str | None = None) -> delivery.Sink:
    """Where the files of `system` go in `env`: its SFTP server, or a local folder."""
    _check(env)
    block = _load_block(SftpConnection, f"{system}-sftp", env)
    if block is not None:
        return delivery.SftpSink(block)
    return delivery.LocalFolderSink(str(output_dir(folder) / env))

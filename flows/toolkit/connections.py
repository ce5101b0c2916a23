"""Which database and which sink a flow uses, per environment (`env`: dev or main).

`main` is the environment of branch main's deployments, the ones that run for real;
`dev` is every other branch's and a laptop's. Connection settings live in Prefect
blocks named `<system>-<env>` (for example `example-database-main`,
`example-sftp-main`), passwords and keys in Secret blocks they point to;
`python3 flows/util.py setup --database SYSTEM --sftp SYSTEM` creates them (and
`--s3`, `--smtp`, `--smb`, `--api` those of object storage, mail, Windows shares
and REST APIs). For `env=dev` a missing block falls back to an embedded default:
the database the flow names (a sample it makes, for example) and a local folder,
for SFTP, S3 and SMB alike. A
mail server or an API has no stand-in: a missing block is an error in dev too.

Releases before v1.3.0 called main `prod`: `env="prod"` still means main, and a main
block not found by its name is looked up by the `-prod` name those releases gave it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from toolkit import delivery
from toolkit.database import DatabaseConnection
from toolkit.pickup import LocalDropFolder
from toolkit.rest import ApiConnection
from toolkit.settings import Settings
from toolkit.sftp import SftpConnection

if TYPE_CHECKING:  # imported where a flow asks for S3 or mail: botocore, smtplib
    from toolkit.mail import SmtpConnection
    from toolkit.object_storage import S3DropFolder
    from toolkit.smb import SmbDropFolder

ENVIRONMENTS = ("dev", "main")
# The names earlier releases used, and what they mean now.
OLD_ENVIRONMENT_NAMES = {"prod": "main"}
FLOWS_DIR = Path(__file__).resolve().parents[1]
# Where `env=dev` writes (and a flow may keep its sample data) unless a block says
# otherwise.
DEFAULT_OUTPUT_DIR = FLOWS_DIR / "output"


class UnknownEnvironment(ValueError):
    """`env` is neither dev nor main."""


def environment(env: str) -> str:
    """`dev` or `main`; `prod`, the old name of main, is main."""
    env = OLD_ENVIRONMENT_NAMES.get(env, env)
    if env not in ENVIRONMENTS:
        raise UnknownEnvironment(f"env must be one of {ENVIRONMENTS}, not {env!r}")
    return env


def _block_names(kind: str, env: str) -> list[str]:
    """The names a block of `kind` (`<system>-database`) may have in `env`, newest
    first."""
    old = [
        f"{kind}-{name}" for name, new in OLD_ENVIRONMENT_NAMES.items() if new == env
    ]
    return [f"{kind}-{env}", *old]


def _load_block(block_class, kind: str, env: str, dev_stand_in: bool = True):
    """The block of `kind` (`<system>-<option>`) in `env`, or None where dev may use
    the embedded default."""
    names = _block_names(kind, env)
    for name in names:
        try:
            return block_class.load(name)
        except ValueError:
            continue
    if env == "dev" and dev_stand_in:
        return None
    system, _, option = kind.rpartition("-")
    raise ValueError(
        f"no {block_class.get_block_type_name()} block named {names[0]!r}: create it "
        f"with `python3 flows/util.py setup --env {env} --{option} {system}`"
    )


def output_dir(override: str | None = None) -> Path:
    """The local folder of dev output: the argument, FLOWS_OUTPUT_DIR, or flows/output."""
    chosen = override or Settings.from_environment().output_dir or DEFAULT_OUTPUT_DIR
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
    env = environment(env)
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


def _block_in(block_class, kind: str, system: str, env: str):
    """(the `<system>-<kind>` block in `env`, or None where dev has a stand-in; env)."""
    env = environment(env)
    return _load_block(block_class, f"{system}-{kind}", env), env


def _local_sink(env: str, folder: str | None) -> delivery.LocalFolderSink:
    """The dev stand-in of a remote sink: the local dev folder."""
    return delivery.LocalFolderSink(str(output_dir(folder) / env))


def _local_drop_folder(env: str, folder: str, local_folder: str | None):
    """The dev stand-in of a remote drop folder: `folder` below the local one."""
    path = output_dir(local_folder) / env / folder
    path.mkdir(parents=True, exist_ok=True)
    return LocalDropFolder(path)


def sink_for(system: str, env: str, folder: str | None = None) -> delivery.Sink:
    """Where the files of `system` go in `env`: its SFTP server, or a local folder."""
    block, env = _block_in(SftpConnection, "sftp", system, env)
    return delivery.SftpSink(block) if block is not None else _local_sink(env, folder)


def s3_sink_for(system: str, env: str, folder: str | None = None) -> delivery.Sink:
    """Where the files of `system` go in `env`: its S3 prefix, or (dev without a
    block) the local folder sink_for uses."""
    # pylint: disable-next=import-outside-toplevel  # S3's client only for S3
    from toolkit.object_storage import S3Connection, S3Sink

    block, env = _block_in(S3Connection, "s3", system, env)
    return S3Sink(block) if block is not None else _local_sink(env, folder)


def s3_drop_folder_for(
    system: str, env: str, folder: str = "", local_folder: str | None = None
) -> S3DropFolder | LocalDropFolder:
    """The S3 prefix (and `folder` below it) where `system`'s partner drops files in
    `env`; in dev without a block, that folder below the local dev folder."""
    # pylint: disable-next=import-outside-toplevel  # S3's client only for S3
    from toolkit.object_storage import S3Connection, S3DropFolder

    block, env = _block_in(S3Connection, "s3", system, env)
    if block is not None:
        return S3DropFolder(block, folder)
    return _local_drop_folder(env, folder, local_folder)


def smb_sink_for(system: str, env: str, folder: str | None = None) -> delivery.Sink:
    """Where the files of `system` go in `env`: its Windows share, or (dev without a
    block) the local folder sink_for uses."""
    # pylint: disable-next=import-outside-toplevel  # the SMB client only for SMB
    from toolkit.smb import SmbConnection, SmbSink

    block, env = _block_in(SmbConnection, "smb", system, env)
    return SmbSink(block) if block is not None else _local_sink(env, folder)


def smb_drop_folder_for(
    system: str, env: str, folder: str = "", local_folder: str | None = None
) -> SmbDropFolder | LocalDropFolder:
    """The folder of `system`'s share where its partner drops files in `env`; in
    dev without a block, that folder below the local dev folder."""
    # pylint: disable-next=import-outside-toplevel  # the SMB client only for SMB
    from toolkit.smb import SmbConnection, SmbDropFolder

    block, env = _block_in(SmbConnection, "smb", system, env)
    if block is not None:
        return SmbDropFolder(block, folder)
    return _local_drop_folder(env, folder, local_folder)


def mail_server_for(system: str, env: str) -> SmtpConnection:
    """The SMTP server `system`'s mail goes through in `env` (no dev stand-in)."""
    # pylint: disable-next=import-outside-toplevel  # smtplib only for mail
    from toolkit.mail import SmtpConnection

    return _load_block(SmtpConnection, f"{system}-smtp", environment(env), False)


def api_for(system: str, env: str) -> ApiConnection:
    """The REST API of `system` in `env` (no dev stand-in)."""
    return _load_block(ApiConnection, f"{system}-api", environment(env), False)

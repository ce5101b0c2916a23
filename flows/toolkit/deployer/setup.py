"""`python3 flows/util.py setup`: make a Prefect workspace ready for the template.

It creates what is missing and updates what differs, and nothing else: run twice, the
second run changes nothing. Every value is read (environment variables, else prompts
in a terminal) and checked before the first change, so a missing value or an
unreachable bucket leaves the workspace as it was. Secrets are read without echo and
are never printed.

Connection blocks (see connections.py), for `--database SYSTEM` and `--sftp SYSTEM`,
take their values from FLOWS_<SYSTEM>_DATABASE_<FIELD> and FLOWS_<SYSTEM>_SFTP_<FIELD>
(SYSTEM in capitals, dashes as underscores); CONNECTION_FIELDS lists the fields.
`--s3`, `--smtp` and `--api` do the same for the blocks setup_fields.py builds.
`--notify URL` saves a webhook block and its failure policy (see notifications.py).
"""

from __future__ import annotations

import asyncio
import getpass
import sys

from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from toolkit import prefect_majors
from toolkit.connections import UnknownEnvironment, environment
from toolkit.database import DatabaseConnection
from toolkit.errors import UserError
from toolkit.settings import Settings, read_variable
from toolkit.sftp import SftpConnection
from toolkit.deployer import notifications, prefect_api
from toolkit.deployer.setup_fields import BUILDERS, SYSTEM_FIELDS, Field, read_file
from toolkit.deployer.storage import storage_for

QUEUES = ("main", "dev")


CONNECTION_FIELDS = {
    "database": (
        Field("URL", "SQLAlchemy URL without the password"),
        Field("PASSWORD", "database password (empty: keep the saved one)", True, ""),
    ),
    "sftp": (
        Field("HOST", "SFTP host"),
        Field("PORT", "SFTP port", default="22"),
        Field("USERNAME", "SFTP login name"),
        Field("KNOWN_HOSTS_FILE", "file with the server's known_hosts lines"),
        Field(
            "PRIVATE_KEY_FILE",
            "private key file (empty: keep the saved one)",
            default="",
        ),
        Field("PASSWORD", "SFTP password (empty: keep the saved one)", True, ""),
        Field("REMOTE_DIR", "remote folder", default="."),
        Field(
            "ATOMIC_UPLOADS",
            "upload as temp file then rename (true/false)",
            False,
            "true",
        ),
    ),
}
CONNECTION_FIELDS.update(SYSTEM_FIELDS)
S3_KEY_FIELDS = (
    Field("FLOWS_S3_ACCESS_KEY_ID", "access key id of the storage bucket", True),
    Field("FLOWS_S3_SECRET_ACCESS_KEY", "secret access key", True),
)


def variable_prefix(system: str, kind: str) -> str:
    """FLOWS_<SYSTEM>_<KIND>_, the prefix of a connection's environment variables."""
    return f"FLOWS_{system.upper().replace('-', '_')}_{kind.upper()}_"


class ValueReader:  # pylint: disable=too-few-public-methods
    """Values from the environment, else from prompts when a person is at a terminal."""

    def __init__(self, ask: bool):
        self.ask = ask and sys.stdin.isatty()
        self.missing: list[str] = []

    def read(self, variable: str, field: Field) -> str | None:
        """The value of `variable`; its default, or None (noted) when unset."""
        value = read_variable(variable)
        if not value and self.ask:
            label = f"{field.prompt} [{variable}]: "
            value = getpass.getpass(label) if field.secret else input(label)
        if value:
            return value
        if field.default is None:
            self.missing.append(variable)
        return field.default


def _comparable(value):
    """A block's values, secrets revealed, for comparing a wanted block with a saved one."""
    if isinstance(value, Block):
        value = value.dict()
    # SecretStr, and SecretDict of webhook blocks
    if isinstance(value, prefect_majors.SECRET_TYPES):
        return value.get_secret_value()
    if isinstance(value, dict):
        # A loaded block also lists its document's id and name: not its values.
        return {
            key: _comparable(item)
            for key, item in value.items()
            if not str(key).startswith("_")
        }
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    return value


async def save_if_changed(block: Block, name: str) -> str:
    """Save `block` as `name` unless a block equal to it is saved: what happened."""
    try:
        saved = await type(block).load(name)
    except ValueError:  # none of that name
        saved = None
    if saved is not None and _comparable(saved) == _comparable(block):
        # Take on the saved block's identity: a block that nests this one then
        # refers to the named document instead of saving an anonymous copy.
        # pylint: disable=protected-access
        block._block_document_id = saved._block_document_id
        block._block_document_name = saved._block_document_name
        block._is_anonymous = saved._is_anonymous
        return "unchanged"
    await block.save(name, overwrite=True)
    return "created" if saved is None else "updated"


class Setup:
    """What one run of setup will save, read in full before anything is changed."""

    def __init__(self, settings: Settings, env: str, ask: bool):
        try:
            self.env = environment(env)
        except UnknownEnvironment as error:
            raise UserError(f"--env: {error}") from None
        self.settings = settings
        self.reader = ValueReader(ask)
        self.storage = storage_for(settings)
        self.s3_keys: dict | None = None
        self.blocks: list[tuple[str, Block]] = []  # in saving order: secrets first
        self.webhooks: list[tuple[str, Block]] = []

    def read_storage_keys(self) -> None:
        """The bucket key for the credentials block, when the root is s3:// and set."""
        if not self.settings.storage_is_s3:
            return
        # Optional: without them, deployers and workers use their own AWS credentials.
        key_id, secret = (
            ValueReader(self.reader.ask).read(f.suffix, f) for f in S3_KEY_FIELDS
        )
        if bool(key_id) != bool(secret):
            raise UserError(
                "set both FLOWS_S3_ACCESS_KEY_ID and FLOWS_S3_SECRET_ACCESS_KEY, or neither"
            )
        if key_id:
            self.s3_keys = {"key": key_id, "secret": secret}

    def read_database(self, system: str) -> None:
        """The database block of `system` and its password's Secret block."""
        prefix = variable_prefix(system, "database")
        values = self._read_fields(system, "database")
        if values["URL"] is None:
            return  # missing: reported with the others
        try:
            has_password = make_url(values["URL"]).password is not None
        except ArgumentError:
            raise UserError(f"{prefix}URL is not a SQLAlchemy URL") from None
        if has_password:  # never echoed: it would print the password
            raise UserError(
                f"{prefix}URL holds a password: leave it out, and set {prefix}PASSWORD"
            )
        name = f"{system}-database-{self.env}"
        password = self._secret(f"{name}-password", values["PASSWORD"])
        self.blocks.append(
            (name, DatabaseConnection(url=values["URL"], password=password))
        )

    def read_sftp(self, system: str) -> None:
        """The SFTP block of `system` and its key's or password's Secret block."""
        prefix = variable_prefix(system, "sftp")
        values = self._read_fields(system, "sftp")
        if None in values.values():
            return  # missing: reported with the others
        name = f"{system}-sftp-{self.env}"
        key = None
        if values["PRIVATE_KEY_FILE"]:
            key = read_file(values["PRIVATE_KEY_FILE"], f"{prefix}PRIVATE_KEY_FILE")
        if not values["PORT"].isdigit():
            raise UserError(f"{prefix}PORT must be a number, not {values['PORT']!r}")
        block = SftpConnection(
            host=values["HOST"],
            port=int(values["PORT"]),
            username=values["USERNAME"],
            password=self._secret(f"{name}-password", values["PASSWORD"]),
            private_key=self._secret(f"{name}-private-key", key),
            known_hosts=read_file(
                values["KNOWN_HOSTS_FILE"], f"{prefix}KNOWN_HOSTS_FILE"
            ),
            remote_dir=values["REMOTE_DIR"],
            atomic_uploads=values["ATOMIC_UPLOADS"].lower() not in ("false", "0", "no"),
        )
        self.blocks.append((name, block))

    def read_system(self, kind: str, system: str) -> None:
        """The `kind` block (s3, smtp, api) of `system` and its Secret blocks."""
        values = self._read_fields(system, kind)
        if None in values.values():
            return  # missing: reported with the others
        name = f"{system}-{kind}-{self.env}"
        block = BUILDERS[kind](
            values,
            lambda suffix, value: self._secret(f"{name}-{suffix}", value),
            variable_prefix(system, kind),
        )
        self.blocks.append((name, block))

    def read_webhook(self, url: str) -> None:
        """The notification block of a webhook URL, checked now (it is never shown)."""
        block = notifications.webhook_block(url)
        self.webhooks.append((notifications.block_name(url), block))

    def _read_fields(self, system: str, kind: str) -> dict:
        prefix = variable_prefix(system, kind)
        return {
            field.suffix: self.reader.read(prefix + field.suffix, field)
            for field in CONNECTION_FIELDS[kind]
        }

    def _secret(self, name: str, value: str | None) -> Secret | None:
        """A new Secret block for `value`; with no value, the one saved, if any.

        An empty answer never deletes a saved password: rerunning setup at a terminal
        and pressing Enter must change nothing.
        """
        if not value:
            try:
                return Secret.load(name)
            except ValueError:  # none saved
                return None
        secret = Secret(value=value)
        self.blocks.append((name, secret))
        return secret

    def check(self) -> None:
        """Refuse, before any change, values that are missing."""
        if self.reader.missing:
            listed = ", ".join(self.reader.missing)
            raise UserError(
                f"nothing changed: set {listed} (or run setup in a terminal to be asked)"
            )

    async def apply(self) -> list[str]:
        """Make it so; one line per item (created, updated, unchanged), as it is done."""
        lines = []

        def report(line: str) -> None:
            print(line, flush=True)
            lines.append(line)

        report(await self._storage_line())
        async with prefect_api.connect() as client:
            for line in await prefect_api.ensure_work_pool(
                client, self.settings.work_pool, self.settings.work_pool_type, QUEUES
            ):
                report(line)
        if self.s3_keys is not None:
            # pylint: disable-next=import-outside-toplevel
            from toolkit.deployer.storage.s3 import (
                CREDENTIALS_BLOCK_TYPE,
                S3Credentials,
            )

            name = self.settings.s3_credentials_block
            block = S3Credentials(
                aws_access_key_id=self.s3_keys["key"],
                aws_secret_access_key=self.s3_keys["secret"],
            )
            status = await save_if_changed(block, name)
            report(f"block {CREDENTIALS_BLOCK_TYPE}/{name}: {status}")
        for name, block in self.blocks:
            status = await save_if_changed(block, name)
            report(f"block {block.get_block_type_slug()}/{name}: {status}")
        for line in await self._save_webhooks():
            report(line)
        return lines

    async def _save_webhooks(self) -> list[str]:
        """Each webhook's block, then the automation (or, where the API serves none,
        the policy) that notifies it."""
        lines = []
        if not self.webhooks:
            return lines
        async with prefect_api.connect() as client:
            automations = await prefect_api.serves_automations(client)
            if not automations:
                lines.append(f"note: {notifications.FALLBACK_NOTE}")
            for name, block in self.webhooks:
                slug = block.get_block_type_slug()
                lines.append(
                    f"block {slug}/{name}: {await save_if_changed(block, name)}"
                )
                saved = await prefect_api.read_block_document(
                    client, name, slug, include_secrets=False
                )
                lines.append(
                    await notifications.ensure_notification(
                        client, name, saved.id, automations
                    )
                )
        return lines

    async def _storage_line(self) -> str:
        if not self.settings.storage_is_s3:
            root = self.settings.storage_path
            existed = root.is_dir()
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(
                    f"FLOWS_STORAGE_ROOT {root} cannot be a folder: {error.strerror}"
                ) from None
            return f"storage {root}: {'unchanged' if existed else 'created'}"
        filesystem = await self.storage.filesystem(self.s3_keys)
        self.storage.check_bucket(filesystem)
        return f"storage {self.storage.root}: bucket reachable"


def setup(  # pylint: disable=too-many-arguments
    settings: Settings,
    *,
    databases: list[str],
    sftp_servers: list[str],
    env: str,
    ask: bool,
    webhook_urls: list[str] = (),
    systems: dict[str, list[str]] | None = None,
) -> list[str]:
    """Read every value, check them, then create or update what differs.

    `systems` names the systems of each other kind of block: {"s3": [...],
    "smtp": [...], "api": [...]}.
    """
    api_url = prefect_api.require_api_url()
    asyncio.run(_check_api(api_url))  # saved secrets are read from it, too
    plan = Setup(settings, env, ask)
    for url in notifications.notify_urls(list(webhook_urls), settings):
        plan.read_webhook(url)
    plan.read_storage_keys()
    for system in databases:
        plan.read_database(system)
    for system in sftp_servers:
        plan.read_sftp(system)
    for kind, names in (systems or {}).items():
        for system in names:
            plan.read_system(kind, system)
    plan.check()
    return asyncio.run(plan.apply())


async def _check_api(api_url: str) -> None:
    async with prefect_api.connect() as client:
        await prefect_api.check_api_reachable(client, api_url)

"""Flow storage on S3 or an S3-compatible store (MinIO, ...), through fsspec's s3fs.

Each deploy writes its copy of flows/ under a new key prefix below the branch's place
(`main/{repo}/{version}/`, `dev/{repo}/{branch}/{version}/`). A RemoteFileSystem block
per branch holds the URL of the current copy: the deployment's pull step reads it when a
run starts. The block is switched to the new copy only once the deployment is
registered, and the copy it pointed at is removed after that, so a starting run fetches
either the whole old copy or the whole new one. Each copy ends with a manifest of its
files' SHA-256; the pull checks the fetched files against it, so a run that was still
fetching the old copy as it was removed fails at once rather than run with files
missing.

Credentials: the deployer uses the standard AWS credential chain (environment
variables, profile, instance role) when it finds one, else the flows-s3-credentials
block named by FLOWS_S3_CREDENTIALS_BLOCK. When that block exists, the pull step names
it and the run reads the key from the API at run time; otherwise workers use their
own AWS credential chain. No key is ever written into a deployment.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable, Iterator

import botocore.session
from botocore.exceptions import BotoCoreError, ClientError
import s3fs
from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound
from prefect.filesystems import RemoteFileSystem
from pydantic.v1 import Field, SecretStr

from deployer import prefect_api
from deployer.errors import UserError
from deployer.settings import S3_SCHEME, Settings

POINTER_BLOCK_TYPE = "remote-file-system"
PULL_STEP = "prefect.deployments.steps.pull_from_remote_storage"
VERIFY_STEP = "prefect.deployments.steps.run_shell_script"
# Written last into each copy; the run's pull checks every file against it.
MANIFEST_NAME = ".flows-copy.sha256"
# What Prefect accepts as a block name.
_BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class S3Credentials(Block):
    """The access key of the flow storage bucket, kept encrypted by the Prefect API."""

    _block_type_name = "Flows S3 Credentials"
    _description = "Access key for the bucket that holds the deployed copies of flows/."

    aws_access_key_id: SecretStr = Field(..., description="Access key id")
    aws_secret_access_key: SecretStr = Field(..., description="Secret access key")


CREDENTIALS_BLOCK_TYPE = S3Credentials.get_block_type_slug()


def credential_chain_found() -> bool:
    """Whether the standard AWS credential chain yields a key on this machine."""
    with _store_errors("reading the AWS credentials for flow storage"):
        return botocore.session.Session().get_credentials() is not None


@contextlib.contextmanager
def _store_errors(doing: str) -> Iterator[None]:
    """A failure of the store or of its client as one line: what was being done, why."""
    try:
        yield
    except (OSError, ValueError, BotoCoreError, ClientError) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"{doing} failed: {detail}") from error


def _key_path(url: str) -> str:
    """`bucket/prefix/...` of `s3://bucket/prefix/...`, as s3fs names objects."""
    return url[len(S3_SCHEME) :].rstrip("/")


def new_version_name(commit: str) -> str:
    """A key prefix of its own for one deploy: sortable by time, naming the commit."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{commit[:12]}-{secrets.token_hex(3)}"


def manifest_of(flows_dir: Path, files: list[str]) -> bytes:
    """`sha256sum` lines of the copy's files: the pull checks the copy against them."""
    lines = []
    for name in files:
        digest = hashlib.sha256((flows_dir / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}\n")
    return "".join(lines).encode()


Register = Callable[[list, dict], Awaitable]


class S3Storage:
    """Versioned copies of flows/ below an s3:// storage root."""

    def __init__(self, settings: Settings):
        root = settings.storage_root.rstrip("/")
        if not _key_path(root).split("/")[0]:
            raise UserError(
                f"FLOWS_STORAGE_ROOT {settings.storage_root!r} names no bucket: "
                "use s3://bucket or s3://bucket/prefix"
            )
        if not _BLOCK_NAME.fullmatch(settings.s3_credentials_block):
            raise UserError(
                f"FLOWS_S3_CREDENTIALS_BLOCK {settings.s3_credentials_block!r} is not "
                "a block name: lowercase letters, digits and dashes"
            )
        self.root = root
        self.endpoint_url = settings.s3_endpoint_url
        self.credentials_block = settings.s3_credentials_block
        self._checked: s3fs.S3FileSystem | None = None

    @property
    def bucket(self) -> str:
        """The bucket of the storage root."""
        return _key_path(self.root).split("/")[0]

    def _client_kwargs(self) -> dict:
        return {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}

    async def _saved_credentials(self) -> S3Credentials | None:
        try:
            return await S3Credentials.load(self.credentials_block)
        except ValueError:  # no such block
            return None

    async def filesystem(self, keys: dict | None = None) -> s3fs.S3FileSystem:
        """A client of the store: with `keys`, else the chain's, else the block's."""
        keys = keys or {}
        if not keys and not credential_chain_found():
            saved = await self._saved_credentials()
            if saved is None:
                raise UserError(
                    f"no credentials for {self.root}: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or save the "
                    f"{CREDENTIALS_BLOCK_TYPE} block {self.credentials_block!r} "
                    "(`python3 flows/util.py setup` with FLOWS_S3_ACCESS_KEY_ID and "
                    "FLOWS_S3_SECRET_ACCESS_KEY)"
                )
            keys = {
                "key": saved.aws_access_key_id.get_secret_value(),
                "secret": saved.aws_secret_access_key.get_secret_value(),
            }
        return s3fs.S3FileSystem(
            **keys,
            client_kwargs=self._client_kwargs(),
            # A deploy lists what it has just written: never from a stale cache.
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    async def check(self) -> None:
        """Refuse, before anything is changed, a store that cannot take the copy."""
        filesystem = await self.filesystem()
        self.check_bucket(filesystem)
        self._checked = filesystem

    def check_bucket(self, filesystem: s3fs.S3FileSystem) -> None:
        """The bucket exists and these credentials reach it."""
        with _store_errors(f"reaching {self.root}"):
            try:
                filesystem.call_s3("head_bucket", Bucket=self.bucket)
            except FileNotFoundError:
                raise UserError(
                    f"bucket {self.bucket!r} of {self.root} does not exist"
                ) from None

    async def _pull_steps(self, client: PrefectClient, block_name: str) -> list[dict]:
        """Fetch the copy the branch's block points at, then check it is whole."""
        settings = {
            "url": f"{{{{ prefect.blocks.{POINTER_BLOCK_TYPE}.{block_name}.basepath }}}}"
        }
        if await prefect_api.block_exists(
            client, self.credentials_block, CREDENTIALS_BLOCK_TYPE
        ):
            # References, resolved by the run at its start: the record names the block.
            reference = (
                f"prefect.blocks.{CREDENTIALS_BLOCK_TYPE}.{self.credentials_block}"
            )
            settings["key"] = f"{{{{ {reference}.aws_access_key_id }}}}"
            settings["secret"] = f"{{{{ {reference}.aws_secret_access_key }}}}"
        if self.endpoint_url:
            settings["client_kwargs"] = self._client_kwargs()
        # A run that fetched a copy while a redeploy removed it fails here, loudly,
        # instead of running with files missing.
        verify = {
            "script": f"sha256sum --check --strict --quiet {MANIFEST_NAME}",
            "directory": "{{ directory }}",
        }
        return [{PULL_STEP: settings}, {VERIFY_STEP: verify}]

    async def current_copy(self, client: PrefectClient, block_name: str) -> str | None:
        """The URL of the copy the branch's block points at, if any."""
        try:
            document = await client.read_block_document_by_name(
                block_name, POINTER_BLOCK_TYPE
            )
        except ObjectNotFound:
            return None
        return document.data.get("basepath")

    async def publish(  # pylint: disable=too-many-arguments
        self,
        client: PrefectClient,
        plan,
        flows_dir: Path,
        register: Register,
    ):
        """Upload a new copy, register, point the block at it, remove the old copy."""
        if self._checked is None:
            await self.check()
        filesystem = self._checked
        old_copy = await self.current_copy(client, plan.storage_block)
        new_copy = f"{plan.storage}/{new_version_name(plan.commit)}"
        pointer = RemoteFileSystem(basepath=new_copy)
        try:
            with _store_errors(f"uploading flows/ to {new_copy}"):
                filesystem.put(
                    [str(flows_dir / name) for name in plan.files],
                    [f"{_key_path(new_copy)}/{name}" for name in plan.files],
                )
                # Last: a copy with its manifest is a whole copy.
                filesystem.pipe(
                    f"{_key_path(new_copy)}/{MANIFEST_NAME}",
                    manifest_of(flows_dir, plan.files),
                )
            if old_copy is None:  # a first deploy: runs need the block from the start
                await pointer.save(plan.storage_block, overwrite=True)
            deployment_id = await register(
                await self._pull_steps(client, plan.storage_block), {}
            )
            if old_copy is not None:
                await pointer.save(plan.storage_block, overwrite=True)
        except BaseException:
            # Put back what was: the failure itself is what the person needs to see.
            with contextlib.suppress(Exception):
                _remove(filesystem, new_copy)
            if old_copy is None:
                with contextlib.suppress(Exception):
                    await prefect_api.delete_block(
                        plan.storage_block, POINTER_BLOCK_TYPE
                    )
            raise
        # Only a copy of this branch's own: never what an edited block points at.
        if (
            old_copy
            and old_copy.startswith(f"{plan.storage}/")
            and old_copy != new_copy
        ):
            try:
                with _store_errors(f"removing the old copy {old_copy}"):
                    _remove(filesystem, old_copy)
            except UserError as error:
                print(f"warning: {error}; remove it by hand", file=sys.stderr)
        return deployment_id, new_copy

    async def stored_files(self, client: PrefectClient, plan) -> set[str]:
        """The files of the copy the branch's runs pull now, relative to it."""
        current = await self.current_copy(client, plan.storage_block)
        if current is None:
            return set()
        filesystem = await self.filesystem()
        prefix = _key_path(current) + "/"
        with _store_errors(f"listing {current}"):
            keys = filesystem.find(_key_path(current))
        return {
            key[len(prefix) :]
            for key in keys
            if key.startswith(prefix) and key != prefix + MANIFEST_NAME
        }

    async def remove(self, location: str, block_name: str) -> None:
        """Remove every copy of a branch and the block that points at them."""
        filesystem = await self.filesystem()
        with _store_errors(f"removing {location}"):
            _remove(filesystem, location)
        await prefect_api.delete_block(block_name, POINTER_BLOCK_TYPE)


def _remove(filesystem: s3fs.S3FileSystem, url: str) -> None:
    """Remove every object below `url`; an object left behind is an error."""
    path = _key_path(url)
    try:
        filesystem.rm(path, recursive=True)
    except FileNotFoundError:
        return
    # s3fs reports no failure of a single key in a bulk delete: look again.
    left = filesystem.find(path)
    if left:
        raise OSError(f"{len(left)} object(s) were not deleted, {left[0]} first")

"""Flow storage on S3 or an S3-compatible store (MinIO, ...), through fsspec's s3fs.

The copies and their switching are base.py's; here: reaching the bucket, and the
pull step. A RemoteFileSystem block per branch holds the URL of the current copy; the
run's pull step (`pull_from_remote_storage`) reads it as the run starts.

Credentials: the deployer uses the standard AWS credential chain (environment
variables, profile, instance role) when it finds one, else the flows-s3-credentials
block named by FLOWS_S3_CREDENTIALS_BLOCK. When that block exists, the pull step names
it and the run reads the key from the API at run time; otherwise workers use their
own AWS credential chain. No key is ever written into a deployment.
"""

from __future__ import annotations

import re

import botocore.session
import s3fs
from botocore.exceptions import BotoCoreError, ClientError
from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient
from prefect.filesystems import RemoteFileSystem

from toolkit.errors import UserError, one_line
from toolkit.prefect_majors import Field, SecretStr
from toolkit.settings import S3_SCHEME, Settings
from toolkit.deployer import prefect_api
from toolkit.deployer.storage.base import FlowStorage

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
    try:
        return botocore.session.Session().get_credentials() is not None
    except BotoCoreError as error:  # a profile that does not exist, half a key, ...
        detail = one_line(error)
        raise UserError(f"reading the AWS credentials failed: {detail}") from error


def _key_path(url: str) -> str:
    """`bucket/prefix/...` of `s3://bucket/prefix/...`, as s3fs names objects."""
    return url[len(S3_SCHEME) :].rstrip("/")


class S3Storage(FlowStorage):
    """Copies of flows/ below an s3:// storage root."""

    pointer_type = "remote-file-system"
    failures = (OSError, ValueError, BotoCoreError, ClientError)

    def __init__(self, settings: Settings):
        super().__init__()
        self.root = settings.storage_root.rstrip("/")
        if not self.bucket:
            raise UserError(
                f"FLOWS_STORAGE_ROOT {settings.storage_root!r} names no bucket: "
                "use s3://bucket or s3://bucket/prefix"
            )
        if not _BLOCK_NAME.fullmatch(settings.s3_credentials_block):
            raise UserError(
                f"FLOWS_S3_CREDENTIALS_BLOCK {settings.s3_credentials_block!r} is not "
                "a block name: lowercase letters, digits and dashes"
            )
        self.endpoint_url = settings.s3_endpoint_url
        self.credentials_block = settings.s3_credentials_block

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
        """Refuse, before anything is changed, a bucket these credentials miss."""
        self.check_bucket(await self.connected())

    def check_bucket(self, filesystem: s3fs.S3FileSystem) -> None:
        """The bucket exists and these credentials reach it."""
        with self.store_errors(f"reaching {self.root}"):
            try:
                filesystem.call_s3("head_bucket", Bucket=self.bucket)
            except FileNotFoundError:
                raise UserError(
                    f"bucket {self.bucket!r} of {self.root} does not exist"
                ) from None

    def path_of(self, location: str) -> str:
        """s3fs names an object `bucket/key`."""
        return _key_path(location)

    def pointer_to(self, copy: str) -> Block:
        """A RemoteFileSystem block whose URL is the copy (no settings, no key)."""
        return RemoteFileSystem(basepath=copy)

    async def fetch_step(self, client: PrefectClient, block_name: str) -> dict:
        """Download the copy the branch's block points at."""
        settings = {
            "url": f"{{{{ prefect.blocks.{self.pointer_type}.{block_name}.basepath }}}}"
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
        return {"prefect.deployments.steps.pull_from_remote_storage": settings}

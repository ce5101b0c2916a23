"""S3 and S3-compatible object storage (MinIO, Ceph, a campus store) through botocore.

A bucket and a prefix in it serve as a sink (`S3Sink`, beside the local folder and
SFTP sinks) and as a drop folder (`S3DropFolder`, for the inbound pick-up). Uploads
are multipart, streamed part by part from the writer, so memory stays near one part
whatever the file's size; an object appears at its key only when the upload
completes. A failed upload is aborted, so no part is left to pay for; a killed run's
upload of the same key is aborted by the next delivery of that key.
"""

from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator, Literal, Optional

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError
from prefect.blocks.core import Block
from prefect.blocks.system import Secret

from toolkit.prefect_majors import Field
from toolkit.pickup import DroppedFile, name_matches
from toolkit.streams import CountingWriter, Progress

MEBIBYTE = 1 << 20
# S3 refuses parts under 5 MiB (the last excepted) and uploads of over 10,000 parts:
# 8 MiB parts carry up to 78 GiB, in memory one part at a time.
SMALLEST_PART_MEBIBYTES = 5
MOST_PARTS = 10_000
# Answers meaning "no such object" from head_object and get_object.
MISSING_CODES = ("404", "NoSuchKey", "NotFound")


class S3Connection(Block):
    """A bucket on AWS S3 or an S3-compatible store, and the prefix a flow works in."""

    _block_type_name = "Flows S3 Connection"
    _description = "Bucket, prefix, endpoint and region of an S3 store, keys apart."

    bucket: str = Field(..., description="Bucket name.")
    prefix: str = Field("", description="Folder in the bucket keys start from.")
    endpoint_url: Optional[str] = Field(
        None, description="The S3 API's address when the store is not AWS."
    )
    region: str = Field("us-east-1", description="Region of the bucket.")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto",
        description="path (https://host/bucket/key: most S3-compatible stores) or "
        "virtual (https://bucket.host/key); auto lets botocore choose.",
    )
    access_key_id: Optional[Secret] = Field(
        None, description="Secret holding the access key id (empty: AWS's own chain)."
    )
    secret_access_key: Optional[Secret] = Field(
        None, description="Secret holding the secret access key."
    )
    part_mebibytes: int = Field(
        8, description="Size of an upload's parts: the memory an upload holds."
    )
    request_attempts: int = Field(
        3,
        description="Tries of one request (botocore's standard retries) before the "
        "task's own retries start the file again.",
    )
    timeout_seconds: float = Field(60, description="Connect and read timeout.")

    def key(self, name: str) -> str:
        """The object key of `name` below the prefix."""
        # pylint: disable-next=no-member  # a field's value once made
        return posixpath.join(self.prefix.strip("/"), name) if self.prefix else name

    def describe(self, name: str = "") -> str:
        """s3://bucket/prefix[/name], for logs and errors; never a secret."""
        return f"s3://{self.bucket}/{self.key(name)}".rstrip("/")

    def client(self):
        """A botocore S3 client of this connection."""
        keys = {}
        if self.access_key_id is not None and self.secret_access_key is not None:
            # pylint: disable=no-member  # Secret blocks, once the block is made
            keys = {
                "aws_access_key_id": self.access_key_id.get(),
                "aws_secret_access_key": self.secret_access_key.get(),
            }
        config = Config(
            s3={"addressing_style": self.addressing_style},
            retries={"mode": "standard", "total_max_attempts": self.request_attempts},
            connect_timeout=self.timeout_seconds,
            read_timeout=self.timeout_seconds,
        )
        return botocore.session.get_session().create_client(
            "s3",
            region_name=self.region,
            endpoint_url=self.endpoint_url or None,
            config=config,
            **keys,
        )


def is_missing(error: ClientError) -> bool:
    """Whether S3 answered that the object is not there."""
    return error.response.get("Error", {}).get("Code") in MISSING_CODES


# An unfinished upload begun this long ago is a killed run's: no upload of the
# toolkit's takes a day. (A bucket lifecycle rule, AbortIncompleteMultipartUpload,
# clears what is never written again.)
STALE_UPLOAD_HOURS = 24


class MultipartUpload:
    """One object written part by part; `write` takes any size, memory stays one part.

    The upload starts with the first full part; a file smaller than a part is put in
    one request at `complete`. Nothing is visible at the key before `complete`.
    """

    def __init__(self, client, bucket: str, key: str, part_bytes: int):
        self._client = client
        self._target = {"Bucket": bucket, "Key": key}
        self._part_bytes = part_bytes
        self._buffer = bytearray()
        self._parts: list[dict] = []
        self.upload_id: str | None = None

    def write(self, data: bytes) -> int:
        """Take `data`; upload every full part it completes."""
        self._buffer += data
        while len(self._buffer) >= self._part_bytes:
            self._upload_part(bytes(self._buffer[: self._part_bytes]))
            del self._buffer[: self._part_bytes]
        return len(data)

    def _upload_part(self, body: bytes) -> None:
        if self.upload_id is None:
            started = self._client.create_multipart_upload(**self._target)
            self.upload_id = started["UploadId"]
        if len(self._parts) >= MOST_PARTS:
            raise ValueError(
                f"{self._target['Key']} needs over {MOST_PARTS} parts: raise the S3 "
                "block's part_mebibytes"
            )
        number = len(self._parts) + 1
        answer = self._client.upload_part(
            **self._target, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> None:
        """Make the object appear at its key, whole."""
        if self.upload_id is None:
            self._client.put_object(**self._target, Body=bytes(self._buffer))
            return
        if self._buffer:
            self._upload_part(bytes(self._buffer))
        self._buffer.clear()
        self._client.complete_multipart_upload(
            **self._target,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        """Drop the parts uploaded so far (best effort: the connection may be gone)."""
        self._buffer.clear()
        if self.upload_id is not None:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(
                    **self._target, UploadId=self.upload_id
                )

    def abort_older_uploads(self) -> None:
        """Abort what killed runs' uploads of this key left (they cannot resume):
        those begun over STALE_UPLOAD_HOURS ago. A younger one may be another run's,
        still under way: aborting it would fail that run."""
        stale_before = datetime.now(timezone.utc) - timedelta(hours=STALE_UPLOAD_HOURS)
        with contextlib.suppress(Exception):
            listed = self._client.list_multipart_uploads(
                Bucket=self._target["Bucket"], Prefix=self._target["Key"]
            )
            for upload in listed.get("Uploads", []):
                if (
                    upload["Key"] == self._target["Key"]
                    and upload["UploadId"] != self.upload_id
                    and upload["Initiated"] < stale_before
                ):
                    self._client.abort_multipart_upload(
                        **self._target, UploadId=upload["UploadId"]
                    )


@dataclass(frozen=True)
class S3Sink:
    """Files as objects below the connection's prefix: a sink for every delivery task."""

    connection: S3Connection

    def describe(self, file_name: str) -> str:
        """Where `file_name` ends up."""
        return self.connection.describe(file_name)

    @contextlib.contextmanager
    def open(
        self, file_name: str, progress: Progress | None = None
    ) -> Iterator[CountingWriter]:
        """A binary stream that becomes the object `file_name` only if the block
        succeeds; on any failure the upload is aborted."""
        part_bytes = max(self.connection.part_mebibytes, SMALLEST_PART_MEBIBYTES)
        upload = MultipartUpload(
            self.connection.client(),
            self.connection.bucket,
            self.connection.key(file_name),
            part_bytes * MEBIBYTE,
        )
        try:
            yield CountingWriter(upload, progress)
            upload.complete()
        except BaseException:
            upload.abort()
            raise
        upload.abort_older_uploads()


class _ObjectReader(contextlib.AbstractContextManager):
    """An object's body as a binary reader, closed (its connection freed) on exit."""

    def __init__(self, body):
        self._body = body

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes as they arrive; b"" at the end."""
        return self._body.read(None if size is None or size < 0 else size)

    def readable(self) -> bool:
        """A reader, for the io and csv modules that ask."""
        return True

    def __exit__(self, *exc_info) -> None:
        self._body.close()


# S3's CopyObject copies at most 5 GB in one call; a larger object is copied in
# parts (at most 10,000, each 5 MB to 5 GB).
SINGLE_COPY_MAX_BYTES = 5 * 1024**3
COPY_PART_BYTES = 512 * 1024**2


class S3DropFolder:
    """A prefix where a partner drops objects: the drop-folder protocol of pickup.py.

    Folders are key prefixes ending in `/`; only objects directly below the prefix
    are listed, never those of `processed/` or `failed/` below it.
    """

    def __init__(self, connection: S3Connection, folder: str = ""):
        self.connection = connection
        self.folder = folder.strip("/")
        self._client = None

    def _s3(self):
        if self._client is None:
            self._client = self.connection.client()
        return self._client

    def _key(self, name: str) -> str:
        return self.connection.key(posixpath.join(self.folder, name))

    def describe(self) -> str:
        """s3://bucket/prefix/folder, the ledger's source."""
        return self.connection.describe(self.folder)

    def _prefix(self, under: str) -> str:
        prefix = self._key(under)
        return prefix if prefix.endswith("/") or not prefix else prefix + "/"

    def _listed(self, under: str):
        """The pages of a listing directly below `under` ("/" delimits folders)."""
        paginator = self._s3().get_paginator("list_objects_v2")
        return paginator.paginate(
            Bucket=self.connection.bucket, Prefix=self._prefix(under), Delimiter="/"
        )

    def list_files(self, pattern: str, under: str = "") -> list[DroppedFile]:
        """Objects directly below the prefix (or its folder `under`) whose name
        matches `pattern`, by name."""
        prefix = self._prefix(under)
        found = []
        for page in self._listed(under):
            for entry in page.get("Contents", []):
                name = entry["Key"][len(prefix) :]
                if name and name_matches(name, pattern):
                    found.append(
                        DroppedFile(
                            name,
                            entry["Size"],
                            entry["LastModified"].astimezone(timezone.utc),
                        )
                    )
        return sorted(found, key=lambda dropped: dropped.name)

    def list_folders(self, under: str) -> list[str]:
        """The folders (common prefixes) directly below `under`."""
        prefix = self._prefix(under)
        return sorted(
            common["Prefix"][len(prefix) :].rstrip("/")
            for page in self._listed(under)
            for common in page.get("CommonPrefixes", [])
        )

    def file_info(self, name: str) -> DroppedFile | None:
        """The object `name` as listed, or None."""
        try:
            head = self._s3().head_object(
                Bucket=self.connection.bucket, Key=self._key(name)
            )
        except ClientError as error:
            if is_missing(error):
                return None
            raise
        return DroppedFile(
            posixpath.basename(name),
            head["ContentLength"],
            head["LastModified"].astimezone(timezone.utc),
        )

    def open_file(self, name: str) -> _ObjectReader:
        """The object's body, streamed as it is read."""
        try:
            answer = self._s3().get_object(
                Bucket=self.connection.bucket, Key=self._key(name)
            )
        except ClientError as error:
            if is_missing(error):
                raise FileNotFoundError(self.connection.describe(name)) from error
            raise
        return _ObjectReader(answer["Body"])

    def exists(self, name: str) -> bool:
        """Whether the object `name` (relative, may include a folder) exists."""
        try:
            self._s3().head_object(Bucket=self.connection.bucket, Key=self._key(name))
        except ClientError as error:
            if is_missing(error):
                return False
            raise
        return True

    def move(self, name: str, destination: str) -> None:
        """Copy `name` to `destination`, then delete it; FileExistsError if the
        destination exists. S3 has no rename: a run killed between the two leaves
        both, and the pick-up's next run finishes the move (the ledger knows it)."""
        if self.exists(destination):
            raise FileExistsError(f"{self.connection.describe(destination)} exists")
        self.take(name, destination)

    def take(self, name: str, destination: str) -> None:
        """Copy `name` to `destination`, then delete it: S3 has no rename, so two
        runs may both copy one object (the ledger then loads it once).

        The managed copy goes part by part above its threshold: one CopyObject
        call refuses an object over 5 GB."""
        try:
            self._copy(self._key(name), self._key(destination))
        except ClientError as error:
            if is_missing(error):
                raise FileNotFoundError(self.connection.describe(name)) from error
            raise
        self.remove(name)

    def _copy(self, source_key: str, destination_key: str) -> None:
        """Copy one object within the bucket: one call up to SINGLE_COPY_MAX_BYTES,
        else part by part. Each part asks for the version first seen (its ETag),
        so a new upload under the name meanwhile fails the copy, not mixes in."""
        client, bucket = self._s3(), self.connection.bucket
        source = {"Bucket": bucket, "Key": source_key}
        head = client.head_object(**source)
        size = head["ContentLength"]
        if size <= SINGLE_COPY_MAX_BYTES:
            client.copy_object(
                Bucket=bucket,
                Key=destination_key,
                CopySource=source,
                CopySourceIfMatch=head["ETag"],
            )
            return
        target = {"Bucket": bucket, "Key": destination_key}
        upload_id = client.create_multipart_upload(**target)["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PART_BYTES), 1):
                end = min(start + COPY_PART_BYTES, size) - 1
                answer = client.upload_part_copy(
                    **target,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{end}",
                    CopySourceIfMatch=head["ETag"],
                )
                parts.append(
                    {"ETag": answer["CopyPartResult"]["ETag"], "PartNumber": number}
                )
            client.complete_multipart_upload(
                **target, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(**target, UploadId=upload_id)
            raise

    def remove(self, name: str) -> None:
        """Delete the object `name`."""
        self._s3().delete_object(Bucket=self.connection.bucket, Key=self._key(name))

    def remove_folder(self, name: str) -> None:
        """Nothing to do: an S3 folder is only the prefix of the objects in it."""

"""Flow storage: the copy of flows/ that a deployment's runs pull, and the block that
points at it. A folder here (the embedded default); s3:// in object_storage.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from prefect.client.orchestration import PrefectClient
from prefect.filesystems import LocalFileSystem

from deployer import prefect_api
from deployer.errors import UserError
from deployer.settings import Settings

LOCAL_BLOCK_TYPE = "local-file-system"

# Workers may run as another user (the image's non-root user): the copy must be
# readable by everyone, as a checkout is.
_READABLE_FOLDER_MODE = 0o755


def _copy_files(source_dir: Path, files: Iterable[str], target_dir: Path) -> None:
    for relative in files:
        destination = target_dir / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_dir / relative, destination)


@contextlib.contextmanager
def replaced_directory(
    source_dir: Path, files: Iterable[str], target: Path
) -> Iterator[Path]:
    """Put a fresh copy of `files` at `target`; put the old copy back if the body fails.

    The new copy is written beside the target first and swapped in by two renames, so
    the target is never half old and half new, and a file deleted from flows/ is gone
    from storage too. The old copy is removed only once the body has succeeded.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        staging.chmod(_READABLE_FOLDER_MODE)
        _copy_files(source_dir, files, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, backup)
    os.rename(staging, target)
    try:
        yield target
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        if backup is not None:
            os.rename(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


class LocalStorage:
    """One copy of flows/ per branch in a folder the workers can read."""

    def __init__(self, settings: Settings):
        self.root = settings.storage_path

    async def check(self) -> None:
        """Nothing to check: the folder is created as the copy is written."""

    async def publish(self, client: PrefectClient, plan, flows_dir: Path, register):
        """Swap in the new copy, then register; the old copy comes back on failure."""
        del client  # the block is saved through the default client
        await LocalFileSystem(basepath=plan.storage).save(
            plan.storage_block, overwrite=True
        )
        pull_steps = [
            {
                "prefect.deployments.steps.pull_with_block": {
                    "block_document_name": plan.storage_block,
                    "block_type_slug": LOCAL_BLOCK_TYPE,
                }
            }
        ]
        # A Docker worker's container sees the folder at the same path, read-only.
        mount = {"volumes": [f"{self.root}:{self.root}:ro"]}
        with replaced_directory(flows_dir, plan.files, Path(plan.storage)):
            deployment_id = await register(pull_steps, mount)
        return deployment_id, plan.storage

    async def stored_files(self, client: PrefectClient, plan) -> set[str]:
        """The files of the branch's copy, relative to it."""
        del client
        storage = Path(plan.storage)
        if not storage.is_dir():
            return set()
        return {
            path.relative_to(storage).as_posix()
            for path in storage.rglob("*")
            if path.is_file()
        }

    async def remove(self, location: str, block_name: str) -> None:
        """Remove a copy no deployment uses any more, and the block that points at it."""
        await prefect_api.delete_block(block_name, LOCAL_BLOCK_TYPE)
        if Path(location).exists():
            shutil.rmtree(location)


def storage_for(settings: Settings):
    """The storage the root names: s3://bucket/prefix, else a local folder."""
    if settings.storage_is_s3:
        # Imported only here: s3fs and botocore are not needed for a local folder.
        from deployer.object_storage import (  # pylint: disable=import-outside-toplevel
            S3Storage,
        )

        return S3Storage(settings)
    if "://" in settings.storage_root:
        raise UserError(
            f"FLOWS_STORAGE_ROOT {settings.storage_root!r}: use a folder or "
            "s3://bucket/prefix (S3 or an S3-compatible store)"
        )
    return LocalStorage(settings)

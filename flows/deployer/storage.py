"""Flow storage on a local folder: the copy of flows/ that a deployment's runs pull,
and the storage block that points at it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from deployer.prefect_api import delete_storage_block

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


async def remove_stored_copy(storage: Path, block_name: str) -> None:
    """Remove a copy no deployment uses any more, and the block that points at it."""
    await delete_storage_block(block_name)
    if storage.exists():
        shutil.rmtree(storage)

"""Flow storage in a folder the workers can read: the embedded default, or a share
that Docker workers mount read-only."""

from __future__ import annotations

import os
from pathlib import Path

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem as LocalFiles
from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient
from prefect.filesystems import LocalFileSystem

from toolkit.settings import Settings
from toolkit.deployer.storage.base import FlowStorage

# Modes of a copy in a folder: readable by every user; folders and scripts runnable.
_READABLE, _RUNNABLE, _EXECUTABLE = 0o644, 0o755, 0o111


class FolderStorage(FlowStorage):
    """Copies in a folder the workers can read (a Docker worker mounts it)."""

    pointer_type = "local-file-system"

    def __init__(self, settings: Settings):
        super().__init__()
        self.root = settings.storage_path

    async def filesystem(self) -> AbstractFileSystem:
        """The local disk, making folders as files are written."""
        return LocalFiles(auto_mkdir=True)

    def path_of(self, location: str) -> str:
        """A folder is its own path."""
        return location

    def after_copy(self, flows_dir: Path, files: list[str], target: str) -> None:
        """Readable by every user, as a checkout is (a Docker worker runs as another
        user); a file executable in flows/ stays executable."""
        folders = set()
        for name in files:
            executable = (flows_dir / name).stat().st_mode & _EXECUTABLE
            os.chmod(Path(target, name), _RUNNABLE if executable else _READABLE)
            folders.update(Path(target, parent) for parent in Path(name).parents)
        for folder in folders:  # `parents` ends with ".": the copy's own folder
            os.chmod(folder, _RUNNABLE)

    def pointer_to(self, copy: str) -> Block:
        """A LocalFileSystem block whose folder is the copy."""
        return LocalFileSystem(basepath=copy)

    async def fetch_step(self, client: PrefectClient, block_name: str) -> dict:
        """Copy the block's folder into the run's working directory."""
        del client  # nothing to look up
        return {
            "prefect.deployments.steps.pull_with_block": {
                "block_document_name": block_name,
                "block_type_slug": self.pointer_type,
            }
        }

    def storage_needs(self) -> dict:
        """A Docker worker's container sees the folder at the same path, read-only."""
        return {"volumes": [f"{self.root}:{self.root}:ro"]}

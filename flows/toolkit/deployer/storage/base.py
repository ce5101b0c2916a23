"""What every flow store does, whatever holds the copies: the FlowStorage protocol.

Each deploy writes a copy of its own below the branch's place (`main/{repo}/{copy}/`,
`dev/{repo}/{branch}/{copy}/`), its manifest last. A block per branch points at the
current copy, and every run's pull step reads it as the run starts. The block is
switched to the new copy only once the deployment is registered, and every other copy
below the branch's place is removed after that (the one it pointed at, and any that a
killed deploy left): a starting run fetches the old copy or the new one, never a mix.
The pull then checks the fetched files against the manifest, so a run that was still
fetching the old copy as it was removed fails at once instead of running with files
missing.

The deploy (deploy.py) runs those steps in that order, holding its branch's lease
(lease.py) throughout; this module says how each is done, and folder.py and s3.py
where the copies live.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Iterator
from uuid import UUID

from fsspec import AbstractFileSystem
from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound

from toolkit.errors import UserError, one_line
from toolkit.deployer import prefect_api

# Written last into each copy; the run's pull checks every file against it.
MANIFEST_NAME = ".flows-copy.sha256"
# The check a run makes of the copy it fetched, in Python: every worker has it (the
# image, a Linux or macOS laptop), while sha256sum is not everywhere.
_CHECK_COPY = (
    "import hashlib, pathlib, sys; "
    "lines = pathlib.Path(sys.argv[1]).read_text().splitlines(); "
    "bad = [n for d, n in (line.split('  ', 1) for line in lines) "
    "if not pathlib.Path(n).is_file() "
    "or hashlib.sha256(pathlib.Path(n).read_bytes()).hexdigest() != d]; "
    "sys.exit('the fetched copy lacks or differs in: ' + ', '.join(bad) if bad else 0)"
)
VERIFY_STEP = {
    "prefect.deployments.steps.run_shell_script": {
        "script": f"python3 -c {shlex.quote(_CHECK_COPY)} {MANIFEST_NAME}",
        # The folder the pull step before it reports.
        "directory": "{{ directory }}",
    }
}


def new_copy_name(commit: str) -> str:
    """A place of its own for one deploy's copy: sortable by time, naming the commit."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{commit[:12]}-{secrets.token_hex(3)}"


def copy_named_by(document) -> str | None:
    """Where the copy a branch's block document points at lives, if any."""
    return None if document is None else document.data.get("basepath")


def manifest_of(contents: dict[str, bytes]) -> bytes:
    """`sha256sum`-style lines, `<hex digest>  <relative path>`, of the copy's files."""
    return "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in contents.items()
    ).encode()


class FlowStorage:
    """One copy of flows/ per deploy and a block pointing at the current one.

    Subclasses say where the copies live: how to reach the store, the block type
    that points, the pull step, and what a Docker worker needs to see the copy.
    """

    pointer_type = ""
    # What the store's client raises on a failure worth one line to the person.
    failures: tuple[type[BaseException], ...] = (OSError, ValueError)

    def __init__(self):
        self._client: AbstractFileSystem | None = None

    async def filesystem(self) -> AbstractFileSystem:
        """A client of the store."""
        raise NotImplementedError

    def path_of(self, location: str) -> str:
        """The store's own path of a location (a folder or a URL)."""
        raise NotImplementedError

    def pointer_to(self, copy: str) -> Block:
        """The unsaved block that points at `copy`."""
        raise NotImplementedError

    async def fetch_step(self, client: PrefectClient, block_name: str) -> dict:
        """The pull step that fetches the copy the block points at."""
        raise NotImplementedError

    def storage_needs(self) -> dict:
        """Job variables a Docker worker needs to read the copies."""
        return {}

    async def connected(self) -> AbstractFileSystem:
        """The store's client, made once per command (credentials looked up once)."""
        if self._client is None:
            self._client = await self.filesystem()
        return self._client

    async def check(self) -> None:
        """Refuse, before anything is changed, a store that cannot take the copy."""
        await self.connected()

    @contextlib.contextmanager
    def store_errors(self, doing: str) -> Iterator[None]:
        """A failure of the store as one line: what was being done, and why."""
        try:
            yield
        except self.failures as error:
            detail = one_line(error)
            raise UserError(f"{doing} failed: {detail}") from error

    async def current_pointer(self, client: PrefectClient, block_name: str):
        """The branch's block document, if any: its id, and its copy in data."""
        return await prefect_api.read_block_document(
            client, block_name, self.pointer_type
        )

    async def current_copy(self, client: PrefectClient, block_name: str) -> str | None:
        """Where the copy the branch's block points at lives, if any."""
        return copy_named_by(await self.current_pointer(client, block_name))

    def new_copy(self, branch_location: str, commit: str) -> str:
        """Where a deploy of `commit` writes its copy, below the branch's location."""
        return f"{branch_location}/{new_copy_name(commit)}"

    async def write_copy(self, flows_dir: Path, files: list[str], copy: str) -> None:
        """Each file, then the manifest of the very bytes written.

        After check(): the store was found fit before anything else was changed.
        """
        filesystem = await self.connected()
        target = self.path_of(copy)
        # Read once: a file saved during the deploy cannot differ from its checksum.
        contents = {name: (flows_dir / name).read_bytes() for name in files}
        with self.store_errors(f"copying flows/ to {copy}"):
            # In a thread: the lease is renewed meanwhile, however long the upload.
            await asyncio.to_thread(
                self._put_copy, filesystem, flows_dir, contents, target
            )

    def _put_copy(self, filesystem, flows_dir: Path, contents: dict, target: str):
        filesystem.pipe({f"{target}/{name}": data for name, data in contents.items()})
        self.after_copy(flows_dir, list(contents), target)
        # Last: a copy with its manifest is a whole copy.
        filesystem.pipe(f"{target}/{MANIFEST_NAME}", manifest_of(contents))

    async def pull_steps(self, client: PrefectClient, block_name: str) -> list[dict]:
        """A run's pull steps: fetch what the block points at, check it is whole."""
        return [await self.fetch_step(client, block_name), VERIFY_STEP]

    async def point(
        self,
        client: PrefectClient,
        block_name: str,
        copy: str,
        document_id: UUID | None = None,
    ) -> None:
        """Point the branch's block at `copy`: the runs that start now fetch it.

        The block `document_id`, read under the lease, changes its copy in place: one
        call, where saving a block anew takes six. One removed meanwhile is made anew.
        """
        if document_id is not None:
            try:
                await prefect_api.update_block_data(
                    client, document_id, {"basepath": copy}
                )
                return
            except ObjectNotFound:
                pass
        await self.pointer_to(copy).save(block_name, overwrite=True, client=client)

    async def discard(self, copy: str, block_name: str | None = None) -> None:
        """Take back a copy whose deployment was not registered (and the block a first
        deploy made for it); best effort, as the failure itself is what to show."""
        with contextlib.suppress(Exception):
            self._remove(await self.connected(), copy)
        if block_name is not None:
            with contextlib.suppress(Exception):
                await prefect_api.delete_block(block_name, self.pointer_type)

    def after_copy(self, flows_dir: Path, files: list[str], target: str) -> None:
        """What the store needs once the files are written: nothing by default."""

    async def entries_below(self, location: str) -> list[str]:
        """The locations directly below `location`: a branch's copies, or the
        branch folders of dev/{repo}; none when it does not exist."""
        filesystem = await self.connected()
        path = self.path_of(location)
        with self.store_errors(f"listing {location}"):
            try:
                found = filesystem.ls(path, detail=False)
            except FileNotFoundError:
                return []
        below = {PurePosixPath(entry) for entry in found} - {PurePosixPath(path)}
        return sorted(f"{location}/{entry.name}" for entry in below)

    async def remove_stale_copies(
        self, branch_location: str, current: str | None, dry_run: bool = False
    ) -> list[str]:
        """Remove every copy below the branch's location but `current`, the one its
        pointer names; the stale copies. A failure is a warning: the copies in use
        are whole, and the next deploy or `prune` tries again."""
        keep = None if current is None else PurePosixPath(self.path_of(current))
        try:
            stale = [
                copy
                for copy in await self.entries_below(branch_location)
                if PurePosixPath(self.path_of(copy)) != keep
            ]
        except UserError as error:
            print(f"warning: {error}; stale copies stay", file=sys.stderr)
            return []
        filesystem = await self.connected()
        for copy in [] if dry_run else stale:
            try:
                with self.store_errors(f"removing the stale copy {copy}"):
                    await asyncio.to_thread(self._remove, filesystem, copy)
            except UserError as error:
                print(f"warning: {error}; remove it by hand", file=sys.stderr)
        return stale

    async def stored_files(self, client: PrefectClient, plan) -> set[str]:
        """The files of flows/ in the copy the branch's runs pull now."""
        current = await self.current_copy(client, plan.pointer_block)
        if current is None:
            return set()
        filesystem = await self.connected()
        prefix = self.path_of(current) + "/"
        with self.store_errors(f"listing {current}"):
            paths = filesystem.find(self.path_of(current))
        return {
            path[len(prefix) :]
            for path in paths
            if path.startswith(prefix) and path != prefix + MANIFEST_NAME
        }

    async def remove(self, location: str, block_name: str) -> None:
        """Remove the block that points at a branch's copies, then every copy."""
        filesystem = await self.connected()
        # The block first: a removal cut short then leaves copies that nothing names
        # (the next deploy, prune or delete-branch removes them), never a block naming
        # a copy that is gone, which the next deploy would register its runs against.
        await prefect_api.delete_block(block_name, self.pointer_type)
        with self.store_errors(f"removing {location}"):
            self._remove(filesystem, location)

    def _remove(self, filesystem: AbstractFileSystem, location: str) -> None:
        """Remove everything below `location`; anything left behind is an error."""
        path = self.path_of(location)
        try:
            filesystem.rm(path, recursive=True)
        except FileNotFoundError:
            return
        # Some stores report no failure of a single object in a bulk delete.
        if filesystem.exists(path) and filesystem.find(path):
            raise OSError(f"{path} was not removed entirely")

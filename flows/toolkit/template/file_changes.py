"""Writing and removing a set of files in a repository, all or nothing.

`upgrade` (release.py) applies its writes and removals with `apply_all_or_nothing`:
on any OSError every touched path is put back from in-memory backups, and the
failure is reported as a UserError. Standard library only.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import UserError
from toolkit.template.ownership import read_file
from toolkit.template.release_record import TemplateFile

_EXECUTABLE_MODE = "100755"
_SYMLINK_MODE = "120000"


def git_mode(target: Path) -> str:
    """The git mode of a file on disk: symlink, executable or plain."""
    if target.is_symlink():
        return _SYMLINK_MODE
    return _EXECUTABLE_MODE if target.stat().st_mode & stat.S_IXUSR else "100644"


def apply_all_or_nothing(
    top_level: Path, writes: Mapping[str, TemplateFile], removals: Sequence[str]
) -> None:
    """Write then remove the paths under `top_level`; on any failure undo them all."""
    journal = _Journal(top_level)
    current = ""
    try:
        for current, file in writes.items():
            target = top_level / current
            journal.remember(target)
            journal.make_parents(target)
            _write_file(target, file)
        for current in removals:
            target = top_level / current
            journal.remember(target)
            target.unlink()
            _remove_empty_folders(top_level, target.parent)
    except OSError as error:
        try:
            journal.roll_back()
        except OSError as second:
            raise UserError(
                f"upgrade stopped at {current} ({error.strerror}) and could not put "
                f"everything back ({second}); restore with git checkout and git clean"
            ) from second
        raise UserError(
            f"upgrade stopped at {current} ({error.strerror or error}); every file "
            "is as it was: fix that and run it again"
        ) from error


@dataclass
class _Journal:
    """What each touched path held before, to put it all back on failure."""

    top_level: Path
    backups: list[tuple[Path, TemplateFile | None]] = field(default_factory=list)
    made_folders: list[Path] = field(default_factory=list)

    def remember(self, target: Path) -> None:
        """Keep the path's bytes and mode before its first change."""
        if any(saved == target for saved, _ in self.backups):
            return
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(21, "a folder is in the way", str(target))
        data = read_file(target)
        self.backups.append(
            (target, None if data is None else TemplateFile(data, git_mode(target)))
        )

    def make_parents(self, target: Path) -> None:
        """Create the missing folders above the target, noting each."""
        missing = []
        for parent in target.parents:
            if parent.exists() or parent == self.top_level:
                break
            missing.append(parent)
        for folder in reversed(missing):
            folder.mkdir()
            self.made_folders.append(folder)

    def roll_back(self) -> None:
        """Put every remembered path back, newest change first."""
        for target, before in reversed(self.backups):
            if before is None:
                if target.is_symlink() or target.is_file():
                    target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_file(target, before)
        for folder in reversed(self.made_folders):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty or already gone: either way as it was


def _write_file(target: Path, file: TemplateFile) -> None:
    """Write beside the target, then swap it in: no reader sees half a file."""
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        if file.mode == _SYMLINK_MODE:
            os.close(handle)
            os.unlink(temporary)
            os.symlink(os.fsdecode(file.data), temporary)
        else:
            with os.fdopen(handle, "wb") as stream:
                stream.write(file.data)
            executable = file.mode == _EXECUTABLE_MODE
            os.chmod(temporary, (0o777 if executable else 0o666) & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_empty_folders(top_level: Path, folder: Path) -> None:
    while folder != top_level and top_level in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty: the folder still holds something
        folder = folder.parent

"""Flow storage: the copies of flows/ that deployments' runs pull.

- base.py: FlowStorage, what every store does (copy, manifest, pointer, removal);
- folder.py: a folder the workers can read;
- s3.py: S3 or an S3-compatible store.

`storage_for` picks one from FLOWS_STORAGE_ROOT. The backends import base.py, never
this module, so that no import goes in a circle.
"""

from __future__ import annotations

from toolkit.errors import UserError
from toolkit.settings import Settings
from toolkit.deployer.storage.base import (
    MANIFEST_NAME,
    VERIFY_STEP,
    FlowStorage,
    copy_named_by,
)
from toolkit.deployer.storage.folder import FolderStorage

__all__ = [
    "MANIFEST_NAME",
    "VERIFY_STEP",
    "FlowStorage",
    "FolderStorage",
    "copy_named_by",
    "storage_for",
]


def storage_for(settings: Settings) -> FlowStorage:
    """The flow storage FLOWS_STORAGE_ROOT names; a root it cannot use is refused."""
    if settings.storage_is_s3:
        # Imported only here: s3fs and botocore are not needed for a folder.
        # pylint: disable-next=import-outside-toplevel
        from toolkit.deployer.storage.s3 import S3Storage

        return S3Storage(settings)
    if "://" in settings.storage_root:
        raise UserError(
            f"FLOWS_STORAGE_ROOT {settings.storage_root!r}: use a folder or "
            "s3://bucket/prefix (S3 or an S3-compatible store)"
        )
    return FolderStorage(settings)

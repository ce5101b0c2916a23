"""Which flow storage the storage root names: a folder, or s3://bucket/prefix."""

from __future__ import annotations

from toolkit.deployer.errors import UserError
from toolkit.deployer.settings import Settings
from toolkit.deployer.storage import LocalStorage, VersionedCopies


def storage_for(settings: Settings) -> VersionedCopies:
    """The storage of FLOWS_STORAGE_ROOT; a root it cannot use is refused."""
    if settings.storage_is_s3:
        # Imported only here: s3fs and botocore are not needed for a local folder.
        from toolkit.deployer.object_storage import (  # pylint: disable=import-outside-toplevel
            S3Storage,
        )

        return S3Storage(settings)
    if "://" in settings.storage_root:
        raise UserError(
            f"FLOWS_STORAGE_ROOT {settings.storage_root!r}: use a folder or "
            "s3://bucket/prefix (S3 or an S3-compatible store)"
        )
    return LocalStorage(settings)

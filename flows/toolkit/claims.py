"""Claims: a run takes each file it loads by renaming it into a folder of its own,
`claimed/<run>/` in the drop folder, before it reads a byte of it.

Of two runs taking one file, one rename wins: the other finds the file gone and
leaves it. A partner's new upload under the same name lands beside the claim, not
in it: what is archived is what was loaded.

A claim folder belongs to a live run while that run holds a lock named after it:
a PostgreSQL advisory lock (MariaDB's and MySQL's GET_LOCK), held on a connection
of its own to the target database from the run's start to its end. A killed run (SIGKILL, a lost
container) loses its connection and with it the lock, so the next run that finds
the folder takes the lock and adopts the files: it renames them into its own
claim folder, then loads them (or only archives those the ledger holds). A
database without such a lock (SQLite) cannot tell a live run from a dead one:
there, every claim folder found is adopted, and one pick-up of a folder must run
at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from contextlib import AbstractContextManager

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

CLAIM_FOLDER = "claimed"
# A session lock, taken at once or not at all, that the server drops with the
# session: PostgreSQL's advisory lock, MariaDB's and MySQL's named lock.
LOCK_STATEMENTS = {
    "postgresql": "SELECT pg_try_advisory_lock(:key)",
    "mysql": "SELECT GET_LOCK(CONCAT('flows-claim-', :key), 0)",
}


def claim_folder(claim_id: str) -> str:
    """The drop folder's subfolder of one run's claims."""
    return posixpath.join(CLAIM_FOLDER, claim_id)


def lock_key(source: str, claim_id: str) -> int:
    """The advisory lock of one claim folder: a signed 64-bit number, as PostgreSQL
    takes it, from the drop folder's address and the folder's name."""
    digest = hashlib.sha256(f"{source}\n{claim_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ClaimLocks(AbstractContextManager):
    """The locks of claim folders a run holds: its own from `with` to its end, and
    those of dead runs it adopts."""

    def __init__(self, engine: Engine, source: str, claim_id: str):
        self.source = source
        self.claim_id = claim_id
        self._engine = engine
        self._connection: Connection | None = None

    def __enter__(self) -> "ClaimLocks":
        if self._engine.dialect.name in LOCK_STATEMENTS:
            # Autocommit: a session lock needs no transaction, and an idle open
            # one would hold back vacuum for as long as the run lasts.
            self._connection = self._engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
            if not self._try_lock(self.claim_id):
                raise RuntimeError(f"the claim folder {self.claim_id} is in use")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._connection is not None:
            # Closed for real, not returned to the engine's pool, where the session
            # and its locks would live on; the server then drops the locks. A
            # server that restarted meanwhile has dropped them already.
            with contextlib.suppress(Exception):
                self._connection.invalidate()
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def _try_lock(self, claim_id: str) -> bool:
        key = lock_key(self.source, claim_id)
        statement = text(LOCK_STATEMENTS[self._engine.dialect.name])
        return bool(self._connection.execute(statement, {"key": key}).scalar())

    def abandoned(self, claim_id: str) -> bool:
        """Whether no live run holds the claim folder `claim_id`; if so, its lock is
        this run's from now on, so that no third run adopts the same files."""
        if self._connection is None:
            return True
        return self._try_lock(claim_id)

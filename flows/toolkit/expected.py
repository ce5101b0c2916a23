"""Expected files: what a pick-up declares it waits for, checked against the ledger.

    PickupRules(pattern="payments_*.csv",
                expect=Expected(files=1, by="06:00", timezone="Europe/Helsinki"))

`files` and `by`: at least that many files matching the pattern loaded since the
start of the day (in `timezone`) once the time of day `by` has passed. `max_gap_hours`:
no longer than that since the last file the ledger holds. A run that finds the
expectation missed fails with one line (what, by when, what came last and when), so
the failure notification fires; a run before the deadline says it is still waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import Engine

from toolkit import ledger, pickup

# Ledger rows read to find the last file matching a pattern among other files of
# the same folder and table: enough for years of a nightly file or two.
LAST_LOADS_READ = 5_000


class ExpectedFilesMissing(RuntimeError):
    """The files a pick-up expects did not come in time."""


@dataclass(frozen=True)
class Expected:
    """What a pick-up waits for (see the module's docstring)."""

    files: int = 1
    by: str | None = None
    timezone: str = "UTC"
    max_gap_hours: float | None = None

    def check(self) -> None:
        """ValueError naming a setting that cannot be right."""
        if self.by is None and self.max_gap_hours is None:
            raise ValueError(
                "Expected: give `by` (a time of day), `max_gap_hours`, or both"
            )
        if self.files < 1:
            raise ValueError(f"Expected files={self.files}: at least 1")
        if self.max_gap_hours is not None and self.max_gap_hours <= 0:
            raise ValueError(f"Expected max_gap_hours={self.max_gap_hours}: above 0")
        if self.by is not None:
            self.deadline_time()
        self.zone()

    def deadline_time(self) -> time:
        """`by` as a time of day."""
        try:
            return time.fromisoformat(self.by)
        except (TypeError, ValueError):
            raise ValueError(
                f"Expected by={self.by!r}: a time of day, as 06:30"
            ) from None

    def zone(self) -> ZoneInfo:
        """`timezone` as a zone."""
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"Expected timezone={self.timezone!r}: a zone name, as Europe/Helsinki"
            ) from None


def _at(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _last(loads, zone) -> str:
    if not loads:
        return "none has come yet"
    path, at = loads[0]
    return f"the last was {pickup.printable(path)}, loaded {_at(at, zone)}"


@dataclass(frozen=True)
class Source:
    """Whose files: the drop folder's address, the target table, the name pattern."""

    folder: str
    table: str
    pattern: str

    def describe(self, files: int) -> str:
        """ "2 files matching x_*.csv in sftp://host/in"."""
        plural = "s" if files > 1 else ""
        return f"{files} file{plural} matching {self.pattern} in {self.folder}"


def _loads_until(engine: Engine, source: Source, now: datetime) -> list:
    """(path, loaded_at) of the source's files the ledger holds by `now`, latest
    first."""
    ledger.create_ledger(engine)
    with engine.connect() as connection:
        loads = ledger.loads_from(
            connection, source.folder, source.table, LAST_LOADS_READ
        )
    return [
        (path, at)
        for path, at in loads
        if pickup.name_matches(path, source.pattern) and at <= now
    ]


def verdict(
    expected: Expected, engine: Engine, source: Source, now: datetime
) -> tuple[bool, str]:
    """(met, the line saying so): whether what is expected has come by `now`."""
    zone = expected.zone()
    loads = _loads_until(engine, source, now)
    what = source.describe(expected.files)
    if expected.by is not None:
        today = now.astimezone(zone).date()
        came = sum(at >= datetime.combine(today, time(0), zone) for _, at in loads)
        if came < expected.files:
            by = f"by {expected.by} {expected.timezone} on {today.isoformat()}"
            if now < datetime.combine(today, expected.deadline_time(), zone):
                return True, f"still waiting: {came} of {what} {by}"
            return False, f"expected {what} {by}; {came} came; {_last(loads, zone)}"
    if expected.max_gap_hours is not None and loads:
        gap = now - loads[0][1]
        if gap > timedelta(hours=expected.max_gap_hours):
            return False, (
                f"expected {what} at least every {expected.max_gap_hours:g} h; "
                f"{_last(loads, zone)} ({gap.total_seconds() / 3600:.1f} h ago)"
            )
    if not loads:
        return True, f"still waiting: none of {what} has come yet"
    return True, f"{what}: as expected ({_last(loads, zone)})"

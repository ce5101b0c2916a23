"""Inbound: partner files picked up from a drop folder, loaded once each, then archived.

    reports = pick_up_and_load(folder, target, LoadPlan("payments", "upsert", ("id",)))

A run lists the folder, takes the settled files (toolkit.pickup), and loads each in
a task of its own (toolkit.loading): one transaction with its ledger row, retried on
transient faults. Only after the commit is the file moved to `processed/<day>/` (or
removed). A file whose content the ledger holds is not loaded again: the run only
finishes its move. A file that fails stays (or moves to `failed/`); the others go on,
and the run fails at the end naming each failed file. One table artifact lists every
file: taken, skipped and why, rows, mode, seconds.
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext

from toolkit import claims
from toolkit import database
from toolkit import expected
from toolkit import loading
from toolkit import pickup
from toolkit import retries
from toolkit.errors import one_line
from toolkit.loading import LoadPlan
from toolkit.logs import run_logger
from toolkit.streams import MEGABYTE, PROGRESS_SECONDS, Progress


@dataclass(frozen=True)
class PickupRules:
    """Which files a run takes, and where they go after.

    `after_load`: "move" to processed/<day>/ (UTC day of the run), or "remove".
    `on_failure`: "leave" the file where it is (the next run tries it again), or
    "move" it to failed/. `marker_suffix` (".done"): take a file only once its
    marker is there; else once its size and time are still over `settle_seconds`.
    """

    pattern: str = "*.csv"
    settle_seconds: float = 10.0
    marker_suffix: str | None = None
    after_load: str = "move"
    on_failure: str = "leave"
    expect: expected.Expected | None = None

    def check(self) -> None:
        """ValueError naming a setting that is none of its choices."""
        if self.after_load not in ("move", "remove"):
            raise ValueError(f"after_load {self.after_load!r}: move or remove")
        if self.on_failure not in ("leave", "move"):
            raise ValueError(f"on_failure {self.on_failure!r}: leave or move")
        if self.expect is not None:
            self.expect.check()


@dataclass(frozen=True)
class FileReport:  # pylint: disable=too-many-instance-attributes
    """What became of one file of the drop folder in a run."""

    file: str
    outcome: str  # loaded, skipped, left, failed
    reason: str = ""
    rows: int = 0
    bytes: int = 0
    mode: str = ""
    seconds: float = 0.0
    now_at: str = ""

    def table_row(self) -> dict[str, Any]:
        """One line of the run's artifact."""
        return {
            "file": self.file,
            "outcome": self.outcome,
            "why": self.reason,
            "rows": self.rows,
            "MB": round(self.bytes / MEGABYTE, 2),
            "mode": self.mode,
            "seconds": round(self.seconds, 2),
            "now at": self.now_at,
        }


def flow_run_id() -> str | None:
    """The id of the flow run this code runs in, for the ledger; None outside one."""
    task_context = TaskRunContext.get()
    if task_context is not None:
        return str(task_context.task_run.flow_run_id)
    flow_context = FlowRunContext.get()
    return str(flow_context.flow_run.id) if flow_context is not None else None


@dataclass(frozen=True)
class ClaimedFile:
    """A file this run took into its claim folder: the partner's name for it (the
    ledger's path), where it is now, and its size and time as listed there."""

    name: str
    path: str
    size: int
    modified: datetime

    @property
    def shown(self) -> str:
        """The name as logs, task runs and artifacts show it: on one line."""
        return pickup.printable(self.name)


def _take(folder, path: str, name: str, claim_id: str, rules: PickupRules) -> None:
    """Rename `path` (and its marker) into the run's claim folder as `name`, unless
    another run took it first, or a file of that name is claimed already (this run
    archives that one: the next run takes the new one)."""
    claimed_path = posixpath.join(claims.claim_folder(claim_id), name)
    if folder.exists(claimed_path):  # only this run writes there: no race
        run_logger().info(
            "%s: a file of that name is claimed already: left for the next run",
            pickup.printable(name),
        )
        return
    try:
        folder.take(path, claimed_path)
    except FileNotFoundError:
        run_logger().info("%s: taken by another run meanwhile", pickup.printable(name))
        return
    marker = rules.marker_suffix
    if marker and folder.exists(path + marker):
        with contextlib.suppress(FileNotFoundError):
            folder.take(path + marker, claimed_path + marker)


def _claimed_by(folder, claim_id: str, rules: PickupRules) -> list[ClaimedFile]:
    """The files in a run's claim folder, markers left out."""
    under = claims.claim_folder(claim_id)
    listed = folder.list_files(rules.pattern, under)
    names = {dropped.name for dropped in listed}
    marker = rules.marker_suffix
    return [
        ClaimedFile(d.name, posixpath.join(under, d.name), d.size, d.modified)
        for d in listed
        if not (marker and d.name.endswith(marker) and d.name[: -len(marker)] in names)
    ]


@task(**retries.TRANSIENT_RETRIES)
def claim_files(
    folder: pickup.DropFolder,
    settled: list[pickup.DroppedFile],
    rules: PickupRules,
    locks: claims.ClaimLocks,
) -> list[ClaimedFile]:
    """Adopt what dead runs claimed, then claim the settled files: what this run
    loads, no other run touches and no new upload replaces. A retry goes on where
    the failed try stopped."""
    mine = locks.claim_id
    for claim_id in folder.list_folders(claims.CLAIM_FOLDER):
        if claim_id == mine:
            continue
        if not locks.abandoned(claim_id):
            run_logger().info("claims of run %s: still running, left to it", claim_id)
            continue
        for claimed in _claimed_by(folder, claim_id, rules):
            run_logger().info(
                "%s: claimed by run %s, which ended before it was done: adopted",
                claimed.shown, claim_id,
            )  # fmt: skip
            _take(folder, claimed.path, claimed.name, mine, rules)
        folder.remove_folder(claims.claim_folder(claim_id))
    for dropped in settled:
        _take(folder, dropped.name, dropped.name, mine, rules)
    return _claimed_by(folder, mine, rules)


def archive(folder, claimed: ClaimedFile, rules: PickupRules, day: str, under=None):
    """Move (or remove) a claimed file and its marker once done; where it is now.
    `under` "failed" moves it to failed/; "back" to the drop folder under its name
    (to failed/ if a new upload has that name now)."""
    paths = [claimed.path]
    if rules.marker_suffix and folder.exists(claimed.path + rules.marker_suffix):
        paths.append(claimed.path + rules.marker_suffix)
    if under is None and rules.after_load == "remove":
        for path in paths:
            folder.remove(path)
        return "removed"
    if under == "back" and not folder.exists(claimed.name):
        folder.move(claimed.path, claimed.name)
        where = claimed.name
    else:
        destination = f"processed/{day}" if under is None else "failed"
        where = pickup.move_without_overwrite(
            folder, claimed.path, destination, claimed.name
        )
    for marker in paths[1:]:
        with contextlib.suppress(FileExistsError):
            folder.move(marker, where + rules.marker_suffix)
    return where


def _still_as_claimed(folder, claimed: ClaimedFile):
    """A check, for the end of the load, that the claimed file is as it was listed:
    a writer that kept it open may have changed it since."""

    def check() -> None:
        now = folder.file_info(claimed.path)
        if now is None or (now.size, now.modified) != (claimed.size, claimed.modified):
            raise loading.FileChanged(
                f"{claimed.shown}: changed while it was read ("
                + (
                    "gone"
                    if now is None
                    else f"{claimed.size:,} then {now.size:,} bytes"
                )
                + "): nothing was loaded"
            )

    return check


def _load_or_skip(folder, claimed: ClaimedFile, target, plan, progress):
    """The load of one file, unless the ledger holds this very file."""
    listing = loading.Listing(
        folder.describe(), claimed.name, claimed.size, claimed.modified
    )
    with database.engine_of(target) as engine:
        if loading.content_loaded_before(
            engine, plan, listing, lambda: folder.open_file(claimed.path)
        ):
            return loading.LoadOutcome(
                0, claimed.size, "", False,
                "already loaded (this file is in the ledger): only moved",
            )  # fmt: skip
        with folder.open_file(claimed.path) as reader:
            return loading.load_stream(
                engine,
                reader,
                plan,
                listing,
                flow_run_id=flow_run_id(),
                progress=progress,
                still_as_listed=_still_as_claimed(folder, claimed),
            )


@task(**retries.TRANSIENT_RETRIES, task_run_name="load {claimed.shown}")
def load_dropped_file(  # pylint: disable=too-many-arguments
    folder: pickup.DropFolder,
    claimed: ClaimedFile,
    target: database.DatabaseConnection,
    plan: LoadPlan,
    rules: PickupRules,
    *,
    day: str,
    progress_seconds: float = PROGRESS_SECONDS,
) -> FileReport:
    """Load one claimed file with its ledger row, then archive it. A retry starts
    again from the file's first byte: nothing of a failed try was committed."""
    logger = run_logger()
    progress = Progress(claimed.shown, logger, progress_seconds)
    try:
        outcome = _load_or_skip(folder, claimed, target, plan, progress)
    except loading.BadFile as error:
        where = archive(
            folder,
            claimed,
            rules,
            day,
            "failed" if rules.on_failure == "move" else "back",
        )
        raise loading.BadFile(f"{error} (now at {pickup.printable(where)})") from error
    except loading.FileChanged as error:
        logger.info("%s: left for the next run", one_line(error))
        return FileReport(
            claimed.shown, "left", f"{one_line(error)}: left for the next run",
            mode=plan.mode, now_at=claimed.path,
        )  # fmt: skip
    now_at = pickup.printable(archive(folder, claimed, rules, day))
    seconds = progress.seconds()
    if outcome.loaded:
        logger.info(
            "loaded %s: %s rows, %.1f MB in %.1f s, %.1f MB/s, into %s (%s); now at %s",
            claimed.shown, f"{outcome.rows:,}", outcome.bytes / MEGABYTE, seconds,
            outcome.bytes / MEGABYTE / seconds if seconds > 0 else 0.0,
            plan.table, plan.mode, now_at,
        )  # fmt: skip
    else:
        logger.info("skipped %s: %s; now at %s", claimed.shown, outcome.reason, now_at)
    return FileReport(
        claimed.shown,
        "loaded" if outcome.loaded else "skipped",
        outcome.reason,
        outcome.rows,
        outcome.bytes,
        plan.mode,
        seconds,
        now_at,
    )


@task(**retries.TRANSIENT_RETRIES)
def list_settled_files(folder: pickup.DropFolder, rules: PickupRules) -> pickup.Settled:
    """The folder's files that are complete, and those left with the reason."""
    settled = pickup.settle(
        folder, rules.pattern, rules.settle_seconds, rules.marker_suffix
    )
    run_logger().info(
        "%s: %d files to load, %d left (%s)",
        folder.describe(),
        len(settled.taken),
        len(settled.left),
        rules.pattern,
    )
    return settled


def _in_a_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def summarize_pickup(reports: list[FileReport], key: str | None, where: str) -> None:
    """The run's table artifact of every file; in a run only."""
    if not _in_a_run():
        return
    counts = {o: sum(r.outcome == o for r in reports) for o in ("loaded", "skipped")}
    create_table_artifact(
        table=[report.table_row() for report in reports],
        key=key,
        description=f"{where}: {len(reports)} files, {counts['loaded']} loaded, "
        f"{counts['skipped']} skipped, "
        f"{sum(r.outcome == 'failed' for r in reports)} failed",
    )


def _load_one(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    folder, claimed, target, plan, rules, day, progress_seconds
) -> FileReport:
    """The task run of one file, as its report: what it did, or why it failed."""
    state = load_dropped_file(
        folder, claimed, target, plan, rules, day=day,
        progress_seconds=progress_seconds, return_state=True,
    )  # fmt: skip
    # pylint: disable=no-member  # return_state: a State, not the report
    if state.is_completed():
        return state.result()
    error = state.result(raise_on_failure=False)
    return FileReport(claimed.shown, "failed", one_line(error), mode=plan.mode)


def _check_expected(rules, folder, target, plan, now) -> str | None:
    """The line of a missed expectation, or None; a line saying how it stands."""
    if rules.expect is None:
        return None
    with database.engine_of(target) as engine:
        met, line = expected.verdict(
            rules.expect,
            engine,
            expected.Source(folder.describe(), plan.table, rules.pattern),
            now,
        )
    if met:
        run_logger().info("%s", line)
        return None
    run_logger().error("%s", line)
    return line


def pick_up_and_load(  # pylint: disable=too-many-arguments,too-many-locals
    folder: pickup.DropFolder,
    target: database.DatabaseConnection,
    plan: LoadPlan,
    rules: PickupRules = PickupRules(),
    *,
    artifact_key: str | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
    now: datetime | None = None,
) -> list[FileReport]:
    """Call from a flow: list, settle, claim, load each file apart, archive, report;
    then check what `rules.expect` waits for against the ledger, as of `now` (the
    clock, unless given).

    Raises at the end, naming each file that failed, after the others are loaded,
    and what was expected and did not come.
    """
    plan.check()
    rules.check()
    now = now or datetime.now(timezone.utc)
    day = now.astimezone(timezone.utc).date().isoformat()
    settled = list_settled_files(folder, rules)
    reports = [
        FileReport(pickup.printable(dropped.name), "left", reason)
        for dropped, reason in settled.left
    ]
    claim_id = flow_run_id() or uuid.uuid4().hex
    try:
        with database.engine_of(target) as engine, claims.ClaimLocks(
            engine, folder.describe(), claim_id
        ) as locks:
            claimed = claim_files(folder, settled.taken, rules, locks)
            for file in claimed:
                reports.append(
                    _load_one(folder, file, target, plan, rules, day, progress_seconds)
                )
            folder.remove_folder(claims.claim_folder(claim_id))
    finally:
        if hasattr(folder, "close"):  # an SFTP session, open since the listing
            folder.close()
    summarize_pickup(reports, artifact_key, folder.describe())
    failed = [report for report in reports if report.outcome == "failed"]
    problems = [
        f"{len(failed)} of {len(claimed)} files not loaded: "
        + "; ".join(f"{report.file} ({report.reason})" for report in failed)
    ] if failed else []  # fmt: skip
    if missed := _check_expected(rules, folder, target, plan, now):
        problems.append(missed)
    if problems:
        error = expected.ExpectedFilesMissing if not failed else RuntimeError
        raise error("; ".join(problems))
    return reports

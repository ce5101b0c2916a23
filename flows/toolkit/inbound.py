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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext

from toolkit import database
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

    def check(self) -> None:
        """ValueError naming a setting that is none of its choices."""
        if self.after_load not in ("move", "remove"):
            raise ValueError(f"after_load {self.after_load!r}: move or remove")
        if self.on_failure not in ("leave", "move"):
            raise ValueError(f"on_failure {self.on_failure!r}: leave or move")


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


def archive(folder, dropped, rules: PickupRules, day: str, under: str = "processed"):
    """Move (or remove) a file and its marker once done; where it is now."""
    names = [dropped.name]
    if rules.marker_suffix and folder.exists(dropped.name + rules.marker_suffix):
        names.append(dropped.name + rules.marker_suffix)
    if under == "processed" and rules.after_load == "remove":
        for name in names:
            folder.remove(name)
        return "removed"
    destination = f"{under}/{day}" if under == "processed" else under
    where = pickup.move_without_overwrite(folder, names[0], destination)
    for marker in names[1:]:
        with contextlib.suppress(FileExistsError):
            folder.move(marker, where + rules.marker_suffix)
    return where


def _load_or_skip(folder, dropped, target, plan, progress) -> loading.LoadOutcome:
    """The load of one file, unless the ledger holds this very file."""
    listing = loading.Listing(
        folder.describe(), dropped.name, dropped.size, dropped.modified
    )
    with database.engine_of(target) as engine:
        if loading.content_loaded_before(
            engine, plan, listing, lambda: folder.open_file(dropped.name)
        ):
            return loading.LoadOutcome(
                0, dropped.size, "", False,
                "already loaded (this file is in the ledger): only moved",
            )  # fmt: skip
        with folder.open_file(dropped.name) as reader:
            return loading.load_stream(
                engine,
                reader,
                plan,
                listing,
                flow_run_id=flow_run_id(),
                progress=progress,
            )


@task(**retries.TRANSIENT_RETRIES, task_run_name="load {dropped.name}")
def load_dropped_file(  # pylint: disable=too-many-arguments
    folder: pickup.DropFolder,
    dropped: pickup.DroppedFile,
    target: database.DatabaseConnection,
    plan: LoadPlan,
    rules: PickupRules,
    *,
    day: str,
    progress_seconds: float = PROGRESS_SECONDS,
) -> FileReport:
    """Load one settled file with its ledger row, then archive it. A retry starts
    again from the file's first byte: nothing of a failed try was committed."""
    logger = run_logger()
    progress = Progress(dropped.name, logger, progress_seconds)
    try:
        outcome = _load_or_skip(folder, dropped, target, plan, progress)
    except loading.BadFile as error:
        if rules.on_failure == "move":
            where = archive(folder, dropped, rules, day, under="failed")
            raise loading.BadFile(f"{error} (moved to {where})") from error
        raise
    now_at = archive(folder, dropped, rules, day)
    seconds = progress.seconds()
    if outcome.loaded:
        logger.info(
            "loaded %s: %s rows, %.1f MB in %.1f s, %.1f MB/s, into %s (%s); now at %s",
            dropped.name, f"{outcome.rows:,}", outcome.bytes / MEGABYTE, seconds,
            outcome.bytes / MEGABYTE / seconds if seconds > 0 else 0.0,
            plan.table, plan.mode, now_at,
        )  # fmt: skip
    else:
        logger.info("skipped %s: %s; now at %s", dropped.name, outcome.reason, now_at)
    return FileReport(
        dropped.name,
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
    folder, dropped, target, plan, rules, day, progress_seconds
) -> FileReport:
    """The task run of one file, as its report: what it did, or why it failed."""
    state = load_dropped_file(
        folder, dropped, target, plan, rules, day=day,
        progress_seconds=progress_seconds, return_state=True,
    )  # fmt: skip
    # pylint: disable=no-member  # return_state: a State, not the report
    if state.is_completed():
        return state.result()
    error = state.result(raise_on_failure=False)
    return FileReport(dropped.name, "failed", one_line(error), mode=plan.mode)


def pick_up_and_load(  # pylint: disable=too-many-arguments
    folder: pickup.DropFolder,
    target: database.DatabaseConnection,
    plan: LoadPlan,
    rules: PickupRules = PickupRules(),
    *,
    artifact_key: str | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
) -> list[FileReport]:
    """Call from a flow: list, settle, load each file apart, archive, report.

    Raises at the end, naming each file that failed, after the others are loaded.
    """
    plan.check()
    rules.check()
    day = datetime.now(timezone.utc).date().isoformat()
    settled = list_settled_files(folder, rules)
    reports = [
        FileReport(dropped.name, "left", reason) for dropped, reason in settled.left
    ]
    try:
        for dropped in settled.taken:
            reports.append(
                _load_one(folder, dropped, target, plan, rules, day, progress_seconds)
            )
    finally:
        if hasattr(folder, "close"):  # an SFTP session, open since the listing
            folder.close()
    summarize_pickup(reports, artifact_key, folder.describe())
    failed = [report for report in reports if report.outcome == "failed"]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(settled.taken)} files not loaded: "
            + "; ".join(f"{report.file} ({report.reason})" for report in failed)
        )
    return reports

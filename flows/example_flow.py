"""# Nightly university extract

Reads four queries from the student database, shapes each with pandas, and delivers
four CSV files to the partner: a roster of active students, one term's course
enrollment, grade point averages by term, and headcounts by program.

- `env=dev` (the default) needs no configuration: it reads the SQLite sample database
  and writes to a local folder (`flows/output/dev`, or FLOWS_OUTPUT_DIR), printed at
  the end of the run.
- `env=main` reads the database of block `example-database-main` and delivers to the
  SFTP server of block `example-sftp-main`.

The four extracts run concurrently: each is one task (query, shape, deliver), all four
are submitted at once. One flow, four files, about the time of the slowest. The
shaping steps are plain pandas functions, tested in flows/tests/test_example_flow.py.
Run it here with `python3 flows/example_flow.py run --param env=dev`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import pandas as pd
from prefect import flow, get_run_logger, task

import util
from sample_data import sample_database
from toolkit import connections
from toolkit.database import query_dataframe
from toolkit.delivery import deliver_frame, summarize_deliveries
from toolkit.sftp import NETWORK_RETRIES

SYSTEM = "example"
GRADE_POINTS = {
    "A": 4.0,
    "A-": 3.7,
    "B+": 3.3,
    "B": 3.0,
    "B-": 2.7,
    "C+": 2.3,
    "C": 2.0,
    "C-": 1.7,
    "D": 1.0,
    "F": 0.0,
}
PASSING_GRADE_POINTS = 1.0


def format_student_roster(students: pd.DataFrame) -> pd.DataFrame:
    """One line per student as the partner's roster wants it: full name, clean email."""
    roster = pd.DataFrame(
        {
            "student_id": students["student_id"],
            "full_name": students["last_name"] + ", " + students["first_name"],
            "email": students["email"].str.strip().str.lower(),
            "program": students["program"],
            "entry_year": students["entry_year"],
        }
    )
    return roster.sort_values(["full_name", "student_id"], ignore_index=True)


def summarize_course_enrollment(enrollments: pd.DataFrame) -> pd.DataFrame:
    """Per course of the term: students enrolled, graded, and the pass rate of graded."""
    points = enrollments["grade"].map(GRADE_POINTS)
    frame = enrollments.assign(points=points, passed=points >= PASSING_GRADE_POINTS)
    summary = frame.groupby(["course_code", "course_title"], as_index=False).agg(
        enrolled=("student_id", "count"),
        graded=("points", "count"),
        passed=("passed", "sum"),
        average_grade_points=("points", "mean"),
    )
    summary["pass_rate"] = (summary["passed"] / summary["graded"]).round(3)
    summary["average_grade_points"] = summary["average_grade_points"].round(2)
    return summary


def compute_term_gpa(graded: pd.DataFrame) -> pd.DataFrame:
    """Credit-weighted GPA per student and term; withdrawals (W) count for nothing."""
    frame = graded.assign(points=graded["grade"].map(GRADE_POINTS)).dropna(
        subset=["points"]
    )
    frame = frame.assign(
        quality_points=frame["points"] * frame["credits"],
        credits_earned=frame["credits"].where(
            frame["points"] >= PASSING_GRADE_POINTS, 0
        ),
    )
    gpa = frame.groupby(["student_id", "term"], as_index=False).agg(
        credits_attempted=("credits", "sum"),
        credits_earned=("credits_earned", "sum"),
        quality_points=("quality_points", "sum"),
    )
    gpa["gpa"] = (gpa["quality_points"] / gpa["credits_attempted"]).round(2)
    return gpa.drop(columns="quality_points")


def count_program_headcount(students: pd.DataFrame) -> pd.DataFrame:
    """Students per program and entry year, one column per status, with a total."""
    counts = pd.crosstab(
        [students["program"], students["entry_year"]], students["status"]
    )
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index().rename_axis(columns=None)


@dataclass(frozen=True)
class Extract:
    """One query, the pandas step that shapes its result, and the file it becomes."""

    query: str
    transform: Callable
    file_name: str


def extracts_for(term: str) -> dict[str, tuple[Extract, dict]]:
    """The four extracts of one night, each with its query parameters."""
    return {
        "roster": (
            Extract("sql/students_by_status.sql", format_student_roster, "roster.csv"),
            {"status": "active"},
        ),
        "enrollment": (
            Extract(
                "sql/term_enrollments.sql",
                summarize_course_enrollment,
                f"course_enrollment_{term}.csv",
            ),
            {"term": term},
        ),
        "gpa": (
            Extract("sql/graded_enrollments.sql", compute_term_gpa, "term_gpa.csv"),
            {"term": term},
        ),
        "headcount": (
            Extract(
                "sql/program_students.sql",
                count_program_headcount,
                "program_headcount.csv",
            ),
            {},
        ),
    }


@task(**NETWORK_RETRIES, task_run_name="extract {extract.file_name}")
def extract_and_deliver(source, sink, extract: Extract, parameters: dict):
    """Query, shape, deliver: one file. A retry starts again from the query."""
    frame = query_dataframe.fn(source, extract.query, parameters)
    return deliver_frame.fn(sink, extract.transform(frame), extract.file_name)


def run_extracts(source, sink, extracts: dict[str, tuple[Extract, dict]]) -> list:
    """Submit every extract at once; Prefect runs them concurrently. Wait for all.

    A failed extract does not stop the others: their files are still delivered, and
    the run then fails naming the files that were not.
    """
    futures = {
        extract.file_name: extract_and_deliver.submit(source, sink, extract, parameters)
        for extract, parameters in extracts.values()
    }
    # A failed extract's result is its error: read so on Prefect 2.20 and on 3, where
    # wait() returns None rather than the state.
    results = {
        name: future.result(raise_on_failure=False) for name, future in futures.items()
    }
    missing = [name for name, got in results.items() if isinstance(got, BaseException)]
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(results)} files not delivered: "
            f"{', '.join(missing)} (see the failed tasks above)"
        )
    return list(results.values())


# How this flow is deployed. Schedule, main parameters and extra tags apply to the
# deployment of branch main only; the facts go into the description the
# UI shows on the deployment's page.
DEPLOYMENT = util.DeploymentSettings(
    schedule="0 2 * * *",
    timezone="America/Denver",
    main_parameters={"env": "main"},
    tags=("registrar",),
    source_systems=("Student information system (PostgreSQL)",),
    sink_systems=("Partner SFTP server",),
    customer_contact="Registrar's data team <registrar-data@example.edu>",
)


@flow
def example_flow(env: Literal["dev", "main"] = "dev", term: str = "2024-08") -> dict:
    """Nightly extract of the student database to the partner's four CSV files.

    If it failed: each file is delivered whole or not at all, so a rerun is safe. A
    failed task's log names the file, the query and the server it was talking to.
    """
    source = connections.database_for(SYSTEM, env, dev_default=sample_database)
    sink = connections.sink_for(SYSTEM, env)
    reports = run_extracts(source, sink, extracts_for(term))
    summarize_deliveries(
        reports,
        key=f"{SYSTEM}-deliveries-{env}",
        description=f"Files delivered by the {env} run for term {term}",
    )
    for report in reports:
        get_run_logger().info(
            "%s: %d rows at %s", report.file, report.rows, report.location
        )
    return {report.file: report.rows for report in reports}


if __name__ == "__main__":
    util.run_flow_command_line_interface(__file__, "example_flow")

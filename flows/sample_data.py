"""A small university data set in SQLite: the embedded default source of `env=dev`.

Made deterministically (a fixed seed), so every machine and every test sees the same
students, courses and enrollments.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, Text
from sqlalchemy.engine import Engine

from toolkit.database import DatabaseConnection, sqlite_database

SEED = 2024
STUDENT_COUNT = 400
# Terms by the month they start in: they sort in time order as plain text.
TERMS = ("2023-08", "2024-01", "2024-08")
PROGRAMS = ("Computer Science", "History", "Mathematics", "Nursing", "Physics")
STATUSES = ("active", "active", "active", "active", "graduated", "withdrawn")
FIRST_NAMES = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken")
LAST_NAMES = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen")
GRADES = ("A", "A-", "B+", "B", "B-", "C+", "C", "C-", "D", "F", "W")
GRADE_WEIGHTS = (14, 10, 10, 14, 9, 8, 8, 6, 4, 4, 3)
COURSES = (
    ("CS101", "Introduction to Programming", "Computer Science", 4),
    ("CS201", "Data Structures", "Computer Science", 4),
    ("CS310", "Databases", "Computer Science", 3),
    ("HIST110", "World History", "History", 3),
    ("HIST220", "History of Science", "History", 3),
    ("MATH120", "Calculus I", "Mathematics", 4),
    ("MATH220", "Linear Algebra", "Mathematics", 3),
    ("NURS100", "Foundations of Nursing", "Nursing", 4),
    ("PHYS150", "Mechanics", "Physics", 4),
    ("STAT200", "Statistics", "Mathematics", 3),
)
METADATA = MetaData()
TABLES = {
    "students": Table(
        "students",
        METADATA,
        Column("student_id", Integer, primary_key=True),
        Column("first_name", Text, nullable=False),
        Column("last_name", Text, nullable=False),
        Column("email", Text, nullable=False),
        Column("program", Text, nullable=False),
        Column("entry_year", Integer, nullable=False),
        Column("status", Text, nullable=False),
    ),
    "courses": Table(
        "courses",
        METADATA,
        Column("course_id", Integer, primary_key=True),
        Column("code", Text, nullable=False, unique=True),
        Column("title", Text, nullable=False),
        Column("department", Text, nullable=False),
        Column("credits", Integer, nullable=False),
    ),
    "enrollments": Table(
        "enrollments",
        METADATA,
        Column("enrollment_id", Integer, primary_key=True),
        Column("student_id", ForeignKey("students.student_id"), nullable=False),
        Column("course_id", ForeignKey("courses.course_id"), nullable=False),
        Column("term", Text, nullable=False),
        Column("grade", Text),
    ),
}


def sample_rows(seed: int = SEED) -> dict[str, list[tuple]]:
    """The rows of each table, the same for the same seed."""
    rng = random.Random(seed)
    students = []
    for student_id in range(1, STUDENT_COUNT + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{first}.{last}{student_id}@Example.EDU"
        program, year = rng.choice(PROGRAMS), rng.randint(2019, 2024)
        students.append(
            (student_id, first, last, email, program, year, rng.choice(STATUSES))
        )
    courses = [(index + 1, *course) for index, course in enumerate(COURSES)]
    enrollments = []
    for student in students:
        for term in TERMS:
            for course in rng.sample(courses, rng.randint(0, 4)):
                grade = rng.choices(GRADES, GRADE_WEIGHTS)[0]
                if term == TERMS[-1] and rng.random() < 0.3:
                    grade = None  # the current term: not graded yet
                enrollments.append(
                    (len(enrollments) + 1, student[0], course[0], term, grade)
                )
    return {"students": students, "courses": courses, "enrollments": enrollments}


def load_sample_data(engine: Engine) -> None:
    """Create the three tables in `engine`'s database and fill them."""
    with engine.begin() as connection:
        METADATA.create_all(connection)
        for name, rows in sample_rows().items():
            table = TABLES[name]
            keys = [column.name for column in table.columns]
            connection.execute(table.insert(), [dict(zip(keys, row)) for row in rows])


def sample_database(folder: Path) -> DatabaseConnection:
    """The SQLite sample database in `folder`, made on first use: dev's embedded default."""
    return sqlite_database(folder / "sample_university.sqlite", load_sample_data)


PLACEMENT_TESTS = ("math", "writing")
# The partner's sample files: one per test day, each a few hundred scores.
TEST_DAYS = ("2024-07-15", "2024-07-29")


def sample_score_files(seed: int = SEED) -> dict[str, str]:
    """The placement-test partner's files as it would send them: name -> CSV text."""
    rng = random.Random(seed)
    files = {}
    for day in TEST_DAYS:
        lines = ["student_id,test,score,taken_at"]
        start = datetime.fromisoformat(f"{day} 09:00:00")
        for student_id in rng.sample(range(1, STUDENT_COUNT + 1), 150):
            test = rng.choice(PLACEMENT_TESTS)
            score = rng.randint(200, 1000) / 10
            taken_at = start + timedelta(seconds=rng.randint(0, 8 * 3600))
            lines.append(
                f'{student_id},"{test}",{score:.1f},{taken_at:%Y-%m-%d %H:%M:%S}'
            )
        files[f"scores_{day}.csv"] = "\n".join(lines) + "\n"
    return files


def drop_sample_score_files(folder: Path) -> list[str]:
    """Put the partner's sample files in `folder`, as the partner would (whole, under
    their final names), unless it holds files already; the names dropped."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(path.is_file() for path in folder.glob("scores_*.csv")):
        return []
    for name, text in sample_score_files().items():
        partial = folder / f".{name}.part"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, folder / name)
    return sorted(sample_score_files())

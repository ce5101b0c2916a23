"""A small university data set in SQLite: the embedded default source of `env=dev`.

Made deterministically (a fixed seed), so every machine and every test sees the same
students, courses and enrollments.
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

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
SCHEMA = """
CREATE TABLE students (
    student_id INTEGER PRIMARY KEY, first_name TEXT NOT NULL, last_name TEXT NOT NULL,
    email TEXT NOT NULL, program TEXT NOT NULL, entry_year INTEGER NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE courses (
    course_id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, title TEXT NOT NULL,
    department TEXT NOT NULL, credits INTEGER NOT NULL
);
CREATE TABLE enrollments (
    enrollment_id INTEGER PRIMARY KEY,
    student_id INTEGER NOT NULL REFERENCES students (student_id),
    course_id INTEGER NOT NULL REFERENCES courses (course_id),
    term TEXT NOT NULL, grade TEXT
);
"""


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


def ensure_sample_database(path: Path) -> Path:
    """Create the sample database at `path` unless it is there; its path.

    It is built under a temporary name and renamed, so a run never sees half of it.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.unlink(missing_ok=True)
    try:
        with sqlite3.connect(partial) as connection:
            connection.executescript(SCHEMA)
            for table, rows in sample_rows().items():
                markers = ", ".join("?" * len(rows[0]))
                connection.executemany(f"INSERT INTO {table} VALUES ({markers})", rows)
        connection.close()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path

"""Your tests of your flows' transformations: copy this pattern.

How to write one:
1. Build a tiny input DataFrame by hand: the few rows that exercise one rule.
2. Call the shaping function with it (a plain function: no Prefect, no database).
3. Build the exact frame you expect and compare with `assert_frame_equal`: exact
   values, column order and dtypes, so a silent change of meaning fails the test.
Run them with `make test`, or `.venv/bin/python -m pytest flows/tests/test_flows.py`.
"""

import pandas as pd
from pandas.testing import assert_frame_equal

from example_flow import (
    compute_term_gpa,
    count_program_headcount,
    format_student_roster,
    summarize_course_enrollment,
)


def test_roster_has_full_names_clean_emails_and_sorts_by_name():
    """It joins names as 'Last, First', lowercases and trims emails, sorts by name."""
    students = pd.DataFrame(
        {
            "student_id": [7, 3],
            "first_name": ["Grace", "Ada"],
            "last_name": ["Hopper", "Lovelace"],
            "email": [" Grace.Hopper@Example.EDU", "ada@example.edu "],
            "program": ["Mathematics", "Computer Science"],
            "entry_year": [2021, 2022],
        }
    )
    expected = pd.DataFrame(
        {
            "student_id": [7, 3],
            "full_name": ["Hopper, Grace", "Lovelace, Ada"],
            "email": ["grace.hopper@example.edu", "ada@example.edu"],
            "program": ["Mathematics", "Computer Science"],
            "entry_year": [2021, 2022],
        }
    )
    assert_frame_equal(format_student_roster(students), expected)


def test_course_enrollment_counts_ungraded_and_passes():
    """Ungraded and withdrawn students count as enrolled, not graded; D passes, F not."""
    enrollments = pd.DataFrame(
        {
            "student_id": [1, 2, 3, 4, 5],
            "course_code": ["CS101"] * 4 + ["MATH120"],
            "course_title": ["Programming"] * 4 + ["Calculus I"],
            "grade": ["A", "F", None, "W", "D"],
        }
    )
    expected = pd.DataFrame(
        {
            "course_code": ["CS101", "MATH120"],
            "course_title": ["Programming", "Calculus I"],
            "enrolled": [4, 1],
            "graded": [2, 1],
            "passed": [1, 1],
            "average_grade_points": [2.0, 1.0],
            "pass_rate": [0.5, 1.0],
        }
    )
    assert_frame_equal(summarize_course_enrollment(enrollments), expected)


def test_term_gpa_weights_by_credits_and_ignores_withdrawals():
    """GPA is credit-weighted; a W counts for nothing; an F is attempted, not earned."""
    graded = pd.DataFrame(
        {
            "student_id": [1, 1, 1, 2],
            "term": ["2024-01", "2024-01", "2024-01", "2024-01"],
            "credits": [4, 2, 3, 3],
            "grade": ["A", "F", "W", "B+"],
        }
    )
    expected = pd.DataFrame(
        {
            "student_id": [1, 2],
            "term": ["2024-01", "2024-01"],
            "credits_attempted": [6, 3],
            "credits_earned": [4, 3],
            "gpa": [2.67, 3.3],
        }
    )
    assert_frame_equal(compute_term_gpa(graded), expected)


def test_program_headcount_has_a_column_per_status_and_a_total():
    """One row per program and entry year, a column per status, and the total."""
    students = pd.DataFrame(
        {
            "program": ["History", "History", "History", "Physics"],
            "entry_year": [2020, 2020, 2021, 2020],
            "status": ["active", "graduated", "active", "active"],
        }
    )
    expected = pd.DataFrame(
        {
            "program": ["History", "History", "Physics"],
            "entry_year": [2020, 2021, 2020],
            "active": [1, 1, 1],
            "graduated": [1, 0, 0],
            "total": [2, 1, 1],
        }
    )
    assert_frame_equal(count_program_headcount(students), expected)

"""Your tests of an inbound flow: the partner's sample files load as the flow loads
them, into a throw-away copy of the sample database; no server, no Prefect run.

Copy this pattern: write a file as the partner sends it, load it with the flow's
LoadPlan, and check the rows and what a second delivery does.
"""

import io
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import text

from inbound_example_flow import PLAN
from sample_data import sample_database, sample_score_files
from toolkit.database import read_sql_file
from toolkit.loading import BadFile, Listing, load_stream

HEADER = "student_id,test,score,taken_at\n"


@pytest.fixture
def engine(tmp_path):
    """The sample database in a folder of the test's own, with test_scores made."""
    engine = sample_database(tmp_path).create_engine()
    with engine.begin() as connection:
        connection.execute(text(read_sql_file("create_test_scores.sql")))
    yield engine
    engine.dispose()


def load(engine, name: str, content: str):
    """Load `content` as the partner's file `name`."""
    listing = Listing("partner-drop", name, len(content), datetime.now(timezone.utc))
    return load_stream(engine, io.BytesIO(content.encode()), PLAN, listing)


def scores(engine) -> dict:
    """(student_id, test) -> score as loaded."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT student_id, test, score FROM test_scores")
        )
        return {(row[0], row[1]): Decimal(str(row[2])) for row in rows}


def test_sample_files_load_once_each(engine):
    """Every line of both sample files is a row; the same file again loads nothing."""
    files = sample_score_files()
    outcomes = [load(engine, name, content) for name, content in files.items()]
    assert all(outcome.loaded for outcome in outcomes)
    first_name, first_content = next(iter(files.items()))
    assert not load(engine, first_name, first_content).loaded
    lines = sum(content.count("\n") - 1 for content in files.values())
    assert len(scores(engine)) <= lines  # a student retested replaces the score


def test_corrected_score_replaces_the_old_one(engine):
    """A corrected file (upsert on student and test) replaces that score only."""
    load(engine, "scores_a.csv", HEADER + '1,"math",61.5,2024-07-15 09:00:00\n')
    load(engine, "scores_b.csv", HEADER + '1,"math",71.5,2024-07-15 09:00:00\n')
    assert scores(engine) == {(1, "math"): Decimal("71.5")}


def test_bad_score_names_its_line_and_loads_nothing(engine):
    """A score that is not a number: the file fails, its line named, no row kept."""
    content = HEADER + '1,"math",61.5,2024-07-15 09:00:00\n2,"math",n/a,2024-07-15\n'
    with pytest.raises(BadFile, match="line 3, column score, value 'n/a'"):
        load(engine, "scores_c.csv", content)
    assert scores(engine) == {}

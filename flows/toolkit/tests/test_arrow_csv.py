"""The CSV writer's formats, frame by frame: no database, no server."""

import datetime
import io
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest
from pyarrow import csv

from toolkit import arrow_csv


def written(*frames: pd.DataFrame) -> str:
    """The CSV text `write_frames_as_csv` makes of `frames`, as one file."""
    stream = io.BytesIO()
    arrow_csv.write_frames_as_csv(frames, stream)
    return stream.getvalue().decode()


def test_times_keep_one_format_across_frames():
    """A frame of whole seconds and one with fractions: six digits in both, as the
    column's type allows fractions; a column of seconds (declared) has none."""
    whole = pd.DataFrame(
        {
            "at": pd.to_datetime(["2024-01-01 08:00:00"]),
            "day": pd.to_datetime(["2024-01-01 08:00:00"]).astype("datetime64[s]"),
            "utc": pd.to_datetime(["2024-01-01 08:00:00"], utc=True),
        }
    )
    fraction = pd.DataFrame(
        {
            "at": pd.to_datetime(["2024-01-01 08:00:00.5"]),
            "day": pd.to_datetime(["2024-01-02 09:00:00"]).astype("datetime64[s]"),
            "utc": pd.to_datetime(["2024-01-01 08:00:00.25"], utc=True),
        }
    )
    assert written(whole, fraction) == (
        "at,day,utc\n"
        "2024-01-01 08:00:00.000000,2024-01-01 08:00:00,2024-01-01 08:00:00.000000Z\n"
        "2024-01-01 08:00:00.500000,2024-01-02 09:00:00,2024-01-01 08:00:00.250000Z\n"
    )


def test_nanoseconds_are_refused_not_dropped():
    """A time the file cannot hold fails the delivery, naming the column and the fix."""
    frame = pd.DataFrame({"at": [pd.Timestamp("2024-01-01 08:00:00.000000001")]})
    with pytest.raises(ValueError, match=r"column 'at' .*\.dt\.round\('us'\)"):
        written(frame)


def test_decimals_keep_every_digit_in_plain_notation():
    """Decimal objects keep their own digits; decimals of a scale above six, which
    Arrow writes as 0E-10, are written as 0.0000000000."""
    objects = pd.DataFrame(
        {
            "amount": [Decimal("1.50"), Decimal("1E-7"), Decimal("-3"), None],
            "note": ["a", "b,c", None, ""],
        }
    )
    scale_ten = pd.DataFrame(
        {
            "amount": pd.array(
                [Decimal("0"), Decimal("-0.0000000012"), None, Decimal("12.5")],
                dtype=pd.ArrowDtype(pa.decimal256(30, 10)),
            ),
            "note": ["d", None, '"e"', "f"],
        }
    )
    assert written(objects, scale_ten) == (
        "amount,note\n"
        '1.50,"a"\n0.0000001,"b,c"\n-3,\n,""\n'
        '0.0000000000,"d"\n-0.0000000012,\n,"""e"""\n12.5000000000,"f"\n'
    )


def test_numbers_written_as_text_leave_other_columns_as_arrow_writes_them():
    """Rows with exact numbers are joined by the toolkit, the others by Arrow's
    writer: every other column must read the same either way."""
    table = pa.table(
        {
            "integer": [1, None],
            "real": [1.0, 2.5e-05],
            "flag": [True, None],
            "day": [datetime.date(2024, 1, 31), None],
            "at": pa.array([0, 1_500_000], pa.timestamp("us", tz="UTC")),
            "text": ['say "hi", twice\n', ""],
            "category": pa.array(["x", None]).dictionary_encode(),
        }
    )
    arrows = io.BytesIO()
    csv.write_csv(table, arrows, write_options=csv.WriteOptions(include_header=False))
    toolkits = io.BytesIO()
    arrow_csv.write_rows_as_text(table, set(), toolkits)
    assert toolkits.getvalue() == arrows.getvalue()


def test_exact_numbers_from_text():
    """One scale for every value: a decimal of that scale; else Decimal objects."""
    shared = arrow_csv.exact_numbers(pa.array(["12.50", "-0.25", None]))
    assert shared.type == pa.decimal256(4, 2)
    mixed = arrow_csv.exact_numbers(pa.array(["0.125", "100", "NaN"]))
    assert [str(number) for number in mixed] == ["0.125", "100", "NaN"]

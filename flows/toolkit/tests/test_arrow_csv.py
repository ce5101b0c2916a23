"""The CSV writer's formats, frame by frame: no database, no server."""

import io

import pandas as pd
import pytest

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

"""CSV in and out of pandas through Apache Arrow's C++ reader and writer.

pandas' own read_sql and to_csv spend seconds per million rows formatting values one
by one in Python; Arrow does the same work in C++ about five times faster. The CSV it
writes: a header (names quoted only where needed), strings always quoted, numbers
bare, missing values empty, and one format per column, whatever the values of a chunk:
timestamps as `YYYY-MM-DD HH:MM:SS.ffffff` (`...Z` in UTC), or without the fraction
where the column's unit is seconds (`datetime64[s]`): a flow declares that format.
"""

from __future__ import annotations

import csv as stdlib_csv
import io
from typing import BinaryIO, Iterable, Iterator

import pandas as pd
import pyarrow as pa
from pyarrow import csv

from toolkit.streams import Progress

READ_BLOCK_BYTES = 1 << 20
# A frame is written in slices of this many rows so that a progress line can say how
# many rows are out while one large frame is still being written.
WRITE_SLICE_ROWS = 10_000
# PostgreSQL type OIDs and the Arrow type their CSV text is read as; any other type is
# read as text. numeric becomes float64, as most pandas code expects.
POSTGRES_ARROW_TYPES = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int64(),
    23: pa.int64(),
    700: pa.float64(),
    701: pa.float64(),
    1700: pa.float64(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}


def arrow_types_of_postgres(description) -> dict[str, pa.DataType]:
    """The Arrow type to read each column's CSV text as, from a cursor's description."""
    return {
        column.name: POSTGRES_ARROW_TYPES.get(column.type_code, pa.string())
        for column in description
    }


def _timestamp_column(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Microseconds, unless the column's unit is seconds: one format for the file."""
    if column.type.unit in ("s", "us"):
        return column
    try:  # a safe cast refuses to drop nanoseconds rather than write them
        return column.cast(pa.timestamp("us", column.type.tz))
    except pa.ArrowInvalid as error:
        raise ValueError(
            f"column {name!r} has times finer than a microsecond, which the CSV file "
            f"does not hold: round them first, e.g. frame[{name!r}].dt.round('us')"
        ) from error


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame as an Arrow table ready to write."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            column = _timestamp_column(field.name, table.column(index))
            table = table.set_column(index, field.name, column)
    return table


def write_frames_as_csv(
    frames: Iterable[pd.DataFrame],
    stream: BinaryIO,
    progress: Progress | None = None,
) -> int:
    """Write `frames` to `stream` as one CSV with one header; rows written.

    `progress`, if given, is told the rows as each slice of a frame is written.
    """
    rows = 0
    without_header = csv.WriteOptions(include_header=False)
    if progress is not None:
        progress.start_counting_rows()
    for index, frame in enumerate(frames):
        if index == 0:  # quoted only where a name needs it, as people write headers
            header = io.StringIO()
            stdlib_csv.writer(header, lineterminator="\n").writerow(frame.columns)
            stream.write(header.getvalue().encode())
        table = frame_to_table(frame)
        for start in range(0, table.num_rows, WRITE_SLICE_ROWS):
            part = table.slice(start, WRITE_SLICE_ROWS)
            csv.write_csv(part, stream, write_options=without_header)
            if progress is not None:
                progress.add_rows(part.num_rows)
        rows += len(frame)
    return rows


def read_csv_frames(
    stream: BinaryIO, column_types: dict[str, pa.DataType], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """DataFrames of at most `chunk_rows` rows from a CSV stream with a header.

    Values are converted to `column_types`; an empty unquoted value is missing, a
    quoted empty string stays an empty string (PostgreSQL's CSV convention).
    """
    reader = csv.open_csv(
        stream,
        read_options=csv.ReadOptions(block_size=READ_BLOCK_BYTES),
        convert_options=csv.ConvertOptions(
            column_types=column_types,
            true_values=["t", "true"],
            false_values=["f", "false"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    yielded = False
    for batch in reader:
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows).to_pandas()
            yielded = True
            rest = table.slice(chunk_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows or not yielded:
        yield pa.Table.from_batches(pending, schema=reader.schema).to_pandas()

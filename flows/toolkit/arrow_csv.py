"""CSV in and out of pandas through Apache Arrow's C++ reader and writer.

pandas' own read_sql and to_csv spend seconds per million rows formatting values one
by one in Python; Arrow does the same work in C++ about five times faster. The CSV it
writes: a header (names quoted only where needed), strings always quoted, missing
values empty, and one format per column, whatever the values of a chunk:
- exact numbers (`Decimal`, Arrow decimals) with their own digits, never in E notation;
- timestamps as `YYYY-MM-DD HH:MM:SS.ffffff` (`...Z` in UTC), or without the fraction
  where the column's unit is seconds (`datetime64[s]`): a flow declares that format;
- other numbers, dates and booleans as Arrow writes them (`1.5`, `2024-01-31`, `true`).
"""

from __future__ import annotations

import csv as stdlib_csv
import datetime
import io
from decimal import Decimal
from typing import BinaryIO, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from toolkit.streams import Progress

READ_BLOCK_BYTES = 1 << 20
# A frame is written in slices of this many rows so that a progress line can say how
# many rows are out while one large frame is still being written.
WRITE_SLICE_ROWS = 10_000
POSTGRES_NUMERIC = 1700
# PostgreSQL type OIDs and the Arrow type their CSV text is read as; any other type is
# read as text. numeric is read as its exact text, then made exact numbers.
POSTGRES_ARROW_TYPES = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int64(),
    23: pa.int64(),
    700: pa.float64(),
    701: pa.float64(),
    POSTGRES_NUMERIC: pa.string(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
# Arrow writes a decimal of a larger scale in E notation when it is small (0E-10).
LARGEST_PLAIN_SCALE = 6
MOST_DECIMAL_DIGITS = 76  # decimal256's


def exact_numbers(text: pa.Array) -> pa.Array | list[Decimal | None]:
    """Numbers from their exact text ("12.50", "-3"), as `Decimal` values.

    Where every value carries the same number of decimals (a declared numeric(p, s), a
    sum, a round), an Arrow decimal256 of that scale and of the digits the values
    need, which pandas keeps in C and computes with exactly (`* 100` included, which
    overflows a decimal128 of 20 digits); else (an average, NaN) one Decimal object per
    value, each with its own digits.
    """
    length = pc.binary_length(text)
    point = pc.find_substring(text, ".")
    no_point = pc.less(point, 0)
    decimals = pc.if_else(no_point, 0, pc.subtract(length, pc.add(point, 1)))
    fewest, most = pc.min_max(decimals).values()
    scale = most.as_py() or 0
    if fewest.as_py() in (None, scale):
        minus = pc.cast(pc.starts_with(text, "-"), pa.int32())
        units = pc.subtract(pc.if_else(no_point, length, point), minus)
        precision = max((pc.max(units).as_py() or 1) + scale, 1)
        if precision <= MOST_DECIMAL_DIGITS:
            try:
                return pc.cast(text, pa.decimal256(precision, scale))
            except pa.ArrowInvalid:  # NaN, Infinity
                pass
    return [None if v is None else Decimal(v) for v in text.to_pylist()]


def _first_present(values: Iterable):
    """An object column's first value that is not missing, None if there is none.

    A walk to that value, not a scan of every string of every text column.
    """
    for value in values:
        if isinstance(value, Decimal) or not pd.isna(value):  # Decimal NaN is a value
            return value
    return None


def _positions_holding(frame: pd.DataFrame, kind) -> list[int]:
    """The positions of the object columns whose values are `kind`'s (the first
    present value tells)."""
    return [
        position
        for position, dtype in enumerate(frame.dtypes)
        if dtype == object and kind(_first_present(frame.iloc[:, position].to_numpy()))
    ]


def _is_decimal(value) -> bool:
    return isinstance(value, Decimal)


def _is_zoned(value) -> bool:
    return isinstance(value, datetime.datetime) and value.tzinfo is not None


def _number_text(value) -> str | None:
    """A Decimal with its own digits in plain notation (0.0000001, not 1E-7)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return None if pd.isna(value) else str(value)


def _decimal_text(column: pd.Series) -> pa.Array:
    return pa.array([_number_text(value) for value in column], pa.string())


def normalize_driver_values(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the values a driver hands as Python objects typed as the chunked
    PostgreSQL path types them: Decimal columns as `exact_numbers` makes them, and
    times with offsets (a server's zone, -07:00 beside -06:00 across a DST change) in
    UTC, which Arrow can write.
    """
    for position in _positions_holding(frame, _is_decimal):
        numbers = exact_numbers(_decimal_text(frame.iloc[:, position]))
        if isinstance(numbers, pa.Array):
            numbers = pd.arrays.ArrowExtensionArray(numbers)
        frame.isetitem(position, numbers)
    for position in _positions_holding(frame, _is_zoned):
        frame.isetitem(position, pd.to_datetime(frame.iloc[:, position], utc=True))
    return frame


def table_to_frame(
    table: pa.Table, numeric_positions: Iterable[int] = ()
) -> pd.DataFrame:
    """An Arrow table as a DataFrame, the columns at `numeric_positions` (exact text)
    made exact numbers."""
    objects = {}
    for position in numeric_positions:
        numbers = exact_numbers(table.column(position).combine_chunks())
        if isinstance(numbers, pa.Array):
            table = table.set_column(position, table.field(position).name, numbers)
        else:
            objects[position] = numbers
    frame = table.to_pandas(
        types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_decimal(t) else None
    )
    for position, numbers in objects.items():
        frame.isetitem(position, numbers)
    return frame


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


def _text_from_digits(column: pa.Array) -> pa.Array:
    """A decimal column's values in plain notation, built from their digits in C++."""
    scale = column.type.scale
    # The same bytes read with scale 0 are the digits without the point.
    digits_type = (
        pa.decimal256 if pa.types.is_decimal256(column.type) else pa.decimal128
    )(column.type.precision, 0)
    digits = pc.cast(
        pa.Array.from_buffers(
            digits_type, len(column), column.buffers(), column.null_count, column.offset
        ),
        pa.string(),
    )
    padded = pc.utf8_lpad(pc.utf8_ltrim(digits, "-"), scale + 1, "0")
    signed_units = pc.binary_join_element_wise(
        pc.if_else(pc.starts_with(digits, "-"), "-", ""),
        pc.utf8_slice_codeunits(padded, 0, -scale),
        "",
    )
    return pc.binary_join_element_wise(
        signed_units, pc.utf8_slice_codeunits(padded, -scale), "."
    )


def _plain_decimal_text(column: pa.Array) -> pa.Array:
    """A decimal column's values in plain notation: Arrow's own text, except for the
    small values it writes in E notation (0E-10), which are built from their digits."""
    text = pc.cast(column, pa.string())
    small = pc.fill_null(pc.match_substring(text, "E"), False)
    if not pc.any(small).as_py():
        return text
    return pc.replace_with_mask(
        text, small, _text_from_digits(pc.filter(column, small))
    )


def _written_in_e_notation(column: pa.ChunkedArray) -> bool:
    """Whether Arrow would write some value of a decimal column in E notation: those
    below a millionth (0 too) where the scale is above six (0E-10)."""
    data_type = column.type
    if not (pa.types.is_decimal128(data_type) or pa.types.is_decimal256(data_type)):
        return False
    if data_type.scale <= LARGEST_PLAIN_SCALE:
        return False
    millionth = pa.scalar(Decimal("0.000001"), data_type)
    below = pc.and_(
        pc.less(column, millionth), pc.greater(column, pc.negate(millionth))
    )
    return bool(pc.any(below).as_py())


def frame_to_table(frame: pd.DataFrame) -> tuple[pa.Table, set[int]]:
    """A DataFrame as an Arrow table ready to write, and the positions of its columns
    of exact numbers as text, to be written without quotes."""
    number_text = set(_positions_holding(frame, _is_decimal))
    if number_text:  # Arrow's own inference of Decimal objects takes seconds
        frame = frame.copy(deep=False)
        for position in number_text:
            text = _decimal_text(frame.iloc[:, position])
            frame.isetitem(position, pd.arrays.ArrowExtensionArray(text))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for position, field in enumerate(table.schema):
        column = table.column(position)
        if pa.types.is_timestamp(field.type):
            column = _timestamp_column(field.name, column)
        elif _written_in_e_notation(column):
            column = _plain_decimal_text(column.combine_chunks())
            number_text.add(position)
        table = table.set_column(position, field.name, column)
    return table, number_text


_QUOTED_TYPES = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
)


def _row_pieces(table: pa.Table, number_text: set[int]) -> list:
    """What joined end to end makes `table`'s CSV rows: each column's fields, and
    between them commas, and the quotes of strings as Arrow's writer puts them.

    A string column without nulls gets its quotes from the pieces around it, not
    from a pass of its own; a null is an empty field, so a column with nulls is
    quoted value by value.
    """
    pieces, glue = [], ""
    for position, column in enumerate(table.columns):
        column = column.combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        quoted = position not in number_text and any(
            check(column.type) for check in _QUOTED_TYPES
        )
        field = pc.cast(column, pa.string())
        if quoted and pc.any(pc.match_substring(field, '"')).as_py():
            field = pc.replace_substring(field, '"', '""')
        if quoted and field.null_count:
            field = pc.binary_join_element_wise('"', field, '"', "")
            quoted = False
        glue += ("," if position else "") + ('"' if quoted else "")
        pieces += [glue, field] if glue else [field]
        glue = '"' if quoted else ""
    return pieces + [glue + "\n"]


def write_rows_as_text(
    table: pa.Table, number_text: set[int], stream: BinaryIO
) -> None:
    """Write `table`'s rows, the columns at `number_text` without quotes.

    Arrow's writer quotes every string, so the rows are joined here, in C++ too.
    """
    rows = pc.binary_join_element_wise(
        *_row_pieces(table, number_text),
        "",
        null_handling="replace",
        null_replacement="",
    )
    # The rows lie end to end in the array's data buffer: write that, not each row.
    _, offsets, data = rows.buffers()
    ends = pa.Array.from_buffers(
        pa.int32(), len(rows) + 1, [None, offsets], offset=rows.offset
    )
    stream.write(memoryview(data)[ends[0].as_py() : ends[-1].as_py()])


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
        table, number_text = frame_to_table(frame)
        for start in range(0, table.num_rows, WRITE_SLICE_ROWS):
            part = table.slice(start, WRITE_SLICE_ROWS)
            if number_text:
                write_rows_as_text(part, number_text, stream)
            else:
                csv.write_csv(part, stream, write_options=without_header)
            if progress is not None:
                progress.add_rows(part.num_rows)
        rows += len(frame)
    return rows


def read_csv_frames(
    stream: BinaryIO,
    column_types: dict[str, pa.DataType],
    chunk_rows: int,
    numeric_positions: Iterable[int] = (),
) -> Iterator[pd.DataFrame]:
    """DataFrames of at most `chunk_rows` rows from a CSV stream with a header.

    Values are converted to `column_types`, the columns at `numeric_positions` to
    exact numbers; an empty unquoted value is missing, a quoted empty string stays an
    empty string (PostgreSQL's CSV convention).
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
    numeric_positions = list(numeric_positions)
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    yielded = False
    for batch in reader:
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table_to_frame(table.slice(0, chunk_rows), numeric_positions)
            yielded = True
            rest = table.slice(chunk_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows or not yielded:
        table = pa.Table.from_batches(pending, schema=reader.schema)
        yield table_to_frame(table, numeric_positions)


def read_postgres_csv(
    stream: BinaryIO, description, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """`read_csv_frames` of PostgreSQL's CSV (COPY) of a result, from its cursor's
    description: each column read as the Arrow type of its type, numeric exact."""
    return read_csv_frames(
        stream,
        {
            c.name: POSTGRES_ARROW_TYPES.get(c.type_code, pa.string())
            for c in description
        },
        chunk_rows,
        [i for i, c in enumerate(description) if c.type_code == POSTGRES_NUMERIC],
    )

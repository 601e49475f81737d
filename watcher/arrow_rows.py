"""The CSV parsed by pyarrow into typed columns, checked, and encoded as binary COPY rows.

pyarrow's reader is lenient where PostgreSQL is strict: it reads ``2/30/2016`` as March 1st and a
number of over 308 digits as infinity. Each batch is checked here for what the line gate's pattern
would have refused (``_checked_columns``), so the binary path loads no value the text path would
not; a value pyarrow refuses raises ``ParserObjection`` and the file goes as text.

numpy and pyarrow load with this module, only when a file takes the binary path.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from watcher.copy_binary import HEADER, TRAILER, Field, RowEncoder
from watcher.errortext import first_line
from watcher.loader import FileProblem, RowProblem
from watcher.routes import Column, ColumnType, HeaderMapping
from watcher.rowcheck import PLAIN_DATE

if TYPE_CHECKING:
    from collections.abc import Callable


class Readable(Protocol):
    """What pyarrow reads a CSV from."""

    def read(self, size: int = -1) -> bytes: ...


ARROW_BLOCK_SIZE = 256 << 10
"""Bytes of CSV pyarrow parses into one batch (``bench/ingest.py`` reports the sizes tried)."""
ARROW_THREADS = True
"""pyarrow parses blocks on its own threads (else on the thread that encodes)."""


class ParserObjection(RowProblem):
    """pyarrow refused a file the gate admitted: the text path loads it instead."""


def encoded_batches(
    reader: Readable, mapping: HeaderMapping, problem: Callable[[], RowProblem | FileProblem | None]
) -> Iterator[tuple[bytes | memoryview, int]]:
    """The COPY stream: header, one payload per batch of rows, trailer; with each its row count.

    ``problem``: why ``reader`` ended early, if it did (then pyarrow's error is only its echo)."""
    columns = [c for c in mapping.file_columns if c is not None]
    names = [c.name for c in columns]
    try:
        batches = pacsv.open_csv(
            reader,
            read_options=pacsv.ReadOptions(
                column_names=names, block_size=ARROW_BLOCK_SIZE, use_threads=ARROW_THREADS
            ),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=False, double_quote=True, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c.name: _read_type(c) for c in columns},
                null_values=[""],
                true_values=[],
                false_values=[],
                quoted_strings_can_be_null=False,
                strings_can_be_null=True,
            ),
        )
        encoder = RowEncoder(
            [Field("_line_number", ">i4"), *(Field(c.name, _WIRE_TYPES[c.type]) for c in columns)]
        )
        yield HEADER, 0
        batch_first_line = 2  # the header is line 1
        for batch in batches:
            line_numbers = np.arange(batch_first_line, batch_first_line + batch.num_rows, dtype=np.int32)
            values, nulls = _checked_columns(batch, columns)
            batch_first_line += batch.num_rows
            yield encoder.encode([line_numbers, *values], [None, *nulls]), batch.num_rows
        yield TRAILER, 0
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        ended = problem()
        if ended is not None:  # the gate ended the stream in the middle of a line
            raise ended from exc
        raise ParserObjection(f"the CSV parser refused a line: {first_line(exc)}", None) from exc


_WIRE_TYPES = {
    ColumnType.BIGINT: ">i8",
    ColumnType.INTEGER: ">i4",
    ColumnType.DOUBLE: ">f8",
    ColumnType.DATE: ">i4",  # days since 2000-01-01
}
_NUMPY_TYPES: dict[ColumnType, type[np.generic]] = {
    ColumnType.BIGINT: np.int64,
    ColumnType.INTEGER: np.int32,
    ColumnType.DOUBLE: np.float64,
}


def line_ends(block: bytes) -> int:
    """The line feeds in ``block``: three times as fast as ``bytes.count`` (0.024 s against
    0.072 s of CPU for a 123 MB file in 256 KiB blocks)."""
    return int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == 0x0A))


def _read_type(column: Column) -> pa.DataType:
    """Dates are read as text, each distinct text once: pyarrow's date parser is not PostgreSQL's
    (see ``_dates``)."""
    if column.type is ColumnType.DATE:
        return pa.dictionary(pa.int32(), pa.string())
    return pa.from_numpy_dtype(_NUMPY_TYPES[column.type])


def _checked_columns(
    batch: pa.RecordBatch, columns: list[Column]
) -> tuple[list[npt.NDArray[Any]], list[npt.NDArray[np.bool_] | None]]:
    """Each column's values and NULLs, after the checks the gate's pattern would have made."""
    values: list[npt.NDArray[Any]] = []
    nulls: list[npt.NDArray[np.bool_] | None] = []
    for index, column in enumerate(columns):
        parsed = batch.column(index)
        if column.required and parsed.null_count:
            raise ParserObjection(f"{column.header} is empty on some line", None)
        if column.type is ColumnType.DATE:
            values.append(_dates(parsed, column))
            nulls.append(_null_mask(parsed.indices))
            continue
        numbers = _numbers(parsed, _NUMPY_TYPES[column.type])
        null = _null_mask(parsed)
        if (
            column.type is ColumnType.DOUBLE
            and not np.isfinite(numbers if null is None else numbers[~null]).all()
        ):
            # Over 308 digits (infinity to pyarrow, out of range to PostgreSQL), or a word such as
            # inf or NaN: the text path decides.
            raise ParserObjection(f"{column.header}: a value that is not a finite number", None)
        values.append(numbers)
        nulls.append(null)
    return values, nulls


def _numbers(parsed: pa.Array, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """The values of a column of fixed-width numbers, without a copy (any value where NULL)."""
    buffer = parsed.buffers()[1]
    return np.frombuffer(buffer, dtype=dtype, count=parsed.offset + len(parsed))[parsed.offset :]


def _null_mask(parsed: pa.Array) -> npt.NDArray[np.bool_] | None:
    """True where the column is NULL; None when it has no NULL."""
    if not parsed.null_count:
        return None
    bits = np.unpackbits(np.frombuffer(parsed.buffers()[0], dtype=np.uint8), bitorder="little")
    mask: npt.NDArray[np.bool_] = bits[parsed.offset : parsed.offset + len(parsed)] == 0
    return mask


def _dates(parsed: pa.DictionaryArray, column: Column) -> npt.NDArray[np.int32]:
    """``M/D/YYYY``, with spaces around and maybe a time of day after it, to PostgreSQL's days.

    Each distinct text (dates repeat: one per user and day) must be a date the gate's pattern
    admits: a real calendar day, years 1000 to 9999 (a lenient reader such as pyarrow's
    ``strptime`` takes ``2/30/2016`` for March 1st); the day is then the date's, as PostgreSQL's
    date input reads it. No ``pyarrow.compute``: loading it costs 50 MB of memory."""
    days = []
    for text in parsed.dictionary.to_pylist():
        if not PLAIN_DATE.fullmatch(text.encode()):
            raise ParserObjection(f"{column.header}: {text!r} is not a plain date", None)
        month, day, year = text.strip(" ").split(" ")[0].split("/")
        days.append(date(int(year), int(month), int(day)).toordinal() - _POSTGRES_EPOCH)
    if not days:  # every date of the batch is empty
        return np.zeros(len(parsed), dtype=np.int32)
    positions = _numbers(parsed.indices, np.int32)
    null = _null_mask(parsed.indices)
    if null is not None:  # a NULL's index may be any number
        positions = np.where(null, 0, positions)
    result: npt.NDArray[np.int32] = np.array(days, dtype=np.int32)[positions]
    return result


_POSTGRES_EPOCH = date(2000, 1, 1).toordinal()

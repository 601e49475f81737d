"""The clean path for large files: the CSV parsed on the client, sent as binary COPY.

With COPY's text format the server's one backend parses every value of every line, so no loader
that sends text gets past ``psql \\copy``. Here pyarrow parses the lines into typed columns on the
client, and pgpq encodes them in COPY's binary format, which the server stores without parsing a
value; a thread of their own parses and encodes while the caller's thread sends.

Every guarantee of the text path holds (``docs/design-decisions.md``, "Binary COPY for large
clean files"):

* pyarrow reads the file through ``_GatedReader``, which hashes every byte and passes every block
  through the text path's ``LineGate`` first. Blocks of the simplest shape (``shape_check``) skip
  the gate's pattern; what the pattern would have checked on them is checked on the parsed values
  (``_typed_batch``, ``_dates``, ``_InfinityCheck``). Either way each line is one row, so the row
  index gives the line number, and pyarrow, lenient on its own (it reads ``2/30/2016`` as March
  1st and ``1e400`` as infinity), loads no value PostgreSQL would not. A line the gate refuses
  ends the read: ``RowProblem``, the checked path follows.
* A value pyarrow refuses where PostgreSQL does not (a ``+`` before a whole number) raises
  ``ParserObjection``: the caller rolls back and sends the file as text.

pyarrow is imported only when a file takes this path: tiny files would never repay its start-up
(``BINARY_MIN_BYTES``).
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import threading
from array import array
from collections.abc import Callable, Iterator
from datetime import date
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import psycopg
import structlog
from psycopg import sql

from watcher.linegate import LineGate
from watcher.loader import (
    DATA_ERRORS,
    FileProblem,
    ProgressCallback,
    RowProblem,
    StreamResult,
    copy_error_line,
    copy_statement,
    describe_copy_error,
    read_header,
    stream_copy,
    too_long_problem,
)
from watcher.routes import Column, ColumnType, HeaderMapping, Route
from watcher.rowcheck import PLAIN_DATE

if TYPE_CHECKING:
    import pyarrow as pa

log = structlog.get_logger(__name__)

ARROW_BLOCK_SIZE = 256 << 10
"""Bytes of CSV pyarrow parses into one batch (``bench/ingest.py`` reports the sizes tried)."""
ARROW_THREADS = True
"""pyarrow parses blocks on its own threads (else on the encoding thread)."""
AHEAD = 4
"""Encoded batches waiting for the socket at most: the file is parsed and encoded on a thread of
its own while the main thread sends, and the memory this takes stays bounded."""

T = TypeVar("T")


_SHAPE = rb"[0-9,./\-: AMPamp]*+"
"""The bytes of a value pyarrow reads exactly as PostgreSQL does, or refuses (with one exception,
see ``_ZEROS``)."""
_ZEROS = b"0" * 300
"""Without an exponent, a number too small for a double (zero to pyarrow, an error to
PostgreSQL) has over 320 zeros in a row: such lines take the pattern. One too large (over 308
digits: infinity to pyarrow) is found in the encoded batch (``_INFINITIES``)."""
_INFINITIES = (b"\x7f\xf0\x00\x00\x00\x00\x00\x00", b"\xff\xf0\x00\x00\x00\x00\x00\x00")
"""A double's infinity in COPY's binary format. Other values can hold the same 8 bytes (a bigint
of 9.2e18, or bytes of neighbouring fields): then the file goes as text, which is only slower."""


def shape_check(eol: bytes) -> Callable[[bytes], bool]:
    """The binary path's shortcut past the line gate's pattern: one simple pattern at C speed.

    Lines of digits, commas, ``.``, ``/``, ``-``, ``:``, spaces and the letters of AM and PM, each
    ended by ``eol``, are one row each with no quote, no exponent, no word such as ``NaN``.
    pyarrow reads their whole numbers and decimals as PostgreSQL does, or refuses them; what the
    pattern checks beyond that (required values present, real calendar dates with years 1000 to
    9999) ``_typed_batch`` checks on the parsed values. Lines of any other shape take the
    pattern, as on the text path."""
    shape = re.compile(rb"(?:" + _SHAPE + re.escape(eol) + rb")*+")

    def plain_shape(lines: bytes) -> bool:
        return shape.match(lines).end() == len(lines) and _ZEROS not in lines  # type: ignore[union-attr]

    return plain_shape


class ParserObjection(RowProblem):
    """pyarrow refused a file the gate admitted: the text path loads it instead."""


class _GatedReader:
    """The file after its header, as pyarrow reads it: hashed and gated block by block.

    A refused block ends the stream early (pyarrow sees the end of the file); ``problem`` says
    why, and the caller raises it once pyarrow has stopped. Raising inside ``read`` would reach
    the caller as an Arrow error without its type."""

    def __init__(
        self,
        handle: BinaryIO,
        gate: LineGate,
        header_raw: bytes,
        max_line_bytes: int,
    ) -> None:
        self._handle = handle
        self._gate = gate
        self._max_line_bytes = max_line_bytes
        self.digest = hashlib.sha256(header_raw)
        self.bytes_read = len(header_raw)
        self.newlines = 0
        self.since_newline = 0
        self.problem: RowProblem | FileProblem | None = None
        self.closed = False
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        """No read after this returns: pyarrow may still be reading ahead on a thread of its own
        when the caller goes back to the file's start for the text path."""
        with self._lock:
            self.closed = True

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            if self.closed or self.problem is not None:
                return b""
            return self._read(size)

    def _read(self, size: int) -> bytes:
        block = self._handle.read(size)
        if not block:
            if self._gate.admit_end() is None:
                self.problem = RowProblem(
                    "the last line is not plain values; the file is checked line by line", None
                )
            return b""
        self.digest.update(block)
        self.bytes_read += len(block)
        self.newlines += block.count(b"\n")
        cut = block.rfind(b"\n")
        self.since_newline = self.since_newline + len(block) if cut < 0 else len(block) - cut - 1
        if self.since_newline > self._max_line_bytes:
            self.problem = too_long_problem(self.newlines + 2, self._max_line_bytes)
            return b""
        if self._gate.admit(block) is None:
            self.problem = RowProblem(
                "some lines are not plain values; the file is checked line by line", None
            )
            return b""
        return block

    @property
    def body_lines(self) -> int:
        return self.newlines + (1 if self.since_newline else 0)


def binary_copy(
    cur: psycopg.Cursor[Any],
    handle: BinaryIO,
    route: Route,
    max_line_bytes: int,
    progress: ProgressCallback | None = None,
) -> StreamResult:
    """COPY the rest of the file after its header in binary format, hashing every byte read.

    The same contract as ``loader.stream_copy``; ``ParserObjection`` in addition (see above)."""
    header = read_header(handle, route, max_line_bytes)
    if header.mapping.needs_projection:
        raise RowProblem("the file has extra columns; rows are projected line by line", None)
    eol = b"\r\n" if header.raw.endswith(b"\r\n") else b"\n"
    gate = LineGate(header.mapping.file_columns, header.raw, shortcut=shape_check(eol))
    reader = _GatedReader(handle, gate, header.raw, max_line_bytes)
    rows = 0
    reported = reader.bytes_read  # progress counts the bytes after the header, as on the text path
    statement = copy_statement(
        route, ("_line_number", *header.mapping.copy_columns), sql.SQL("FORMAT binary")
    )
    try:
        with cur.copy(statement) as copy, contextlib.closing(reader):
            batches = _encoded_batches(reader, header.mapping)
            for payload, batch_rows in _ahead(batches, AHEAD) if AHEAD else batches:
                copy.write(payload)
                rows += batch_rows
                if progress is not None:  # called here, on the caller's thread
                    progress(reader.bytes_read - reported)
                    reported = reader.bytes_read
            if reader.problem is not None:
                raise reader.problem
    except DATA_ERRORS as exc:
        raise RowProblem(describe_copy_error(exc), copy_error_line(exc)) from exc
    if reader.body_lines != rows or rows != cur.rowcount:
        raise RowProblem("some lines are not one row each; the file is checked line by line", None)
    return StreamResult(reader.digest.hexdigest(), rows, reader.bytes_read, header)


def _encoded_batches(reader: _GatedReader, mapping: HeaderMapping) -> Iterator[tuple[bytes, int]]:
    """The COPY stream: header, one payload per batch of rows, trailer; with each its row count."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from pgpq import ArrowToPostgresBinaryEncoder

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
                column_types={c.name: _read_type(pa, c) for c in columns},
                null_values=[""],
                true_values=[],
                false_values=[],
                quoted_strings_can_be_null=False,
                strings_can_be_null=True,
            ),
        )
        schema = pa.schema(
            [pa.field("_line_number", pa.int32())] + [pa.field(c.name, _pg_type(pa, c)) for c in columns]
        )
        encoder = ArrowToPostgresBinaryEncoder(schema)
        infinities = _InfinityCheck(any(c.type is ColumnType.DOUBLE for c in columns))
        yield encoder.write_header(), 0
        first_line = 2  # the header is line 1
        for batch in batches:
            line_numbers = _int32s(pa, array("i", range(first_line, first_line + batch.num_rows)))
            typed = _typed_batch(pa, batch, columns, line_numbers, schema)
            first_line += batch.num_rows
            yield infinities.check(encoder.write_batch(typed)), batch.num_rows
        yield infinities.check(encoder.finish()), 0
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        if reader.problem is not None:  # the gate ended the stream in the middle of a line
            raise reader.problem from exc
        raise ParserObjection(f"the CSV parser refused a line: {str(exc).splitlines()[0]}", None) from exc


def _ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, produced on a thread of their own at most ``depth`` ahead of the consumer.

    An exception of the producer is raised in the consumer; a consumer that stops early (an
    error of the COPY) makes the producer stop at its next item."""
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put((True, item))
        except BaseException as exc:
            slots.put((False, exc))
            return
        slots.put((False, None))

    worker = threading.Thread(target=produce, name="binary-copy-encoder", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = slots.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # free a producer blocked on a full queue
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


class _InfinityCheck:
    """Looks for ``_INFINITIES`` in the COPY stream, across the ends of its pieces too (the
    encoder returns its output in pieces of its own size, not one per batch)."""

    def __init__(self, doubles: bool) -> None:
        self._doubles = doubles
        self._tail = b""

    def check(self, payload: bytes) -> bytes:
        if self._doubles and payload:
            seam = self._tail + payload[:7]
            if any(infinity in payload or infinity in seam for infinity in _INFINITIES):
                raise ParserObjection("a number too large for a double", None)
            self._tail = (self._tail + payload)[-7:] if len(payload) < 7 else payload[-7:]
        return payload


_ARROW_TYPES = {
    ColumnType.BIGINT: "int64",
    ColumnType.INTEGER: "int32",
    ColumnType.DOUBLE: "float64",
    ColumnType.DATE: "date32",
}


def _pg_type(pa: Any, column: Column) -> pa.DataType:
    """The Arrow type pgpq encodes as the column's PostgreSQL type."""
    return getattr(pa, _ARROW_TYPES[column.type])()


def _read_type(pa: Any, column: Column) -> pa.DataType:
    """Dates are read as text, each distinct text once: pyarrow's date parser is not PostgreSQL's
    (see ``_dates``)."""
    return pa.dictionary(pa.int32(), pa.string()) if column.type is ColumnType.DATE else _pg_type(pa, column)


def _int32s(pa: Any, values: array[int]) -> pa.Array:
    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)])


def _typed_batch(
    pa: Any, batch: pa.RecordBatch, columns: list[Column], line_numbers: pa.Array, schema: pa.Schema
) -> pa.RecordBatch:
    """The batch as COPY's columns, after the checks the gate's pattern would have made."""
    arrays = [line_numbers]
    for index, column in enumerate(columns):
        values = batch.column(index)
        if column.required and values.null_count:
            raise ParserObjection(f"{column.header} is empty on some line", None)
        arrays.append(_dates(values, column) if column.type is ColumnType.DATE else values)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _dates(values: pa.DictionaryArray, column: Column) -> pa.Array:
    """``M/D/YYYY``, with spaces around and maybe a time of day after it, to dates.

    Each distinct text (dates repeat: one per user and day) must be a date the gate's pattern
    admits: a real calendar day, years 1000 to 9999 (a lenient reader such as pyarrow's
    ``strptime`` takes ``2/30/2016`` for March 1st); the day is then the date's, as PostgreSQL's
    date input reads it. No ``pyarrow.compute``: loading it costs 50 MB of memory."""
    import pyarrow as pa

    days = []
    for text in values.dictionary.to_pylist():
        if not PLAIN_DATE.fullmatch(text.encode()):
            raise ParserObjection(f"{column.header}: {text!r} is not a plain date", None)
        month, day, year = text.strip(" ").split(" ")[0].split("/")
        days.append(date(int(year), int(month), int(day)).toordinal() - _EPOCH)
    if values.null_count:  # an optional date left empty somewhere: the slow way
        return pa.array(
            [None if i is None else days[i] for i in values.indices.to_pylist()], type=pa.int32()
        ).view(pa.date32())
    at = values.indices.offset
    indices = memoryview(values.indices.buffers()[1]).cast("i")[at : at + len(values)]
    return _int32s(pa, array("i", map(days.__getitem__, indices))).view(pa.date32())


_EPOCH = date(1970, 1, 1).toordinal()


BINARY_MIN_BYTES = 16 << 20
"""Files smaller than this go as text: pyarrow's import and set-up cost more than binary COPY
saves on them (the rule and its measurements: ``docs/design-decisions.md``, "Binary COPY")."""


def clean_copy(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    handle: BinaryIO,
    route: Route,
    max_line_bytes: int,
    progress: ProgressCallback | None = None,
    *,
    size: int,
) -> StreamResult:
    """The clean path: binary COPY for a file of ``BINARY_MIN_BYTES`` or more (``size``: the
    version the landing zone gave), text otherwise, and text when the parser objects.
    ``RowProblem`` from the gate or the server: the caller takes the checked path, as after
    ``stream_copy``."""
    if size >= BINARY_MIN_BYTES:
        try:
            with conn.transaction():
                return binary_copy(cur, handle, route, max_line_bytes, progress)
        except ParserObjection as objection:
            log.info("file_sent_as_text", reason=objection.reason)
        handle.seek(0)
    return stream_copy(cur, handle, route, max_line_bytes, progress)

"""The clean path for large files: the CSV parsed on the client, sent as binary COPY.

With COPY's text format the server's one backend parses every value of every line, so no loader
that sends text gets past ``psql \\copy``. Here pyarrow parses the lines into typed columns on the
client, and numpy encodes them in COPY's binary format (``copy_binary``), which the server stores
without parsing a value; a thread of their own parses and encodes while the caller's thread sends.

Every guarantee of the text path holds (``docs/design-decisions.md``, "Binary COPY for large
clean files"):

* pyarrow reads the file through ``_GatedReader``, which hashes every byte and passes every block
  through the text path's ``LineGate`` first. Blocks without a byte pyarrow could misread
  (``plain_enough``) skip the gate's pattern; what the pattern would have checked on them pyarrow
  refuses, or the checks on its values catch (``arrow_rows``). Either way each line is one row
  (rows and lines are counted), so the row index gives the line number, and pyarrow, lenient on
  its own (it reads ``2/30/2016`` as March 1st and ``1e400`` as infinity), loads no value
  PostgreSQL would not. A line the gate refuses ends the read: ``RowProblem``, the checked path
  follows.
* A value pyarrow refuses where PostgreSQL does not (a ``+`` before a whole number) raises
  ``ParserObjection``: the caller rolls back and sends the file as text.

pyarrow and numpy are imported only when a file takes this path: small files would never repay
their start-up (``BINARY_MIN_BYTES``; ``WARM_BINARY_MIN_BYTES`` once they are loaded).
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

import psycopg
import structlog
from psycopg import sql

from watcher.gcfreeze import freeze_loaded_modules
from watcher.linegate import LineGate
from watcher.load_tables import OWN_TABLE_MIN_BYTES, attach_own_table, create_own_table
from watcher.loader import (
    DATA_ERRORS,
    FileProblem,
    ProgressCallback,
    RowProblem,
    StreamResult,
    bytes_after_last_newline,
    copy_error_line,
    copy_statement,
    describe_copy_error,
    read_header,
    stream_copy,
    too_long_problem,
)
from watcher.routes import Route

log = structlog.get_logger(__name__)

AHEAD = 4
"""Encoded batches waiting for the socket at most: the file is parsed and encoded on a thread of
its own while the main thread sends, and the memory this takes stays bounded."""

T = TypeVar("T")


_PATTERN_DECIDES = (b'"', b"e", b"E", b"0" * 300)
"""Lines holding one of these take the gate's pattern (``plain_enough``)."""
_SEAM = 300
"""Bytes on each side of the seam between the carried line and a block: the longest pattern."""


def plain_enough(carry: bytes, block: bytes, end: int) -> bool:
    """Whether the lines ``carry + block[:end]`` may skip the line gate's pattern on the binary
    path: a few searches at memory speed, and no copy of the lines.

    What the pattern guards against, pyarrow's typed reader refuses, or the checks on its values
    catch (``arrow_rows``), except for the bytes of ``_PATTERN_DECIDES``: a quote (quoting rules
    differ between readers, and a quoted line end would break the line numbers), an exponent
    (``1e-400`` is zero to pyarrow, an error to PostgreSQL) and over 300 zeros in a row (the same
    without an exponent). Lines with none of them skip the pattern:

    * a value that is not a number, or not of the column's type, or a line of more or fewer
      values, is refused by pyarrow: the file goes as text (``ParserObjection``);
    * a required value left empty, a date that is not a real calendar day, a number too large for
      a double (infinity, also ``inf`` and ``NaN`` spelled out) are refused after the parse;
    * a carriage return that ends no line makes one more row than lines, and either line end
      reads alike: the file is checked line by line when rows and lines differ (``binary_copy``)."""
    seam = carry[-_SEAM:] + block[: min(end, _SEAM)]
    return not any(p in carry or p in seam or block.find(p, 0, end) >= 0 for p in _PATTERN_DECIDES)


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
        line_ends: Callable[[bytes], int],
    ) -> None:
        self._handle = handle
        self._gate = gate
        self._max_line_bytes = max_line_bytes
        self._line_ends = line_ends
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
        self.newlines += self._line_ends(block)
        self.since_newline = bytes_after_last_newline(block, self.since_newline)
        if self.since_newline > self._max_line_bytes:
            self.problem = too_long_problem(self.newlines + 2, self._max_line_bytes)
            return b""
        if not self._gate.passes(block, plain_enough):
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
    table: sql.Identifier | None = None,
) -> StreamResult:
    """COPY the rest of the file after its header in binary format, hashing every byte read,
    into the route's raw table or into ``table`` (a load's own table).

    The same contract as ``loader.stream_copy``; ``ParserObjection`` in addition (see above)."""
    from watcher.arrow_rows import encoded_batches, line_ends  # pyarrow and numpy: big files only

    freeze_loaded_modules()  # pyarrow and numpy, the first time

    header = read_header(handle, route, max_line_bytes)
    if header.mapping.needs_projection:
        raise RowProblem("the file has extra columns; rows are projected line by line", None)
    gate = LineGate(header.mapping.file_columns, header.raw)
    reader = _GatedReader(handle, gate, header.raw, max_line_bytes, line_ends)
    rows = 0
    reported = reader.bytes_read  # progress counts the bytes after the header, as on the text path
    statement = copy_statement(
        route, ("_line_number", *header.mapping.copy_columns), sql.SQL("FORMAT binary"), table
    )
    try:
        with cur.copy(statement) as copy, contextlib.closing(reader):
            batches = encoded_batches(reader, header.mapping, lambda: reader.problem)
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


BINARY_MIN_BYTES = 16 << 20
"""Files smaller than this go as text in a process that has not imported pyarrow yet: the import
costs more than binary COPY saves on them (the rule and its measurements:
``docs/design-decisions.md``, "Binary COPY")."""
WARM_BINARY_MIN_BYTES = 2 << 20
"""The same once pyarrow and numpy are loaded (a daemon that has taken one big file): only their
set-up per file is left to repay, and the binary path is ahead from a few MiB."""


def binary_min_bytes() -> int:
    """The size from which a file goes as binary COPY in this process."""
    return WARM_BINARY_MIN_BYTES if arrow_loaded() else BINARY_MIN_BYTES


def arrow_loaded() -> bool:
    """Whether this process has imported the parse and encoding side (pyarrow, numpy)."""
    return "watcher.arrow_rows" in sys.modules


def clean_copy(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    handle: BinaryIO,
    route: Route,
    max_line_bytes: int,
    progress: ProgressCallback | None = None,
    *,
    size: int,
    load_id: int,
) -> StreamResult:
    """The clean path: binary COPY for a file of ``binary_min_bytes()`` or more (``size``: the
    version the landing zone gave), into a table of the load's own from ``OWN_TABLE_MIN_BYTES``
    (``load_tables``); text otherwise, and text when the parser objects. ``RowProblem`` from the
    gate or the server: the caller takes the checked path, as after ``stream_copy``; the load's
    own table is rolled back with the rows."""
    if size >= binary_min_bytes():
        from watcher.arrow_rows import ParserObjection

        try:
            with conn.transaction():
                if size < OWN_TABLE_MIN_BYTES:
                    return binary_copy(cur, handle, route, max_line_bytes, progress)
                table = create_own_table(cur, route, load_id)
                result = binary_copy(cur, handle, route, max_line_bytes, progress, table)
                attach_own_table(cur, route, load_id)
                return result
        except ParserObjection as objection:
            log.info("file_sent_as_text", reason=objection.reason)
        handle.seek(0)
    return stream_copy(cur, handle, route, max_line_bytes, progress)

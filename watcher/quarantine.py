"""The slower path for a file whose fast COPY failed: load the good rows, quarantine the bad.

The file is read again in 1 MiB blocks. A compiled pattern finds the runs of ordinary lines at C
speed; only the lines it does not match are looked at in Python (``rowcheck``). Two COPY streams
carry the good rows:

* the main stream: one record per line of the file, in order: the ordinary lines exactly as they
  are, and for every other line a placeholder of empty fields, each behind its line number as on
  the fast path (``linenumbers``), and ``WHERE <first required column> IS NOT NULL`` drops the
  placeholders, so the clean runs cost no Python per row;
* the side stream: the unusual lines that are still good (quoted fields, a quoted field spanning
  lines, a different line end, spellings the server decides on), one per line with its explicit
  line number.

Bad lines, exactly as they were in the file, go to ``ops.rejected_rows`` with a reason. Each
segment of each stream is sent under its own savepoint: a line the server still refuses costs a
resend of that segment, not the file. When the file exceeds its error budget none of its rows
stay, but its bad lines are still recorded.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from watcher.errortext import first_line
from watcher.linenumbers import number_lines
from watcher.loader import (
    BLOCK_SIZE,
    DATA_ERRORS,
    Header,
    ProgressCallback,
    copy_statement,
    read_header,
    too_long_problem,
)
from watcher.routes import Column, HeaderMapping, Route, normalize_header
from watcher.rowcheck import (
    Checked,
    RowError,
    check_record,
    csv_line,
    plain_line_pattern,
    plain_lines_pattern,
    projection,
    quote_count_is_odd,
    split_record,
)

SEGMENT_BYTES = 16 << 20
"""Main-stream bytes sent under one savepoint (a refused line costs a resend of at most this)."""
SIDE_SEGMENT_ROWS = 500
SIDE_SEGMENT_BYTES = 1 << 20
MAX_RECORD_LINES = 100
"""A quoted field may hold line ends; a record spanning more lines than this is a stray quote."""
SHOWN_BYTES_OF_LONG_RECORD = 64 << 10
"""``raw_line`` keeps this much of a longer record (a quoted field over many lines)."""

_CONTEXT_LINE = re.compile(r"line (\d+)")
_CONTEXT_COLUMN = re.compile(r"column (\w+)")


@dataclass
class QuarantineResult:
    sha256: str
    rows_loaded: int
    rows_rejected: int
    bytes_read: int
    mapping: HeaderMapping
    warnings: tuple[str, ...] = ()
    budget_exceeded_reason: str | None = None

    @property
    def warning_text(self) -> str | None:
        return "; ".join(self.warnings) or None


@dataclass(frozen=True)
class Budget:
    fraction: float
    rows: int

    def hard_limit_passed(self, rejected: int) -> bool:
        """True once the file is over budget whatever its remaining lines hold."""
        return rejected > self.rows

    def exceeded(self, rejected: int, total: int, top_reason: str | None = None) -> str | None:
        if rejected > self.rows:
            what = f"{rejected:,} bad rows, over the error budget of {self.rows:,} rows"
        elif total and rejected > self.fraction * total:
            what = (
                f"{rejected:,} of {total:,} rows are bad ({rejected / total:.1%}),"
                f" over the error budget of {self.fraction:.1%}"
            )
        else:
            return None
        common = f" (most common: {top_reason})" if top_reason else ""
        return (
            f"{what}{common}; nothing of this file was loaded; its bad lines are in ops.rejected_rows."
            " Fix the file, or raise the budget (WEARABLE_ERROR_BUDGET_FRACTION, WEARABLE_ERROR_BUDGET_ROWS"
            " or the route's error_budget_*), then run `wearable-pipeline reprocess`"
        )


def show_raw_line(raw: bytes) -> str:
    """The line as text without its line end; bytes that are not UTF-8 (and NUL) are escaped."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


class _Spool:
    """Bad lines wait in a temporary file (bounded memory) until the file's sha256 is known."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(mode="w+", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self.count = 0
        self.kinds: Counter[str] = Counter()

    def add(self, line_number: int, raw: bytes, problem: RowError) -> None:
        shown = show_raw_line(raw[:SHOWN_BYTES_OF_LONG_RECORD])
        self._writer.writerow([line_number, shown, problem.reason])
        self.count += 1
        self.kinds[problem.kind] += 1

    def top_reason(self) -> str | None:
        if not self.kinds:
            return None
        kind, count = self.kinds.most_common(1)[0]
        return f"{kind}, {plural(count, 'row')}"

    def copy_into_table(
        self, cur: psycopg.Cursor[Any], relative: str, sha256: str, table: str, run_id: int | None
    ) -> None:
        cur.execute("DELETE FROM ops.rejected_rows WHERE source_path = %s", (relative,))
        self._file.seek(0)
        statement = (
            "COPY ops.rejected_rows (line_number, raw_line, reason, source_path, source_sha256,"
            " target_table, run_id) FROM STDIN"
        )
        with cur.copy(statement) as copy:
            for line_number, raw, reason in csv.reader(self._file):
                copy.write_row((int(line_number), raw, reason, relative, sha256, table, run_id))

    def close(self) -> None:
        self._file.close()


@dataclass
class _SideRecord:
    number: int
    payload: bytes
    original: bytes


@dataclass
class _Piece:
    """What one block of the file became: main-stream records (one per line) and side records."""

    first_line: int
    """Line number of the first main-stream record of the piece (the records are in line order)."""
    offset: int
    """Where that line starts in the file."""
    main: list[bytes | memoryview]
    side: list[_SideRecord] = field(default_factory=list)


class _Scanner:
    """Reads the file after its header and sorts each line: main stream, side stream or spool."""

    def __init__(
        self,
        handle: BinaryIO,
        header: Header,
        max_line_bytes: int,
        spool: _Spool,
        progress: ProgressCallback | None,
    ) -> None:
        self.handle = handle
        self.max_line_bytes = max_line_bytes
        self.spool = spool
        self.progress = progress
        self.columns = header.mapping.file_columns
        self.eol = b"\r\n" if header.raw.endswith(b"\r\n") else b"\n"
        self.common_run = plain_lines_pattern(self.columns, self.eol, common=True)
        self.run = plain_lines_pattern(self.columns, self.eol)
        self.single = re.compile(plain_line_pattern(self.columns, self.eol))
        self.project = projection(self.columns, self.eol) if header.mapping.needs_projection else None
        width = len(header.mapping.copy_columns)
        self.placeholder = b"," * (width - 1) + self.eol
        self.header_keys = [normalize_header(c) for c in header.cells]
        self.digest = hashlib.sha256(header.raw)
        self.bytes_read = len(header.raw)
        self.next_line = 2
        self.emitted = 2
        """Line number of the next main-stream record; lines of an open quoted field wait."""
        self.emit_offset = len(header.raw)
        self.good = 0
        self.blank = 0
        self.pending: list[bytes] = []
        self.pending_start = 0
        self._out: list[bytes | memoryview] = []
        self._side: list[_SideRecord] = []

    # -- reading ------------------------------------------------------------------------------

    def pieces(self) -> Iterator[_Piece]:
        """The file after its header, one piece per block read; the blocks are not copied."""
        carry = b""
        while block := self.handle.read(BLOCK_SIZE):
            self.digest.update(block)
            self.bytes_read += len(block)
            if self.progress is not None:
                self.progress(len(block))
            first_end = block.find(b"\n")
            if first_end < 0:
                carry += block
                if len(carry) > self.max_line_bytes:
                    raise too_long_problem(self.next_line, self.max_line_bytes)
                continue
            start = 0
            if carry:  # the line that began in an earlier block ends in this one
                head = carry + block[: first_end + 1]
                if len(head) > self.max_line_bytes + 2:
                    raise too_long_problem(self.next_line, self.max_line_bytes)
                yield self._scan(head, 0, len(head))
                start = first_end + 1
            cut = block.rfind(b"\n") + 1
            if cut > start:
                if self.max_line_bytes < BLOCK_SIZE:
                    self._check_line_lengths(block[start:cut])
                yield self._scan(block, start, cut)
            carry = block[cut:]
            if len(carry) > self.max_line_bytes:
                raise too_long_problem(self.next_line, self.max_line_bytes)
        if carry:  # the last line has no line end (or half of one: a CR without its LF)
            tail = carry.removesuffix(b"\r") + self.eol
            yield self._scan(tail, 0, len(tail))
        while self.pending:
            first, offset = self.emitted, self.emit_offset
            self._give_up()
            yield self._take(first, offset)

    def _check_line_lengths(self, complete: bytes) -> None:
        for index, line in enumerate(complete.split(b"\n")):
            if len(line) > self.max_line_bytes:
                raise too_long_problem(self.next_line + index, self.max_line_bytes)

    def _scan(self, buf: bytes, pos: int, end: int) -> _Piece:
        """Sort the complete lines of ``buf[pos:end]``: runs of ordinary lines go as they are."""
        first, offset = self.emitted, self.emit_offset
        view = memoryview(buf)
        while pos < end:
            if not self.pending:
                stop = _run_end(self.common_run, buf, pos, end)
                if stop == pos:
                    stop = _run_end(self.run, buf, pos, end)
                if stop > pos:
                    count = buf.count(b"\n", pos, stop)
                    part = self._projected(buf[pos:stop]) if self.project else view[pos:stop]
                    self._emit(part, count, stop - pos)
                    self.next_line += count
                    self.good += count
                    pos = stop
                    if pos >= end:
                        break
            newline = buf.find(b"\n", pos, end)
            line = buf[pos : newline + 1]
            pos = newline + 1
            number = self.next_line
            self.next_line += 1
            self._feed(number, line)
        return self._take(first, offset)

    def _emit(self, part: bytes | memoryview, records: int, file_bytes: int) -> None:
        """Main-stream records for the next ``records`` lines of the file (``file_bytes`` long)."""
        self._out.append(part)
        self.emitted += records
        self.emit_offset += file_bytes

    def _take(self, first: int, offset: int) -> _Piece:
        piece = _Piece(first, offset, self._out, self._side)
        self._out, self._side = [], []
        return piece

    def _projected(self, chunk: bytes) -> bytes:
        if self.project is None:
            return chunk
        pattern, template = self.project
        return pattern.sub(template, chunk)

    # -- one line at a time (only the lines the pattern did not take) -------------------------

    def _feed(self, number: int, line: bytes) -> None:
        if self.pending:
            self.pending.append(line)
            if not quote_count_is_odd(b"".join(self.pending)):
                self._resolve()
            elif len(self.pending) >= MAX_RECORD_LINES or sum(map(len, self.pending)) > self.max_line_bytes:
                self._give_up()
            return
        if quote_count_is_odd(line):
            self.pending, self.pending_start = [line], number
            return
        if self.single.fullmatch(line):
            self._emit(self._projected(line), 1, len(line))
            self.good += 1
            return
        content = _without_line_end(line)
        if not content.strip(b" \t\r\v\f"):
            self.blank += 1
            self._emit(self.placeholder, 1, len(line))
            return
        self._verdict(number, line, content, 1)

    def _resolve(self) -> None:
        """A quoted field spanned several lines and is closed now: one record."""
        lines, start = self.pending, self.pending_start
        self.pending = []
        record = b"".join(lines)
        checked = self._check(_without_line_end(record))
        if isinstance(checked, RowError) and checked.kind in ("wrong number of fields", "unterminated quote"):
            self.pending, self.pending_start = lines, start
            self._give_up()  # more likely a stray quote than a record: the lines after it count
            return
        self._verdict(start, record, None, len(lines), checked)

    def _give_up(self) -> None:
        """The quote on the first pending line is never closed sensibly: that line alone is bad."""
        lines, start = self.pending, self.pending_start
        self.pending = []
        problem = RowError(
            "a quoted field is never closed (odd number of '\"' characters)", "unterminated quote"
        )
        self.spool.add(start, lines[0], problem)
        self._emit(self.placeholder, 1, len(lines[0]))
        for index, line in enumerate(lines[1:], start=1):
            self._feed(start + index, line)

    def _verdict(
        self,
        number: int,
        record: bytes,
        content: bytes | None,
        line_count: int,
        checked: Checked | RowError | None = None,
    ) -> None:
        if checked is None:
            checked = self._check(content if content is not None else _without_line_end(record))
        if isinstance(checked, RowError):
            self.spool.add(number, record, checked)
        else:
            payload = b"%d," % number + csv_line(checked.values).encode("utf-8") + b"\n"
            self._side.append(_SideRecord(number, payload, record))
            self.good += 1
        self._emit(self.placeholder * line_count, line_count, len(record))

    def _check(self, content: bytes) -> Checked | RowError:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            return RowError(
                f"the line is not UTF-8 text (byte {exc.start + 1} is 0x{content[exc.start]:02x})",
                "not UTF-8",
            )
        if "\x00" in text:
            return RowError("the line contains a NUL byte (binary data?)", "binary data")
        fields = split_record(text)
        if isinstance(fields, RowError):
            return fields
        if any("\r" in f.text for f in fields if not f.quoted):
            return RowError("a carriage return (CR) in the middle of the line", "stray carriage return")
        if (
            len(fields) == len(self.header_keys)
            and [normalize_header(f.text) for f in fields] == self.header_keys
        ):
            return RowError("the header line again (were two files joined into one?)", "repeated header")
        return check_record(fields, self.columns)


def _run_end(pattern: re.Pattern[bytes], buf: bytes, pos: int, end: int) -> int:
    match = pattern.match(buf, pos, end)
    return match.end() if match else pos


def _without_line_end(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


@dataclass
class _Segment:
    start: int
    offset: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    side: list[_SideRecord] = field(default_factory=list)
    side_size: int = 0


class _Writer:
    """Sends pieces to the two COPY streams under savepoints, resending what the server refuses."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        route: Route,
        mapping: HeaderMapping,
        handle: BinaryIO,
        spool: _Spool,
        scanner: _Scanner,
    ) -> None:
        self.conn, self.cur, self.route, self.handle, self.spool = conn, cur, route, handle, spool
        self.max_line_bytes = scanner.max_line_bytes
        self.placeholder = scanner.placeholder
        numbered = copy_statement(route, ("_line_number", *mapping.copy_columns))
        self.main_statement = sql.SQL("{} WHERE {}").format(numbered, _not_placeholder(mapping))
        self.side_statement = numbered
        self.columns = {c.name: c for c in mapping.file_columns if c is not None}
        self.loaded = 0
        self.refused = 0
        self.stopped = False
        self._segment: _Segment | None = None
        self._stack = contextlib.ExitStack()
        self._copy: Any = None

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            self._stack.__exit__(exc_type, exc, tb)  # the open COPY and its savepoint roll back

    def add(self, piece: _Piece) -> None:
        if self.stopped:
            return
        if self._segment is None:
            self._segment = _Segment(piece.first_line, piece.offset)
            self._open_main()
        segment = self._segment
        line = piece.first_line
        for part in piece.main:
            # Each part is whole records, one per line: numbered as the fast path numbers them,
            # so that no table-wide sequence (and no lock on it) is needed.
            records = bytes(part)
            numbered = number_lines(records, line)
            line += records.count(b"\n")
            self._copy.write(numbered)
            segment.chunks.append(numbered)
            segment.size += len(numbered)
        segment.side.extend(piece.side)
        segment.side_size += sum(len(r.payload) for r in piece.side)
        if segment.size >= SEGMENT_BYTES or segment.side_size >= SEGMENT_BYTES:
            self.close_segment()

    def stop(self) -> None:
        """The file is over budget whatever comes: nothing more is sent (it will not stay)."""
        self.close_segment()
        self.stopped = True

    def close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        try:
            self._stack.close()
            self.loaded += self.cur.rowcount
        except DATA_ERRORS as exc:
            self._resend_main(segment, exc)
        self._send_side(segment.side)

    def _open_main(self) -> None:
        self._stack.enter_context(self.conn.transaction())
        # A writer thread sends while this one scans the next block: the server never waits for us.
        writer = QueuedLibpqWriter(self.cur)
        self._copy = self._stack.enter_context(self.cur.copy(self.main_statement, writer=writer))

    def _resend_main(self, segment: _Segment, exc: Exception) -> None:
        data = b"".join(segment.chunks)
        segment.chunks = []
        while True:
            index = _context_line(exc) or 0
            start, end = _nth_line(data, index) if index > 0 else (-1, -1)
            if start < 0:
                raise exc
            number = segment.start + index - 1
            self.spool.add(number, self._line_from_file(segment.offset, index - 1), self._server_problem(exc))
            self.refused += 1
            data = data[:start] + b"%d," % number + self.placeholder + data[end:]
            try:
                with self.conn.transaction(), self.cur.copy(self.main_statement) as copy:
                    copy.write(data)
                self.loaded += self.cur.rowcount
                return
            except DATA_ERRORS as again:
                exc = again

    def _send_side(self, records: list[_SideRecord]) -> None:
        chunk: list[_SideRecord] = []
        size = 0
        for record in records:
            chunk.append(record)
            size += len(record.payload)
            if len(chunk) >= SIDE_SEGMENT_ROWS or size >= SIDE_SEGMENT_BYTES:
                self._send_side_chunk(chunk)
                chunk, size = [], 0
        if chunk:
            self._send_side_chunk(chunk)

    def _send_side_chunk(self, chunk: list[_SideRecord]) -> None:
        while chunk:
            try:
                with self.conn.transaction(), self.cur.copy(self.side_statement) as copy:
                    copy.write(b"".join(r.payload for r in chunk))
                self.loaded += self.cur.rowcount
                return
            except DATA_ERRORS as exc:
                index = _context_line(exc)
                if not index or not 1 <= index <= len(chunk):
                    raise
                refused = chunk.pop(index - 1)
                self.spool.add(refused.number, refused.original, self._server_problem(exc))
                self.refused += 1

    def _line_from_file(self, offset: int, skip: int) -> bytes:
        position = self.handle.tell()
        try:
            self.handle.seek(offset)
            for _ in range(skip):
                self.handle.readline(self.max_line_bytes + 2)
            return self.handle.readline(self.max_line_bytes + 2)
        finally:
            self.handle.seek(position)

    def _server_problem(self, exc: BaseException) -> RowError:
        diag = getattr(exc, "diag", None)
        message = getattr(diag, "message_primary", None) or first_line(exc)
        context = getattr(diag, "context", None) or ""
        match = _CONTEXT_COLUMN.search(context)
        column: Column | None = self.columns.get(match.group(1)) if match else None
        prefix = f"{column.header}: " if column else ""
        return RowError(f"{prefix}{message}", "refused by the database")


def _not_placeholder(mapping: HeaderMapping) -> sql.Composable:
    """A main-stream row is a placeholder when its first required value is null (never so for a
    line that was let through: a required value must not be empty)."""
    required = [c for c in mapping.file_columns if c is not None and c.required]
    if required:
        return sql.SQL("{} IS NOT NULL").format(sql.Identifier(required[0].name))
    return sql.SQL("num_nonnulls({}) > 0").format(
        sql.SQL(", ").join(map(sql.Identifier, mapping.copy_columns))
    )


def _context_line(exc: BaseException) -> int | None:
    context = getattr(getattr(exc, "diag", None), "context", None) or ""
    match = _CONTEXT_LINE.search(context)
    return int(match.group(1)) if match else None


def _nth_line(data: bytes, index: int) -> tuple[int, int]:
    """(start, end) of the index-th line (1-based) of ``data``, end after its line end."""
    start = 0
    for _ in range(index - 1):
        start = data.find(b"\n", start) + 1
        if start == 0:
            return -1, -1
    end = data.find(b"\n", start) + 1
    return (start, end) if end > 0 else (-1, -1)


def load_with_quarantine(
    conn: psycopg.Connection[Any],
    handle: BinaryIO,
    route: Route,
    relative: str,
    run_id: int | None,
    max_line_bytes: int,
    budget: Budget,
    progress: ProgressCallback | None = None,
) -> QuarantineResult:
    """Load the good rows of ``handle`` (at its start) and record the bad ones."""
    header = read_header(handle, route, max_line_bytes)
    spool = _Spool()
    try:
        scanner = _Scanner(handle, header, max_line_bytes, spool, progress)
        with conn.transaction() as rows_savepoint, conn.cursor() as cur:
            with _Writer(conn, cur, route, header.mapping, handle, spool, scanner) as writer:
                for piece in scanner.pieces():
                    writer.add(piece)
                    if not writer.stopped and budget.hard_limit_passed(spool.count):
                        writer.stop()
                writer.close_segment()
            total = scanner.good + spool.count - writer.refused
            over = budget.exceeded(spool.count, total, spool.top_reason())
            if over is None and writer.loaded == 0 and spool.count:
                over = f"none of its {spool.count:,} rows could be loaded (most common: {spool.top_reason()})"
            loaded = 0 if over else writer.loaded
            if over:
                raise psycopg.Rollback(rows_savepoint)
        sha256 = scanner.digest.hexdigest()
        if spool.count:
            with conn.cursor() as cur:
                spool.copy_into_table(cur, relative, sha256, route.table, run_id)
    finally:
        spool.close()
    notes = list(header_warnings(header.mapping))
    if spool.count and not over:
        notes.append(
            f"{plural(spool.count, 'bad line')} not loaded, recorded in ops.rejected_rows"
            f" (most common: {spool.top_reason()})"
        )
    if scanner.blank:
        notes.append(f"{plural(scanner.blank, 'blank line')} skipped")
    return QuarantineResult(
        sha256, loaded, spool.count, scanner.bytes_read, header.mapping, tuple(notes), over
    )


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def header_warnings(mapping: HeaderMapping) -> tuple[str, ...]:
    notes = []
    if mapping.extra_headers:
        notes.append(f"extra columns not loaded: {', '.join(mapping.extra_headers)}")
    if mapping.missing_optional:
        notes.append(f"optional columns missing, loaded as null: {', '.join(mapping.missing_optional)}")
    return tuple(notes)

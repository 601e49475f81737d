"""Small files in groups: one transaction, one COPY and one commit for many files, one answer each.

A file loaded alone costs about 18 round trips and a commit (a WAL flush) whatever its size: for
a one-user export of 7 rows that is nearly all of it. A group shares them: the claims, the
manifest rows (``FOR UPDATE``), the content checks and the load ids are one statement each for the
group, its files go to the raw table in one COPY (each line behind its load id and line number),
and the load records and manifest rows are written as one pipelined batch before one commit.

Which files: routed, readable, at most ``SMALL_FILE_BYTES``, whose lines the line gate admits as
they are, and whose path holds no rows (no manifest row, or one without a load: a new path, an
ignored, duplicate, rejected or failed one). Deciding such a file touches its own manifest row
only, so the decisions of a group are those of ``ingest.process_file`` taken one file after the
other, in order (``decide``): a file with a header and no rows is rejected, a content another path
holds is a duplicate of it, and of two files of one content in the group the first loads and the
second is its duplicate. Every other file (a path that holds rows: replace, take-over, restore; a
file the line gate sends to the checked path; a file the server refuses in the group's COPY) is
handed back (``GroupResult.alone``) and loaded alone after the group committed, with every rule
of ``process_file``. A file that vanished, cannot be read or is rejected for its header gets its
own recorded answer in the group, and the others load: its problem is its own.

The group is one transaction, so a crash at any instant leaves all of its files' rows and manifest
rows or none of them (each file's rows still commit with its manifest row).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog

from watcher import manifest
from watcher.ingest import (
    FileOutcome,
    LoadLimits,
    check_unchanged,
    duplicate_answer,
    problem_answer,
    rejected_update,
    unchanged_since_recorded,
)
from watcher.landing.zone import Candidate, Version
from watcher.linegate import LineGate
from watcher.linenumbers import number_lines
from watcher.loader import (
    CSV_OPTIONS,
    DATA_ERRORS,
    PLAIN_TEXT_OPTIONS,
    FileProblem,
    Header,
    copy_statement,
    read_header,
)
from watcher.manifest import EntryUpdate, Holder, ManifestEntry
from watcher.quarantine import header_warnings
from watcher.routes import ROUTES, Route, route_for

log = structlog.get_logger(__name__)

SMALL_FILE_BYTES = 256 << 10
"""Files up to this size are read whole and loaded in groups."""
GROUP_FILES = 250
"""Files per group at most (one transaction; a stop request rolls back the group in flight)."""
GROUP_BYTES = 8 << 20
"""Bytes per group at most (they are held in memory until the group's COPY)."""

Answer = tuple[EntryUpdate, FileOutcome]
_COPY_RECORD = re.compile(r"line (\d+)")


@dataclass
class GroupResult:
    outcomes: list[FileOutcome] = field(default_factory=list)
    """The files answered in the group (committed), in the order they were given."""
    alone: list[Candidate] = field(default_factory=list)
    """Files to load one by one (``process_file``), after the group."""
    later: list[Candidate] = field(default_factory=list)
    """Files not looked at: the group's bytes were used up; they belong in the next group."""


FETCH_THREADS = 16
"""Objects of a bucket a group reads at once. Each is one GET, whose time is the store's latency
(milliseconds), not bytes: one after another, 5,000 objects wait 5,000 round trips. A folder's
files are read in place, one after another (a read from the page cache is microseconds)."""


@dataclass
class SmallFile:
    """A small file read whole, every line admitted by the line gate."""

    candidate: Candidate
    entry: ManifestEntry | None
    route: Route
    info: Version
    sha256: str
    header: Header
    lines: bytes
    """The lines after the header, each with its line end (the file's own: one kind per file)."""
    rows: int
    quoted: bool
    size: int

    @property
    def relative(self) -> str:
        return self.candidate.relative

    @property
    def warnings(self) -> str | None:
        return "; ".join(header_warnings(self.header.mapping)) or None

    @property
    def copy_key(self) -> tuple[str, tuple[str, ...], bool, bool]:
        """Files that can share one COPY: same table and columns, same format and line ends
        (COPY wants one kind of line end per stream)."""
        crlf = self.header.raw.endswith(b"\r\n")
        return (self.route.table, self.header.mapping.copy_columns, self.quoted, crlf)


def decide(files: list[SmallFile], holders: dict[str, Holder]) -> tuple[list[Answer], list[SmallFile]]:
    """The answers of the files that load nothing, and the files to load, in order.

    As ``process_file`` decides for a path that holds no rows: a header without rows is rejected;
    a content held by another path (``holders``: from the database) is a duplicate of it; a content
    an earlier file of the group loads is a duplicate of that file.
    """
    answers: list[Answer] = []
    to_load: list[SmallFile] = []
    first_of: dict[str, str] = {}
    for small in files:
        relative, route, sha = small.relative, small.route, small.sha256
        if small.rows == 0:
            reason = "the file has a header but no rows"
            update = rejected_update(relative, small.entry, route, small.info, sha, 0, reason, small.warnings)
            answers.append((update, FileOutcome(relative, "rejected", route.table, sha, reason=reason)))
            continue
        holder = holders.get(sha)
        if holder is None and sha in first_of:
            holder = Holder(first_of[sha], "loaded", None)
        if holder is not None:
            answers.append(duplicate_answer(relative, route, small.info, sha, holder))
            continue
        first_of[sha] = relative
        to_load.append(small)
    return answers, to_load


class _Alone(Exception):
    """This file is not for a group: it is loaded alone."""


def load_group(
    conn: psycopg.Connection[Any],
    candidates: list[Candidate],
    *,
    run_id: int | None,
    limits: LoadLimits,
    routes: tuple[Route, ...] = ROUTES,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> GroupResult:
    """Answer the candidates that can be answered in one group, in one transaction.

    Transient database errors propagate (the caller retries the group); so does anything the
    ``progress`` callback raises (a stop request: the group rolls back).
    """
    started = time.monotonic()
    result = GroupResult()
    answered: dict[str, FileOutcome] = {}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL DateStyle = 'ISO, MDY'")
        claimed = manifest.try_claim_many(cur, [c.relative for c in candidates])
        entries = manifest.get_entries(conn, sorted(claimed))
        answers: list[Answer] = []
        files: list[SmallFile] = []
        room = GROUP_BYTES
        pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fetch")
        try:
            fetched = _fetch_objects(pool, candidates, claimed, entries, force, routes)
            for index, candidate in enumerate(candidates):
                relative = candidate.relative
                if relative not in claimed:
                    answered[relative] = FileOutcome(
                        relative, "busy", reason="being loaded by another process"
                    )
                    continue
                try:
                    looked = _look(
                        candidate, entries.get(relative), routes, limits, force, room, fetched.get(relative)
                    )
                except _Alone:
                    result.alone.append(candidate)
                    continue
                if looked is None:  # the group's bytes are used up
                    result.later = candidates[index:]
                    break
                if isinstance(looked, FileOutcome):  # unchanged since it was recorded
                    answered[relative] = looked
                elif isinstance(looked, SmallFile):
                    files.append(looked)
                    room -= looked.size
                else:
                    answers.append(looked)
                if progress is not None:
                    progress(looked.size if isinstance(looked, SmallFile) else 0)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a stop: no GET left running
        answers += _load_files(conn, cur, files, run_id, result) if files else []
        manifest.upsert_entries(cur, [update for update, _ in answers])
        if progress is not None:
            progress(0)  # a stop asked meanwhile (during a lock wait, say) rolls the group back
    share = (time.monotonic() - started) / max(1, len(answers) + len(answered))
    for _, outcome in answers:
        outcome.duration_s = share
        answered[outcome.relative] = outcome
    result.outcomes = [answered[c.relative] for c in candidates if c.relative in answered]
    return result


def _look(
    candidate: Candidate,
    entry: ManifestEntry | None,
    routes: tuple[Route, ...],
    limits: LoadLimits,
    force: bool,
    room: int,
    fetched: Future[bytes] | None = None,
) -> SmallFile | Answer | FileOutcome | None:
    """A small file read whole, or the answer of a file that has its own problem, or the file's
    ``skipped`` outcome; None when the file does not fit in the group's bytes. ``_Alone`` when
    the file is not for a group."""
    relative = candidate.relative
    route = route_for(os.path.basename(relative), routes)
    if candidate.problem is not None or route is None:
        raise _Alone
    try:
        info = candidate.stat()
    except FileNotFoundError:
        gone = FileProblem("the file disappeared before it could be read", status="failed")
        return problem_answer(relative, entry, route, gone)
    except OSError as exc:
        raise _Alone from exc
    if not force and unchanged_since_recorded(entry, info.st_size, info.st_mtime_ns, info.etag):
        return FileOutcome(relative, "skipped", table=entry.target_table if entry else None)
    if not _fits_a_group(info, entry):
        raise _Alone  # large, or a path that holds rows (replace, take-over, restore)
    if info.st_size > room:
        return None
    try:
        return _read(candidate, entry, route, info, limits, fetched)
    except FileProblem as problem:
        return problem_answer(relative, entry, route, problem, info)
    except OSError as exc:  # an I/O error while reading (a failing disk, a vanished mount)
        failed = FileProblem(f"the file could not be read: {exc.strerror or exc}", status="failed")
        return problem_answer(relative, entry, route, failed, info)
    except (ValueError, LookupError) as exc:  # a defect of ours: the file alone says which
        raise _Alone from exc


def _fetch_objects(
    pool: ThreadPoolExecutor,
    candidates: list[Candidate],
    claimed: set[str],
    entries: dict[str, ManifestEntry],
    force: bool,
    routes: tuple[Route, ...],
) -> dict[str, Future[bytes]]:
    """Start reading, on ``pool``, the listed objects the group will read, up to the group's bytes.

    Only a bucket's candidates come with the version a listing gave; a file without one is read in
    place. What ``_look`` would not read (unchanged, large, a path that holds rows) is not fetched."""
    fetched: dict[str, Future[bytes]] = {}
    room = GROUP_BYTES
    for candidate in candidates:
        version, entry = candidate.version, entries.get(candidate.relative)
        if version is None or candidate.problem is not None or candidate.relative not in claimed:
            continue
        if route_for(os.path.basename(candidate.relative), routes) is None:
            continue
        if not force and unchanged_since_recorded(entry, version.st_size, version.st_mtime_ns, version.etag):
            continue
        if not _fits_a_group(version, entry):
            continue
        room -= version.st_size
        if room < 0:
            break
        fetched[candidate.relative] = pool.submit(_read_bytes, candidate)
    return fetched


def _fits_a_group(version: Version, entry: ManifestEntry | None) -> bool:
    """Small, and its path holds no rows (a replace, take-over or restore is loaded alone)."""
    return version.st_size <= SMALL_FILE_BYTES and (entry is None or entry.load_id is None)


def _read_bytes(candidate: Candidate) -> bytes:
    """A small file's bytes, one more than a group takes (to tell that it grew)."""
    with candidate.open() as handle:
        return handle.read(SMALL_FILE_BYTES + 1)


def _read(
    candidate: Candidate,
    entry: ManifestEntry | None,
    route: Route,
    info: Version,
    limits: LoadLimits,
    fetched: Future[bytes] | None = None,
) -> SmallFile:
    data = fetched.result() if fetched is not None else _read_bytes(candidate)
    if len(data) > SMALL_FILE_BYTES:  # it grew: the file alone settles that
        raise _Alone
    header = _header(_first_line(data, limits.max_line_bytes), route, limits.max_line_bytes)
    if header.mapping.needs_projection:
        raise _Alone
    if len(data) > limits.max_line_bytes and max(map(len, data.split(b"\n"))) > limits.max_line_bytes:
        raise _Alone  # a line over the limit: the file alone says which
    gate = LineGate(header.mapping.file_columns, header.raw)
    lines = gate.admit(data[len(header.raw) :])
    last = gate.admit_end()
    if lines is None or last is None:
        raise _Alone  # a line that is not plain values: the checked path
    if last:
        lines += last + (b"\r\n" if header.raw.endswith(b"\r\n") else b"\n")
    check_unchanged(candidate, info)
    return SmallFile(
        candidate,
        entry,
        route,
        info,
        hashlib.sha256(data).hexdigest(),
        header,
        lines,
        lines.count(b"\n"),
        b'"' in lines,
        len(data),
    )


def _first_line(data: bytes, max_line_bytes: int) -> bytes:
    """What ``read_header`` reads of ``data``: its first line, at most ``max_line_bytes + 1`` bytes."""
    end = data.find(b"\n", 0, max_line_bytes + 1)
    return data[: end + 1] if end >= 0 else data[: max_line_bytes + 1]


@functools.lru_cache(maxsize=256)
def _header(line: bytes, route: Route, max_line_bytes: int) -> Header:
    """``read_header`` of a file starting with ``line``; the files of a burst share a handful of
    headers, each checked and mapped once (a FileProblem is raised again every time)."""
    return read_header(io.BytesIO(line), route, max_line_bytes)


def _load_files(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    files: list[SmallFile],
    run_id: int | None,
    result: GroupResult,
) -> list[Answer]:
    """Decide, COPY the files to load, record their loads; the answers of every file that stays in
    the group. A file the server refuses leaves the group (it is loaded alone) and the rest are
    decided and copied again."""
    holders = manifest.holders_of_contents(cur, [f.sha256 for f in files])
    while True:
        answers, to_load = decide(files, holders)
        load_ids = manifest.next_load_ids(cur, len(to_load)) if to_load else []
        refused = _copy(conn, cur, list(zip(to_load, load_ids, strict=True)))
        if not refused:
            break
        result.alone.extend(f.candidate for f in refused)
        files = [f for f in files if f not in refused]
    if to_load:
        paths = [f.relative for f in to_load]
        cur.execute("DELETE FROM ops.rejected_rows WHERE source_path = ANY(%s)", (paths,))
        pairs = zip(to_load, load_ids, strict=True)
        manifest.record_new_loads(
            cur, run_id, [(i, f.relative, f.sha256, f.route.table, f.rows) for f, i in pairs]
        )
    for small, load_id in zip(to_load, load_ids, strict=True):
        answers.append(_loaded(small, load_id))
    return answers


def _loaded(small: SmallFile, load_id: int) -> Answer:
    relative, table, sha, warnings = small.relative, small.route.table, small.sha256, small.warnings
    info = small.info
    update = EntryUpdate(
        relative,
        "loaded",
        sha,
        table,
        None,
        load_id,
        info.st_size,
        info.st_mtime_ns,
        small.rows,
        0,
        None,
        warnings,
        etag=info.etag,
    )
    outcome = FileOutcome(
        relative, "loaded", table, sha, small.rows, 0, small.size, None, warnings, load_id=load_id
    )
    return update, outcome


def _copy(
    conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any], loads: list[tuple[SmallFile, int]]
) -> list[SmallFile]:
    """One COPY per kind of file (usually one for the group), under one savepoint; the files the
    server refused (then nothing of the group's rows stays), or none."""
    kinds: dict[tuple[str, tuple[str, ...], bool, bool], list[tuple[SmallFile, int]]] = {}
    for small, load_id in loads:
        kinds.setdefault(small.copy_key, []).append((small, load_id))
    try:
        with conn.transaction():
            for members in kinds.values():
                first = members[0][0]
                options = CSV_OPTIONS if first.quoted else PLAIN_TEXT_OPTIONS
                columns = ("_load_id", "_line_number", *first.header.mapping.copy_columns)
                try:
                    with cur.copy(copy_statement(first.route, columns, options)) as copy:
                        copy.write(b"".join(number_lines(s.lines, 2, b"%d," % i) for s, i in members))
                except DATA_ERRORS as exc:
                    raise _Refused([_refused(exc, members)]) from exc
                if cur.rowcount != sum(s.rows for s, _ in members):
                    # A safety net, as on the clean path: every admitted line is one row.
                    raise _Refused([s for s, _ in members])
    except _Refused as refused:  # the savepoint is rolled back
        return refused.files
    return []


class _Refused(Exception):
    def __init__(self, files: list[SmallFile]) -> None:
        super().__init__(f"{len(files)} file(s) refused")
        self.files = files


def _refused(exc: BaseException, members: list[tuple[SmallFile, int]]) -> SmallFile:
    """The file of the COPY record the server refused (COPY counts records from 1)."""
    context = getattr(getattr(exc, "diag", None), "context", None) or ""
    match = _COPY_RECORD.search(context)
    record = int(match.group(1)) if match else 1
    for small, _ in members:
        if record <= small.rows:
            return small
        record -= small.rows
    return members[-1][0]

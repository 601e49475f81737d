"""One file, one transaction: claim it, decide what it is, load it, record it.

Decisions (the manifest is the memory):
- same path, same size and modification time as recorded: skipped without reading;
- same path, same content: skipped (only the recorded modification time moves);
- same content already loaded under another path: ``duplicate``, nothing loaded;
- known path, new content: the new rows are loaded and the earlier ones deleted, atomically, unless
  a ``duplicate`` path still has the earlier content: that path takes the earlier load over
  (``manifest.take_over``), so that the raw tables keep every content a path of the lake has;
- a content whose rows a ``rejected`` or ``failed`` path kept from an earlier version is not
  loaded twice: another path with it is a ``duplicate`` of that path, and the path itself coming
  back to it is ``loaded`` again with those rows;
- the rows and the manifest row commit together, or neither does.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
import structlog

from watcher import manifest
from watcher.binary_copy import clean_copy
from watcher.landing.zone import Candidate, Version
from watcher.load_tables import remove_load_rows
from watcher.loader import (
    FileProblem,
    ProgressCallback,
    RowProblem,
    prepare_load,
)
from watcher.manifest import EntryUpdate, LoadRecord, ManifestEntry
from watcher.quarantine import Budget, QuarantineResult, header_warnings, load_with_quarantine
from watcher.routes import ROUTES, Route, route_for

log = structlog.get_logger(__name__)

Outcome = Literal["loaded", "skipped", "duplicate", "rejected", "failed", "ignored", "busy"]
NO_ROUTE_REASON = "no route matches this file name (expected 'daily' and 'activity', or 'sleep', in the name)"


@dataclass(frozen=True)
class LoadLimits:
    max_line_bytes: int = 1 << 20
    error_budget_fraction: float = 0.01
    error_budget_rows: int = 1000


@dataclass
class FileOutcome:
    relative: str
    outcome: Outcome
    table: str | None = None
    sha256: str | None = None
    rows_loaded: int = 0
    rows_rejected: int = 0
    bytes_read: int = 0
    reason: str | None = None
    warnings: str | None = None
    duration_s: float = 0.0
    load_id: int | None = None
    earlier_rows_held_by: str | None = None
    """The path that took over the rows of this path's earlier version (a duplicate of it), when
    this version replaced them: they stay in the raw tables, held by that path."""

    @property
    def is_failure(self) -> bool:
        return self.outcome in ("rejected", "failed")


class _Discard(Exception):
    """Raised inside the file's savepoint to undo what the load wrote, carrying the verdict."""

    def __init__(self, outcome: FileOutcome, update: EntryUpdate | None, drop_previous: bool) -> None:
        super().__init__(outcome.outcome)
        self.outcome = outcome
        self.update = update
        self.drop_previous = drop_previous


def is_unrouted(candidate: Candidate, routes: tuple[Route, ...] = ROUTES) -> bool:
    """A readable entry that no route takes: recorded as ``ignored`` in bulk, never read."""
    return candidate.problem is None and route_for(os.path.basename(candidate.relative), routes) is None


def record_ignored(conn: psycopg.Connection[Any], candidates: list[Candidate]) -> list[FileOutcome]:
    """Record many unrouted files as ``ignored`` in one transaction and one statement.

    Nothing is read and no claim is taken: two instances writing the same row write the same
    values. A file gone by now is left out (there is nothing left to ignore).
    """
    paths, sizes, mtimes = [], [], []
    for candidate in sorted(candidates, key=lambda c: c.relative):  # one lock order for all
        try:
            info = candidate.hint()
        except OSError:
            continue
        paths.append(candidate.relative)
        sizes.append(info.st_size)
        mtimes.append(info.st_mtime_ns)
    with conn.transaction():
        conn.execute(
            """
            INSERT INTO ops.raw_ingest_manifest AS m
                (source_path, status, size_bytes, mtime_ns, rows_loaded, rows_rejected, error_reason)
            SELECT p, 'ignored', s, t, 0, 0, %(reason)s
            FROM unnest(%(paths)s::text[], %(sizes)s::bigint[], %(mtimes)s::bigint[]) AS u(p, s, t)
            ON CONFLICT (source_path) DO UPDATE SET
                source_sha256 = NULL, target_table = NULL, status = 'ignored', duplicate_of = NULL,
                load_id = NULL, size_bytes = EXCLUDED.size_bytes, mtime_ns = EXCLUDED.mtime_ns,
                rows_loaded = 0, rows_rejected = 0, error_reason = EXCLUDED.error_reason,
                warnings = NULL, updated_at = clock_timestamp()
            """,
            {"reason": NO_ROUTE_REASON, "paths": paths, "sizes": sizes, "mtimes": mtimes},
        )
    return [FileOutcome(path, "ignored", reason=NO_ROUTE_REASON) for path in paths]


def unchanged_since_recorded(
    entry: ManifestEntry | None, size: int, mtime_ns: int, etag: str | None = None
) -> bool:
    """Same size and time as recorded (and, for an object, the same ETag where one is recorded)."""
    return (
        entry is not None
        and entry.status != "failed"
        and entry.size_bytes == size
        and entry.mtime_ns == mtime_ns
        and (etag is None or entry.etag is None or entry.etag == etag)
    )


RETRY_BACKOFF_CAP_SECONDS = 3600.0


def retry_delay(failed_attempts: int, base_seconds: float) -> float:
    """How long a failed file that did not change waits before it is read again: the base (the
    backstop scan's interval), doubled with each failure in a row, at most an hour."""
    if failed_attempts <= 0:
        return 0.0
    base = base_seconds if base_seconds > 0 else 60.0
    return min(base * 2.0 ** min(failed_attempts - 1, 30), max(base, RETRY_BACKOFF_CAP_SECONDS))


def retry_due(entry: ManifestEntry, info: Version, now: datetime, base_seconds: float) -> bool:
    """A failed file is read again once it changed (size, modification time or mode: a ``chmod``
    that makes it readable counts; for an object, its ETag too) or once its back-off is over;
    ``reprocess`` reads it at once."""
    recorded = (entry.size_bytes, entry.mtime_ns, entry.file_mode, entry.etag)
    current = (info.st_size, info.st_mtime_ns, info.st_mode, info.etag)
    if any(old is not None and old != new for old, new in zip(recorded, current, strict=True)):
        return True
    if entry.updated_at is None:
        return True
    return now >= entry.updated_at + timedelta(seconds=retry_delay(entry.failed_attempts, base_seconds))


def process_file(
    conn: psycopg.Connection[Any],
    candidate: Candidate,
    *,
    run_id: int | None,
    limits: LoadLimits,
    routes: tuple[Route, ...] = ROUTES,
    progress: ProgressCallback | None = None,
    force: bool = False,
) -> FileOutcome:
    """Process one candidate in one transaction. Transient database errors propagate."""
    started = time.monotonic()
    with conn.transaction(), conn.cursor() as cur:
        if not manifest.try_claim(cur, candidate.relative):
            return FileOutcome(candidate.relative, "busy", reason="being loaded by another process")
        outcome = _decide_and_load(conn, cur, candidate, run_id, limits, routes, progress, force)
    outcome.duration_s = time.monotonic() - started
    return outcome


def _decide_and_load(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    candidate: Candidate,
    run_id: int | None,
    limits: LoadLimits,
    routes: tuple[Route, ...],
    progress: ProgressCallback | None,
    force: bool,
) -> FileOutcome:
    relative = candidate.relative
    entry = manifest.get_entry(conn, relative, for_update=True)
    route = route_for(os.path.basename(relative), routes)
    if candidate.problem is not None:
        status = "failed" if "disappeared" in candidate.problem else "rejected"
        return _record_problem(cur, relative, entry, route, FileProblem(candidate.problem, status=status))
    try:
        info = candidate.stat()
    except FileNotFoundError:
        gone = FileProblem("the file disappeared before it could be read", status="failed")
        return _record_problem(cur, relative, entry, route, gone)
    except OSError as exc:  # an object store that does not answer, a file whose metadata fails
        unread = FileProblem(f"the file could not be read: {exc.strerror or exc}", status="failed")
        return _record_problem(cur, relative, entry, route, unread)
    if not force and unchanged_since_recorded(entry, info.st_size, info.st_mtime_ns, info.etag):
        return FileOutcome(relative, "skipped", table=entry.target_table if entry else None)
    if route is None:
        update = EntryUpdate(
            relative,
            "ignored",
            size_bytes=info.st_size,
            mtime_ns=info.st_mtime_ns,
            error_reason=NO_ROUTE_REASON,
            etag=info.etag,
        )
        manifest.upsert_entry(cur, update)
        return FileOutcome(relative, "ignored", reason=NO_ROUTE_REASON)
    try:
        return _load(conn, cur, candidate, entry, route, info, run_id, limits, progress)
    except FileProblem as problem:
        return _record_problem(cur, relative, entry, route, problem, info)
    except OSError as exc:  # an I/O error while reading (a failing disk, a vanished mount)
        failed = FileProblem(f"the file could not be read: {exc.strerror or exc}", status="failed")
        return _record_problem(cur, relative, entry, route, failed, info)
    except (ValueError, LookupError) as exc:  # a defect of ours; the file is retried next pass
        log.exception("file_check_crashed", path=relative, error=type(exc).__name__)
        crashed = FileProblem(
            f"internal error while reading the file ({type(exc).__name__})", status="failed"
        )
        return _record_problem(cur, relative, entry, route, crashed, info)


def _load(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    candidate: Candidate,
    entry: ManifestEntry | None,
    route: Route,
    info: Version,
    run_id: int | None,
    limits: LoadLimits,
    progress: ProgressCallback | None,
) -> FileOutcome:
    relative = candidate.relative
    load_id = manifest.next_load_id(cur)
    prepare_load(cur, route, load_id)
    try:
        with conn.transaction():  # everything this file writes; undone by _Discard
            result = _read_into_table(conn, cur, candidate, info, route, load_id, run_id, limits, progress)
            check_unchanged(candidate, info)
            _discard_unless_new(cur, relative, entry, route, info, result)
    except _Discard as discard:
        outcome = discard.outcome
        if discard.drop_previous:
            outcome = replace(outcome, earlier_rows_held_by=_release_previous(cur, relative, entry).heir)
        if discard.update is not None:
            manifest.upsert_entry(cur, discard.update)
            if discard.update.status == "loaded":  # restored: bad lines of other versions no longer apply
                cur.execute(
                    "DELETE FROM ops.rejected_rows WHERE source_path = %s AND source_sha256 <> %s",
                    (relative, discard.update.sha256),
                )
        elif outcome.outcome == "skipped":
            manifest.touch_entry(cur, relative, info.st_size, info.st_mtime_ns, info.etag)
        return outcome
    if result.budget_exceeded_reason or result.rows_loaded == 0:
        return _record_over_budget(cur, relative, entry, route, info, result)
    released = _release_previous(cur, relative, entry)
    if not result.rows_rejected:  # bad lines of an earlier version of this path no longer apply
        cur.execute("DELETE FROM ops.rejected_rows WHERE source_path = %s", (relative,))
    manifest.record_load(
        cur,
        load_id=load_id,
        run_id=run_id,
        relative=relative,
        sha256=result.sha256,
        table=route.table,
        rows_loaded=result.rows_loaded,
        rows_rejected=result.rows_rejected,
        replaces_load_id=released.deleted_load_id,
    )
    manifest.upsert_entry(
        cur,
        EntryUpdate(
            relative,
            "loaded",
            result.sha256,
            route.table,
            None,
            load_id,
            info.st_size,
            info.st_mtime_ns,
            result.rows_loaded,
            result.rows_rejected,
            None,
            result.warning_text,
            etag=info.etag,
        ),
    )
    return FileOutcome(
        relative,
        "loaded",
        route.table,
        result.sha256,
        result.rows_loaded,
        result.rows_rejected,
        result.bytes_read,
        None,
        result.warning_text,
        load_id=load_id,
        earlier_rows_held_by=released.heir,
    )


def _read_into_table(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    candidate: Candidate,
    info: Version,
    route: Route,
    load_id: int,
    run_id: int | None,
    limits: LoadLimits,
    progress: ProgressCallback | None,
) -> QuarantineResult:
    """The fast COPY; if the server refuses a line, the checked path from the file's start."""
    relative = candidate.relative
    with candidate.open() as handle:
        try:
            with conn.transaction():
                fast = clean_copy(
                    conn,
                    cur,
                    handle,
                    route,
                    limits.max_line_bytes,
                    progress,
                    size=info.st_size,
                    load_id=load_id,
                )
            mapping = fast.header.mapping
            return QuarantineResult(
                fast.sha256, fast.rows, 0, fast.bytes_read, mapping, header_warnings(mapping)
            )
        except RowProblem as problem:
            log.info("file_checked_line_by_line", path=relative, reason=problem.reason)
        handle.seek(0)
        budget = budget_for(route, limits)
        return load_with_quarantine(
            conn, handle, route, relative, run_id, limits.max_line_bytes, budget, progress
        )


def budget_for(route: Route, limits: LoadLimits) -> Budget:
    """The route's own error budget where it sets one, the global settings otherwise."""
    fraction = route.error_budget_fraction
    rows = route.error_budget_rows
    return Budget(
        limits.error_budget_fraction if fraction is None else fraction,
        limits.error_budget_rows if rows is None else rows,
    )


def _discard_unless_new(
    cur: psycopg.Cursor[Any],
    relative: str,
    entry: ManifestEntry | None,
    route: Route,
    info: Version,
    result: QuarantineResult,
) -> None:
    """Raise _Discard when the content needs no load: unchanged, a duplicate, or no rows."""
    sha = result.sha256
    skipped = FileOutcome(relative, "skipped", route.table, sha, bytes_read=result.bytes_read)
    if entry is not None and entry.status == "loaded" and entry.source_sha256 == sha:
        raise _Discard(skipped, None, False)
    if entry is not None and entry.status in ("rejected", "failed") and entry.load_id is not None:
        kept = manifest.load_record(cur, entry.load_id)
        if kept is not None and kept.source_sha256 == sha:  # back to the version whose rows it kept
            raise _Discard(skipped, _owner_update(relative, info, kept, result.warning_text), False)
    if result.budget_exceeded_reason or result.rows_rejected:
        if result.rows_loaded and (holder := manifest.holder_of_content(cur, sha, relative)):
            _raise_duplicate(relative, route, info, sha, holder)
        return  # bad lines are recorded whatever happens to the rows
    if result.rows_loaded == 0:
        reason = "the file has a header but no rows"
        update = rejected_update(relative, entry, route, info, sha, 0, reason, result.warning_text)
        raise _Discard(FileOutcome(relative, "rejected", route.table, sha, reason=reason), update, False)
    holder = manifest.holder_of_content(cur, sha, relative)
    if holder is not None:
        _raise_duplicate(relative, route, info, sha, holder)


def _owner_update(relative: str, info: Version, load: LoadRecord, warnings: str | None) -> EntryUpdate:
    """The manifest row of a path that holds rows loaded before (no new load)."""
    return EntryUpdate(
        relative,
        "loaded",
        load.source_sha256,
        load.target_table,
        None,
        load.load_id,
        info.st_size,
        info.st_mtime_ns,
        load.rows_loaded,
        load.rows_rejected,
        None,
        warnings,
        etag=info.etag,
    )


def _raise_duplicate(relative: str, route: Route, info: Version, sha: str, holder: manifest.Holder) -> None:
    update, outcome = duplicate_answer(relative, route, info, sha, holder)
    raise _Discard(outcome, update, True)


def duplicate_answer(
    relative: str, route: Route, info: Version, sha: str, holder: manifest.Holder
) -> tuple[EntryUpdate, FileOutcome]:
    """The content's rows are in the tables already, held by another path: a loaded path with this
    content, or a rejected or failed path that kept them from an earlier version."""
    duplicate_of = holder.source_path
    if holder.status == "loaded":
        reason = manifest.duplicate_reason(duplicate_of)
    else:
        reason = manifest.kept_rows_reason(duplicate_of)
    update = EntryUpdate(
        relative,
        "duplicate",
        sha,
        route.table,
        duplicate_of,
        None,
        info.st_size,
        info.st_mtime_ns,
        error_reason=reason,
        etag=info.etag,
    )
    return update, FileOutcome(relative, "duplicate", route.table, sha, reason=reason)


def check_unchanged(candidate: Candidate, before: Version) -> None:
    """The file must not change while it is read: a rewrite or truncation means: read it again later."""
    try:
        after = candidate.stat()
    except FileNotFoundError as exc:
        raise FileProblem("the file was deleted while it was being read", status="failed") from exc
    if (after.st_size, after.st_mtime_ns, after.etag) != (before.st_size, before.st_mtime_ns, before.etag):
        raise FileProblem(
            "the file changed while it was being read; it will be read again once it settles",
            status="failed",
        )


def _record_over_budget(
    cur: psycopg.Cursor[Any],
    relative: str,
    entry: ManifestEntry | None,
    route: Route,
    info: Version,
    result: QuarantineResult,
) -> FileOutcome:
    reason = result.budget_exceeded_reason or "no row of the file could be parsed"
    update = rejected_update(
        relative,
        entry,
        route,
        info,
        result.sha256,
        result.rows_rejected,
        reason,
        result.warning_text,
    )
    manifest.upsert_entry(cur, update)
    return FileOutcome(
        relative,
        "rejected",
        route.table,
        result.sha256,
        0,
        result.rows_rejected,
        result.bytes_read,
        reason,
    )


def rejected_update(
    relative: str,
    entry: ManifestEntry | None,
    route: Route | None,
    info: Version | None,
    sha256: str | None,
    rows_rejected: int,
    reason: str,
    warnings: str | None = None,
) -> EntryUpdate:
    """A rejected version never changes which rows the path holds: the rows of an earlier
    version stay (``load_id``), or the path stays a duplicate of the path holding them."""
    keep_load = entry.load_id if entry is not None else None
    keep_duplicate = (
        entry.duplicate_of
        if entry is not None and keep_load is None and entry.status in ("duplicate", "rejected", "failed")
        else None
    )
    return EntryUpdate(
        relative,
        "rejected",
        sha256,
        route.table if route else None,
        keep_duplicate,
        keep_load,
        info.st_size if info else None,
        info.st_mtime_ns if info else None,
        entry.rows_loaded if entry is not None and keep_load else 0,
        rows_rejected,
        reason,
        warnings,
        etag=info.etag if info else None,
    )


@dataclass(frozen=True)
class Released:
    """What became of the rows of a path's earlier version when a new one took its place."""

    deleted_load_id: int | None = None
    """The load whose rows were deleted."""
    heir: str | None = None
    """The duplicate of the earlier version that took the rows over (then nothing is deleted)."""


def _release_previous(cur: psycopg.Cursor[Any], relative: str, entry: ManifestEntry | None) -> Released:
    """The rows an earlier version of this path loaded: a duplicate of that version takes them
    over, or they are deleted."""
    if entry is None or entry.load_id is None or entry.target_table is None:
        return Released()
    load = manifest.load_record(cur, entry.load_id)
    if load is not None and (owner := manifest.take_over(cur, load, relative)) is not None:
        log.info("load_taken_over", path=relative, owner=owner, load_id=load.load_id)
        return Released(heir=owner)
    remove_load_rows(cur, entry.target_table, entry.load_id)
    return Released(deleted_load_id=entry.load_id)


def record_failed(conn: psycopg.Connection[Any], candidate: Candidate, reason: str) -> FileOutcome:
    """Record a file whose load failed outside the file's own checks (a database error on it):
    like any failed read, it keeps what the path held and backs off until it changes."""
    with conn.transaction(), conn.cursor() as cur:
        entry = manifest.get_entry(conn, candidate.relative, for_update=True)
        route = route_for(os.path.basename(candidate.relative))
        try:
            info: Version | None = candidate.stat()
        except OSError:
            info = None
        failed = FileProblem(reason, status="failed")
        return _record_problem(cur, candidate.relative, entry, route, failed, info)


def _record_problem(
    cur: psycopg.Cursor[Any],
    relative: str,
    entry: ManifestEntry | None,
    route: Route | None,
    problem: FileProblem,
    info: Version | None = None,
) -> FileOutcome:
    """Record why a file was not loaded. Rows an earlier version loaded stay as they were."""
    update, outcome = problem_answer(relative, entry, route, problem, info)
    manifest.upsert_entry(cur, update)
    return outcome


def problem_answer(
    relative: str,
    entry: ManifestEntry | None,
    route: Route | None,
    problem: FileProblem,
    info: Version | None = None,
) -> tuple[EntryUpdate, FileOutcome]:
    """The manifest row and the answer of a file that was not loaded (see ``_record_problem``)."""
    status: Outcome = "failed" if problem.status == "failed" else "rejected"
    update = rejected_update(relative, entry, route, info, None, 0, problem.reason)
    if status == "failed":
        # Tried again when the file changes (size, time or mode), on `reprocess`, or after a
        # back-off (``retry_due``): its size, time and mode as they were when it failed. Mode 0:
        # there was no file to read, so any file found there later is a change.
        update = EntryUpdate(
            **{**update.__dict__, "status": "failed", "file_mode": info.st_mode if info else 0}
        )
    return update, FileOutcome(relative, status, route.table if route else None, reason=problem.reason)

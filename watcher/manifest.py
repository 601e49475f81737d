"""Read and write ``ops.raw_ingest_manifest`` and ``ops.file_loads`` in the caller's transaction."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

FILE_LOCK_NAMESPACE = 0x5746  # advisory lock namespace for per-file claims ("WF")
CONTENT_LOCK_NAMESPACE = 0x5743  # advisory lock namespace for per-content checks ("WC")

STATUSES = ("loaded", "duplicate", "rejected", "failed", "ignored")


@dataclass
class ManifestEntry:
    source_path: str
    source_sha256: str | None
    target_table: str | None
    status: str
    duplicate_of: str | None
    load_id: int | None
    size_bytes: int | None
    mtime_ns: int | None
    rows_loaded: int
    rows_rejected: int
    error_reason: str | None
    warnings: str | None
    loaded_at: datetime | None
    updated_at: datetime | None = None


_COLUMNS = sql.SQL(", ").join(
    sql.Identifier(name)
    for name in (
        "source_path",
        "source_sha256",
        "target_table",
        "status",
        "duplicate_of",
        "load_id",
        "size_bytes",
        "mtime_ns",
        "rows_loaded",
        "rows_rejected",
        "error_reason",
        "warnings",
        "loaded_at",
        "updated_at",
    )
)


def file_lock_key(relative: str) -> int:
    """A stable 32-bit key for a path; collisions only make two files wait for each other."""
    return zlib.crc32(relative.encode("utf-8")) - (1 << 31)


def try_claim(cur: psycopg.Cursor[Any], relative: str) -> bool:
    """Claim the file for this transaction; False when another process is loading it now.

    The claim is a transaction-level advisory lock: it ends with the transaction, so the file
    of a crashed claimant is free again as soon as its connection is gone.
    """
    row = cur.execute(
        "SELECT pg_try_advisory_xact_lock(%s, %s)", (FILE_LOCK_NAMESPACE, file_lock_key(relative))
    ).fetchone()
    return bool(row and row[0])


def get_entry(
    conn: psycopg.Connection[Any], relative: str, *, for_update: bool = False
) -> ManifestEntry | None:
    query = sql.SQL("SELECT {} FROM ops.raw_ingest_manifest WHERE source_path = %s {}").format(
        _COLUMNS, sql.SQL("FOR UPDATE" if for_update else "")
    )
    with conn.cursor(row_factory=class_row(ManifestEntry)) as cur:
        return cur.execute(query, (relative,)).fetchone()


def all_entries(conn: psycopg.Connection[Any]) -> list[ManifestEntry]:
    with conn.cursor(row_factory=class_row(ManifestEntry)) as cur:
        return cur.execute(
            sql.SQL("SELECT {} FROM ops.raw_ingest_manifest ORDER BY source_path").format(_COLUMNS)
        ).fetchall()


def loaded_path_with_sha(cur: psycopg.Cursor[Any], sha256: str, other_than: str) -> str | None:
    """Another path whose current content is this one and is loaded, if any.

    Two processes loading the same content under two names at once would both find nothing:
    a transaction lock on the content makes the second wait for the first to commit or roll back.
    """
    cur.execute(
        "SELECT pg_advisory_xact_lock(%s, %s)", (CONTENT_LOCK_NAMESPACE, int(sha256[:8], 16) - (1 << 31))
    )
    row = cur.execute(
        "SELECT source_path FROM ops.raw_ingest_manifest"
        " WHERE source_sha256 = %s AND status = 'loaded' AND source_path <> %s"
        " ORDER BY loaded_at LIMIT 1",
        (sha256, other_than),
    ).fetchone()
    return str(row[0]) if row else None


def next_load_id(cur: psycopg.Cursor[Any]) -> int:
    row = cur.execute("SELECT nextval(pg_get_serial_sequence('ops.file_loads', 'load_id'))").fetchone()
    assert row is not None
    return int(row[0])


def record_load(
    cur: psycopg.Cursor[Any],
    *,
    load_id: int,
    run_id: int | None,
    relative: str,
    sha256: str,
    table: str,
    rows_loaded: int,
    rows_rejected: int,
    replaces_load_id: int | None,
) -> None:
    cur.execute(
        "INSERT INTO ops.file_loads (load_id, run_id, source_path, source_sha256, target_table,"
        " rows_loaded, rows_rejected, replaces_load_id, finished_at)"
        " OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())",
        (load_id, run_id, relative, sha256, table, rows_loaded, rows_rejected, replaces_load_id),
    )


@dataclass(frozen=True)
class EntryUpdate:
    """The new state of one file in the manifest."""

    relative: str
    status: str
    sha256: str | None = None
    table: str | None = None
    duplicate_of: str | None = None
    load_id: int | None = None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    rows_loaded: int = 0
    rows_rejected: int = 0
    error_reason: str | None = None
    warnings: str | None = None


def upsert_entry(cur: psycopg.Cursor[Any], update: EntryUpdate) -> None:
    """Insert or replace the manifest row of a path. ``loaded_at`` moves only on a new load."""
    cur.execute(
        """
        INSERT INTO ops.raw_ingest_manifest AS m
            (source_path, source_sha256, target_table, status, duplicate_of, load_id, size_bytes,
             mtime_ns, rows_loaded, rows_rejected, error_reason, warnings, loaded_at)
        VALUES (%(relative)s, %(sha256)s, %(table)s, %(status)s, %(duplicate_of)s, %(load_id)s,
                %(size_bytes)s, %(mtime_ns)s, %(rows_loaded)s, %(rows_rejected)s,
                %(error_reason)s, %(warnings)s,
                CASE WHEN %(status)s = 'loaded' THEN clock_timestamp() END)
        ON CONFLICT (source_path) DO UPDATE SET
            source_sha256 = EXCLUDED.source_sha256,
            target_table  = EXCLUDED.target_table,
            status        = EXCLUDED.status,
            duplicate_of  = EXCLUDED.duplicate_of,
            load_id       = EXCLUDED.load_id,
            size_bytes    = EXCLUDED.size_bytes,
            mtime_ns      = EXCLUDED.mtime_ns,
            rows_loaded   = EXCLUDED.rows_loaded,
            rows_rejected = EXCLUDED.rows_rejected,
            error_reason  = EXCLUDED.error_reason,
            warnings      = EXCLUDED.warnings,
            updated_at    = clock_timestamp(),
            loaded_at     = CASE WHEN EXCLUDED.status = 'loaded' AND EXCLUDED.load_id IS DISTINCT FROM m.load_id
                                 THEN clock_timestamp() ELSE m.loaded_at END
        """,
        {
            "relative": update.relative,
            "sha256": update.sha256,
            "table": update.table,
            "status": update.status,
            "duplicate_of": update.duplicate_of,
            "load_id": update.load_id,
            "size_bytes": update.size_bytes,
            "mtime_ns": update.mtime_ns,
            "rows_loaded": update.rows_loaded,
            "rows_rejected": update.rows_rejected,
            "error_reason": update.error_reason,
            "warnings": update.warnings,
        },
    )


def touch_entry(cur: psycopg.Cursor[Any], relative: str, size_bytes: int, mtime_ns: int) -> None:
    """Same content seen with a new modification time: remember the time, change nothing else."""
    cur.execute(
        "UPDATE ops.raw_ingest_manifest SET size_bytes = %s, mtime_ns = %s, updated_at = clock_timestamp()"
        " WHERE source_path = %s",
        (size_bytes, mtime_ns, relative),
    )

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
    file_mode: int | None = None
    failed_attempts: int = 0
    etag: str | None = None


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
        "file_mode",
        "failed_attempts",
        "etag",
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


def try_claim_many(cur: psycopg.Cursor[Any], paths: list[str]) -> set[str]:
    """``try_claim`` for many files in one statement: the paths claimed (the others are busy)."""
    rows = cur.execute(
        "SELECT p FROM unnest(%s::text[], %s::integer[]) AS u(p, k) WHERE pg_try_advisory_xact_lock(%s, k)",
        (paths, [file_lock_key(p) for p in paths], FILE_LOCK_NAMESPACE),
    ).fetchall()
    return {str(r[0]) for r in rows}


def get_entries(conn: psycopg.Connection[Any], paths: list[str]) -> dict[str, ManifestEntry]:
    """The manifest rows of many paths, locked ``FOR UPDATE`` (in path order: one lock order)."""
    query = sql.SQL(
        "SELECT {} FROM ops.raw_ingest_manifest WHERE source_path = ANY(%s) ORDER BY source_path FOR UPDATE"
    ).format(_COLUMNS)
    with conn.cursor(row_factory=class_row(ManifestEntry)) as cur:
        return {e.source_path: e for e in cur.execute(query, (paths,))}


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


def content_lock_key(sha256: str) -> int:
    return int(sha256[:8], 16) - (1 << 31)


def lock_content(cur: psycopg.Cursor[Any], sha256: str) -> None:
    """Serialize, until this transaction ends, every decision about which path holds a content.

    Two processes loading the same content under two names at once would both find nothing, and
    a path taking over a load while another process records a duplicate of it could miss that
    duplicate: whoever comes second waits for the first to commit or roll back.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (CONTENT_LOCK_NAMESPACE, content_lock_key(sha256)))


@dataclass(frozen=True)
class Holder:
    """A path whose manifest row holds the rows of a content (see ``holder_of_content``)."""

    source_path: str
    status: str
    load_id: int | None


def holder_of_content(cur: psycopg.Cursor[Any], sha256: str, other_than: str) -> Holder | None:
    """Another path that holds the rows of this content, if any (takes the content lock).

    A ``loaded`` path whose current content it is comes first. Otherwise a ``rejected`` or
    ``failed`` path that keeps the rows of an earlier version with this content: the caller is a
    duplicate of that path, which holds the rows as long as it has not loaded a new version.
    """
    lock_content(cur, sha256)
    row = cur.execute(
        "SELECT source_path, status, load_id FROM ops.raw_ingest_manifest"
        " WHERE source_sha256 = %s AND status = 'loaded' AND source_path <> %s"
        " ORDER BY loaded_at LIMIT 1",
        (sha256, other_than),
    ).fetchone()
    if row is None:
        row = cur.execute(
            "SELECT m.source_path, m.status, m.load_id FROM ops.file_loads AS f"
            " JOIN ops.raw_ingest_manifest AS m ON m.load_id = f.load_id"
            " WHERE f.source_sha256 = %s AND m.status IN ('rejected', 'failed') AND m.source_path <> %s"
            " ORDER BY f.load_id LIMIT 1",
            (sha256, other_than),
        ).fetchone()
    return Holder(str(row[0]), str(row[1]), row[2]) if row else None


def holders_of_contents(cur: psycopg.Cursor[Any], shas: list[str]) -> dict[str, Holder]:
    """``holder_of_content`` for many contents: two statements, the content locks taken first
    (in one sorted statement: groups of two processes take them in the same order). For paths
    that hold no rows themselves (a path is never its own holder then)."""
    ordered = sorted(set(shas))
    keys = sorted({content_lock_key(s) for s in ordered})
    cur.execute(
        "SELECT count(pg_advisory_xact_lock(%s, k)) FROM unnest(%s::integer[]) AS u(k)",
        (CONTENT_LOCK_NAMESPACE, keys),
    )
    found: dict[str, Holder] = {}
    rows = cur.execute(
        "SELECT DISTINCT ON (source_sha256) source_sha256, source_path, status, load_id"
        " FROM ops.raw_ingest_manifest WHERE source_sha256 = ANY(%s) AND status = 'loaded'"
        " ORDER BY source_sha256, loaded_at",
        (ordered,),
    ).fetchall()
    for sha, path, status, load_id in rows:
        found[str(sha)] = Holder(str(path), str(status), load_id)
    rest = [s for s in ordered if s not in found]
    if rest:
        rows = cur.execute(
            "SELECT DISTINCT ON (f.source_sha256) f.source_sha256, m.source_path, m.status, m.load_id"
            " FROM ops.file_loads AS f JOIN ops.raw_ingest_manifest AS m ON m.load_id = f.load_id"
            " WHERE f.source_sha256 = ANY(%s) AND m.status IN ('rejected', 'failed')"
            " ORDER BY f.source_sha256, f.load_id",
            (rest,),
        ).fetchall()
        for sha, path, status, load_id in rows:
            found[str(sha)] = Holder(str(path), str(status), load_id)
    return found


@dataclass(frozen=True)
class LoadRecord:
    load_id: int
    source_sha256: str
    target_table: str
    rows_loaded: int
    rows_rejected: int


def load_record(cur: psycopg.Cursor[Any], load_id: int) -> LoadRecord | None:
    row = cur.execute(
        "SELECT load_id, source_sha256, target_table, rows_loaded, rows_rejected"
        " FROM ops.file_loads WHERE load_id = %s",
        (load_id,),
    ).fetchone()
    return LoadRecord(*row) if row else None


def duplicate_reason(owner: str) -> str:
    return f"same content as {owner}, which is already loaded"


# The paths that count as holding the rows of a load whose holder gets another content: duplicates
# of its content, and rejected or failed paths that were such duplicates before their version
# went bad (a bad version changes nothing about which rows a path holds).
_HEIRS = (
    "((status = 'duplicate' AND source_sha256 = %(sha)s)"
    " OR (status IN ('rejected', 'failed') AND load_id IS NULL AND duplicate_of = %(previous)s))"
)


def take_over(cur: psycopg.Cursor[Any], load: LoadRecord, previous_owner: str) -> str | None:
    """Give a load to a path that duplicates its content; None when there is none.

    Called when the path that held the load gets another content: the rows stay, now held by a
    path that still counts with them (so the raw tables keep every content a path of the lake
    has). A ``duplicate`` becomes ``loaded``; a path whose later version was rejected or failed
    keeps its status and now keeps the rows. Duplicates come first, then the path seen first;
    the others now name the new holder. Takes the content lock; the heir's manifest row is locked
    and checked again, so that a path another process changed meanwhile is not taken.
    """
    lock_content(cur, load.source_sha256)
    params = {"sha": load.source_sha256, "previous": previous_owner}
    candidates = cur.execute(
        sql.SQL(
            "SELECT source_path FROM ops.raw_ingest_manifest WHERE {} AND source_path <> %(previous)s"
            " ORDER BY status <> 'duplicate', first_seen_at, source_path"
        ).format(sql.SQL(_HEIRS)),
        params,
    ).fetchall()
    for (candidate,) in candidates:
        still = cur.execute(
            sql.SQL(
                "SELECT status FROM ops.raw_ingest_manifest WHERE source_path = %(path)s AND {} FOR UPDATE"
            ).format(sql.SQL(_HEIRS)),
            {**params, "path": candidate},
        ).fetchone()
        if still is None:  # changed by another process since the list was read
            continue
        heir, was_duplicate = str(candidate), still[0] == "duplicate"
        cur.execute(
            "UPDATE ops.raw_ingest_manifest AS m SET load_id = %(load)s, duplicate_of = NULL,"
            " rows_loaded = %(rows)s, updated_at = clock_timestamp(),"
            " status = CASE WHEN %(dup)s THEN 'loaded' ELSE m.status END,"
            " error_reason = CASE WHEN %(dup)s THEN NULL ELSE m.error_reason END,"
            " rows_rejected = CASE WHEN %(dup)s THEN %(rejected)s ELSE m.rows_rejected END,"
            " loaded_at = CASE WHEN %(dup)s THEN f.finished_at ELSE m.loaded_at END,"
            " warnings = CASE WHEN %(dup)s THEN (SELECT p.warnings FROM ops.raw_ingest_manifest AS p"
            "   WHERE p.source_path = %(previous)s AND p.source_sha256 = %(sha)s) ELSE m.warnings END"
            " FROM ops.file_loads AS f WHERE f.load_id = %(load)s AND m.source_path = %(heir)s",
            {
                **params,
                "load": load.load_id,
                "rows": load.rows_loaded,
                "rejected": load.rows_rejected,
                "heir": heir,
                "dup": was_duplicate,
            },
        )
        _transfer_load(cur, load, previous_owner, heir, was_duplicate)
        return heir
    return None


def kept_rows_reason(holder: str) -> str:
    return f"same content as the rows {holder} kept from an earlier version"


def _transfer_load(
    cur: psycopg.Cursor[Any], load: LoadRecord, previous_owner: str, owner: str, owner_loaded: bool
) -> None:
    """Record that ``owner`` now holds the load's rows (``take_over`` writes the owner's own row).

    The load's path in ops.file_loads follows, so that the rows' lineage names a path that has
    them; so do the bad lines recorded for that content; the other heirs now name the new owner.
    """
    params = {"sha": load.source_sha256, "previous": previous_owner, "owner": owner}
    cur.execute("UPDATE ops.file_loads SET source_path = %s WHERE load_id = %s", (owner, load.load_id))
    cur.execute(
        "UPDATE ops.rejected_rows SET source_path = %s WHERE source_path = %s AND source_sha256 = %s",
        (owner, previous_owner, load.source_sha256),
    )
    reason = duplicate_reason(owner) if owner_loaded else kept_rows_reason(owner)
    cur.execute(
        sql.SQL(
            "UPDATE ops.raw_ingest_manifest SET duplicate_of = %(owner)s, updated_at = clock_timestamp(),"
            " error_reason = CASE WHEN status = 'duplicate' THEN %(reason)s ELSE error_reason END"
            " WHERE {} AND source_path NOT IN (%(owner)s, %(previous)s)"
        ).format(sql.SQL(_HEIRS)),
        {**params, "reason": reason},
    )


def next_load_id(cur: psycopg.Cursor[Any]) -> int:
    row = cur.execute("SELECT nextval(pg_get_serial_sequence('ops.file_loads', 'load_id'))").fetchone()
    assert row is not None
    return int(row[0])


def next_load_ids(cur: psycopg.Cursor[Any], count: int) -> list[int]:
    rows = cur.execute(
        "SELECT nextval(pg_get_serial_sequence('ops.file_loads', 'load_id')) FROM generate_series(1, %s)",
        (count,),
    ).fetchall()
    return [int(r[0]) for r in rows]


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
        _RECORD_LOAD,
        (load_id, run_id, relative, sha256, table, rows_loaded, rows_rejected, replaces_load_id),
    )


_RECORD_LOAD = (
    "INSERT INTO ops.file_loads (load_id, run_id, source_path, source_sha256, target_table,"
    " rows_loaded, rows_rejected, replaces_load_id, finished_at)"
    " OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())"
)


def record_new_loads(
    cur: psycopg.Cursor[Any], run_id: int | None, loads: list[tuple[int, str, str, str, int]]
) -> None:
    """``record_load`` for many new loads at once (no rejected rows, nothing replaced):
    (load id, path, sha256, table, rows) each; one pipelined batch, not a round trip each."""
    cur.executemany(
        _RECORD_LOAD,
        [(load_id, run_id, path, sha, table, rows, 0, None) for load_id, path, sha, table, rows in loads],
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
    file_mode: int | None = None
    etag: str | None = None
    """An object's ETag (a change hint beside size and time); None for a file."""


def upsert_entry(cur: psycopg.Cursor[Any], update: EntryUpdate) -> None:
    """Insert or replace the manifest row of a path. ``loaded_at`` moves only on a new load;
    ``failed_attempts`` counts the failures in a row (the retry back-off), any other status
    sets it back to 0."""
    cur.execute(_UPSERT_ENTRY, _entry_params(update))


def upsert_entries(cur: psycopg.Cursor[Any], updates: list[EntryUpdate]) -> None:
    """``upsert_entry`` for many paths (each once): one pipelined batch, not a round trip each."""
    if updates:
        cur.executemany(_UPSERT_ENTRY, [_entry_params(u) for u in updates])


_UPSERT_ENTRY = """
        INSERT INTO ops.raw_ingest_manifest AS m
            (source_path, source_sha256, target_table, status, duplicate_of, load_id, size_bytes,
             mtime_ns, rows_loaded, rows_rejected, error_reason, warnings, loaded_at, file_mode,
             failed_attempts, etag)
        VALUES (%(relative)s, %(sha256)s, %(table)s, %(status)s, %(duplicate_of)s, %(load_id)s,
                %(size_bytes)s, %(mtime_ns)s, %(rows_loaded)s, %(rows_rejected)s,
                %(error_reason)s, %(warnings)s,
                CASE WHEN %(status)s = 'loaded' THEN clock_timestamp() END, %(file_mode)s,
                CASE WHEN %(status)s = 'failed' THEN 1 ELSE 0 END, %(etag)s)
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
            file_mode     = EXCLUDED.file_mode,
            etag          = EXCLUDED.etag,
            failed_attempts = CASE WHEN EXCLUDED.status = 'failed' THEN m.failed_attempts + 1 ELSE 0 END,
            updated_at    = clock_timestamp(),
            loaded_at     = CASE WHEN EXCLUDED.status = 'loaded' AND EXCLUDED.load_id IS DISTINCT FROM m.load_id
                                 THEN clock_timestamp() ELSE m.loaded_at END
        """


def _entry_params(update: EntryUpdate) -> dict[str, Any]:
    return {
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
        "file_mode": update.file_mode,
        "etag": update.etag,
    }


def touch_entry(
    cur: psycopg.Cursor[Any], relative: str, size_bytes: int, mtime_ns: int, etag: str | None = None
) -> None:
    """Same content seen with a new modification time: remember the time, change nothing else."""
    cur.execute(
        "UPDATE ops.raw_ingest_manifest SET size_bytes = %s, mtime_ns = %s, etag = %s,"
        " updated_at = clock_timestamp() WHERE source_path = %s",
        (size_bytes, mtime_ns, etag, relative),
    )

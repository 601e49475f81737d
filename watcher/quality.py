"""Data quality per raw table, for ``status``: what overlapping exports and bad lines came to.

Exports overlap: the same user and day arrive in several files. The dbt models keep one row per
user and day (``int_*_deduplicated``: the newest export wins). Of the other copies, a row equal
in every column to a kept copy is an *exact duplicate* (collapsed); a different version of the
same user and day is *superseded* by the newer export. Counted on the raw tables directly, so the
numbers hold whether or not a dbt build ran:

    per (user, day): copies = rows, versions = distinct rows
    exact duplicates collapsed = sum(copies - versions)
    rows superseded            = sum(versions - 1)

Rows rejected are the bad lines of the files as they are now recorded in the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from watcher.routes import ROUTES, ColumnType, Route


@dataclass(frozen=True)
class TableQuality:
    table: str
    raw_rows: int
    """Rows in the raw table (every line of every loaded file)."""
    kept_rows: int
    """One per user and day: what the models use."""
    exact_duplicates: int
    superseded: int
    rejected_rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(route: Route) -> tuple[str, str]:
    """The user column and the day column of a route: its rows' identity."""
    user = next(c.name for c in route.columns if c.type is ColumnType.BIGINT)
    day = next(c.name for c in route.columns if c.type is ColumnType.DATE)
    return user, day


def _overlap_query(route: Route) -> sql.Composed:
    user, day = _key(route)
    every = sql.SQL(", ").join(sql.Identifier(c.name) for c in route.columns)
    return sql.SQL(
        """SELECT count(*), coalesce(sum(copies), 0), coalesce(sum(copies - versions), 0),
                  coalesce(sum(versions - 1), 0)
           FROM (SELECT count(*) AS copies, count(DISTINCT ROW({every})) AS versions
                 FROM {table} WHERE {user} IS NOT NULL AND {day} IS NOT NULL
                 GROUP BY {user}, {day}) AS per_key"""
    ).format(
        every=every,
        table=sql.Identifier(*route.qualified_table),
        user=sql.Identifier(user),
        day=sql.Identifier(day),
    )


def table_quality(conn: psycopg.Connection[Any], routes: tuple[Route, ...] = ROUTES) -> list[TableQuality]:
    """One line per routed table; read-only, rolled back at the end."""
    rejected = dict(
        conn.execute(
            "SELECT target_table, coalesce(sum(rows_rejected), 0)::bigint FROM ops.raw_ingest_manifest"
            " WHERE target_table IS NOT NULL GROUP BY target_table"
        ).fetchall()
    )
    found = []
    for route in routes:
        raw_rows = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*route.qualified_table))
        ).fetchone()
        keys = conn.execute(_overlap_query(route)).fetchone()
        assert raw_rows is not None and keys is not None
        found.append(
            TableQuality(
                table=route.table,
                raw_rows=int(raw_rows[0]),
                kept_rows=int(keys[0]),
                exact_duplicates=int(keys[2]),
                superseded=int(keys[3]),
                rejected_rows=int(rejected.get(route.table, 0)),
            )
        )
    conn.rollback()
    return found

"""A large load's own table: its rows in a table of their own, a child of the raw table.

The raw tables keep a BRIN index on ``_load_id``, so that the incremental builds and the
``DELETE`` of a replaced file find a load's rows without reading the whole table. Upkeep of that
index is a fifth of the server's work in a large binary COPY (PostgreSQL 15 and 16 read the
index's metapage again for every row). A file of ``OWN_TABLE_MIN_BYTES`` or more that takes the
binary path is copied into a table of its own instead, ``raw.<table>_load_<load id>``:

* created in the load's transaction (``LIKE`` the raw table: its columns, defaults and
  constraints) with ``CHECK (_load_id = <load id>)`` and no index, and made a child of the raw
  table (``ALTER TABLE ... INHERIT``) once its rows are in. Readers of the raw table see its rows
  from the commit on, as any load's; a rollback or a crash leaves no table behind (the DDL is in
  the same transaction);
* found by the planner from its constraint: a filter on ``_load_id`` with constants (the
  incremental models render theirs as literals) skips every load's table whose id does not match,
  as the BRIN index skips the pages of the raw table itself;
* dropped when a new version of its file replaces it, instead of a ``DELETE`` of its rows.

``INHERIT`` comes last because it takes a ``SHARE UPDATE EXCLUSIVE`` lock on the raw table until
the commit, and two loads into one table would wait for each other for the whole COPY if the
child were created with ``INHERITS``. Measurements and alternatives: ``docs/design-decisions.md``,
"A large load's own table".
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from watcher.routes import Route

OWN_TABLE_MIN_BYTES = 32 << 20
"""Files of this size or more that take the binary path get a table of their own (about 270,000
daily-activity rows, about 0.1 s of index upkeep saved on PostgreSQL 15). The bound keeps the
number of tables that a read of the raw table opens and locks small: one per such file."""


def own_table_name(table: str, load_id: int) -> str:
    """The name of ``load_id``'s own table, a child of ``raw.<table>``."""
    return f"{table}_load_{load_id}"


def own_table(route: Route, load_id: int) -> sql.Identifier:
    return sql.Identifier("raw", own_table_name(route.table, load_id))


def create_own_table(cur: psycopg.Cursor[Any], route: Route, load_id: int) -> sql.Identifier:
    """Create ``load_id``'s own table, not yet a child of the raw table (``attach_own_table``)."""
    target = own_table(route, load_id)
    cur.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CHECK (_load_id = {}))"
        ).format(target, sql.Identifier(*route.qualified_table), sql.Literal(load_id))
    )
    return target


def attach_own_table(cur: psycopg.Cursor[Any], route: Route, load_id: int) -> None:
    """Make the table a child of the raw table: its rows are the raw table's from the commit on."""
    cur.execute(
        sql.SQL("ALTER TABLE {} INHERIT {}").format(
            own_table(route, load_id), sql.Identifier(*route.qualified_table)
        )
    )


def remove_load_rows(cur: psycopg.Cursor[Any], table: str, load_id: int) -> None:
    """Remove the rows of ``load_id`` from ``raw.<table>``: drop its own table where it has one,
    else delete them (found through the BRIN index)."""
    cur.execute(
        """
        SELECT 1 FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = %s::regclass AND c.relname = %s
          AND c.relnamespace = 'raw'::regnamespace
        """,
        (f"raw.{table}", own_table_name(table, load_id)),
    )
    if cur.fetchone() is not None:
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("raw", own_table_name(table, load_id))))
        return
    cur.execute(
        sql.SQL("DELETE FROM {} WHERE _load_id = %s").format(sql.Identifier("raw", table)),
        (load_id,),
    )

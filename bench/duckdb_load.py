"""DuckDB as a loader: one daily-activity CSV into a PostgreSQL table, as one process.

Run: python -m bench.duckdb_load CONNINFO CSV_PATH COLUMNS_JSON

DuckDB parses the file on every core (``read_csv`` with the columns typed and dates read as
``%m/%d/%Y``) and its postgres extension sends the rows by binary COPY into
``public.bench_copy``, a table of the file's 15 data columns (the one `psql \\copy` fills in
``bench.whole_process``). The extension is loaded from its wheel
(``duckdb-extension-postgres-scanner``), not downloaded.
``COLUMNS_JSON`` maps the header's names to DuckDB's types (``csv_columns``). The process imports
DuckDB alone, not this package's modules, so that its start-up is DuckDB's own. Prints the
seconds of the ``INSERT`` alone (parse, COPY, commit): the "load only" figure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import duckdb
import duckdb_extension_postgres_scanner

_DUCKDB_TYPES = {"bigint": "BIGINT", "date": "DATE", "integer": "INTEGER", "double precision": "DOUBLE"}


def csv_columns(header: str, columns: str) -> dict[str, str]:
    """The file's header names with DuckDB's type for each, from the header line and the
    PostgreSQL column list (``name type, ...``) of the table it loads into."""
    types = [column.strip().split(" ", 1)[1] for column in columns.split(",")]
    return dict(zip(header.split(","), (_DUCKDB_TYPES[t] for t in types), strict=True))


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def load(conninfo: str, path: str, columns: dict[str, str]) -> float:
    """The file's rows into ``bench_copy``: seconds of the INSERT (ATTACH and LOAD are not timed)."""
    con = duckdb.connect()
    version_row = con.sql("PRAGMA version").fetchone()
    assert version_row is not None
    package = Path(duckdb_extension_postgres_scanner.__file__).parent
    extension = package / "extensions" / version_row[0] / "postgres_scanner.duckdb_extension"
    con.execute(f"LOAD {_sql_text(str(extension))}")
    con.execute(f"ATTACH {_sql_text(conninfo)} AS pg (TYPE postgres)")
    started = time.perf_counter()
    con.execute(
        "INSERT INTO pg.public.bench_copy SELECT * FROM read_csv(?, header = true, dateformat = '%m/%d/%Y', columns = ?)",
        [path, columns],
    )
    return time.perf_counter() - started


def main(argv: list[str]) -> int:
    conninfo, path, columns = argv
    print(f"{load(conninfo, path, json.loads(columns)):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

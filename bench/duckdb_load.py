"""DuckDB as a loader: one daily-activity CSV into a PostgreSQL table, as one process.

Run: python -m bench.duckdb_load CSV_PATH COLUMNS_JSON, with the connection in libpq's ``PG*``
variables (``process`` builds both).

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
import os
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


def process(conninfo: str, path: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a loader process for ``path`` on ``conninfo``.

    DuckDB's ATTACH takes no bound parameter, so the connection goes as the ``PG*`` variables
    libpq reads for an empty connection string (in place of any the caller has)."""
    from psycopg.conninfo import conninfo_to_dict

    from bench.common import DAILY_COLUMNS, DAILY_HEADER
    from watcher.libpq_env import libpq_variables

    variables = libpq_variables()
    connection = {variables[k]: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | connection
    columns = json.dumps(csv_columns(DAILY_HEADER, DAILY_COLUMNS))
    return [sys.executable, "-m", "bench.duckdb_load", str(path), columns], env


def load(path: str, columns: dict[str, str]) -> float:
    """The file's rows into ``bench_copy``: seconds of the INSERT (ATTACH and LOAD are not timed)."""
    con = duckdb.connect()
    version_row = con.sql("PRAGMA version").fetchone()
    assert version_row is not None
    package = Path(duckdb_extension_postgres_scanner.__file__).parent
    con.load_extension(str(package / "extensions" / version_row[0] / "postgres_scanner.duckdb_extension"))
    con.execute("ATTACH '' AS pg (TYPE postgres)")  # the server libpq's PG* variables name
    started = time.perf_counter()
    con.execute(
        "INSERT INTO pg.public.bench_copy SELECT * FROM read_csv(?, header = true, dateformat = '%m/%d/%Y', columns = ?)",
        [path, columns],
    )
    return time.perf_counter() - started


def main(argv: list[str]) -> int:
    path, columns = argv
    print(f"{load(path, json.loads(columns)):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

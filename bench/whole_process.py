"""The CLI against `psql \\copy`, as processes: on a fresh database and on one already migrated.

Run: python -m bench.whole_process [--sizes 1000000 2000000] [--rounds 3]
(``python -m bench.ingest`` runs it too, after its own figures; ``--cli-rounds 0`` skips it.)

Each measurement is one process on a database of its own, created for it and dropped after it:

* ``psql``: ``psql -c '\\copy ...'`` into a table of the file's 15 data columns (the issue's baseline);
* ``fresh``: ``wearable-pipeline watch --once --no-dbt`` on a new, empty database: the process
  applies the migrations, then loads the file;
* ``migrated``: the same command on a new database whose migrations were applied before it started
  (what a second start of the daemon, or a second file, finds);
* ``duckdb``: DuckDB with its postgres extension (``bench.duckdb_load``: parallel parse, binary
  COPY) into the same table as psql's, the fastest of the other loaders compared in
  ``docs/design-decisions.md``; measured where the ``bench`` extra is installed (``make install``
  installs it), and said to be missing where it is not.

Whole process: from the start of the process to its exit (interpreter, imports, connection,
migrations, load, summary). Load only: the file's own load as the process reports it (``psql``'s
``\\timing`` of the ``\\copy``; the pipeline's ``duration_s`` of the file: read, hash, COPY,
manifest, commit; DuckDB's ``INSERT``). A CHECKPOINT precedes every timed process, so that none
pays for the dirty pages of the one before. Rounds rotate the order. Ratios are psql's median time
over the variant's (rows per second against psql's): 1.0 is psql's speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    COPY_COLUMNS,
    DAILY_COLUMNS,
    bench_server,
    median,
    once_command,
    psql_binary,
    scratch_database,
    write_daily,
)


def _duckdb_installed() -> bool:
    return all(importlib.util.find_spec(m) for m in ("duckdb", "duckdb_extension_postgres_scanner"))


VARIANTS = ("psql", "fresh", "migrated", *(("duckdb",) if _duckdb_installed() else ()))
_TIMING = re.compile(r"^Time: ([0-9.]+) ms", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    whole_s: float
    load_s: float
    peak_rss_mib: float
    cpu_s: float
    """CPU time of the process itself (user + system): the work done, whatever else runs."""


# Starts the measured program from a small interpreter: a child's peak RSS (``ru_maxrss``) counts
# the memory of the process it was forked from, which for this bench process (psycopg, watcher)
# would be a floor of about 40 MiB under every figure, psql's included.
_LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{time.perf_counter() - started} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_process(command: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(seconds, peak RSS in MiB, CPU seconds, stdout) of one process, measured on it alone."""
    with tempfile.TemporaryDirectory(prefix="wp-bench-run-") as folder:
        figures = Path(folder) / "figures"
        done = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(figures), *command],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} exited {done.returncode}: {done.stderr[-2000:]}")
        seconds, rss_kib, cpu = figures.read_text().split()
    return float(seconds), int(rss_kib) / 1024, float(cpu), done.stdout


def _checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def psql_run(url: str, path: Path) -> Run:
    """psql's client-side \\copy into a new table of the data columns; load only: its \\timing."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_copy (" + DAILY_COLUMNS + ")")
    _checkpoint(url)
    copy = f"\\copy bench_copy ({COPY_COLUMNS}) FROM '{path}' WITH (FORMAT csv, HEADER true)"
    env = {**os.environ, "PGOPTIONS": "-c DateStyle=ISO,MDY"}
    command = [psql_binary(), url, "-X", "-v", "ON_ERROR_STOP=1", "-c", "\\timing on", "-c", copy]
    whole, rss, cpu, out = _run_process(command, env)
    found = _TIMING.search(out)
    if found is None:
        raise RuntimeError(f"psql printed no timing: {out[-500:]}")
    return Run(whole, float(found.group(1)) / 1000, rss, cpu)


def duckdb_run(url: str, path: Path, rows: int) -> Run:
    """DuckDB's parse and binary COPY into a new table of the data columns; load only: its INSERT."""
    from bench.duckdb_load import process

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_copy (" + DAILY_COLUMNS + ")")
    _checkpoint(url)
    whole, rss, cpu, out = _run_process(*process(url, path))
    with psycopg.connect(url) as conn:
        loaded = conn.execute("SELECT count(*) FROM bench_copy").fetchone()
    if loaded is None or loaded[0] != rows:
        raise RuntimeError(f"duckdb loaded {loaded} rows of {rows}")
    return Run(whole, float(out), rss, cpu)


def cli_run(url: str, lake: Path, *, migrated: bool) -> Run:
    """``watch --once --no-dbt`` of the lake's one file, as a process of its own."""
    if migrated:
        from watcher.database import migrate

        migrate(url)
    _checkpoint(url)
    env = {**os.environ, "DATABASE_URL": url, "WEARABLE_LOG_FORMAT": "json", "WEARABLE_LOG_LEVEL": "warning"}
    command = once_command(lake)
    whole, rss, cpu, out = _run_process(command, env)
    summary = json.loads(out)
    (loaded,) = summary["files"]
    if loaded["outcome"] != "loaded":
        raise RuntimeError(f"the file was not loaded: {loaded}")
    return Run(whole, float(loaded["duration_s"]), rss, cpu)


def measure_size(server: str, lake: Path, rows: int, rounds: int) -> dict[str, list[Run]]:
    """``rounds`` runs of each variant, the order rotated every round, a new database each."""
    (path,) = lake.iterdir()
    runs: dict[str, list[Run]] = {v: [] for v in VARIANTS}
    for round_no in range(rounds):
        shift = round_no % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            with scratch_database(server) as url:
                if variant == "psql":
                    runs[variant].append(psql_run(url, path))
                elif variant == "duckdb":
                    runs[variant].append(duckdb_run(url, path, rows))
                else:
                    runs[variant].append(cli_run(url, lake, migrated=variant == "migrated"))
    return runs


def summarize(rows: int, runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Medians, ratios to psql (whole process and load only), peak RSS, and the per-round figures."""
    psql_whole = median([r.whole_s for r in runs["psql"]])
    psql_load = median([r.load_s for r in runs["psql"]])
    figures: dict[str, Any] = {"rows": rows}
    for variant, measured in runs.items():
        whole = median([r.whole_s for r in measured])
        load = median([r.load_s for r in measured])
        figures[variant] = {
            "whole_s": round(whole, 3),
            "load_s": round(load, 3),
            "ratio_whole": round(psql_whole / whole, 3),
            "ratio_load": round(psql_load / load, 3),
            "peak_rss_mib": round(max(r.peak_rss_mib for r in measured), 1),
            "client_cpu_s": round(median([r.cpu_s for r in measured]), 3),
            "rounds_whole_s": [round(r.whole_s, 3) for r in measured],
            "rounds_load_s": [round(r.load_s, 3) for r in measured],
        }
    return figures


def print_table(figures: dict[str, Any]) -> None:
    rounds = len(figures["psql"]["rounds_whole_s"])
    print(
        f"{figures['rows']:,} rows, one process per run, medians of {rounds} (ratio: psql's time / this one's)"
    )
    print("  variant    whole s  ratio   load s  ratio   peak RSS   client CPU")
    for variant in VARIANTS:
        f = figures[variant]
        print(
            f"  {variant:9s} {f['whole_s']:7.2f}  {f['ratio_whole']:5.2f}  {f['load_s']:7.2f}  "
            f"{f['ratio_load']:5.2f}  {f['peak_rss_mib']:6.0f} MiB  {f['client_cpu_s']:6.2f} s"
        )
    # Round by round, so that a gap can be told from the machine's noise (see design decisions).
    fresh, migrated = figures["fresh"]["rounds_load_s"], figures["migrated"]["rounds_load_s"]
    gaps = [m - f for f, m in zip(fresh, migrated, strict=True)]
    print("  load only, migrated minus fresh, round by round: " + " ".join(f"{g:+.2f}" for g in gaps) + " s")
    if "duckdb" not in figures:
        print("  duckdb not measured: its bench extra is not installed (pip install -e '.[bench]')")


def compile_package() -> None:
    """Byte-compile the package first, as an install does: an editable checkout run with
    PYTHONDONTWRITEBYTECODE set would otherwise compile it again in every measured process."""
    import compileall

    import watcher

    compileall.compile_dir(Path(watcher.__file__).parent, quiet=1)


def run(server: str, sizes: list[int], rounds: int) -> list[dict[str, Any]]:
    """Measure every size on ``server``, print a table per size, and return the figures."""
    from watcher.logsetup import configure_logging

    configure_logging("console", "warning")  # the migrations of the "migrated" runs log otherwise
    compile_package()
    results = []
    with tempfile.TemporaryDirectory(prefix="wp-bench-whole-") as tmp:
        for rows in sizes:
            lake = Path(tmp) / f"lake-{rows}"
            path = write_daily(lake / "dailyActivity_bench.csv", rows)
            # Written long ago, as far as the settle rule can tell: `--once` takes a file that
            # settled before the pass at once, but waits out the window for one just written.
            hour_ago = time.time() - 3600
            os.utime(path, (hour_ago, hour_ago))
            figures = summarize(rows, measure_size(server, lake, rows, rounds))
            print_table(figures)
            results.append(figures)
            for leftover in lake.iterdir():
                leftover.unlink()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with bench_server() as server:
        results = run(server, args.sizes, args.rounds)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

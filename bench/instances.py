"""Throughput of one, two and three pipeline instances sharing one database and one landing zone.

Run: python -m bench.instances [--files 1000] [--rows-per-file 30]
Each instance is a real `watch --once --no-dbt` process started at the same moment; the figure
is the wall time until every file is loaded (each exactly once, which the script checks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import bench_server, scratch_database, write_daily


def make_lake(root: Path, files: int, rows: int) -> None:
    for i in range(files):
        path = root / f"part{i % 20}" / f"dailyActivity_{i:05d}.csv"
        write_daily(path, rows, users=rows, id_base=4000000000 + i * rows)


def run_instances(url: str, lake: Path, count: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
    env.update(DATABASE_URL=url, WEARABLE_LOG_FORMAT="json")
    command = [sys.executable, "-m", "watcher", "watch", "--once", "--no-dbt", "--data-dir", str(lake)]
    subprocess.run(
        [*command[:3], "status", "--data-dir", str(lake)], env=env, check=True, capture_output=True
    )
    started = time.perf_counter()
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - started
    assert codes == [0] * count, codes
    return elapsed


def check_exactly_once(url: str, files: int, rows: int) -> None:
    with psycopg.connect(url) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (l.source_path, _line_number)) FROM raw.daily_activity"
            " JOIN ops.file_loads l ON l.load_id = _load_id"
        ).fetchone()  # type: ignore[misc]
        loaded = conn.execute(
            "SELECT count(*) FROM ops.raw_ingest_manifest WHERE status = 'loaded'"
        ).fetchone()
    assert total == distinct == files * rows and loaded == (files,), (total, distinct, loaded)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rows-per-file", type=int, default=30)
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory(prefix="wp-bench-") as tmp, bench_server() as server:
        lake = Path(tmp) / "lake"
        make_lake(lake, args.files, args.rows_per_file)
        for count in (1, 2, 3):
            with scratch_database(server) as url:
                seconds = run_instances(url, lake, count)
                check_exactly_once(url, args.files, args.rows_per_file)
            rate = args.files / seconds
            figures[count] = {"seconds": round(seconds, 2), "files_per_s": round(rate, 1)}
            print(f"{count} instance(s): {args.files} files in {seconds:.2f}s = {rate:.0f} files/s")
    base = figures[1]["files_per_s"]
    for count in (2, 3):
        print(f"speed-up with {count}: {figures[count]['files_per_s'] / base:.2f}x")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

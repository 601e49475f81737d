"""A burst of small files from a folder and from a bucket, in one run; and the memory of a big object.

Run: python -m bench.bucket_burst [--files 5000] [--rows-per-file 2] [--big-mb 0] [--database-url URL]

- burst: the same N small daily-activity files, loaded by `watch --once --no-dbt` from a folder,
  then from a bucket on a real S3 API server (moto's server mode on 127.0.0.1, started here);
  files/s for each, and the bucket's figure as a share of the folder's (the baseline).
- ``--big-mb M``: one daily-activity object of about M MB put into the bucket and loaded by
  `watch --once --no-dbt`: seconds, MB/s and the peak RSS of the process (the object streams into
  COPY: the RSS must not grow with the object).

moto keeps its objects in its own process and answers from Python: a managed S3 answers faster,
so the bucket figure here is a floor, not a forecast.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from bench.common import bench_server, once_command, scratch_database, write_daily
from tests.s3_server import S3Server, start_s3_server


def make_folder(root: Path, files: int, rows: int) -> list[Path]:
    paths = []
    for i in range(files):
        path = root / f"part{i % 50:02d}" / f"dailyActivity_{i:05d}.csv"
        write_daily(path, rows, users=rows, id_base=4000000000 + i * rows)
        paths.append(path)
    return paths


def upload(s3: S3Server, bucket: str, root: Path, paths: list[Path]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda p: s3.client.upload_file(str(p), bucket, f"lake/{p.relative_to(root).as_posix()}"),
                paths,
            )
        )
    return time.perf_counter() - started


MEASURE = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)
"""Runs a command and writes its peak RSS (KiB) to a file. A small process in between: a child
forked straight from this one would count this process's pages in its peak (Linux keeps the
peak across exec)."""


def once(url: str, landing: str, env_extra: dict[str, str]) -> tuple[float, dict[str, Any], float]:
    """(seconds, JSON summary, peak RSS in MiB) of one `watch --once --no-dbt` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
    env.update(env_extra, DATABASE_URL=url, WEARABLE_LOG_FORMAT="json")
    command = once_command(landing)
    with tempfile.TemporaryDirectory(prefix="wp-bench-rss-") as folder:
        rss_file = Path(folder) / "rss"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, str(rss_file), *command], env=env, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"watch --once failed ({done.returncode}): {done.stderr[-2000:]}")
        peak_kib = int(rss_file.read_text())
    return elapsed, json.loads(done.stdout), peak_kib / 1024


def migrate_first(url: str) -> None:
    """Apply the migrations before the clock starts (both phases alike)."""
    from watcher.database import migrate

    migrate(url)


def burst(admin_url: str, s3: S3Server, files: int, rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wp-bench-burst-") as folder:
        root = Path(folder) / "lake"
        paths = make_folder(root, files, rows)
        with scratch_database(admin_url) as url:
            migrate_first(url)
            folder_s, folder_result, folder_rss = once(url, str(root), {})
        bucket = s3.new_bucket()
        upload_s = upload(s3, bucket, root, paths)
        with scratch_database(admin_url) as url:
            migrate_first(url)
            bucket_s, bucket_result, bucket_rss = once(url, f"s3://{bucket}/lake/", s3.env)
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT count(*), count(DISTINCT source_path) FROM ops.file_loads"
                ).fetchone()
    assert folder_result["counts"].get("loaded") == files, folder_result["counts"]
    assert bucket_result["counts"].get("loaded") == files, bucket_result["counts"]
    assert row == (files, files), row
    return {
        "files": files,
        "folder_s": round(folder_s, 2),
        "folder_files_per_s": round(files / folder_s, 1),
        "bucket_s": round(bucket_s, 2),
        "bucket_files_per_s": round(files / bucket_s, 1),
        "bucket_vs_folder": round(folder_s / bucket_s, 2),
        "upload_s": round(upload_s, 2),
        "folder_peak_rss_mib": round(folder_rss, 1),
        "bucket_peak_rss_mib": round(bucket_rss, 1),
    }


def big_object(admin_url: str, s3: S3Server, megabytes: int) -> dict[str, Any]:
    from tests.helpers import write_big_daily

    bucket = s3.new_bucket()
    with tempfile.TemporaryDirectory(prefix="wp-bench-big-") as folder:
        small = write_big_daily(Path(folder) / "dailyActivity_small.csv", rows=1000)
        s3.client.upload_file(str(small), bucket, "small/dailyActivity_small.csv")
        rows = megabytes * 1_000_000 // 106  # about 106 bytes a row
        path = write_big_daily(Path(folder) / "dailyActivity_big.csv", rows=rows)
        size = path.stat().st_size
        s3.client.upload_file(str(path), bucket, "big/dailyActivity_big.csv")
    with scratch_database(admin_url) as url:
        migrate_first(url)
        _, _, small_rss = once(url, f"s3://{bucket}/small/", s3.env)
    with scratch_database(admin_url) as url:
        migrate_first(url)
        seconds, result, big_rss = once(url, f"s3://{bucket}/big/", s3.env)
    assert result["counts"].get("loaded") == 1, result["counts"]
    return {
        "object_mb": round(size / 1e6, 1),
        "seconds": round(seconds, 1),
        "mb_per_s": round(size / 1e6 / seconds, 1),
        "rows": result["rows_loaded"],
        "peak_rss_mib": round(big_rss, 1),
        "peak_rss_small_object_mib": round(small_rss, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rows-per-file", type=int, default=2)
    parser.add_argument("--big-mb", type=int, default=0, help="also stream one object of about this size")
    parser.add_argument("--database-url", help="server to measure on (default: as the tests choose)")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="wp-bench-moto-") as moto_dir,
        bench_server(args.database_url) as admin,
    ):
        server = start_s3_server(Path(moto_dir) / "moto.log")
        s3 = next(server)
        try:
            if args.big_mb:
                results["big_object"] = big_object(admin, s3, args.big_mb)
                print(json.dumps({"big_object": results["big_object"]}), flush=True)
            if args.files:
                results["burst"] = burst(admin, s3, args.files, args.rows_per_file)
        finally:
            server.close()
    if b := results.get("burst"):
        print(
            f"burst of {b['files']} files: folder {b['folder_files_per_s']} files/s ({b['folder_s']} s),"
            f" bucket {b['bucket_files_per_s']} files/s ({b['bucket_s']} s),"
            f" bucket/folder = {b['bucket_vs_folder']}"
        )
    if g := results.get("big_object"):
        print(
            f"one {g['object_mb']} MB object from the bucket: {g['seconds']} s, {g['mb_per_s']} MB/s,"
            f" {g['rows']} rows, peak RSS {g['peak_rss_mib']} MiB"
            f" (a 0.1 MB object: {g['peak_rss_small_object_mib']} MiB)"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

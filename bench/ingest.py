"""Load speed of the pipeline against `psql \\copy` of the same file, and peak memory on a big file.

Run: python -m bench.ingest [--rows 1000000] [--repeat 5] [--rss-gb 1.0] [--cli-rounds 3]
The pipeline's figure includes what it does beyond COPY: sha256, lineage columns, the manifest
and load records, the commit. Both are measured in this run, on the same server, alternately.
Then ``bench.whole_process``: the CLI and psql as processes, on 1M and 2M rows, on a fresh and on
an already migrated database, whole process and load only, with each process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench import whole_process
from bench.common import (
    bench_server,
    median,
    peak_rss_of_cli,
    pipeline_load,
    psql_copy,
    scratch_database,
    write_daily,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rss-gb", type=float, default=1.0, help="size of the memory test file; 0 skips it")
    parser.add_argument("--cli-rounds", type=int, default=3, help="rounds of bench.whole_process; 0 skips it")
    parser.add_argument("--cli-sizes", type=int, nargs="+", default=[1_000_000, 2_000_000])
    args = parser.parse_args()
    figures: dict[str, object] = {"rows": args.rows}
    with (
        tempfile.TemporaryDirectory(prefix="wp-bench-") as tmp,
        bench_server() as server,
        scratch_database(server) as url,
    ):
        lake = Path(tmp) / "lake"
        path = write_daily(lake / "dailyActivity_bench.csv", args.rows)
        figures["file_mb"] = round(path.stat().st_size / 2**20, 1)
        psql_times, like_raw_times, pipeline_times = [], [], []
        for _ in range(args.repeat):
            psql_times.append(psql_copy(url, path))
            pipeline_times.append(pipeline_load(url, lake)[0])
            like_raw_times.append(psql_copy(url, path, like_raw=True))
        psql_rate = args.rows / median(psql_times)
        like_raw_rate = args.rows / median(like_raw_times)
        pipeline_rate = args.rows / median(pipeline_times)
        figures.update(
            psql_copy_s=[round(t, 3) for t in psql_times],
            psql_copy_like_raw_s=[round(t, 3) for t in like_raw_times],
            pipeline_s=[round(t, 3) for t in pipeline_times],
            psql_rows_per_s=round(psql_rate),
            psql_like_raw_rows_per_s=round(like_raw_rate),
            pipeline_rows_per_s=round(pipeline_rate),
            ratio=round(pipeline_rate / psql_rate, 3),
            ratio_like_raw=round(pipeline_rate / like_raw_rate, 3),
        )
        print(f"{args.rows:,} rows, {figures['file_mb']} MB, medians of {args.repeat}")
        print(f"psql \\copy, data columns only : {median(psql_times):.2f}s  {psql_rate:,.0f} rows/s")
        print(f"psql \\copy, like raw table    : {median(like_raw_times):.2f}s  {like_raw_rate:,.0f} rows/s")
        print(
            f"pipeline (hash, lineage, manifest): {median(pipeline_times):.2f}s  {pipeline_rate:,.0f} rows/s"
        )
        print(f"ratio pipeline / psql (data columns): {figures['ratio']:.3f}   (target >= 0.9)")
        print(f"ratio pipeline / psql (same table)  : {figures['ratio_like_raw']:.3f}")
        if args.rss_gb > 0:
            path.unlink()
            big_rows = int(args.rss_gb * 2**30 / 138)
            big = write_daily(Path(tmp) / "big" / "dailyActivity_big.csv", big_rows)
            seconds, rss = peak_rss_of_cli(url, big.parent)
            figures.update(
                big_file_mb=round(big.stat().st_size / 2**20),
                big_rows=big_rows,
                big_load_s=round(seconds, 1),
                peak_rss_mb=round(rss, 1),
            )
            print(
                f"memory     : {figures['big_file_mb']} MB file ({big_rows:,} rows) loaded by the CLI in "
                f"{seconds:.1f}s, peak RSS {rss:.0f} MiB (target < 150)"
            )
        if args.cli_rounds > 0:
            figures["whole_process"] = whole_process.run(server, args.cli_sizes, args.cli_rounds)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

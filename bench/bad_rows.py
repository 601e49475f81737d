"""Load speed of a file with bad rows (the checked path) against `psql \\copy` of the clean file.

Run: python -m bench.bad_rows [--rows 1000000] [--bad-every 1000] [--repeat 3] [--no-rss]

The same run measures, alternately and on the same server:
  * psql's client-side \\copy of the clean file into a fresh table of the same 15 column types;
  * the pipeline loading the file with bad rows (every ``--bad-every``-th row holds ``n/a`` where a
    number belongs): the fast COPY fails at the first bad line, the checked path loads the good
    rows and records the bad ones in ops.rejected_rows;
  * the pipeline loading the clean file (the fast path), for reference.
Rates are rows loaded per second; the target is a ratio of at least 0.5 to psql's rate.
With --rss (the default) the bad file is also loaded once by the real CLI to report its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    parser.add_argument("--bad-every", type=int, default=1000, help="one bad row in this many (1000: 0.1 %%)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory run of the CLI")
    args = parser.parse_args()
    from watcher.logsetup import configure_logging

    configure_logging("console", "warning")  # the per-file log lines would drown the figures
    bad_rows = args.rows // args.bad_every
    figures: dict[str, Any] = {"rows": args.rows, "bad_rows": bad_rows}
    with (
        tempfile.TemporaryDirectory(prefix="wp-bench-bad-") as tmp,
        bench_server() as server,
        scratch_database(server) as url,
    ):
        clean_lake, bad_lake = Path(tmp) / "clean", Path(tmp) / "bad"
        clean = write_daily(clean_lake / "dailyActivity_clean.csv", args.rows)
        bad = write_daily(bad_lake / "dailyActivity_bad_rows.csv", args.rows, bad_every=args.bad_every)
        figures["file_mb"] = round(bad.stat().st_size / 2**20, 1)
        psql_times, bad_times, clean_times = [], [], []
        detail: dict[str, Any] = {}
        for _ in range(args.repeat):
            psql_times.append(psql_copy(url, clean))
            seconds, result = pipeline_load(url, bad_lake)
            bad_times.append(seconds)
            outcome = result.outcomes[0]
            detail = {"rows_loaded": outcome.rows_loaded, "rows_rejected": outcome.rows_rejected}
            clean_times.append(pipeline_load(url, clean_lake)[0])
        assert detail == {"rows_loaded": args.rows - bad_rows, "rows_rejected": bad_rows}, detail
        psql_rate = args.rows / median(psql_times)
        bad_rate = detail["rows_loaded"] / median(bad_times)
        clean_rate = args.rows / median(clean_times)
        figures.update(
            psql_copy_s=[round(t, 3) for t in psql_times],
            bad_file_s=[round(t, 3) for t in bad_times],
            clean_file_s=[round(t, 3) for t in clean_times],
            psql_rows_per_s=round(psql_rate),
            bad_file_rows_per_s=round(bad_rate),
            clean_file_rows_per_s=round(clean_rate),
            ratio_bad_to_psql=round(bad_rate / psql_rate, 3),
            ratio_clean_to_psql=round(clean_rate / psql_rate, 3),
            **detail,
        )
        print(f"{args.rows:,} rows, {figures['file_mb']} MB; {bad_rows:,} bad rows (1 in {args.bad_every:,})")
        print(f"psql \\copy, clean file    : median {median(psql_times):.2f}s  {psql_rate:>10,.0f} rows/s")
        print(
            f"pipeline, file with bad rows: median {median(bad_times):.2f}s  {bad_rate:>10,.0f} rows/s"
            f"  ({detail['rows_loaded']:,} loaded, {detail['rows_rejected']:,} recorded as rejected)"
        )
        print(f"pipeline, clean file (fast): median {median(clean_times):.2f}s  {clean_rate:>10,.0f} rows/s")
        print(f"ratio bad-file pipeline / psql: {figures['ratio_bad_to_psql']:.3f} (target >= 0.5)")
        if not args.no_rss:
            clean.unlink()
            seconds, rss = peak_rss_of_cli(url, bad_lake)
            figures.update(cli_bad_file_s=round(seconds, 2), cli_peak_rss_mb=round(rss, 1))
            print(f"memory: the CLI loaded the file with bad rows in {seconds:.1f}s, peak RSS {rss:.0f} MiB")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

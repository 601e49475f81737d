"""Many small files: a burst into a running daemon, and one, two and three instances.

Run: python -m bench.small_files [--files 5000] [--days 7] [--instances-files N] [--baseline REF]
     [--skip-burst] [--skip-instances] [--json]
(the server defaults to BENCH_DATABASE_URL, TEST_DATABASE_URL or an embedded one; each phase gets
a scratch database, dropped afterwards).

Figures printed:
- the burst: N one-user files of 7 rows, written outside the landing zone and then moved
  (renamed) into a running daemon's landing zone (default settings, the real dbt project):
  seconds from the first move until every row is in ``user_daily_activity``, files/s, the number
  of runs and dbt builds it took (target: 5,000 files within 10 s, 500 files/s, at most 3 builds);
- instances: the same files loaded by 1, 2 and 3 ``watch --once --no-dbt`` processes started at
  once on one database; files/s each (every file exactly once, which the script checks).

``--baseline REF`` runs every phase a second time on the code of a git revision (its ``watcher``
package and dbt project, taken with ``git archive``), in the same run, and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import bench_server, scratch_database
from tests.daemon_helpers import (
    REPO_ROOT,
    DaemonProcess,
    finished_runs,
    metric_sum,
    query,
    scalar,
    wait_until,
    write_daily,
)
from tests.helpers import SLEEP_HEADER, write_csv

FIRST_ID = 6000000000


def make_files(folder: Path, files: int, days: int) -> list[Path]:
    """One user per file, ``days`` rows each, spread over 20 sub-folders."""
    paths = []
    for i in range(files):
        path = folder / f"part{i % 20:02}" / f"dailyActivity_user_{i:05}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_daily(path, users=1, days=days, first_id=FIRST_ID + i)
        paths.append(path)
    return paths


def code_tree(ref: str | None, tmp: Path) -> Path:
    """The folder whose ``watcher`` package the processes run: this checkout, or a revision's."""
    if ref is None:
        return REPO_ROOT
    tree = tmp / "baseline-code"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", ref, "watcher", "dbt"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
    env.update(DATABASE_URL=url, WEARABLE_LOG_FORMAT="json")
    return env


def prime(daemon: DaemonProcess, url: str, lake: Path) -> None:
    """One file per table first, as in any database that has seen data (every view is built)."""
    write_csv(lake / "sleepDay_prime.csv", SLEEP_HEADER, ["1503960366,4/12/2016 12:00:00 AM,1,327,346"])
    write_daily(lake / "dailyActivity_prime.csv", first_id=1503960366)
    wait_until(
        lambda: (
            sum(r["files_loaded"] for r in finished_runs(url)) == 2
            and all(r["dbt_status"] for r in finished_runs(url))
        ),
        timeout=180,
        message="the priming files",
    )


def burst(server: str, code: Path, files: int, days: int, tmp: Path) -> dict[str, Any]:
    staging = tmp / "staging"
    lake = tmp / "lake"
    lake.mkdir()
    sources = make_files(staging, files, days)
    targets = [lake / p.relative_to(staging) for p in sources]
    for folder in {t.parent for t in targets}:
        folder.mkdir(parents=True, exist_ok=True)
    with scratch_database(server) as url:
        daemon = DaemonProcess(lake, url, tmp / "daemon.log", debounce=1.0)
        daemon.env = _env(url)
        daemon.cwd = code
        try:
            daemon.start().wait_ready(timeout=180)
            prime(daemon, url, lake)
            metrics = daemon.metrics()
            builds_before = metric_sum(metrics, "wearable_dbt_builds_total")
            load_before = metric_sum(metrics, "wearable_load_duration_seconds_sum")
            dbt_before = metric_sum(metrics, "wearable_dbt_build_duration_seconds_sum")
            runs_before = {r["run_id"] for r in finished_runs(url)}
            started = time.time()
            for source, target in zip(sources, targets, strict=True):
                os.replace(source, target)
            moved = time.time() - started
            last_user = FIRST_ID + files - 1
            count = "SELECT count(*) FROM marts.user_daily_activity WHERE user_id BETWEEN %s AND %s"
            wait_until(
                lambda: scalar(url, count, (FIRST_ID, last_user)) == files * days,
                timeout=900,
                interval=0.05,
                message="the burst's rows in user_daily_activity",
            )
            in_models = time.time() - started
            wait_until(
                lambda: (
                    sum(r["files_loaded"] for r in finished_runs(url) if r["run_id"] not in runs_before)
                    == files
                ),
                timeout=300,
                interval=0.05,
                message="the burst's runs",
            )
            runs = [r for r in finished_runs(url) if r["run_id"] not in runs_before]
            metrics = daemon.metrics()
            builds = metric_sum(metrics, "wearable_dbt_builds_total") - builds_before
            load_s = metric_sum(metrics, "wearable_load_duration_seconds_sum") - load_before
            dbt_s = metric_sum(metrics, "wearable_dbt_build_duration_seconds_sum") - dbt_before
            first_run = scalar(
                url,
                "SELECT min(started_at) FROM ops.pipeline_runs WHERE run_id = ANY(%s)",
                ([r["run_id"] for r in runs],),
            )
            failures = [r for r in runs if r["status"] != "success"]
        finally:
            daemon.stop()
    return {
        "files": files,
        "rows_per_file": days,
        "move_s": round(moved, 2),
        "to_models_s": round(in_models, 2),
        "files_per_s": round(files / in_models, 1),
        "runs": len(runs),
        "files_per_run": [r["files_loaded"] for r in runs],
        "dbt_builds": int(builds),
        "first_run_after_s": round(first_run.timestamp() - started, 2),
        "load_s": round(load_s, 2),
        "dbt_s": round(dbt_s, 2),
        "failed_runs": len(failures),
    }


def run_instances(url: str, code: Path, lake: Path, count: int) -> float:
    env = _env(url)
    command = [sys.executable, "-m", "watcher", "watch", "--once", "--no-dbt", "--data-dir", str(lake)]
    # The schema first (migrations), so that the timed processes only load.
    subprocess.run(
        [*command[:3], "status", "--data-dir", str(lake)], cwd=code, env=env, check=True, capture_output=True
    )
    started = time.perf_counter()
    procs = [
        subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - started
    assert codes == [0] * count, codes
    return elapsed


def check_exactly_once(url: str, files: int, days: int) -> None:
    found = query(
        url,
        "SELECT (SELECT count(*) FROM raw.daily_activity),"
        " (SELECT count(DISTINCT (_load_id, _line_number)) FROM raw.daily_activity),"
        " (SELECT count(*) FROM ops.raw_ingest_manifest WHERE status = 'loaded'),"
        " (SELECT count(*) FROM ops.file_loads)",
    )[0]
    assert found == (files * days, files * days, files, files), found


def instances(server: str, code: Path, files: int, days: int, tmp: Path) -> dict[int, dict[str, float]]:
    lake = tmp / "instances-lake"
    make_files(lake, files, days)
    old = time.time() - 3600  # settled long ago: ``--once`` waits for nothing
    for path in lake.rglob("*.csv"):
        os.utime(path, (old, old))
    figures: dict[int, dict[str, float]] = {}
    for count in (1, 2, 3):
        with scratch_database(server) as url:
            seconds = run_instances(url, code, lake, count)
            check_exactly_once(url, files, days)
        figures[count] = {"seconds": round(seconds, 2), "files_per_s": round(files / seconds, 1)}
    return figures


def measure(args: argparse.Namespace, server: str, ref: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wp-bench-small-") as folder:
        tmp = Path(folder)
        code = code_tree(ref, tmp)
        result: dict[str, Any] = {"code": ref or "this checkout"}
        if not args.skip_burst:
            burst_tmp = tmp / "burst"
            burst_tmp.mkdir()
            result["burst"] = burst(server, code, args.files, args.days, burst_tmp)
        if not args.skip_instances:
            result["instances"] = instances(server, code, args.instances_files or args.files, args.days, tmp)
    return result


def print_result(result: dict[str, Any], base: dict[str, Any] | None) -> None:
    print(f"code: {result['code']}")
    if b := result.get("burst"):
        met = b["files"] < 5000 or (b["to_models_s"] <= 10 and b["dbt_builds"] <= 3)
        ratio = ""
        if base and base.get("burst"):
            ratio = f"; {b['files_per_s'] / base['burst']['files_per_s']:.2f}x the baseline"
        print(
            f"  burst: {b['files']} files of {b['rows_per_file']} rows moved in {b['move_s']} s; all in"
            f" user_daily_activity after {b['to_models_s']} s = {b['files_per_s']} files/s{ratio};"
            f" {b['runs']} runs {b['files_per_run']}, {b['dbt_builds']} dbt builds; first run after"
            f" {b['first_run_after_s']} s, time in loads {b['load_s']} s, in dbt builds {b['dbt_s']} s"
            f" (target for 5,000: 10 s, 3 builds: {'met' if met else 'NOT met'})"
        )
    if figures := result.get("instances"):
        one = figures[1]["files_per_s"]
        for count, figure in figures.items():
            ratio = ""
            if base and base.get("instances"):
                ratio = (
                    f", {figure['files_per_s'] / base['instances'][count]['files_per_s']:.2f}x the baseline"
                )
            print(
                f"  {count} instance(s): {figure['seconds']} s = {figure['files_per_s']} files/s"
                f" ({figure['files_per_s'] / one:.2f}x one instance{ratio})"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--days", type=int, default=7, help="rows per file (one user, one row a day)")
    parser.add_argument("--instances-files", type=int, default=None, help="default: --files")
    parser.add_argument("--baseline", default=None, metavar="REF", help="also measure a git revision")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-instances", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with bench_server(args.database_url) as server:
        if args.baseline:
            results["baseline"] = measure(args, server, args.baseline)
        results["current"] = measure(args, server, None)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"small files ({results['when']}); load average (1, 5, 15 min) at start"
        f" {results['load_average_at_start']}, at end {results['load_average_at_end']}; cores: {os.cpu_count()}"
    )
    if "baseline" in results:
        print_result(results["baseline"], None)
    print_result(results["current"], results.get("baseline"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

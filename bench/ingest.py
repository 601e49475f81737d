"""Load speed of the pipeline against `psql \\copy` of the same file, and its peak memory.

Run: python -m bench.ingest [--rows 1000000,2000000] [--repeat 3] [--rss-gb 1.0]
                            [--block-sizes 1,4,8] [--rule]

For each file size, rounds in rotated order, each pipeline run on a database of its own:
- ``psql``: `psql \\copy` of the file into a table of its data columns (the baseline);
- ``fresh``: the real CLI (`watch --once --no-dbt`) on a new, empty database: it migrates, loads;
- ``migrated``: the CLI on a database an earlier CLI run migrated: it loads;
- ``text``: the same as ``migrated`` with the binary COPY switched off (today's text path);
- ``floor``: the binary path's floor on this server: the file's rows, encoded once beforehand in a
  process of its own, sent by one binary COPY into a table of the load's own (created, filled and
  attached to ``raw.daily_activity`` as the pipeline does for files of 32 MiB and more,
  ``watcher.load_tables``) in a migrated database, and committed; what is timed is the server's
  work alone (no start-up, parse, hash or gate).
- ``floor:raw table``: the same into ``raw.daily_activity`` itself, with its BRIN index on
  ``_load_id`` (where a smaller file's rows go).
Whole process is the CLI's wall time; load only is the file's own time in the CLI's summary (its
transaction: read, hash, gate, COPY, manifest, commit). Peak RSS is each CLI process's own.
``--block-sizes`` repeats the migrated run with other pyarrow block sizes (MiB); ``--rss-gb`` loads
a file of that size through the CLI for its peak RSS; ``--rule`` measures the text and the binary
path on small files, for the size rule (``watcher.binary_copy.binary_min_bytes``).
Then ``bench.whole_process`` (``--cli-rounds 0`` skips it): the CLI and psql as processes, with the
round-by-round gap between a migrated and a fresh database, and each process's own CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import whole_process
from bench.common import bench_server, median, psql_copy, scratch_database, write_daily

CHILD = (
    "import sys\n"
    "from watcher.blas import keep_blas_single_threaded\n"
    "keep_blas_single_threaded()  # as the CLI does, before pyarrow brings numpy in below\n"
    "import watcher.binary_copy as b\n"
    "if sys.argv[1] != '-':  # importing pyarrow only when the block size changes\n"
    "    import watcher.arrow_rows as a\n"
    "    a.ARROW_BLOCK_SIZE = int(sys.argv[1])\n"
    "b.binary_min_bytes = lambda: int(sys.argv[2])\n"
    "from watcher.cli import main\n"
    "sys.exit(main(sys.argv[3:]))\n"
)
"""The CLI with the binary path's two settings changed (they are not options)."""
ONCE = ("watch", "--once", "--no-dbt", "--metrics-addr", "off")


def run_cli(url: str, lake: Path, block: int | None = None, min_bytes: int | None = None) -> dict[str, Any]:
    """One `watch --once --no-dbt` process: wall seconds, the file's load seconds, peak RSS."""
    from watcher import binary_copy

    args = [*ONCE, "--json", "--data-dir", str(lake)]
    if block is None and min_bytes is None:
        command = [sys.executable, "-m", "watcher", *args]
    else:
        min_bytes = binary_copy.BINARY_MIN_BYTES if min_bytes is None else min_bytes
        command = [sys.executable, "-c", CHILD, "-" if block is None else str(block), str(min_bytes), *args]
    env = {**os.environ, "DATABASE_URL": url, "WEARABLE_LOG_FORMAT": "json"}
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, out[-2000:]
    summary = json.loads(out)
    (loaded,) = [f for f in summary["files"] if f["outcome"] == "loaded"]
    return {"s": seconds, "load_s": loaded["duration_s"], "rss_mib": usage.ru_maxrss / 1024}


@contextmanager
def migrated_database(admin_url: str, empty_lake: Path) -> Iterator[str]:
    """A new database, migrated by an earlier CLI process (as after a first start)."""
    with scratch_database(admin_url) as url:
        subprocess.run(
            [sys.executable, "-m", "watcher", *ONCE, "--data-dir", str(empty_lake)],
            check=True,
            env={**os.environ, "DATABASE_URL": url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield url


def checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def measure(
    admin_url: str, lake: Path, empty_lake: Path, modes: list[str], repeat: int
) -> dict[str, list[dict[str, Any]]]:
    """``repeat`` rounds of ``modes``, the order rotated by one each round."""
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    (path,) = lake.iterdir()
    with contextlib.ExitStack() as stack:
        floor = stack.enter_context(floor_worker(path)) if any(m in FLOORS for m in modes) else None
        for round_ in range(repeat):
            _one_round(admin_url, lake, empty_lake, path, rotated(modes, round_), runs, floor)
    return runs


def rotated(modes: list[str], round_: int) -> list[str]:
    return modes[round_ % len(modes) :] + modes[: round_ % len(modes)]


def _one_round(
    admin_url: str,
    lake: Path,
    empty_lake: Path,
    path: Path,
    modes: list[str],
    runs: dict[str, list[dict[str, Any]]],
    floor: Callable[[str, bool], dict[str, Any]] | None,
) -> None:
    for mode in modes:
        if mode == "psql":
            with scratch_database(admin_url) as url:
                runs[mode].append({"s": psql_copy(url, path)})
            continue
        if mode == "fresh":
            with scratch_database(admin_url) as url:
                checkpoint(url)
                runs[mode].append(run_cli(url, lake))
            continue
        with migrated_database(admin_url, empty_lake) as url:
            checkpoint(url)
            if mode in FLOORS:
                assert floor is not None
                runs[mode].append(floor(url, mode == "floor"))
            elif mode == "migrated":
                runs[mode].append(run_cli(url, lake))
            elif mode == "text":
                runs[mode].append(run_cli(url, lake, min_bytes=1 << 62))
            else:  # block size in MiB
                runs[mode].append(run_cli(url, lake, block=int(mode.split(":")[1]) << 20))


FLOORS = {
    "floor": "floor (the server alone)",
    "floor:raw table": "floor into the raw table",
}
"""The server's work alone: into a table of the load's own, as the pipeline loads a large file (the
most a binary load reaches here), and into ``raw.daily_activity`` with its BRIN index on
``_load_id`` (what that index would cost a large load: "A large load's own table" in
``docs/design-decisions.md``)."""
FLOOR_WORKER = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from bench.ingest import encoded_file, timed_binary_copy\n"
    "payload = encoded_file(Path(sys.argv[1]))\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    where, url = line.rstrip('\\n').split(' ', 1)\n"
    "    print(json.dumps(timed_binary_copy(url, payload, own_table=where == 'own')), flush=True)\n"
)


@contextmanager
def floor_worker(path: Path) -> Iterator[Callable[[str, bool], dict[str, Any]]]:
    """The floor's own process, started once per file: it encodes the file's rows once, then
    times one binary COPY of them into each database it is given.

    A process of its own, because pyarrow's memory pool keeps what the encoding took, and every
    CLI process forked from this one would count it in its peak RSS. Encoded once, because a
    COPY sent right after its encoding, in the same process, cost the server more CPU (0.87 to
    1.04 s against 0.82 to 0.86 s for 1 M rows, the backend's own CPU time, alternating rounds):
    a floor above the pipeline's own load."""
    worker = subprocess.Popen(
        [sys.executable, "-c", FLOOR_WORKER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None and worker.stdout is not None
    requests, replies = worker.stdin, worker.stdout
    if replies.readline().strip() != "ready":
        worker.kill()
        raise RuntimeError("the floor's process did not start")

    def floor(url: str, own_table: bool) -> dict[str, Any]:
        requests.write(f"{'own' if own_table else 'raw'} {url}\n")
        requests.flush()
        reply = replies.readline()
        if not reply:
            raise RuntimeError("the floor's process ended early (its error is above)")
        figures: dict[str, Any] = json.loads(reply)
        return figures

    try:
        yield floor
    finally:
        requests.close()
        worker.wait(timeout=60)


def encoded_file(path: Path) -> list[bytes]:
    """The file's rows after its header, as the binary path sends them."""
    from watcher.arrow_rows import encoded_batches
    from watcher.loader import read_header
    from watcher.routes import DAILY_ACTIVITY

    with path.open("rb") as handle:
        header = read_header(handle, DAILY_ACTIVITY, 1 << 20)
        return [bytes(piece) for piece, _ in encoded_batches(handle, header.mapping, lambda: None)]


def timed_binary_copy(url: str, payload: list[bytes], *, own_table: bool) -> dict[str, Any]:
    """Seconds of one binary COPY of ``payload`` into a table of the load's own (attached to
    ``raw.daily_activity``) or into ``raw.daily_activity`` itself, and its commit."""
    from watcher.load_tables import attach_own_table, create_own_table
    from watcher.loader import copy_statement
    from watcher.routes import DAILY_ACTIVITY

    columns = ("_line_number", *(c.name for c in DAILY_ACTIVITY.columns))
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('wearable.load_id', '1', false)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            table = create_own_table(cur, DAILY_ACTIVITY, 1) if own_table else None
            with cur.copy(copy_statement(DAILY_ACTIVITY, columns, sql.SQL("FORMAT binary"), table)) as copy:
                for piece in payload:
                    copy.write(piece)
            if own_table:
                attach_own_table(cur, DAILY_ACTIVITY, 1)
        conn.commit()
        seconds = time.perf_counter() - started
    return {"s": seconds, "load_s": seconds, "rss_mib": 0.0}


def summarize(rows: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    psql = median([r["s"] for r in runs["psql"]])
    out: dict[str, Any] = {"psql_s": [round(r["s"], 2) for r in runs["psql"]]}
    print(f"  psql \\copy               {psql:6.2f}s  {rows / psql:>10,.0f} rows/s")
    for mode, found in runs.items():
        if mode == "psql":
            continue
        whole = median([r["s"] for r in found])
        load = median([r["load_s"] for r in found])
        rss = max(r["rss_mib"] for r in found)
        out[mode] = {
            "s": [round(r["s"], 2) for r in found],
            "load_s": [round(r["load_s"], 2) for r in found],
            "ratio_whole": round(psql / whole, 3),
            "ratio_load": round(psql / load, 3),
            "peak_rss_mib": round(rss),
        }
        if mode in FLOORS:
            print(f"  {FLOORS[mode]:<24} {load:6.2f}s       ({psql / load:.2f}x psql)")
            continue
        print(
            f"  {mode:<24} {whole:6.2f}s whole ({psql / whole:.2f}x psql), {load:5.2f}s load only"
            f" ({psql / load:.2f}x), peak RSS {rss:.0f} MiB"
        )
    return out


def size_rule(admin_url: str, tmp: Path, repeat: int) -> dict[str, Any]:
    """Load-only seconds of small files, text against binary, in one warm process; and the one-off
    cost of importing pyarrow and numpy (paid by the first binary load of a process)."""
    from watcher import binary_copy
    from watcher.database import migrate
    from watcher.ingest import LoadLimits, process_file
    from watcher.landing.scanner import inspect_entry

    probe = "import time; t = time.perf_counter(); import pyarrow.csv, numpy; print(time.perf_counter() - t)"
    imports = [
        float(
            subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        )
        for _ in range(repeat)
    ]
    figures: dict[str, Any] = {"import_s": round(median(imports), 3)}
    print(f"  importing pyarrow and numpy: {median(imports):.2f}s once per process")
    with scratch_database(admin_url) as url:
        migrate(url)
        for rows in (1_000, 10_000, 30_000, 100_000, 300_000):
            lake = tmp / f"rule{rows}"
            path = write_daily(lake / "dailyActivity_rule.csv", rows)
            times: dict[str, list[float]] = {"text": [], "binary": []}
            for _ in range(repeat):
                for mode in times:
                    threshold = 0 if mode == "binary" else 1 << 62
                    binary_copy.binary_min_bytes = lambda threshold=threshold: threshold  # type: ignore[misc]
                    with psycopg.connect(url) as conn:
                        conn.execute(
                            "TRUNCATE raw.daily_activity, ops.raw_ingest_manifest, ops.file_loads CASCADE"
                        )
                        conn.commit()
                        done = process_file(conn, inspect_entry(lake, path), run_id=None, limits=LoadLimits())
                        conn.commit()
                    assert done.outcome == "loaded", done
                    times[mode].append(done.duration_s)
            text, binary = median(times["text"]), median(times["binary"])
            size = path.stat().st_size
            figures[str(size)] = {"rows": rows, "text_s": round(text, 4), "binary_s": round(binary, 4)}
            print(f"  {size / 2**20:7.2f} MiB ({rows:>7,} rows): text {text:.3f}s, binary {binary:.3f}s")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,2000000", help="file sizes in rows, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-gb", type=float, default=1.0, help="size of the memory test file; 0 skips it")
    parser.add_argument("--block-sizes", default="", help="other pyarrow block sizes to try, MiB (1M rows)")
    parser.add_argument("--rule", action="store_true", help="measure text against binary on small files")
    parser.add_argument("--cli-rounds", type=int, default=3, help="rounds of bench.whole_process; 0 skips it")
    parser.add_argument("--cli-sizes", type=int, nargs="+", default=[1_000_000, 2_000_000])
    args = parser.parse_args()
    whole_process.compile_package()
    figures: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="wp-bench-") as folder,
        bench_server() as admin_url,
    ):
        tmp = Path(folder)
        empty_lake = tmp / "empty"
        empty_lake.mkdir()
        for rows in [int(r) for r in args.rows.split(",")]:
            lake = tmp / f"lake{rows}"
            path = write_daily(lake / "dailyActivity_bench.csv", rows)
            modes = ["psql", "fresh", "migrated", "text", *FLOORS]
            if rows == 1_000_000 and args.block_sizes:
                modes += [f"block:{b}" for b in args.block_sizes.split(",")]
            print(f"{rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB, medians of {args.repeat}")
            figures[str(rows)] = summarize(rows, measure(admin_url, lake, empty_lake, modes, args.repeat))
            path.unlink()
        if args.rss_gb > 0:
            big_rows = int(args.rss_gb * 2**30 / 138)
            big = write_daily(tmp / "big" / "dailyActivity_big.csv", big_rows)
            with scratch_database(admin_url) as url:
                run = run_cli(url, big.parent)
            figures["big"] = {"file_mib": round(big.stat().st_size / 2**20), "rows": big_rows, **run}
            print(
                f"memory: {figures['big']['file_mib']} MiB file ({big_rows:,} rows) loaded by the CLI in"
                f" {run['s']:.1f}s, peak RSS {run['rss_mib']:.0f} MiB (target < 150)"
            )
        if args.rule:
            print("size rule: one file loaded in a warm process, medians")
            figures["rule"] = size_rule(admin_url, tmp, args.repeat)
        if args.cli_rounds > 0:
            figures["whole_process"] = whole_process.run(admin_url, args.cli_sizes, args.cli_rounds)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

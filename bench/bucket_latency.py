"""Small objects from a bucket whose every request pays a network delay: one GET at a time against
several at once, in one run.

Run: python -m bench.bucket_latency [--files 1000] [--latency-ms 10] [--database-url URL]

moto's server answers a GET in about 2 ms of its own CPU on 127.0.0.1; a managed store answers in
tens of milliseconds of network and service time. A proxy in front of moto adds ``--latency-ms``
to every request, and `watch --once --no-dbt` loads the same objects with
``watcher.small_files.FETCH_THREADS`` set to 1 (the baseline: one GET after another) and to its
default, alternately.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import bench_server, median, scratch_database, write_daily
from tests.s3_server import start_s3_server
from watcher.small_files import FETCH_THREADS

CHILD = (
    "import sys\n"
    "import watcher.small_files as small\n"
    "small.FETCH_THREADS = int(sys.argv[1])\n"
    "from watcher.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def _forward(source: socket.socket, target: socket.socket, delay: float) -> None:
    try:
        while data := source.recv(1 << 16):
            if delay:
                time.sleep(delay)
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def delaying_proxy(target_port: int, delay: float) -> Iterator[int]:
    """A TCP proxy on 127.0.0.1 that holds every chunk a client sends for ``delay`` seconds."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=_forward, args=(client, upstream, delay), daemon=True).start()
            threading.Thread(target=_forward, args=(upstream, client, 0.0), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def load_seconds(url: str, landing: str, env: dict[str, str], threads: int) -> float:
    command = [sys.executable, "-c", CHILD, str(threads), "watch", "--once", "--no-dbt", "--json"]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--metrics-addr", "off", "--data-dir", landing],
        env={**os.environ, **env, "DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"watch --once failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--database-url", help="server to measure on (default: as the tests choose)")
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], FETCH_THREADS: []}
    with (
        tempfile.TemporaryDirectory(prefix="wp-bench-latency-") as folder,
        bench_server(args.database_url) as admin,
    ):
        server = start_s3_server(Path(folder) / "moto.log")
        s3 = next(server)
        try:
            bucket = s3.new_bucket()
            for i in range(args.files):
                path = write_daily(
                    Path(folder) / f"dailyActivity_{i:05d}.csv", 7, users=7, id_base=4000000000 + i * 7
                )
                s3.put(bucket, f"lake/{path.name}", path.read_bytes())
            port = int(s3.endpoint.rsplit(":", 1)[1])
            with delaying_proxy(port, args.latency_ms / 1000) as proxy_port:
                env = {**s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy_port}"}
                for _ in range(args.repeat):
                    for threads in times:
                        with scratch_database(admin) as url:
                            times[threads].append(load_seconds(url, f"s3://{bucket}/lake/", env, threads))
        finally:
            server.close()
    one, many = median(times[1]), median(times[FETCH_THREADS])
    print(
        f"{args.files} objects, {args.latency_ms:g} ms per request: one GET at a time {args.files / one:.0f}"
        f" files/s ({one:.2f} s), {FETCH_THREADS} at once {args.files / many:.0f} files/s ({many:.2f} s),"
        f" {one / many:.1f}x"
    )
    print(json.dumps({"files": args.files, "latency_ms": args.latency_ms, "seconds": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

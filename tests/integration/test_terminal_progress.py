"""The progress display on a real pseudo-terminal: what it counts, its units, and logs above it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from tqdm import tqdm

from tests.daemon_helpers import REPO_ROOT
from tests.helpers import write_big_daily

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ROUTED_FILES = 4
BAR = re.compile(
    r"files (?P<done>\d+)/\d+: +(?P<pct>\d+)%\|.*\| (?P<n>[\d.]+\w?)B/(?P<total>[\d.]+\w?)B"
    r" \[.*, [\d.]+(?P<rate_unit>\w?B/s), (?P<rows>[\d,]+) rows/s\]"
)


def _run_on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal 160 columns wide; return the code, stdout and the screen bytes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(
        args, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    out = process.stdout.read().decode() if process.stdout else ""
    code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    return code, out, ANSI.sub("", screen.decode("utf-8", errors="replace"))


def test_the_bar_counts_files_to_read_in_megabytes_and_logs_go_above_it(
    migrated_url: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    sizes = 0
    for index in range(ROUTED_FILES):
        path = write_big_daily(lake / f"part{index}" / "dailyActivity_merged.csv", 40_000 + index, users=500)
        sizes += path.stat().st_size
    for index in range(3):  # ignored: no route takes these names
        (lake / f"notes{index}.csv").write_text("a,b\n1,2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
    env.update(DATABASE_URL=migrated_url, TERM="xterm", COLUMNS="160")
    code, out, screen = _run_on_a_terminal(
        [sys.executable, "-m", "watcher", "watch", "--once", "--no-dbt", "--data-dir", str(lake)], env
    )
    assert code == 0, (out, screen[-3000:])
    assert f"{ROUTED_FILES} loaded, 3 ignored" in out
    segments = [seg for line in screen.split("\n") for seg in line.split("\r") if seg.strip()]
    bars = [seg for seg in segments if "%|" in seg]
    assert bars, screen[-3000:]
    # Only the files to read are counted, and the last state shows them all done.
    assert all(re.match(rf"files \d/{ROUTED_FILES}: ", bar) for bar in bars), bars
    last = BAR.search(bars[-1])
    assert last is not None, bars[-1]
    assert last["done"] == str(ROUTED_FILES) and last["pct"] == "100"
    # Bytes in decimal units with their unit: the total is the routed files' size.
    expected_total = tqdm.format_sizeof(sizes, divisor=1000)
    assert last["n"] == last["total"] == expected_total and expected_total.endswith("M")
    assert last["rate_unit"] in ("B/s", "kB/s", "MB/s", "GB/s")
    assert int(last["rows"].replace(",", "")) > 0
    # Every log line stands on its own, never glued to the bar.
    logged = [
        seg for seg in segments if "file_loaded" in seg or "files_ignored" in seg or "pass_finished" in seg
    ]
    assert len(logged) == ROUTED_FILES + 1 + 1, logged  # the ignored files share one line
    assert not [seg for seg in logged if "%|" in seg or "rows/s" in seg]

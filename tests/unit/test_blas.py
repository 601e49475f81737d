"""The command's process loads numpy with one BLAS thread, unless its environment says otherwise.

Each case is a process of its own: OpenBLAS reads its setting once, when numpy is first imported.
The threads are counted from /proc, as the kernel sees them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")

# The command parses its arguments (`--help` exits there, after the setting is made), then the
# process imports numpy (as the binary COPY path does, through pyarrow) and counts its threads:
# OpenBLAS's pool is the main thread and one more per thread it was allowed.
_PROGRAM = """
import os, sys
from watcher.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
import numpy
print(len(os.listdir("/proc/self/task")))
"""


def _threads_after_numpy(environment: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def _environment(**settings: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    return {**environment, **settings}


def test_command_keeps_blas_on_one_thread() -> None:
    assert _threads_after_numpy(_environment()) == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS runs no more threads than cores")
def test_operator_setting_wins() -> None:
    assert _threads_after_numpy(_environment(OPENBLAS_NUM_THREADS="2")) == 2

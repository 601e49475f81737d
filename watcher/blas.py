"""numpy's BLAS kept on the calling thread.

Importing numpy (the binary COPY path does, through pyarrow) starts OpenBLAS's pool, a thread per
core, and those threads spin for a while waiting for work. The pipeline does no linear algebra, so
the spin only takes CPU from what runs beside it: on a machine that also runs PostgreSQL, from the
server's COPY (docs/design-decisions.md, "Binary COPY for large clean files").
"""

from __future__ import annotations

import os


def keep_blas_single_threaded() -> None:
    """One BLAS thread, unless the environment already says how many; effective only before
    numpy is first imported."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

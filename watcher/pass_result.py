"""What one pass did: its files' outcomes, its build, its status and the process's exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from watcher import runs
from watcher.ingest import FileOutcome

if TYPE_CHECKING:
    from watcher.transform import BuildResult

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INFRASTRUCTURE = 0, 1, 2, 3
LOADING_OUTCOMES = ("loaded", "duplicate")
"""The outcomes whose table the pass's build selects."""


@dataclass
class PassResult:
    trigger: str
    run_id: int | None = None
    outcomes: list[FileOutcome] = field(default_factory=list)
    build: BuildResult | None = None
    build_error: str | None = None
    infrastructure_error: str | None = None
    interrupted: bool = False
    """A stop request cut the pass short: files left pending, or a build cut off or not retried."""
    duration_s: float = 0.0

    def count(self, *outcomes: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome in outcomes)

    @property
    def failures(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.is_failure]

    @property
    def rows_loaded(self) -> int:
        return sum(o.rows_loaded for o in self.outcomes if o.outcome == "loaded")

    @property
    def rows_rejected(self) -> int:
        return sum(o.rows_rejected for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        if self.infrastructure_error or self.build_error:
            return EXIT_INFRASTRUCTURE
        if self.failures or (self.build is not None and self.build.status != "success"):
            return EXIT_FAILURES
        return EXIT_OK

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.infrastructure_error:
            return "failed"
        if self.exit_code == EXIT_OK:
            return "success"
        return "partial" if self.count("loaded", "skipped", "duplicate") else "failed"

    def error_summary(self) -> str | None:
        parts = [f"{o.relative}: {o.reason}" for o in self.failures]
        if self.build is not None and self.build.summary():
            parts.append(f"dbt: {self.build.summary()}")
        if self.build_error:
            parts.append(f"dbt: {self.build_error}")
        if self.infrastructure_error:
            parts.append(self.infrastructure_error)
        text = "; ".join(parts)
        return text[:4000] if text else None

    def totals(self) -> runs.RunTotals:
        return runs.RunTotals(
            status=self.status,
            files=runs.count_words(o.outcome for o in self.outcomes),
            rows_loaded=self.rows_loaded,
            rows_rejected=self.rows_rejected,
            dbt_status=self.build.status if self.build else ("error" if self.build_error else None),
            error_summary=self.error_summary(),
        )

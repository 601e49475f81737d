"""Every Prometheus object of the pipeline, and the HTTP endpoint that serves them.

Names follow Prometheus conventions: a ``wearable_`` prefix, ``_total`` on counters, base units
(``_seconds``). Labels have low cardinality (``table``, ``outcome``, ``status``); never a file name.

prometheus_client is imported when a ``Metrics`` is made, not with this module: a one-shot command
(``watch --once``, ``reprocess``) serves no /metrics, records into ``unrecorded()`` and never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 30, 60, 120, 300)
"""Finer around 1 s, the drop-to-ready target: a p50 read from the buckets is close to the truth."""


class Metrics:
    """The pipeline's metrics, registered on one registry (by default prometheus_client's own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram
        from prometheus_client.core import REGISTRY

        registry = REGISTRY if registry is None else registry
        self.registry = registry
        self.files_processed = Counter(
            "wearable_files_processed_total",
            "Files processed, by raw table and outcome.",
            ["table", "outcome"],
            registry=registry,
        )
        self.rows_loaded = Counter(
            "wearable_rows_loaded_total", "Rows loaded into raw tables.", ["table"], registry=registry
        )
        self.rows_rejected = Counter(
            "wearable_rows_rejected_total",
            "Rows quarantined in ops.rejected_rows.",
            ["table"],
            registry=registry,
        )
        self.load_duration = Histogram(
            "wearable_load_duration_seconds",
            "Time to load one file (read, checksum, COPY, manifest, commit).",
            ["table"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.dbt_build_duration = Histogram(
            "wearable_dbt_build_duration_seconds",
            "Duration of one dbt build: its models and their data tests.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.dbt_builds = Counter(
            "wearable_dbt_builds_total", "dbt builds, by status.", ["status"], registry=registry
        )
        self.drop_to_ready = Histogram(
            "wearable_drop_to_ready_seconds",
            "From the first sight of a file (its first event, or the scan that found it) to the models"
            " built on it: what the user waits for.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.settled_to_ready = Histogram(
            "wearable_settled_to_ready_seconds",
            "From a file settling in the landing zone to the models built on it (load and build).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.files_pending = Gauge(
            "wearable_files_pending", "Files seen but not yet processed.", registry=registry
        )
        self.oldest_pending_age = Gauge(
            "wearable_oldest_pending_file_age_seconds",
            "Age of the oldest file waiting to be processed (0 when none waits).",
            registry=registry,
        )
        self.last_load = Gauge(
            "wearable_last_successful_load_timestamp_seconds",
            "Unix time of the last file loaded.",
            registry=registry,
        )
        self.last_build = Gauge(
            "wearable_last_successful_build_timestamp_seconds",
            "Unix time of the last successful dbt build (models and data tests).",
            registry=registry,
        )
        self.watcher_backend = Gauge(
            "wearable_watcher_backend",
            "1 for the backend that notices new files (inotify or polling; listing for a bucket).",
            ["backend"],
            registry=registry,
        )
        self.database_up = Gauge(
            "wearable_database_up", "1 when the database answered the last check.", registry=registry
        )
        self.lock_timeouts = Counter(
            "wearable_lock_timeouts_total",
            "Statements that waited for a lock longer than the lock timeout, by step (load, dbt).",
            ["step"],
            registry=registry,
        )
        self.runs = Counter(
            "wearable_runs_total",
            "Pipeline passes, by trigger and status.",
            ["trigger", "status"],
            registry=registry,
        )

    def set_backend(self, backend: str) -> None:
        for name in dict.fromkeys(("inotify", "polling", backend)):
            self.watcher_backend.labels(backend=name).set(1 if name == backend else 0)


class _Unrecorded:
    """Stands for every instrument of ``Metrics`` and every call on it; nothing is kept."""

    def __getattr__(self, _name: str) -> _Unrecorded:
        return self

    def __call__(self, *_args: object, **_kwargs: object) -> _Unrecorded:
        return self


def unrecorded() -> Metrics:
    """Metrics that record nothing, for a process whose metrics no endpoint serves."""
    return cast(Metrics, _Unrecorded())

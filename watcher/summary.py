"""What a pass and the status command print: compact text for people, JSON for machines."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from watcher.manifest import ManifestEntry
from watcher.pipeline import EXIT_FAILURES, EXIT_OK, PassResult

IGNORED_SHOWN = 5
"""Ignored files the text summary names; the rest are counted (thousands of notes, one line)."""
PENDING_REASON = "still being written when the wait ran out; not read, run again once it is complete"


def exit_code(result: PassResult, pending: Sequence[str] = ()) -> int:
    """The pass's exit code; a clean pass that left files unread (``pending``) exits 1."""
    return EXIT_FAILURES if pending and result.exit_code == EXIT_OK else result.exit_code


def pass_as_dict(result: PassResult, *, pending: Sequence[str] = ()) -> dict[str, Any]:
    build = result.build
    counts: dict[str, int] = dict(Counter(o.outcome for o in result.outcomes))
    if pending:
        counts["pending"] = len(pending)
    return {
        "run_id": result.run_id,
        "trigger": result.trigger,
        "status": result.status,
        "exit_code": exit_code(result, pending),
        "duration_s": round(result.duration_s, 3),
        "counts": counts,
        "pending": list(pending),
        "rows_loaded": result.rows_loaded,
        "rows_rejected": result.rows_rejected,
        "files": [
            {
                "path": o.relative,
                "outcome": o.outcome,
                "table": o.table,
                "sha256": o.sha256,
                "rows_loaded": o.rows_loaded,
                "rows_rejected": o.rows_rejected,
                "reason": o.reason,
                "warnings": o.warnings,
                "duration_s": round(o.duration_s, 3),
            }
            for o in result.outcomes
        ],
        "dbt": None
        if build is None and result.build_error is None
        else {
            "status": build.status if build else "unavailable",
            "duration_s": round(build.duration_s, 3) if build else None,
            "tests": build.tests if build else None,
            "models_duration_s": (
                round(build.models_duration_s, 3) if build and build.models_duration_s is not None else None
            ),
            "selectors": list(build.selectors) if build else [],
            "failures": [
                {"node": n.unique_id, "status": n.status, "message": n.message} for n in build.failures
            ]
            if build
            else [],
            "error": result.build_error,
        },
        "error": result.infrastructure_error,
    }


def pass_as_text(result: PassResult, *, pending: Sequence[str] = ()) -> str:
    counts: Counter[str] = Counter(o.outcome for o in result.outcomes)
    counts["pending"] = len(pending)
    order = ("loaded", "skipped", "duplicate", "ignored", "rejected", "failed", "busy", "pending")
    parts = [f"{counts[k]} {k}" for k in order if counts[k]]
    lines = [
        f"run {result.run_id or '-'} ({result.trigger}): {result.status} in {result.duration_s:.1f}s"
        f" — {', '.join(parts) or 'nothing to do'}; {result.rows_loaded:,} rows loaded"
        + (f", {result.rows_rejected:,} rows rejected" if result.rows_rejected else "")
    ]
    ignored_shown = 0
    for o in result.outcomes:
        if o.outcome == "loaded":
            lines.append(f"  loaded    {o.relative} → raw.{o.table}: {o.rows_loaded:,} rows")
        elif o.outcome == "ignored" and ignored_shown >= IGNORED_SHOWN:
            continue
        elif o.outcome in ("rejected", "failed", "duplicate", "ignored"):
            ignored_shown += o.outcome == "ignored"
            lines.append(f"  {o.outcome:<9} {o.relative}: {o.reason}")
        if o.warnings:
            lines.append(f"  warning   {o.relative}: {o.warnings}")
    if counts["ignored"] > IGNORED_SHOWN:
        lines.append(f"  ignored   … and {counts['ignored'] - IGNORED_SHOWN:,} more (`status` lists them)")
    lines.extend(f"  pending   {path}: {PENDING_REASON}" for path in pending)
    if result.build is not None:
        b = result.build
        models = (
            f" (models built after {b.models_duration_s:.1f}s, then tested)"
            if b.tests == "after" and b.models_duration_s is not None
            else ""
        )
        lines.append(
            f"dbt build ({' '.join(b.selectors)}): {b.status} in {b.duration_s:.1f}s{models},"
            f" {len(b.nodes)} nodes"
        )
        lines.extend(
            f"  {n.status:<9} {n.unique_id}: {(n.message or '').splitlines()[0]}" for n in b.failures
        )
    if result.build_error:
        lines.append(f"dbt could not run: {result.build_error}")
    if result.infrastructure_error:
        lines.append(f"error: {result.infrastructure_error}")
    return "\n".join(lines)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def status_as_dict(entries: list[ManifestEntry], recent: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "files": [
            {
                "path": e.source_path,
                "sha256": e.source_sha256,
                "table": e.target_table,
                "status": e.status,
                "rows_loaded": e.rows_loaded,
                "rows_rejected": e.rows_rejected,
                "reason": e.error_reason,
                "duplicate_of": e.duplicate_of,
                "warnings": e.warnings,
                "loaded_at": _iso(e.loaded_at),
            }
            for e in entries
        ],
        "runs": [{k: (_iso(v) if isinstance(v, datetime) else v) for k, v in r.items()} for r in recent],
    }


def status_as_text(entries: list[ManifestEntry], recent: list[dict[str, Any]]) -> str:
    lines = [f"{len(entries)} files known"]
    for e in entries:
        sha = (e.source_sha256 or "")[:12]
        when = e.loaded_at.strftime("%Y-%m-%d %H:%M:%S") if e.loaded_at else "-"
        detail = e.error_reason or ""
        lines.append(
            f"  {e.status:<9} {e.source_path}  {sha:<12} {e.target_table or '-':<15}"
            f" rows={e.rows_loaded:<8} rejected={e.rows_rejected:<6} loaded_at={when}  {detail}".rstrip()
        )
    lines.append("recent runs")
    for r in recent:
        started = r["started_at"].strftime("%Y-%m-%d %H:%M:%S") if r["started_at"] else "-"
        lines.append(
            f"  #{r['run_id']:<5} {r['trigger']:<9} {r['status']:<8} {started}  loaded={r['files_loaded']}"
            f" skipped={r['files_skipped']} failed={r['files_failed']} rows={r['rows_loaded']}"
            f" dbt={r['dbt_status'] or '-'}" + (f"  {r['error_summary']}" if r["error_summary"] else "")
        )
    return "\n".join(lines)


def dump_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=str)

"""What a pass and the status command print: compact text for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from watcher.errortext import first_text_line
from watcher.manifest import ManifestEntry
from watcher.pass_result import EXIT_FAILURES, EXIT_OK, PassResult
from watcher.runs import WORDS, count_words, word

if TYPE_CHECKING:
    from watcher.quality import TableQuality

IGNORED_SHOWN = 5
"""Ignored files the text summary names; the rest are counted (thousands of notes, one line)."""
PENDING_REASON = "still being written when the wait ran out; not read, run again once it is complete"
EARLIER_ROWS_HELD = "the rows of its earlier version stay, now held by its copy"
"""After a file's line when its new version replaced rows that a copy of the earlier one took over."""


def exit_code(result: PassResult, pending: Sequence[str] = ()) -> int:
    """The pass's exit code; a clean pass that left files unread (``pending``) exits 1."""
    return EXIT_FAILURES if pending and result.exit_code == EXIT_OK else result.exit_code


def pass_as_dict(result: PassResult, *, pending: Sequence[str] = ()) -> dict[str, Any]:
    build = result.build
    return {
        "run_id": result.run_id,
        "trigger": result.trigger,
        "status": result.status,
        "exit_code": exit_code(result, pending),
        "duration_s": round(result.duration_s, 3),
        "counts": {w: n for w, n in _counts(result, pending).items() if n},
        "pending": list(pending),
        "rows_loaded": result.rows_loaded,
        "rows_rejected": result.rows_rejected,
        "files": [
            {
                "path": o.relative,
                "outcome": word(o.outcome),
                "table": o.table,
                "sha256": o.sha256,
                "rows_loaded": o.rows_loaded,
                "rows_rejected": o.rows_rejected,
                "reason": o.reason,
                "warnings": o.warnings,
                "duration_s": round(o.duration_s, 3),
                "earlier_rows_held_by": o.earlier_rows_held_by,
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


def _counts(result: PassResult, pending: Sequence[str]) -> dict[str, int]:
    """Files per vocabulary word; files left unread because they were still changing are pending."""
    counts = count_words(o.outcome for o in result.outcomes)
    counts["pending"] += len(pending)
    return counts


def pass_as_text(result: PassResult, *, pending: Sequence[str] = ()) -> str:
    counts = _counts(result, pending)
    parts = [f"{counts[w]} {w}" for w in WORDS if counts[w]]
    lines = [
        f"run {result.run_id or '-'} ({result.trigger}): {result.status} in {result.duration_s:.1f}s"
        f" — {', '.join(parts) or 'nothing to do'}; {result.rows_loaded:,} rows loaded"
        + (f", {result.rows_rejected:,} rows rejected" if result.rows_rejected else "")
    ]
    ignored_shown = 0
    for o in result.outcomes:
        status = word(o.outcome)
        if status == "loaded":
            lines.append(f"  loaded    {o.relative} → raw.{o.table}: {o.rows_loaded:,} rows")
        elif status == "ignored" and ignored_shown >= IGNORED_SHOWN:
            continue
        elif status in ("rejected", "failed", "duplicate", "ignored", "pending"):
            ignored_shown += status == "ignored"
            lines.append(f"  {status:<9} {o.relative}: {o.reason}")
        if o.earlier_rows_held_by:
            lines.append(f"  {'':<9} {EARLIER_ROWS_HELD} {o.earlier_rows_held_by}")
        if o.warnings:
            lines.append(f"  warning   {o.relative}: {o.warnings}")
    if counts["ignored"] > IGNORED_SHOWN:
        lines.append(f"  ignored   … and {counts['ignored'] - IGNORED_SHOWN:,} more (`status` lists them)")
    lines.extend(f"  pending   {path}: {PENDING_REASON}" for path in pending)
    if result.outcomes and all(o.table is None and o.outcome == "ignored" for o in result.outcomes):
        from watcher.inventory import no_routed_file_hint  # here: a pass rarely needs the hint

        lines.append(f"hint: {no_routed_file_hint()}")
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
        lines.extend(f"  {n.status:<9} {n.unique_id}: {first_text_line(n.message)}" for n in b.failures)
    if result.build_error:
        lines.append(f"dbt could not run: {result.build_error}")
    if result.infrastructure_error:
        lines.append(f"error: {result.infrastructure_error}")
    return "\n".join(lines)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def status_as_dict(
    entries: list[ManifestEntry], recent: list[dict[str, Any]], quality: Sequence[TableQuality] = ()
) -> dict[str, Any]:
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
        "quality": [q.as_dict() for q in quality],
        "runs": [{k: (_iso(v) if isinstance(v, datetime) else v) for k, v in r.items()} for r in recent],
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int]) -> list[str]:
    """Rows under a header, each column as wide as its widest cell; numbers (``right``) right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return (
            "  "
            + "  ".join(
                cell.rjust(width) if i in right else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )

    return [line(header), *(line(r) for r in rows)]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def status_as_text(
    entries: list[ManifestEntry], recent: list[dict[str, Any]], quality: Sequence[TableQuality] = ()
) -> str:
    lines = [f"{len(entries)} files known"]
    if entries:
        rows = [
            [
                e.status,
                e.source_path,
                (e.source_sha256 or "")[:12],
                e.target_table or "-",
                f"{e.rows_loaded:,}",
                f"{e.rows_rejected:,}",
                _when(e.loaded_at),
                e.error_reason or "",
            ]
            for e in entries
        ]
        header = ["status", "path", "sha256", "table", "rows", "rejected", "loaded at", "reason"]
        lines += _table(header, rows, frozenset({4, 5}))
    if quality:
        lines += ["", "data quality (rows per raw table)"]
        header = [
            "table",
            "raw rows",
            "kept",
            "exact duplicates collapsed",
            "superseded by a newer export",
            "rejected",
        ]
        rows = [
            [
                q.table,
                f"{q.raw_rows:,}",
                f"{q.kept_rows:,}",
                f"{q.exact_duplicates:,}",
                f"{q.superseded:,}",
                f"{q.rejected_rows:,}",
            ]
            for q in quality
        ]
        lines += _table(header, rows, frozenset({1, 2, 3, 4, 5}))
    lines += ["", "recent runs"]
    if recent:
        header = ["run", "trigger", "status", "started", *WORDS, "rows", "dbt", "errors"]
        rows = [
            [
                f"#{r['run_id']}",
                r["trigger"],
                r["status"],
                _when(r["started_at"]),
                *(str(r.get(f"files_{w}", 0)) for w in WORDS),
                f"{r['rows_loaded']:,}",
                r["dbt_status"] or "-",
                r["error_summary"] or "",
            ]
            for r in recent
        ]
        lines += _table(header, rows, frozenset(range(4, 5 + len(WORDS))))
    else:
        lines.append("  none yet")
    return "\n".join(lines)


def dump_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=str)

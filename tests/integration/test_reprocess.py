"""``wearable-pipeline reprocess``: a rejected file runs again after its budget or the file itself
was fixed; loaded files stay exactly as they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from tests.bad_inputs import _replace_field, csv_bytes, daily_line, daily_lines
from tests.helpers import DAILY_HEADER, run_cli

OVER_BUDGET = "batch/dailyActivity_over_budget.csv"
BROKEN_HEADER = "batch/dailyActivity_broken_header.csv"
CLEAN = "batch/dailyActivity_clean.csv"
RAW_ROWS_OF_FILE = (
    "SELECT count(*) FROM raw.daily_activity JOIN ops.file_loads l ON l.load_id = _load_id"
    " WHERE l.source_path = %s"
)


def build(lake: Path) -> None:
    lines = daily_lines(1, 100)
    for number in (5, 50, 95):
        lines[number - 2] = _replace_field(lines[number - 2], 2, b"n/a")
    (lake / "batch").mkdir(parents=True)
    (lake / OVER_BUDGET).write_bytes(csv_bytes(DAILY_HEADER, lines))
    (lake / BROKEN_HEADER).write_bytes(
        csv_bytes(DAILY_HEADER.replace("TotalSteps", "Steps"), daily_lines(2, 20))
    )
    (lake / CLEAN).write_bytes(csv_bytes(DAILY_HEADER, daily_lines(3, 30)))


def manifest(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return {r["source_path"]: r for r in cur.execute("SELECT * FROM ops.raw_ingest_manifest")}


def scalar(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def cli(args: list[str], url: str, **env: str) -> tuple[int, dict[str, Any]]:
    done = run_cli([*args, "--json", "--no-dbt"], url, extra_env=env)
    assert done.stdout.strip(), done.stderr[-2000:]
    return done.returncode, json.loads(done.stdout)


def test_reprocess_after_fixing_the_budget_then_the_file(migrated_url: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    build(lake)
    code, _ = cli(["watch", "--once", "--data-dir", str(lake)], migrated_url)
    assert code == 1
    before = manifest(migrated_url)
    assert before[OVER_BUDGET]["status"] == "rejected"
    assert "3 of 100 rows are bad" in before[OVER_BUDGET]["error_reason"]
    assert "reprocess" in before[OVER_BUDGET]["error_reason"]
    assert before[BROKEN_HEADER]["error_reason"] == "required columns missing: TotalSteps"
    assert before[CLEAN]["status"] == "loaded"
    rejected_lines = (
        "SELECT array_agg(line_number ORDER BY line_number) FROM ops.rejected_rows WHERE source_path = %s"
    )
    assert scalar(migrated_url, rejected_lines, OVER_BUDGET) == [5, 50, 95]

    # The budget is raised for this export: the rejected file loads, its bad lines stay recorded.
    code, result = cli(
        ["reprocess", "--data-dir", str(lake), OVER_BUDGET, CLEAN],
        migrated_url,
        WEARABLE_ERROR_BUDGET_FRACTION="0.05",
    )
    assert code == 0, result
    assert [(f["path"], f["outcome"]) for f in result["files"]] == [(OVER_BUDGET, "loaded")]
    after = manifest(migrated_url)
    assert (
        after[OVER_BUDGET]["status"],
        after[OVER_BUDGET]["rows_loaded"],
        after[OVER_BUDGET]["rows_rejected"],
    ) == (
        "loaded",
        97,
        3,
    )
    assert "3 bad lines not loaded" in after[OVER_BUDGET]["warnings"]
    assert scalar(migrated_url, rejected_lines, OVER_BUDGET) == [5, 50, 95]
    for key in ("load_id", "loaded_at", "source_sha256", "rows_loaded"):
        assert after[CLEAN][key] == before[CLEAN][key]  # loaded files are untouched
    assert after[BROKEN_HEADER]["status"] == "rejected"  # not named: not touched

    # The header is fixed in the file: --all-rejected picks it up.
    (lake / BROKEN_HEADER).write_bytes(csv_bytes(DAILY_HEADER, daily_lines(2, 20)))
    code, result = cli(["reprocess", "--all-rejected", "--data-dir", str(lake)], migrated_url)
    assert code == 0, result
    assert [(f["path"], f["outcome"]) for f in result["files"]] == [(BROKEN_HEADER, "loaded")]
    assert scalar(migrated_url, RAW_ROWS_OF_FILE, BROKEN_HEADER) == 20

    # The bad lines are fixed in the file: the new version replaces the old, and so do its records.
    lines = daily_lines(1, 100)
    (lake / OVER_BUDGET).write_bytes(csv_bytes(DAILY_HEADER, lines))
    code, _ = cli(["watch", "--once", "--data-dir", str(lake)], migrated_url)
    assert code == 0
    final = manifest(migrated_url)
    assert (final[OVER_BUDGET]["rows_loaded"], final[OVER_BUDGET]["rows_rejected"]) == (100, 0)
    assert scalar(migrated_url, rejected_lines, OVER_BUDGET) is None
    assert scalar(migrated_url, RAW_ROWS_OF_FILE, OVER_BUDGET) == 100
    triggers = scalar(migrated_url, "SELECT array_agg(trigger ORDER BY run_id) FROM ops.pipeline_runs")
    assert triggers == ["once", "reprocess", "reprocess", "once"]


def test_reprocess_of_a_file_still_bad_keeps_one_record_per_bad_line(
    migrated_url: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    build(lake)
    cli(["watch", "--once", "--data-dir", str(lake)], migrated_url)
    for _ in range(2):
        code, result = cli(["reprocess", "--data-dir", str(lake), OVER_BUDGET], migrated_url)
        assert code == 1
        assert result["files"][0]["outcome"] == "rejected"
    count = scalar(migrated_url, "SELECT count(*) FROM ops.rejected_rows WHERE source_path = %s", OVER_BUDGET)
    assert count == 3


def test_reprocess_of_a_loaded_file_changes_nothing(migrated_url: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "batch").mkdir(parents=True)
    lines = daily_lines(7, 300)
    lines[10] = _replace_field(daily_line(7010), 2, b"x")
    (lake / CLEAN).write_bytes(csv_bytes(DAILY_HEADER, lines))
    assert cli(["watch", "--once", "--data-dir", str(lake)], migrated_url)[0] == 0
    before = manifest(migrated_url)[CLEAN]
    code, result = cli(["reprocess", "--data-dir", str(lake), CLEAN], migrated_url)
    assert code == 0 and result["files"] == []
    assert manifest(migrated_url)[CLEAN] == before

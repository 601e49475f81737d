"""One vocabulary for a file's fate in the summary, ops.pipeline_runs, metrics and status;
status's aligned columns and its data-quality lines."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from datetime import date
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry

from tests.helpers import DAILY_HEADER, daily_rows, mdy, once_json, run_cli, settings_for_tests, write_csv

WORDS = ("loaded", "duplicate", "ignored", "rejected", "failed", "pending", "unchanged")


def _lake(tmp_path: Path) -> Path:
    """One file loaded, a copy of it (duplicate), an unrouted name (ignored), an empty file (rejected)."""
    lake = tmp_path / "lake"
    first = write_csv(lake / "a" / "dailyActivity_merged.csv", DAILY_HEADER, daily_rows(1, 3))
    (lake / "copy").mkdir()
    (lake / "copy" / "dailyActivity_merged.csv").write_bytes(first.read_bytes())
    (lake / "notes.csv").write_text("a,b\n1,2\n")
    (lake / "dailyActivity_empty.csv").write_bytes(b"")
    return lake


def test_the_runs_table_and_the_summary_count_in_the_status_words(migrated_url: str, tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    code, summary = once_json(lake, migrated_url, "--no-dbt")
    assert code == 1
    assert summary["counts"] == {"loaded": 1, "duplicate": 1, "ignored": 1, "rejected": 1}
    with psycopg.connect(migrated_url) as conn:
        row = conn.execute(
            "SELECT files_loaded, files_duplicate, files_ignored, files_rejected, files_failed,"
            " files_pending, files_unchanged FROM ops.pipeline_runs"
        ).fetchone()
    assert row == (1, 1, 1, 1, 0, 0, 0)
    done = run_cli(["status", "--data-dir", str(lake)], migrated_url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped" not in done.stdout
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("run "))
    assert re.split(r"\s{2,}", header.strip())[4:11] == list(WORDS)
    run_line = lines[lines.index(header) + 1]
    # Aligned: each count ends where its header word ends.
    for word_, value in zip(WORDS, ("1", "1", "1", "1", "0", "0", "0"), strict=True):
        end = header.index(f" {word_}") + 1 + len(word_)
        assert run_line[end - len(value) : end] == value, (word_, header, run_line)
    files_header = next(line for line in lines if line.lstrip().startswith("status "))
    table_column = files_header.index("table")
    for line in lines[lines.index(files_header) + 1 : lines.index(files_header) + 5]:
        assert line[table_column - 2 : table_column] == "  "  # the path column never pushes the next


def test_the_metrics_and_logs_use_the_same_words(migrated_url: str, tmp_path: Path) -> None:
    from watcher.landing.scanner import scan
    from watcher.metrics import Metrics
    from watcher.pipeline import Pipeline

    lake = _lake(tmp_path)
    registry = CollectorRegistry()
    settings = dataclasses.replace(settings_for_tests(lake, migrated_url), run_dbt=False)
    pipeline = Pipeline(settings, migrated_url, Metrics(registry))
    try:
        pipeline.run_pass(list(scan(lake)), "once")
        touched = lake / "a" / "dailyActivity_merged.csv"
        os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
        pipeline.run_pass(pipeline.pending(scan(lake)), "once")
    finally:
        pipeline.close()
    outcomes = {
        sample.labels["outcome"]
        for metric in registry.collect()
        if metric.name == "wearable_files_processed"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value
    }
    assert outcomes == {"loaded", "duplicate", "ignored", "rejected", "unchanged"}
    with psycopg.connect(migrated_url) as conn:
        last = conn.execute(
            "SELECT files_unchanged, files_loaded FROM ops.pipeline_runs ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
    assert last == (1, 0)


def test_status_counts_superseded_and_collapsed_rows_per_table(migrated_url: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    first = daily_rows(1, 3, start=date(2016, 4, 12))
    write_csv(lake / "2016-04-12_2016-04-14" / "dailyActivity_merged.csv", DAILY_HEADER, first)
    # The next export repeats 4/13 exactly, corrects 4/14 and adds 4/15.
    corrected = first[2].replace(",1022,", ",5022,", 1)
    assert corrected != first[2]
    extra = first[2].replace(mdy(date(2016, 4, 14)), mdy(date(2016, 4, 15)))
    write_csv(
        lake / "2016-04-13_2016-04-15" / "dailyActivity_merged.csv",
        DAILY_HEADER,
        [first[1], corrected, extra, "1503960366,not a date,1,1,1,0,1,1,1,0,1,1,1,1,1"],
    )
    loaded = run_cli(
        ["watch", "--once", "--no-dbt", "--data-dir", str(lake)],
        migrated_url,
        extra_env={"WEARABLE_ERROR_BUDGET_FRACTION": "0.5"},  # the bad line is quarantined, not the file
    )
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr[-2000:]
    done = run_cli(["status", "--json", "--data-dir", str(lake)], migrated_url)
    assert done.returncode == 0, done.stderr[-2000:]
    quality = {q["table"]: q for q in json.loads(done.stdout)["quality"]}
    assert quality["daily_activity"] == {
        "table": "daily_activity",
        "raw_rows": 6,
        "kept_rows": 4,
        "exact_duplicates": 1,
        "superseded": 1,
        "rejected_rows": 1,
    }
    assert quality["sleep"]["raw_rows"] == 0
    text = run_cli(["status", "--data-dir", str(lake)], migrated_url).stdout
    assert "exact duplicates collapsed" in text and "superseded by a newer export" in text

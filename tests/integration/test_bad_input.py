"""The bad-input corpus: every kind of bad input ends with a reason, every good file still loads.

The whole corpus (``tests/bad_inputs.py``) goes through one real ``watch --once`` run: each case
sits in its own folder beside a good file, and the test for each case reads what the run
recorded: the manifest (what ``status`` shows), ``ops.rejected_rows``, the raw table, the runs
table and the log lines.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.bad_inputs import Case, all_cases, build_lake
from tests.conftest import with_dbname
from tests.helpers import run_cli

CASES = all_cases()


@dataclass
class CorpusRun:
    exit_code: int
    summary: dict[str, Any]
    status: dict[str, Any]
    log_events: list[dict[str, Any]]
    manifest: dict[str, dict[str, Any]]
    rejected: dict[str, list[dict[str, Any]]]
    raw_lines: dict[str, list[int]]
    run_row: dict[str, Any]


@pytest.fixture(scope="module")
def corpus_run(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusRun]:
    name = f"wp_corpus_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_dbname(pg_admin_url, name)
    try:
        lake = tmp_path_factory.mktemp("corpus") / "lake"
        build_lake(lake, CASES)
        done = run_cli(["watch", "--once", "--json", "--no-dbt", "--data-dir", str(lake)], url)
        status = run_cli(["status", "--json", "--runs", "1"], url)
        assert status.returncode == 0, status.stderr[-2000:]
        with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            manifest = {r["source_path"]: r for r in cur.execute("SELECT * FROM ops.raw_ingest_manifest")}
            rejected: dict[str, list[dict[str, Any]]] = {}
            for r in cur.execute("SELECT * FROM ops.rejected_rows ORDER BY source_path, line_number"):
                rejected.setdefault(r["source_path"], []).append(r)
            raw_lines: dict[str, list[int]] = {}
            for r in cur.execute(
                "SELECT l.source_path AS path, _line_number AS line FROM raw.daily_activity"
                " JOIN ops.file_loads l ON l.load_id = _load_id UNION ALL"
                " SELECT l.source_path, _line_number FROM raw.sleep"
                " JOIN ops.file_loads l ON l.load_id = _load_id ORDER BY 1, 2"
            ):
                raw_lines.setdefault(r["path"], []).append(r["line"])
            run_row = cur.execute("SELECT * FROM ops.pipeline_runs ORDER BY run_id DESC LIMIT 1").fetchone()
        events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        assert done.stdout.strip(), done.stderr[-3000:]
        yield CorpusRun(
            done.returncode,
            json.loads(done.stdout),
            json.loads(status.stdout),
            events,
            manifest,
            rejected,
            raw_lines,
            run_row or {},
        )
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_corpus_is_large_enough() -> None:
    bad = [c for c in CASES if not c.name.startswith("ok_")]
    assert len(bad) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


def test_once_exits_1_and_reports_every_file(corpus_run: CorpusRun) -> None:
    assert corpus_run.exit_code == 1
    reported = {f["path"] for f in corpus_run.summary["files"]}
    for case in CASES:
        assert case.relative() in reported, case.name
        assert case.good_relative() in reported, case.name
    assert corpus_run.summary["status"] == "partial"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_outcome(corpus_run: CorpusRun, case: Case) -> None:
    entry = corpus_run.manifest.get(case.relative())
    assert entry is not None, f"no manifest entry for {case.relative()}"
    assert entry["status"] == case.status, entry
    if case.reason is None:
        assert entry["error_reason"] is None
    else:
        assert case.reason in (entry["error_reason"] or ""), entry["error_reason"]
        assert "\n" not in entry["error_reason"]
    assert entry["rows_loaded"] == case.rows_loaded
    loaded = corpus_run.raw_lines.get(case.relative(), [])
    assert len(loaded) == case.rows_loaded
    if case.loaded_lines is not None:
        assert loaded == list(case.loaded_lines)
    if case.warning:
        assert case.warning in (entry["warnings"] or ""), entry["warnings"]
    recorded = {r["line_number"]: r for r in corpus_run.rejected.get(case.relative(), [])}
    for expected in case.rejected:
        row = recorded.get(expected.line_number)
        assert row is not None, f"line {expected.line_number} not in ops.rejected_rows: {sorted(recorded)}"
        assert row["raw_line"] == expected.raw_line
        assert expected.reason in row["reason"], row["reason"]
        assert row["source_sha256"] == entry["source_sha256"]
        assert row["target_table"] == case.table
    if case.status == "loaded":
        assert entry["rows_rejected"] == len(case.rejected) == len(recorded)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_good_file_beside_it_loaded_in_full(corpus_run: CorpusRun, case: Case) -> None:
    entry = corpus_run.manifest[case.good_relative()]
    assert (entry["status"], entry["rows_loaded"], entry["rows_rejected"]) == ("loaded", case.good_rows, 0)
    assert corpus_run.raw_lines[case.good_relative()] == list(range(2, 2 + case.good_rows))


def test_status_shows_each_reason(corpus_run: CorpusRun) -> None:
    files = {f["path"]: f for f in corpus_run.status["files"]}
    for case in CASES:
        if case.reason:
            assert case.reason in files[case.relative()]["reason"], case.name


def test_each_bad_file_has_a_log_line_with_its_reason(corpus_run: CorpusRun) -> None:
    by_path = {e.get("path"): e for e in corpus_run.log_events if e.get("step") == "load"}
    ignored = [e for e in corpus_run.log_events if e.get("event") == "files_ignored"]
    for case in CASES:
        if case.status == "ignored":  # one line for all ignored files of a pass, with examples
            assert any(case.relative() in e["examples"] and case.reason in e["reason"] for e in ignored)
            continue
        event = by_path[case.relative()]
        assert event["status"] == case.status, case.name
        if case.reason:
            assert case.reason in event["reason"], case.name
        expected = {"rejected": "file_rejected", "failed": "file_failed", "ignored": "file_ignored"}
        assert event["event"] == expected.get(case.status, "file_loaded")


def test_the_runs_table_counts_the_failures(corpus_run: CorpusRun) -> None:
    run = corpus_run.run_row
    rejected = [c for c in CASES if c.status == "rejected"]
    failed = [c for c in CASES if c.status == "failed"]
    extra_rejects = 1  # the second link of the loop is a file of its own
    assert run["status"] == "partial"
    assert (run["files_rejected"], run["files_failed"]) == (len(rejected) + extra_rejects, len(failed))
    assert run["rows_rejected"] == sum(len(r) for r in corpus_run.rejected.values())
    assert "the file is empty" in run["error_summary"]


def test_a_link_out_of_the_lake_is_never_read(corpus_run: CorpusRun) -> None:
    assert not any("secret" in path for path in corpus_run.raw_lines)
    assert not any("secret" in path for path in corpus_run.manifest)


def test_reasons_are_one_line_each(corpus_run: CorpusRun) -> None:
    for entry in corpus_run.manifest.values():
        assert "\n" not in (entry["error_reason"] or "")
        assert "\n" not in (entry["warnings"] or "")
    for rows in corpus_run.rejected.values():
        for row in rows:
            assert "\n" not in row["reason"]


def _lake_path(tmp: Path) -> Path:
    return tmp / "lake"

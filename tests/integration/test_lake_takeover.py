"""A path whose content changes while a copy of its old content lives on in the lake: the copy
takes the old load over, so that the raw tables keep the rows of every content the lake holds.

The monthly workflow of an export that always carries the same name: load March's
``dailyActivity_merged.csv``, move it to ``archive/`` (recorded as a duplicate), copy April's
export to ``dailyActivity_merged.csv``. March's rows stay, owned by the archived copy.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql

from tests.conftest import scratch_database
from tests.helpers import DAILY_HEADER, daily_rows, once_json, run_cli, settings_for_tests, write_csv
from watcher.landing.scanner import scan
from watcher.metrics import Metrics
from watcher.pass_result import PassResult
from watcher.pipeline import Pipeline
from watcher.summary import EARLIER_ROWS_HELD

MARCH = "2016-03-12_2016-04-11"
APRIL = "2016-04-12_2016-05-12"
MERGED = "dailyActivity_merged.csv"
ARCHIVE = "archive/dailyActivity_2016-03.csv"


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows_in(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines()[1:] if line.strip())


def rows_per_content(url: str) -> Counter[str]:
    """How many raw rows each content (the sha256 of its load) has in raw.daily_activity."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT l.source_sha256, count(*) FROM raw.daily_activity AS r"
            " JOIN ops.file_loads AS l ON l.load_id = r._load_id GROUP BY 1"
        ).fetchall()
    return Counter({str(sha): int(count) for sha, count in rows})


def manifest(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return {r["source_path"]: r for r in cur.execute("SELECT * FROM ops.raw_ingest_manifest")}


def file_loads(url: str) -> dict[int, dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return {r["load_id"]: r for r in cur.execute("SELECT * FROM ops.file_loads")}


def one_pass(pipeline: Pipeline, lake: Path) -> PassResult:
    """What `watch --once --no-dbt` does, in-process."""
    return pipeline.run_pass(pipeline.pending(scan(lake)), "once")


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    path = tmp_path / "lake"
    path.mkdir()
    return path


@pytest.fixture
def pipeline(lake: Path, migrated_url: str) -> Any:
    settings = settings_for_tests(lake, migrated_url)
    made = Pipeline(settings, migrated_url, Metrics(CollectorRegistry()))
    try:
        yield made
    finally:
        made.close()


def test_the_archived_month_keeps_its_rows_when_the_export_is_overwritten(
    fitbit_dir: Path, lake: Path, pipeline: Pipeline, migrated_url: str
) -> None:
    march, april = fitbit_dir / MARCH / MERGED, fitbit_dir / APRIL / MERGED
    shutil.copyfile(march, lake / MERGED)
    assert one_pass(pipeline, lake).count("loaded") == 1
    march_load = manifest(migrated_url)[MERGED]["load_id"]

    (lake / "archive").mkdir()
    (lake / MERGED).rename(lake / ARCHIVE)
    assert one_pass(pipeline, lake).count("duplicate") == 1
    assert manifest(migrated_url)[ARCHIVE]["duplicate_of"] == MERGED

    shutil.copyfile(april, lake / MERGED)
    result = one_pass(pipeline, lake)
    assert result.status == "success" and result.count("loaded") == 1

    assert rows_per_content(migrated_url) == {sha_of(march): rows_in(march), sha_of(april): rows_in(april)}
    entries, loads = manifest(migrated_url), file_loads(migrated_url)
    assert entries[ARCHIVE]["status"] == "loaded"
    assert entries[ARCHIVE]["load_id"] == march_load  # taken over, not loaded again
    assert entries[ARCHIVE]["duplicate_of"] is None
    assert entries[ARCHIVE]["rows_loaded"] == rows_in(march)
    assert loads[march_load]["source_path"] == ARCHIVE  # the rows' lineage names a path that has them
    april_load = entries[MERGED]["load_id"]
    assert entries[MERGED]["source_sha256"] == sha_of(april)
    assert loads[april_load]["replaces_load_id"] is None  # nothing was replaced
    assert len(loads) == 2

    # nothing is pending any more, and the overwritten path may get March back: a duplicate again
    assert pipeline.pending(scan(lake)) == []
    shutil.copyfile(march, lake / MERGED)
    assert one_pass(pipeline, lake).count("duplicate") == 1
    entries = manifest(migrated_url)
    assert entries[MERGED]["status"] == "duplicate" and entries[MERGED]["duplicate_of"] == ARCHIVE
    assert rows_per_content(migrated_url) == {sha_of(march): rows_in(march)}  # April's only path changed


def _small(lake: Path, relative: str, users: int, days: int, first_id: int) -> str:
    path = write_csv(lake / relative, DAILY_HEADER, daily_rows(users, days, first_id=first_id))
    return sha_of(path)


def test_two_duplicates_one_takes_over_the_other_follows(
    lake: Path, pipeline: Pipeline, migrated_url: str
) -> None:
    old = _small(lake, "dailyActivity_a.csv", 2, 3, 100)
    one_pass(pipeline, lake)
    (lake / "x").mkdir()
    shutil.copyfile(lake / "dailyActivity_a.csv", lake / "x" / "dailyActivity_b.csv")
    shutil.copyfile(lake / "dailyActivity_a.csv", lake / "x" / "dailyActivity_c.csv")
    assert one_pass(pipeline, lake).count("duplicate") == 2
    new = _small(lake, "dailyActivity_a.csv", 1, 4, 200)
    one_pass(pipeline, lake)

    assert rows_per_content(migrated_url) == {old: 6, new: 4}
    entries = manifest(migrated_url)
    owner = entries["x/dailyActivity_b.csv"]
    assert owner["status"] == "loaded" and owner["source_sha256"] == old
    follower = entries["x/dailyActivity_c.csv"]
    assert follower["status"] == "duplicate" and follower["duplicate_of"] == "x/dailyActivity_b.csv"
    assert follower["error_reason"] == "same content as x/dailyActivity_b.csv, which is already loaded"

    # the new owner changes too: the follower takes over in turn
    _small(lake, "x/dailyActivity_b.csv", 3, 1, 300)
    one_pass(pipeline, lake)
    assert rows_per_content(migrated_url) == {old: 6, new: 4, sha_of(lake / "x/dailyActivity_b.csv"): 3}
    assert manifest(migrated_url)["x/dailyActivity_c.csv"]["status"] == "loaded"


def test_a_copy_and_a_new_version_in_one_pass_say_where_the_rows_went(lake: Path, migrated_url: str) -> None:
    """The copy is answered first (a duplicate of the old content), then the new version loads and
    the copy takes the old rows over: the summary of that one pass tells both, in JSON and text."""
    old = _small(lake, "dailyActivity_a.csv", 2, 3, 100)
    code, first = once_json(lake, migrated_url, "--no-dbt")
    assert code == 0 and first["counts"] == {"loaded": 1}, first
    (lake / "archive").mkdir()
    shutil.copy2(lake / "dailyActivity_a.csv", lake / "archive" / "dailyActivity_a.csv")
    new = _small(lake, "dailyActivity_a.csv", 1, 4, 200)

    code, second = once_json(lake, migrated_url, "--no-dbt")
    assert code == 0 and second["counts"] == {"duplicate": 1, "loaded": 1}, second
    files = {f["path"]: f for f in second["files"]}
    assert files["archive/dailyActivity_a.csv"]["outcome"] == "duplicate"
    assert files["archive/dailyActivity_a.csv"]["earlier_rows_held_by"] is None
    assert files["dailyActivity_a.csv"]["outcome"] == "loaded"
    assert files["dailyActivity_a.csv"]["earlier_rows_held_by"] == "archive/dailyActivity_a.csv"
    assert rows_per_content(migrated_url) == {old: 6, new: 4}
    assert manifest(migrated_url)["archive/dailyActivity_a.csv"]["status"] == "loaded"

    shutil.copy2(lake / "dailyActivity_a.csv", lake / "archive" / "dailyActivity_b.csv")
    third = _small(lake, "dailyActivity_a.csv", 3, 1, 300)
    text = run_cli(["watch", "--once", "--no-dbt", "--data-dir", str(lake)], migrated_url).stdout
    assert f"{EARLIER_ROWS_HELD} archive/dailyActivity_b.csv" in text, text
    assert rows_per_content(migrated_url) == {old: 6, new: 4, third: 3}

    fourth = _small(lake, "dailyActivity_a.csv", 2, 2, 400)  # no copy of the third: its rows go
    text = run_cli(["watch", "--once", "--no-dbt", "--data-dir", str(lake)], migrated_url).stdout
    assert "dailyActivity_a.csv → raw.daily_activity: 4 rows" in text and EARLIER_ROWS_HELD not in text, text
    assert rows_per_content(migrated_url) == {old: 6, new: 4, fourth: 4}


def test_a_duplicate_that_changed_before_the_owner_is_no_heir(
    lake: Path, pipeline: Pipeline, migrated_url: str
) -> None:
    old = _small(lake, "dailyActivity_a.csv", 2, 3, 100)
    shutil.copyfile(lake / "dailyActivity_a.csv", lake / "dailyActivity_b.csv")
    one_pass(pipeline, lake)
    assert manifest(migrated_url)["dailyActivity_b.csv"]["status"] == "duplicate"
    other = _small(lake, "dailyActivity_b.csv", 1, 2, 500)  # the copy changes first
    new = _small(lake, "dailyActivity_a.csv", 1, 4, 200)  # then the original
    one_pass(pipeline, lake)
    assert old not in rows_per_content(migrated_url)  # no path has it any more
    assert rows_per_content(migrated_url) == {other: 2, new: 4}


def test_a_rejected_version_keeps_the_rows_and_a_copy_inherits_them_later(
    lake: Path, pipeline: Pipeline, migrated_url: str
) -> None:
    old = _small(lake, "dailyActivity_a.csv", 2, 3, 100)
    one_pass(pipeline, lake)
    (lake / "dailyActivity_a.csv").write_text(DAILY_HEADER + "\r\n")  # a header and no rows
    assert one_pass(pipeline, lake).count("rejected") == 1
    assert rows_per_content(migrated_url) == {old: 6}  # the earlier version's rows stay

    # the same content appears elsewhere: a duplicate of the rows the rejected path kept
    _small(lake, "archive/dailyActivity_a.csv", 2, 3, 100)
    assert one_pass(pipeline, lake).count("duplicate") == 1
    entries = manifest(migrated_url)
    copy = entries["archive/dailyActivity_a.csv"]
    assert copy["status"] == "duplicate" and copy["duplicate_of"] == "dailyActivity_a.csv"
    assert "kept from an earlier version" in copy["error_reason"]
    assert rows_per_content(migrated_url) == {old: 6}

    # the rejected path gets a good version: the archived rows stay
    new = _small(lake, "dailyActivity_a.csv", 1, 4, 200)
    one_pass(pipeline, lake)
    assert rows_per_content(migrated_url) == {old: 6, new: 4}
    assert manifest(migrated_url)["archive/dailyActivity_a.csv"]["status"] == "loaded"


def test_a_rejected_path_back_to_its_kept_version_loads_nothing_twice(
    lake: Path, pipeline: Pipeline, migrated_url: str
) -> None:
    old = _small(lake, "dailyActivity_a.csv", 2, 3, 100)
    good = (lake / "dailyActivity_a.csv").read_bytes()
    one_pass(pipeline, lake)
    shutil.copyfile(lake / "dailyActivity_a.csv", lake / "dailyActivity_copy.csv")
    one_pass(pipeline, lake)
    (lake / "dailyActivity_a.csv").write_text(DAILY_HEADER + "\r\n")
    one_pass(pipeline, lake)
    (lake / "dailyActivity_a.csv").write_bytes(good)
    assert one_pass(pipeline, lake).count("skipped") == 1
    assert manifest(migrated_url)["dailyActivity_a.csv"]["status"] == "loaded"
    assert rows_per_content(migrated_url) == {old: 6}
    assert len(file_loads(migrated_url)) == 1


# -- through the real CLI, with the dbt build ------------------------------------------------------


LINEAGE_COLUMNS = ("built_at", "changed_at")


def _models(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every mart and of the deduplicated activity, without lineage columns."""
    wanted = {
        ("marts", name)
        for name in (
            "user_daily_activity",
            "user_baseline_activity",
            "user_activity_deviation",
            "user_weekly_engagement",
            "user_engagement_trend",
            "cohort_weekly_engagement",
        )
    } | {("intermediate", "int_daily_activity_deduplicated")}
    models: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(url) as conn:
        for schema, name in sorted(wanted):
            columns = [
                str(r[0])
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    (schema, name),
                )
                if not str(r[0]).endswith(
                    ("load_id", "source_path", "source_line_number", "load_latest_date")
                )
                and r[0] not in LINEAGE_COLUMNS
            ]
            assert columns, f"{schema}.{name} was not built"
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(schema, name)
            )
            models[name] = sorted(conn.execute(query).fetchall(), key=repr)
    return models


@pytest.mark.slow
def test_once_with_dbt_keeps_the_month_and_builds_what_a_fresh_database_builds(
    fitbit_dir: Path, tmp_path: Path, migrated_url: str, pg_admin_url: str
) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    march, april = fitbit_dir / MARCH / MERGED, fitbit_dir / APRIL / MERGED
    shutil.copyfile(march, lake / MERGED)
    code, first = once_json(lake, migrated_url)
    assert code == 0 and first["counts"] == {"loaded": 1}, first
    (lake / "archive").mkdir()
    (lake / MERGED).rename(lake / ARCHIVE)
    code, second = once_json(lake, migrated_url)
    assert code == 0 and second["counts"] == {"duplicate": 1}, second
    shutil.copyfile(april, lake / MERGED)
    code, third = once_json(lake, migrated_url)
    assert code == 0 and third["counts"] == {"loaded": 1}, third
    assert third["rows_loaded"] == rows_in(april)
    assert rows_per_content(migrated_url) == {sha_of(march): rows_in(march), sha_of(april): rows_in(april)}

    with scratch_database(pg_admin_url) as fresh:
        code, payload = once_json(lake, fresh)
        assert code == 0 and payload["counts"] == {"loaded": 2}, payload
        assert rows_per_content(fresh) == rows_per_content(migrated_url)
        assert _models(migrated_url) == _models(fresh)

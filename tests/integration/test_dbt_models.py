"""The dbt project against a real server: the Fitbit baselines, and incremental == full refresh."""

from __future__ import annotations

import csv
import datetime as dt
import random
import re
import statistics
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.dbtkit import MART_KEYS, activity_row, load_file, load_fitbit, mart_rows, run_dbt
from tests.helpers import own_tables
from watcher.load_tables import own_table_name

pytestmark = pytest.mark.slow


# --- the real Fitbit export ------------------------------------------------------------------


def _expected_fitbit_baselines(fitbit_dir: Path) -> dict[int, tuple[float | None, int]]:
    """Baseline per user computed from the CSV files alone: (median steps, days it rests on).

    Overlap rule: the file whose latest date is greatest wins a user-day (the periods are
    loaded in name order, so a tie goes to the later folder).
    """
    files = []
    for order, path in enumerate(sorted(fitbit_dir.glob("*/dailyActivity_merged.csv"))):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [
                (
                    int(r["Id"]),
                    dt.datetime.strptime(r["ActivityDate"], "%m/%d/%Y").date(),
                    int(r["TotalSteps"]),
                )
                for r in csv.DictReader(handle)
            ]
        files.append((max(day for _, day, _ in rows), order, rows))
    steps_by_day: dict[tuple[int, dt.date], int] = {}
    for _, _, rows in sorted(files):  # the preferred file last, so that it overwrites
        for user, day, steps in rows:
            steps_by_day[(user, day)] = steps
    active: dict[int, list[tuple[dt.date, int]]] = defaultdict(list)
    users = set()
    for (user, day), steps in steps_by_day.items():
        users.add(user)
        if steps > 0:
            active[user].append((day, steps))
    expected: dict[int, tuple[float | None, int]] = {}
    for user in users:
        window = [steps for _, steps in sorted(active[user])[:14]]
        expected[user] = (float(statistics.median(window)) if window else None, len(window))
    return expected


def test_fitbit_baselines_match_an_independent_computation(
    migrated_url: str, fitbit_dir: Path, tmp_path: Path
) -> None:
    load_fitbit(migrated_url, fitbit_dir)
    run_dbt(migrated_url, ["build"], target_path=tmp_path / "target")

    expected = _expected_fitbit_baselines(fitbit_dir)
    with psycopg.connect(migrated_url) as conn:
        actual = {
            int(user): (baseline, int(days))
            for user, baseline, days in conn.execute(
                "SELECT user_id, baseline_steps, baseline_days FROM marts.user_baseline_activity"
            )
        }
        overlap_day = conn.execute(
            "SELECT steps, activity_source_rows FROM marts.user_daily_activity"
            " WHERE user_id = 1503960366 AND activity_date = '2016-04-12'"
        ).fetchone()
        sleep_nights = conn.execute("SELECT count(*) FROM intermediate.int_sleep_deduplicated")
        nights = sleep_nights.fetchone()
        classes: dict[str, int] = dict(
            conn.execute(
                "SELECT trend_class, count(*) FROM marts.user_engagement_trend GROUP BY 1"
            ).fetchall()
        )
    assert actual.keys() == expected.keys()
    assert len(actual) == 35
    for user, (baseline, days) in expected.items():
        assert actual[user][1] == days, user
        if baseline is None:
            assert actual[user][0] is None, user
        else:
            assert actual[user][0] == pytest.approx(baseline, abs=1e-9), user
    assert overlap_day == (13162, 2)  # the newer export's full day, not the partial 224
    assert nights == (410,)  # 413 lines, 3 exact duplicates
    assert sum(classes.values()) == 35


def _fitbit_built(url: str, fitbit_dir: Path, target: Path) -> None:
    load_fitbit(url, fitbit_dir)
    run_dbt(url, ["build"], target_path=target)


def test_fitbit_partial_days_reliable_weeks_daily_view_sleep_efficiency_and_quality(
    migrated_url: str, fitbit_dir: Path, tmp_path: Path
) -> None:
    _fitbit_built(migrated_url, fitbit_dir, tmp_path / "target")
    with psycopg.connect(migrated_url) as conn:
        days: dict[dt.date, list[bool]] = dict(
            conn.execute(
                "SELECT activity_date, array_agg(DISTINCT is_complete_day)"
                " FROM marts.user_daily_activity"
                " WHERE activity_date IN ('2016-05-11', '2016-05-12', '2016-04-12') GROUP BY 1"
            ).fetchall()
        )
        worn_0511 = conn.execute(
            "SELECT count(*) FROM marts.user_daily_activity WHERE activity_date = '2016-05-11' AND steps > 0"
        ).fetchone()
        sleep_rows = conn.execute(
            "SELECT sleep_minutes, time_in_bed_minutes, sleep_efficiency FROM marts.user_daily_activity"
        ).fetchall()
        weeks = conn.execute(
            "SELECT week_number, users_observed, is_reliable FROM marts.cohort_weekly_engagement"
        ).fetchall()
        deviation = conn.execute(
            "SELECT activity_date, steps_pct_of_baseline FROM marts.user_activity_deviation"
            " WHERE is_complete_day AND steps_pct_of_baseline IS NOT NULL"
        ).fetchall()
        quality = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT raw_table, sum(raw_rows)::int, sum(kept_rows)::int, sum(superseded_rows)::int,"
                " sum(duplicate_rows)::int, sum(conflicting_rows)::int, sum(partial_days)::int"
                " FROM marts.user_data_quality GROUP BY raw_table"
            )
        }
        daily = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT activity_date, users_observed, median_pct_of_baseline, p25_pct_of_baseline,"
                " p75_pct_of_baseline, share_below_80pct FROM marts.cohort_daily_engagement"
            )
        }
    # the day the newer export was taken is partial for everyone; the day before is complete
    # for every user (all of whom wore the tracker that day: steps > 0 on 22 of 24 rows)
    assert days[dt.date(2016, 5, 12)] == [False]
    assert days[dt.date(2016, 5, 11)] == [True]
    assert worn_0511 is not None and worn_0511[0] > 20
    # the older export's last day (4/12) is covered by the newer export: complete
    assert days[dt.date(2016, 4, 12)] == [True]

    assert sum(1 for _, in_bed, _ in sleep_rows if in_bed) == 410
    for asleep, in_bed, efficiency in sleep_rows:
        if not in_bed:
            assert efficiency is None
        else:
            assert efficiency == pytest.approx(asleep / in_bed, abs=1e-12)

    # what was left out, and why: the older export's 24 rows of 4/12, the sleep file's 3 exact
    # duplicates, the 21 partial days of 5/12
    assert quality == {
        "daily_activity": (1397, 1373, 24, 0, 0, 21),
        "sleep": (413, 410, 0, 3, 0, None),
    }

    single = [w for w in weeks if w[1] == 1]
    assert single, "the Fitbit set has weeks seen by one user"
    assert not any(reliable for _, users, reliable in weeks if users == 1)
    assert {w for w, _, reliable in weeks if reliable} == set(range(6))

    by_date: dict[dt.date, list[float]] = defaultdict(list)
    for day, pct in deviation:
        by_date[day].append(pct)
    assert daily.keys() == by_date.keys()
    assert dt.date(2016, 5, 12) not in daily
    for day, values in by_date.items():
        users, median, p25, p75, below = daily[day]
        assert users == len(values), day
        if len(values) > 1:
            q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
        else:
            q1 = q2 = q3 = values[0]
        assert (median, p25, p75) == pytest.approx((q2, q1, q3), abs=1e-12), day
        assert below == pytest.approx(sum(v < 0.8 for v in values) / len(values)), day


def test_fitbit_cutting_the_partial_last_day_changes_no_trend_class(
    migrated_url: str, fitbit_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    _fitbit_built(migrated_url, fitbit_dir, target)
    query = "SELECT user_id, trend_class FROM marts.user_engagement_trend ORDER BY user_id"
    with psycopg.connect(migrated_url) as conn:
        before = conn.execute(query).fetchall()
        cut = conn.execute(
            "UPDATE raw.daily_activity SET total_steps = total_steps / 10"
            " WHERE activity_date = '2016-05-12' AND total_steps > 0"
        )
        assert cut.rowcount > 15
    # the raw rows' loads are unchanged, so only a full refresh sees the new values
    run_dbt(migrated_url, ["build", "--full-refresh"], target_path=target)
    with psycopg.connect(migrated_url) as conn:
        after = conn.execute(query).fetchall()
    assert len(before) == 35
    assert after == before


def _volume_test_status(result: object) -> str:
    statuses = {
        r.node.name: str(r.status)
        for r in result.result.results  # type: ignore[attr-defined]
        if r.node.name == "newest_day_volume_is_not_anomalous"
    }
    return statuses["newest_day_volume_is_not_anomalous"]


def test_a_thin_newest_day_warns_without_failing_the_build(migrated_url: str, tmp_path: Path) -> None:
    rng = random.Random(21)
    target = tmp_path / "target"
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "a.csv", _activity_rows(rng, range(1, 13), range(0, 20)))
    assert _volume_test_status(run_dbt(migrated_url, ["build"], target_path=target)) == "pass"
    with psycopg.connect(migrated_url) as conn:
        # the next drop carries 3 of the 12 users: 75 % below the trailing mean
        load_file(conn, "daily_activity", "b.csv", _activity_rows(rng, range(1, 4), range(20, 21)))
    result = run_dbt(migrated_url, ["build"], target_path=target)  # raises if anything failed
    assert _volume_test_status(result) == "warn"
    with psycopg.connect(migrated_url) as conn:
        newest = conn.execute(
            "SELECT row_count, is_anomaly FROM marts.daily_volume_anomaly ORDER BY activity_date DESC LIMIT 1"
        ).fetchone()
    assert newest == (3, True)


# --- incremental builds --------------------------------------------------------------------

START = dt.date(2016, 1, 4)


def _activity_rows(
    rng: random.Random, users: range, days: range, *, level: int = 9000
) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for user in users:
        for day in days:
            steps = 0 if rng.random() < 0.1 else rng.randint(level // 2, level * 2)
            very, fairly, light = rng.randint(0, 60), rng.randint(0, 60), rng.randint(0, 300)
            minutes = (very, fairly, light, 1440 - very - fairly - light)
            day_row = activity_row(
                user, START + dt.timedelta(days=day), steps, minutes=minutes, calories=1500 + steps // 20
            )
            rows.append(day_row)
    return rows


def _sleep_rows(rng: random.Random, users: range, days: range) -> list[tuple[object, ...]]:
    return [
        (user, START + dt.timedelta(days=day), 1, rng.randint(300, 500), rng.randint(500, 600))
        for user in users
        for day in days
    ]


def _all_marts(conninfo: str) -> dict[str, list[tuple[object, ...]]]:
    return {mart: mart_rows(conninfo, mart) for mart in MART_KEYS}


def test_incremental_build_after_small_drops_equals_a_full_refresh(migrated_url: str, tmp_path: Path) -> None:
    rng = random.Random(4)
    target = tmp_path / "target"
    with psycopg.connect(migrated_url) as conn:
        # two overlapping exports of 12 users, and a sleep file
        load_file(conn, "daily_activity", "a/period1.csv", _activity_rows(rng, range(1, 13), range(0, 36)))
        period2 = load_file(  # a large file's load: in a table of its own
            conn,
            "daily_activity",
            "a/period2.csv",
            _activity_rows(rng, range(1, 13), range(35, 70)),
            own_table=True,
        )
        load_file(conn, "sleep", "a/sleep.csv", _sleep_rows(rng, range(1, 7), range(35, 70)))
        load_file(conn, "daily_activity", "b/user20.csv", _activity_rows(rng, range(20, 21), range(0, 50)))
    run_dbt(migrated_url, ["build"], target_path=target)
    with psycopg.connect(migrated_url) as conn:
        first_build = conn.execute("SELECT max(built_at) FROM marts.user_activity_deviation").fetchone()
        partial = conn.execute(
            "SELECT activity_date, count(*) FROM marts.user_daily_activity WHERE NOT is_complete_day"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
    # the last day of each export (period2: day 69, user 20's file: day 49); period1's last day
    # (35) is covered by period2
    assert partial == [(START + dt.timedelta(days=49), 1), (START + dt.timedelta(days=69), 12)]

    with psycopg.connect(migrated_url) as conn:
        # user 3: days before his first one arrive (his baseline moves); user 4: a late drop
        load_file(
            conn,
            "daily_activity",
            "c/user3-early.csv",
            _activity_rows(rng, range(3, 4), range(-5, -1), level=30000),
        )
        # user 4's late drop starts on period2's last day (69), partial until now
        load_file(
            conn,
            "daily_activity",
            "c/user4-late.csv",
            _activity_rows(rng, range(4, 5), range(69, 80), level=2000),
            own_table=True,
        )
        # user 20's only file is replaced by an empty one: he vanishes
        user20 = conn.execute("SELECT max(_load_id) FROM raw.daily_activity WHERE id = 20").fetchone()
        assert user20 is not None
        load_file(conn, "daily_activity", "b/user20.csv", [], replaces_load_id=user20[0])
    run_dbt(migrated_url, ["build", "--select", "source:raw.daily_activity+"], target_path=target)

    with psycopg.connect(migrated_url) as conn:
        rebuilt = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT user_id FROM marts.user_activity_deviation WHERE built_at > %s",
                first_build,
            )
        }
        users = {r[0] for r in conn.execute("SELECT user_id FROM marts.user_engagement_trend")}
    assert rebuilt == {3, 4}  # only the users whose raw rows changed
    assert 20 not in users
    with psycopg.connect(migrated_url) as conn:
        complete: dict[int, bool] = dict(
            conn.execute(
                "SELECT user_id, is_complete_day FROM marts.user_daily_activity"
                " WHERE activity_date = %s AND user_id IN (4, 5)",
                (START + dt.timedelta(days=69),),
            ).fetchall()
        )
    assert complete == {4: True, 5: False}  # a later export covers user 4's partial day

    with psycopg.connect(migrated_url) as conn:
        # period2 changes at its known path: user 12 leaves it, user 5 gets other values
        replaced = [r for r in _activity_rows(rng, range(1, 12), range(35, 70)) if r[0] != 5]
        replaced += _activity_rows(random.Random(99), range(5, 6), range(35, 70), level=3000)
        load_file(conn, "daily_activity", "a/period2.csv", replaced, replaces_load_id=period2, own_table=True)
        assert own_table_name("daily_activity", period2) not in [name for name, _ in own_tables(conn)]
    run_dbt(migrated_url, ["build", "--select", "source:raw.daily_activity+"], target_path=target)

    # a sleep-only drop goes through the sleep selector
    with psycopg.connect(migrated_url) as conn:
        load_file(
            conn, "sleep", "d/sleep-user7.csv", _sleep_rows(rng, range(7, 8), range(40, 45)), own_table=True
        )
    run_dbt(migrated_url, ["build", "--select", "source:raw.sleep+"], target_path=target)

    incremental = _all_marts(migrated_url)

    # a build with nothing new rebuilds nothing
    latest = "SELECT max(built_at) FROM marts.user_daily_activity"
    with psycopg.connect(migrated_url) as conn:
        before = conn.execute(latest).fetchone()
    run_dbt(migrated_url, ["build"], target_path=target)
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute(latest).fetchone() == before

    run_dbt(migrated_url, ["build", "--full-refresh"], target_path=target)
    full = _all_marts(migrated_url)
    for mart in MART_KEYS:
        assert incremental[mart] == full[mart], mart
    assert len(full["user_daily_activity"]) > 800


def test_an_incremental_build_reads_no_own_table_of_an_older_load(migrated_url: str, tmp_path: Path) -> None:
    """int_load_extents, compiled for an incremental build, names its new loads as literals: the
    plan reads the own table of the new large load and not that of a load seen before, even with
    more new loads than PostgreSQL compares with a table's constraint in one list (100)."""
    rng = random.Random(11)
    target = tmp_path / "target"

    def large_load(path: str, days: range) -> int:
        with psycopg.connect(migrated_url) as conn:
            rows = _activity_rows(rng, range(1, 4), days)
            return load_file(conn, "daily_activity", path, rows, own_table=True)

    older = large_load("old/big.csv", range(0, 20))
    run_dbt(migrated_url, ["run", "--select", "+int_load_extents"], target_path=target)
    with psycopg.connect(migrated_url) as conn:
        small = [
            load_file(
                conn, "daily_activity", f"new/small{i}.csv", _activity_rows(rng, range(i, i + 1), range(0, 2))
            )
            for i in range(10, 160)
        ]
    newer = large_load("new/big.csv", range(20, 40))
    run_dbt(migrated_url, ["compile", "--select", "int_load_extents"], target_path=target)
    compiled = (target / "compiled/wearable/models/intermediate/int_load_extents.sql").read_text()
    with psycopg.connect(migrated_url) as conn:
        plan = "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN {}").format(sql.SQL(compiled))))
    scanned = set(re.findall(r"\bdaily_activity_load_\d+\b", plan))
    assert scanned == {own_table_name("daily_activity", newer)}

    run_dbt(migrated_url, ["run", "--select", "int_load_extents"], target_path=target)
    with psycopg.connect(migrated_url) as conn:
        extents: dict[int, int] = dict(
            conn.execute(
                "SELECT load_id, load_rows FROM intermediate.int_load_extents WHERE raw_table = 'daily_activity'"
            ).fetchall()
        )
    assert extents == {older: 60, **dict.fromkeys(small, 2), newer: 60}


def test_the_profile_reads_the_connection_from_env_and_writes_no_password(
    migrated_url: str, tmp_path: Path
) -> None:
    """The test server trusts local users, so a password can be given and must not be written."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(migrated_url)
    params["password"] = "pw-never-written-7c1e"
    with_password = make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
    target = tmp_path / "target"
    run_dbt(with_password, ["run", "--select", "stg_daily_activity"], target_path=target)
    for path in target.rglob("*"):
        if path.is_file():
            assert b"pw-never-written-7c1e" not in path.read_bytes(), path


def test_scoped_data_tests_still_catch_bad_rows_of_a_new_load(migrated_url: str, tmp_path: Path) -> None:
    """Incremental builds test only what changed; a bad value in the new load must still fail."""
    rng = random.Random(11)
    target = tmp_path / "target"
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "a.csv", _activity_rows(rng, range(1, 6), range(0, 30)))
    run_dbt(migrated_url, ["build"], target_path=target)
    bad = _activity_rows(rng, range(3, 4), range(30, 32))
    bad[1] = (*bad[1][:2], 150_000, *bad[1][3:])  # steps above 100,000
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "b.csv", bad)
    with pytest.raises(AssertionError, match="user_daily_activity_values_in_range"):
        run_dbt(
            migrated_url,
            ["build", "--select", "source:raw.daily_activity+", "--exclude-resource-type", "unit_test"],
            target_path=target,
        )


def test_source_freshness_is_the_last_load_into_each_raw_table(migrated_url: str, tmp_path: Path) -> None:
    """Raw rows carry no timestamp: freshness is the newest load of the table in ops.file_loads."""
    day = dt.date(2016, 4, 12)
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "a.csv", [activity_row(1, day, 5000)])
        load_file(conn, "sleep", "s.csv", [(1, day, 1, 400, 430)])
        load_file(conn, "sleep", "old.csv", [(2, day, 1, 380, 400)])
        conn.execute(
            "UPDATE ops.file_loads SET finished_at = now() - interval '3 days' WHERE target_table = 'sleep'"
        )
    result = run_dbt(migrated_url, ["source", "freshness"], target_path=tmp_path / "target")
    statuses = {r.node.name: str(r.status) for r in result.result.results}
    assert statuses == {"daily_activity": "pass", "sleep": "warn"}


def test_scoped_data_tests_take_the_loads_seen_before_the_build_from_a_var(
    migrated_url: str, tmp_path: Path
) -> None:
    """Tests that run after the fingerprints were rebuilt still look at the new load's rows and users.

    Read when the test runs, "the highest load id seen" already includes the new load; the
    pipeline reads it before the build and passes it as the var loads_seen_before_build.
    """
    rng = random.Random(12)
    target = tmp_path / "target"
    with psycopg.connect(migrated_url) as conn:
        seen = load_file(conn, "daily_activity", "a.csv", _activity_rows(rng, range(1, 4), range(0, 20)))
    run_dbt(migrated_url, ["build"], target_path=target)
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "b.csv", _activity_rows(rng, range(7, 8), range(0, 20)))
    selection = ["build", "--select", "source:raw.daily_activity+", "--exclude-resource-type", "unit_test"]
    vars_ = f'{{"loads_seen_before_build": {seen}}}'
    result = run_dbt(migrated_url, [*selection, "--vars", vars_], target_path=target)
    compiled = {
        r.node.name: r.node.compiled_code for r in result.result.results if r.node.resource_type == "test"
    }
    staging = [code for name, code in compiled.items() if "stg_daily_activity" in name]
    intermediate = [code for name, code in compiled.items() if "int_daily_activity_deduplicated" in name]
    assert staging and all(f"load_id > {seen})" in code for code in staging)
    assert intermediate and all("user_id = any('{7}'::bigint[])" in code for code in intermediate)

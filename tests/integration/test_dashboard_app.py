"""The Streamlit page and the Grafana engagement dashboard, against real marts in PostgreSQL.

A module fixture generates the sample export (12 users, 60 days: three users of each profile),
loads it with the real pipeline (`python -m watcher watch --once`, dbt included) into a database
of its own, and the page, its screenshot and the dashboard's SQL all read the marts dbt built.
The page is also opened in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against those marts and against the marts of the real Fitbit export.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from streamlit.testing.v1 import AppTest

from tests.dbtkit import load_fitbit, run_dbt
from watcher.dashboard_app import TREND_CLASSES, fetch, headline, trend_shares
from watcher.sample_data import UserPlan, generate, plan_users

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = REPO_ROOT / "watcher" / "dashboard_app.py"
ENGAGEMENT_DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "engagement.json"
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
USERS, DAYS, SEED = 12, 60, 7
PROFILE_CLASS = {
    "steady": "consistent",
    "declining": "degrading",
    "recovering": "improving",
    "sparse": "insufficient_data",
}
DB_ENV = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")


@dataclass(frozen=True)
class Marts:
    url: str
    plans: list[UserPlan]


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def run_pipeline_once(url: str, data_dir: Path, workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
    env["DATABASE_URL"] = url
    cmd = [sys.executable, "-m", "watcher", "watch", "--once", "--data-dir", str(data_dir),
           "--metrics-addr", "off"]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"the pipeline failed ({done.returncode}):\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def marts(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marts]:
    """A database holding the marts dbt built from the generated sample export."""
    name = f"wp_test_dash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = with_dbname(pg_admin_url, name)
        data_dir = tmp_path_factory.mktemp("data_lake")
        generate(data_dir, users=USERS, days=DAYS, seed=SEED)
        run_pipeline_once(url, data_dir, tmp_path_factory.mktemp("workdir"))
        yield Marts(url, plan_users(USERS, SEED))
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def latest_reliable_week(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT week_number, users_observed, median_pct_of_baseline, p25_pct_of_baseline,"
            " p75_pct_of_baseline, share_degrading, reliable_min_users"
            " FROM marts.cohort_weekly_engagement WHERE is_reliable"
            " ORDER BY week_number DESC LIMIT 1"
        )
        row = cur.fetchone()
        assert row is not None
        return dict(zip([d.name for d in cur.description or ()], row, strict=True))


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in DB_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def run_app(timeout: float = 60) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# --- pure helpers ---------------------------------------------------------------------------


def test_trend_shares_lists_every_class_in_order() -> None:
    trends = pd.DataFrame({"user_id": [1, 2, 3, 4], "trend_class": ["degrading"] * 3 + ["consistent"]})
    shares = trend_shares(trends)
    assert list(shares["trend_class"]) == list(TREND_CLASSES)
    assert list(shares["users"]) == [1, 3, 0, 0]
    assert list(shares["share"]) == [0.25, 0.75, 0.0, 0.0]


def test_trend_shares_of_nobody_is_zero() -> None:
    shares = trend_shares(pd.DataFrame({"user_id": [], "trend_class": []}))
    assert list(shares["users"]) == [0, 0, 0, 0]
    assert list(shares["share"]) == [0.0, 0.0, 0.0, 0.0]


def cohort_frame(reliable: list[bool]) -> pd.DataFrame:
    weeks = len(reliable)
    return pd.DataFrame(
        {
            "week_number": list(range(weeks))[::-1],
            "users_observed": [12 - w for w in range(weeks)][::-1],
            "users_active": [12 - w for w in range(weeks)][::-1],
            "mean_pct_of_baseline": [1.0 + w / 10 for w in range(weeks)][::-1],
            "median_pct_of_baseline": [1.0 - w / 10 for w in range(weeks)][::-1],
            "p25_pct_of_baseline": [0.7] * weeks,
            "p75_pct_of_baseline": [1.2] * weeks,
            "is_reliable": reliable[::-1],
            "reliable_min_users": [10] * weeks,
            "share_degrading": [w / 10 for w in range(weeks)][::-1],
        }
    )


def test_headline_takes_the_latest_reliable_week() -> None:
    trends = pd.DataFrame({"user_id": range(12), "trend_class": ["x"] * 12})
    head = headline(cohort_frame([True, True, True, False]), trends)  # week 3: 9 users
    assert (head.users, head.latest_week, head.users_observed, head.min_users) == (12, 2, 10, 10)
    assert (head.median, head.p25, head.p75, head.mean) == (0.8, 0.7, 1.2, 1.2)
    assert head.share_degrading == 0.2


def test_headline_without_a_reliable_week_has_no_level() -> None:
    trends = pd.DataFrame({"user_id": range(3), "trend_class": ["x"] * 3})
    head = headline(cohort_frame([False, False]), trends)
    assert (head.users, head.latest_week, head.median, head.min_users) == (3, None, None, 10)


# --- the page against a real database -------------------------------------------------------


def test_page_shows_cohort_trend_classes_and_a_user(marts: Marts, app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", marts.url)
    at = run_app()
    assert at.title[0].value == "Wearable engagement"
    metrics = {m.label: m.value for m in at.metric}
    latest = latest_reliable_week(marts.url)
    assert metrics["Users"] == str(USERS)
    assert metrics["Users observed"] == str(latest["users_observed"])
    assert latest["users_observed"] >= 10
    assert (
        metrics[f"Cohort median, week {latest['week_number']}"] == f"{latest['median_pct_of_baseline']:.0%}"
    )
    assert metrics["Interquartile range"] == (
        f"{latest['p25_pct_of_baseline']:.0%} to {latest['p75_pct_of_baseline']:.0%}"
    )
    assert metrics["Users degrading"] == f"{latest['share_degrading']:.0%}"
    subheaders = [s.value for s in at.subheader]
    assert subheaders == [
        "Cohort activity against baseline",
        "Users by trend class",
        "Cohort by calendar day",
        "Data volume per day",
        "Data quality",
        "One user",
    ]
    shares = at.dataframe[0].value
    assert dict(zip(shares["trend_class"], shares["users"], strict=True)) == {
        "consistent": 3,
        "degrading": 3,
        "improving": 3,
        "insufficient_data": 3,
    }
    assert len(at.get("vega_lite_chart")) == 7
    slider = at.slider(key="min_baseline_days")
    assert (slider.min, slider.max, slider.value) == (1, 14, 10)
    daily_user = at.selectbox(key="daily_user")
    assert daily_user.options[0] == "All users"
    daily_user.set_value(marts.plans[0].user_id).run()
    assert not at.exception
    slider.set_value(1).run()
    assert not at.exception
    select = at.selectbox(key="user_id")
    assert list(select.options) == [f"{p.user_id} ({PROFILE_CLASS[p.profile]})" for p in marts.plans]

    declining = next(p for p in marts.plans if p.profile == "declining")
    quality = at.dataframe[1].value.set_index("raw_table")
    with psycopg.connect(marts.url) as conn:
        days = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT is_complete_day) FROM marts.user_daily_activity"
        ).fetchone()
    assert days is not None and days[1] > 0
    assert (quality.loc["daily_activity", "kept"], quality.loc["daily_activity", "partial_days"]) == days

    select.set_value(declining.user_id).run()
    assert not at.exception
    assert f"**User {declining.user_id} (degrading)**" in [m.value for m in at.markdown]
    weekly = at.dataframe[2].value
    assert list(weekly["week_number"]) == list(range(9))  # 60 days from the first active day
    assert weekly["mean_pct_of_baseline"].iloc[0] > 80  # shown in percent
    assert weekly["mean_pct_of_baseline"].iloc[-1] < 60
    assert any("Last pipeline run finished" in c.value and "success" in c.value for c in at.caption)


def test_page_explains_marts_not_built(migrated_url: str, app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", migrated_url)
    at = run_app()
    assert len(at.info) == 1
    assert "marts are not built yet" in at.info[0].value
    assert not at.metric


def test_page_asks_for_a_database_setting(app_env: pytest.MonkeyPatch) -> None:
    at = run_app()
    assert "Set DATABASE_URL" in at.error[0].value


def test_page_reports_an_unreachable_database_without_its_password(
    app_env: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    app_env.setenv("DATABASE_URL", f"postgresql://u:s3cret-pw@127.0.0.1:{port}/db?connect_timeout=2")
    at = run_app()
    message = at.error[0].value
    assert f"127.0.0.1:{port}/db" in message
    assert "s3cret-pw" not in message


@contextlib.contextmanager
def role_url(marts: Marts, *grants: sql.SQL) -> Iterator[str]:
    """A login role with only the given grants (``{}`` stands for the role); its URL."""
    role = f"wp_reader_{uuid.uuid4().hex[:10]}"
    ident = sql.Identifier(role)
    with psycopg.connect(marts.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(uuid.uuid4().hex)))
        for grant in grants:
            conn.execute(grant.format(ident))
    params = conninfo_to_dict(marts.url)
    params.update(user=role, password="unused-with-trust")
    try:
        yield make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
    finally:
        with psycopg.connect(marts.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_the_daily_view_with_every_baseline_is_the_daily_mart(marts: Marts) -> None:
    """With a minimum of 1 baseline day, all dates and all users, the page's query gives the mart."""
    with psycopg.connect(marts.url) as conn:
        mart = conn.execute(
            "SELECT activity_date, users_observed, median_pct_of_baseline, p25_pct_of_baseline,"
            " p75_pct_of_baseline, share_below_80pct FROM marts.cohort_daily_engagement"
            " ORDER BY activity_date"
        ).fetchall()
    first, last = mart[0][0], mart[-1][0]
    page = fetch(marts.url, "by_day", None, min_days=1, start=first, end=last)
    rows = [tuple(r) for r in page.itertuples(index=False)]
    assert [r[:2] for r in rows] == [r[:2] for r in mart]
    for got, want in zip(rows, mart, strict=True):
        assert got[2:] == pytest.approx(want[2:], abs=1e-12), want[0]
    one = fetch(marts.url, "by_day", marts.plans[0].user_id, min_days=1, start=first, end=last)
    assert set(one["users_observed"]) == {1}
    strict = fetch(marts.url, "by_day", None, min_days=14, start=first, end=first + dt.timedelta(days=9))
    assert len(strict) <= 10
    assert (strict["users_observed"] <= USERS).all()


def test_page_works_for_a_read_only_role_on_the_marts(marts: Marts, app_env: pytest.MonkeyPatch) -> None:
    grants = (
        sql.SQL("GRANT USAGE ON SCHEMA marts TO {}"),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA marts TO {}"),
    )
    with role_url(marts, *grants) as url:
        app_env.setenv("DATABASE_URL", url)
        at = run_app()
    assert {m.label for m in at.metric} >= {"Users", "Users degrading", "Users observed"}
    assert not any("Last pipeline run" in c.value for c in at.caption)  # no grant on ops


def test_page_says_when_the_role_may_not_read_the_marts(marts: Marts, app_env: pytest.MonkeyPatch) -> None:
    with role_url(marts, sql.SQL("GRANT USAGE ON SCHEMA marts TO {}")) as url:
        app_env.setenv("DATABASE_URL", url)
        at = run_app()
    assert "may not read the marts" in at.error[0].value
    assert not at.metric


# --- the Grafana engagement dashboard's SQL against the same marts --------------------------


def engagement_queries() -> list[tuple[str, str]]:
    board = json.loads(ENGAGEMENT_DASHBOARD.read_text())
    queries = [
        (panel["title"], target["rawSql"]) for panel in board["panels"] for target in panel.get("targets", [])
    ]
    queries += [(f"variable {v['name']}", v["query"]) for v in board["templating"]["list"]]
    return queries


def test_engagement_dashboard_queries_run_against_the_marts(marts: Marts) -> None:
    board = json.loads(ENGAGEMENT_DASHBOARD.read_text())
    x_fields = {p["title"]: p["options"].get("xField") for p in board["panels"] if "options" in p}
    queries = engagement_queries()
    assert len(queries) >= 10
    with psycopg.connect(marts.url) as conn:
        for title, query in queries:
            text = query.replace("$user_id", str(marts.plans[0].user_id))
            cur = conn.execute(text.encode())
            rows = cur.fetchall()
            columns = [d.name for d in cur.description or ()]
            assert rows, f"{title}: no rows"
            if x_fields.get(title):
                assert x_fields[title] in columns, f"{title}: no column {x_fields[title]}"


def test_engagement_kpi_row_is_the_latest_reliable_week(marts: Marts) -> None:
    board = json.loads(ENGAGEMENT_DASHBOARD.read_text())
    kpi = {p["title"]: p["targets"][0]["rawSql"] for p in board["panels"] if p["type"] == "stat"}
    latest = latest_reliable_week(marts.url)
    with psycopg.connect(marts.url) as conn:
        level = conn.execute(kpi["Cohort median and IQR, latest reliable week"].encode()).fetchone()
        degrading = conn.execute(kpi["Users degrading, latest reliable week"].encode()).fetchone()
        week = conn.execute(kpi["Latest reliable week: week and users observed"].encode()).fetchone()
        last_week = conn.execute("SELECT max(week_number) FROM marts.cohort_weekly_engagement").fetchone()
    assert level == (
        latest["median_pct_of_baseline"],
        latest["p25_pct_of_baseline"],
        latest["p75_pct_of_baseline"],
    )
    assert degrading == (latest["share_degrading"],)
    assert week == (latest["week_number"], latest["users_observed"])
    assert last_week is not None and last_week[0] > latest["week_number"]  # a thinner week exists


# --- the page in a real headless Chromium, driven by Playwright -----------------------------
#
# Chromium's own --screenshot fires at the load event, before Streamlit's websocket has delivered
# the page (a grey skeleton). Playwright waits until the metrics and the charts are drawn.

PAGE_DRAWN_JS = """() => {
  const count = (s) => document.querySelectorAll(s).length;
  return count('[data-testid="stMetric"]') >= 5
    && count('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg') >= 7
    && count('[data-testid="stDataFrame"]') >= 3
    && count('[data-testid="stException"]') === 0;
}"""
PAGE_STATE_JS = """() => ({
  metrics: document.querySelectorAll('[data-testid="stMetric"]').length,
  charts: document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').length,
  tables: document.querySelectorAll('[data-testid="stDataFrame"]').length,
  exceptions: Array.from(document.querySelectorAll('[data-testid="stException"]')).map((e) => e.innerText),
  skeletons: document.querySelectorAll('[data-testid="stSkeleton"]').length,
})"""
"""What the page holds of what ``PAGE_DRAWN_JS`` waits for: the message when it never comes."""
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]  # fmt: skip
"""Headless, with none of the browser's own traffic: the tests need no network but loopback."""
WINDOW = (1400, 2000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def streamlit_server(url: str, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in DB_ENV}
    env.update(DATABASE_URL=url, HOME=str(tmp_path), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
        "--server.port", str(port), "--server.address", "127.0.0.1",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    with (tmp_path / "streamlit.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", timeout=60)
            yield port
        finally:
            stop(proc)


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    pytest.skip("no Chromium on PATH (Debian package: chromium)")


@dataclass(frozen=True)
class PageView:
    png: bytes
    metrics: dict[str, str]
    captions: list[str]


class PageLog:
    """The page's requests still unanswered, those that failed, and the errors on its console:
    what a page that never finishes drawing was waiting for (a script loaded on demand, say)."""

    def __init__(self) -> None:
        self.pending: dict[Any, str] = {}  # by request: playwright hands the same object to each event
        self.failed: list[str] = []
        self.console_errors: list[str] = []

    def follow(self, page: Any) -> None:
        page.on("request", lambda r: self.pending.__setitem__(r, r.url))
        page.on("requestfinished", lambda r: self.pending.pop(r, None))
        page.on("requestfailed", self._failed)
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)

    def _failed(self, request: Any) -> None:
        self.pending.pop(request, None)
        self.failed.append(f"{request.url} ({request.failure})")

    def network_changes(self) -> int:
        """Requests Chromium failed because the host's network interfaces changed."""
        return sum(NETWORK_CHANGED in failure for failure in self.failed)

    def describe(self) -> str:
        return (
            f"requests unanswered: {sorted(self.pending.values())}, failed: {self.failed},"
            f" console errors: {self.console_errors[-10:]}"
        )


NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"
RELOADS_AFTER_A_NETWORK_CHANGE = 3


def load_until_drawn(page: Any, page_log: PageLog, address: str, timeout_ms: int) -> None:
    """Open ``address`` and wait until the page is drawn, within ``timeout_ms`` in all.

    Chromium fails every request in flight when the host's network interfaces change, and a
    container started by another test adds one (``net::ERR_NETWORK_CHANGED``; seen in a full
    run: the page's scripts failed and it was never drawn). The page is then loaded again, a few
    times at most; any other failure still ends in the timeout."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout_ms / 1000

    def ms_left() -> float:
        return max(1.0, (deadline - time.monotonic()) * 1000)

    for _ in range(1 + RELOADS_AFTER_A_NETWORK_CHANGE):
        changes_before = page_log.network_changes()
        try:
            page.goto(address, timeout=ms_left())
        except PlaywrightTimeout:
            raise
        except PlaywrightError as error:
            if NETWORK_CHANGED not in str(error):
                raise
            continue
        while True:
            try:
                page.wait_for_function(PAGE_DRAWN_JS, timeout=min(ms_left(), 2_000))
                return
            except PlaywrightTimeout:
                if page_log.network_changes() > changes_before:
                    break  # load it again
                if time.monotonic() >= deadline:
                    raise
    raise PlaywrightTimeout(f"the network changed during each of {1 + RELOADS_AFTER_A_NETWORK_CHANGE} loads")


def open_page(url: str, tmp_path: Path, timeout_ms: int = 90_000) -> PageView:
    """Serve the page on the marts at url, open it in headless Chromium, wait until drawn."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    chromium = chromium_binary()
    with streamlit_server(url, tmp_path) as port, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            width, height = WINDOW
            page = browser.new_page(viewport={"width": width, "height": height})
            page_log = PageLog()
            page_log.follow(page)
            try:
                load_until_drawn(page, page_log, f"http://127.0.0.1:{port}/", timeout_ms)
            except PlaywrightTimeout:
                log = (tmp_path / "streamlit.log").read_text(errors="replace")[-3000:]
                raise AssertionError(
                    f"the page was not drawn in {timeout_ms / 1000:.0f} s; it held"
                    f" {page.evaluate(PAGE_STATE_JS)}; {page_log.describe()}; the server's log"
                    f" ends:\n{log}"
                ) from None
            page.wait_for_timeout(1000)  # let the charts finish their first paint
            metrics = {}
            for metric in page.locator('[data-testid="stMetric"]').all():
                label = metric.locator('[data-testid="stMetricLabel"]').inner_text().strip()
                metrics[label] = metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
            captions = [
                c.strip() for c in page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
            ]
            png = page.screenshot()
        finally:
            browser.close()
    return PageView(png, metrics, captions)


@pytest.mark.slow
def test_the_page_in_chromium_headlines_the_latest_reliable_week(marts: Marts, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    view = open_page(marts.url, tmp_path)
    shot.write_bytes(view.png)
    latest = latest_reliable_week(marts.url)
    assert (
        view.metrics[f"Cohort median, week {latest['week_number']}"]
        == f"{latest['median_pct_of_baseline']:.0%}"
    )
    assert view.metrics["Users observed"] == str(latest["users_observed"])
    assert view.png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", view.png[16:24])
    assert (width, height) == WINDOW
    assert len(view.png) > 50_000, "the screenshot is nearly empty: the page did not render"


@pytest.mark.slow
def test_the_page_in_chromium_on_the_fitbit_export(
    migrated_url: str, fitbit_dir: Path, tmp_path: Path
) -> None:
    """On the real export the late weeks are one user each: the headline is week 5 (28 users)."""
    load_fitbit(migrated_url, fitbit_dir)
    run_dbt(migrated_url, ["build", "--exclude-resource-type", "unit_test"], target_path=tmp_path / "target")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    view = open_page(migrated_url, tmp_path)
    (ARTIFACTS / "dashboard-fitbit.png").write_bytes(view.png)
    assert view.metrics["Users"] == "35"
    assert view.metrics["Cohort median, week 5"] == "85%"
    assert view.metrics["Interquartile range"] == "67% to 117%"
    assert view.metrics["Users observed"] == "28"
    assert not any(label.startswith("Cohort median, week 8") for label in view.metrics)
    assert any("Mean and median fall on opposite sides of baseline" in c for c in view.captions)
    assert any("the newest (2016-05-12, 21 rows) is not." in c for c in view.captions)

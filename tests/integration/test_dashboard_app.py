"""The Streamlit page and the Grafana engagement dashboard, against a real PostgreSQL database.

Until the dbt marts land, the tests build the four mart tables themselves from the sample-data
generator (same columns as the dbt models), so the page and the dashboard SQL meet a real server.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from watcher.dashboard_app import TREND_CLASSES, headline, trend_shares
from watcher.sample_data import BASELINE_DAYS, UserPlan, plan_users, user_days

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = REPO_ROOT / "watcher" / "dashboard_app.py"
ENGAGEMENT_DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "engagement.json"
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
START = date(2016, 3, 12)
DAYS = 56
PROFILE_CLASS = {
    "steady": "consistent",
    "declining": "degrading",
    "recovering": "improving",
    "sparse": "insufficient_data",
}
DB_ENV = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")

MARTS_DDL = """
CREATE SCHEMA IF NOT EXISTS marts;
CREATE TABLE marts.user_activity_deviation (
    user_id bigint, activity_date date, steps integer, baseline_steps double precision,
    steps_pct_of_baseline double precision);
CREATE TABLE marts.user_weekly_engagement (
    user_id bigint, week_number integer, week_start date, active_days integer,
    mean_steps double precision, mean_pct_of_baseline double precision);
CREATE TABLE marts.user_engagement_trend (user_id bigint, trend_class text);
CREATE TABLE marts.cohort_weekly_engagement (
    week_number integer, week_start date, users_active integer,
    mean_pct_of_baseline double precision, share_degrading double precision);
"""


def user_rows(plan: UserPlan) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Daily deviation and weekly rows of one generated user (worn days only)."""
    activity, _ = user_days(plan, START, DAYS, seed=7)
    worn = [(r.day, r.steps) for r in activity if r.steps > 0]
    baseline = statistics.mean(s for d, s in worn if d < START + timedelta(days=BASELINE_DAYS))
    daily = [(plan.user_id, d, s, baseline, 100 * s / baseline) for d, s in worn]
    weekly = []
    for week in range(DAYS // 7):
        days = [row for row in daily if (row[1] - START).days // 7 == week]
        if days:
            steps = statistics.mean(r[2] for r in days)
            weekly.append(
                (
                    plan.user_id,
                    week + 1,
                    START + timedelta(weeks=week),
                    len(days),
                    steps,
                    100 * steps / baseline,
                )
            )
    return daily, weekly


def cohort_rows(weekly: list[tuple[Any, ...]], degrading: set[int]) -> list[tuple[Any, ...]]:
    rows = []
    for week in sorted({w[1] for w in weekly}):
        of_week = [w for w in weekly if w[1] == week]
        share = sum(w[0] in degrading for w in of_week) / len(of_week)
        rows.append((week, of_week[0][2], len(of_week), statistics.mean(w[5] for w in of_week), share))
    return rows


def build_marts(url: str) -> list[UserPlan]:
    plans = plan_users(12, 7)
    daily: list[tuple[Any, ...]] = []
    weekly: list[tuple[Any, ...]] = []
    for plan in plans:
        d, w = user_rows(plan)
        daily += d
        weekly += w
    degrading = {p.user_id for p in plans if p.profile == "declining"}
    trends = [(p.user_id, PROFILE_CLASS[p.profile]) for p in plans]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(MARTS_DDL)
        cur.executemany("INSERT INTO marts.user_activity_deviation VALUES (%s,%s,%s,%s,%s)", daily)
        cur.executemany("INSERT INTO marts.user_weekly_engagement VALUES (%s,%s,%s,%s,%s,%s)", weekly)
        cur.executemany("INSERT INTO marts.user_engagement_trend VALUES (%s,%s)", trends)
        cur.executemany(
            "INSERT INTO marts.cohort_weekly_engagement VALUES (%s,%s,%s,%s,%s)",
            cohort_rows(weekly, degrading),
        )
        cur.execute(
            "INSERT INTO ops.pipeline_runs (trigger, finished_at, status, files_loaded, "
            "rows_loaded, dbt_status) VALUES ('event', now(), 'success', 4, 720, 'success')"
        )
    return plans


@pytest.fixture
def marts_url(migrated_url: str) -> Iterator[tuple[str, list[UserPlan]]]:
    yield migrated_url, build_marts(migrated_url)


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


def test_headline_takes_the_latest_week() -> None:
    cohort = pd.DataFrame(
        {
            "week_number": [2, 1],
            "users_active": [9, 10],
            "mean_pct_of_baseline": [80.0, 100.0],
            "share_degrading": [0.3, 0.0],
        }
    )
    head = headline(cohort, pd.DataFrame({"user_id": range(10), "trend_class": ["x"] * 10}))
    assert (head.users, head.latest_week, head.users_active) == (10, 2, 9)
    assert (head.latest_pct_of_baseline, head.latest_share_degrading) == (80.0, 0.3)


# --- the page against a real database -------------------------------------------------------


def test_page_shows_cohort_trend_classes_and_a_user(
    marts_url: tuple[str, list[UserPlan]], app_env: pytest.MonkeyPatch
) -> None:
    url, plans = marts_url
    app_env.setenv("DATABASE_URL", url)
    at = run_app()
    assert at.title[0].value == "Wearable engagement"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Users"] == "12"
    assert metrics["Users active"] == "12"
    assert any(label.startswith("Cohort activity, week 8") for label in metrics)
    assert metrics["Users degrading"] == "25%"
    subheaders = [s.value for s in at.subheader]
    assert subheaders == ["Cohort activity against baseline", "Users by trend class", "One user"]
    shares = at.dataframe[0].value
    assert dict(zip(shares["trend_class"], shares["users"], strict=True)) == {
        "consistent": 3,
        "degrading": 3,
        "improving": 3,
        "insufficient_data": 3,
    }
    assert len(at.get("vega_lite_chart")) == 3
    select = at.selectbox(key="user_id")
    assert list(select.options) == [f"{p.user_id} ({PROFILE_CLASS[p.profile]})" for p in plans]

    declining = next(p for p in plans if p.profile == "declining")
    select.set_value(declining.user_id).run()
    assert not at.exception
    assert f"**User {declining.user_id} (degrading)**" in [m.value for m in at.markdown]
    weekly = at.dataframe[1].value
    assert list(weekly["week_number"]) == list(range(1, 9))
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


# --- the Grafana engagement dashboard's SQL against the same marts --------------------------


def engagement_queries() -> list[tuple[str, str]]:
    board = json.loads(ENGAGEMENT_DASHBOARD.read_text())
    queries = [
        (panel["title"], target["rawSql"]) for panel in board["panels"] for target in panel.get("targets", [])
    ]
    queries += [(f"variable {v['name']}", v["query"]) for v in board["templating"]["list"]]
    return queries


def test_engagement_dashboard_queries_run_against_the_marts(
    marts_url: tuple[str, list[UserPlan]],
) -> None:
    url, plans = marts_url
    board = json.loads(ENGAGEMENT_DASHBOARD.read_text())
    x_fields = {p["title"]: p["options"].get("xField") for p in board["panels"] if "options" in p}
    queries = engagement_queries()
    assert len(queries) >= 10
    with psycopg.connect(url) as conn:
        for title, query in queries:
            text = query.replace("$user_id", str(plans[0].user_id))
            cur = conn.execute(text.encode())
            rows = cur.fetchall()
            columns = [d.name for d in cur.description or ()]
            assert rows, f"{title}: no rows"
            if x_fields.get(title):
                assert x_fields[title] in columns, f"{title}: no column {x_fields[title]}"


# --- one screenshot of the page in headless Chromium ----------------------------------------
#
# Chromium's own --screenshot fires at the load event, before Streamlit's websocket has delivered
# the page (a grey skeleton). So the test drives Chromium over the DevTools protocol on a pipe
# (--remote-debugging-pipe: JSON messages ending in NUL on fds 3 and 4; standard library only),
# waits until the metrics and the three charts are drawn, then captures the page.

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
PAGE_DRAWN_JS = """(() => {
  const count = (s) => document.querySelectorAll(s).length;
  return count('[data-testid="stMetric"]') >= 4
    && count('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg') >= 3
    && count('[data-testid="stDataFrame"]') >= 2
    && count('[data-testid="stException"]') === 0;
})()"""
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


def high_fds(*fds: int) -> tuple[int, ...]:
    """The same pipes moved to descriptors above 9, so that none of them is 3 or 4 in the child."""
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return moved


class DevTools:
    """Chromium driven over --remote-debugging-pipe (commands on fd 3, replies on fd 4)."""

    def __init__(self, binary: str, user_data_dir: Path, timeout: float = 60) -> None:
        cmd_read, self._cmd_write = high_fds(*os.pipe())
        self._reply_read, reply_write = high_fds(*os.pipe())
        # bash, not sh: dash cannot redirect from a file descriptor above 9
        redirect = f'exec "$0" "$@" 3<&{cmd_read} 4>&{reply_write}'
        args = [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe"]
        with (user_data_dir.parent / "chromium.log").open("wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "-c", redirect, binary, *args, "about:blank"],
                pass_fds=(cmd_read, reply_write),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        os.close(cmd_read)
        os.close(reply_write)
        self._buffer = b""
        self._last_id = 0
        self._deadline = time.monotonic() + timeout

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._next_message()
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    def _next_message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._reply_read], [], [], 1.0)
            if time.monotonic() > self._deadline:
                raise AssertionError("Chromium did not answer in time")
            if ready:
                chunk = os.read(self._reply_read, 1 << 20)
                if not chunk:
                    raise AssertionError("Chromium closed its DevTools pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(raw))

    def close(self) -> None:
        with contextlib.suppress(OSError, AssertionError):
            self.call("Browser.close")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            stop(self.proc)
        os.close(self._cmd_write)
        os.close(self._reply_read)


def capture_page(devtools: DevTools, url: str, timeout: float = 60) -> bytes:
    """Open url, wait until PAGE_DRAWN_JS holds, return a PNG of the window."""
    target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
    session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    width, height = WINDOW
    devtools.call(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    devtools.call("Page.navigate", session, url=url)
    deadline = time.monotonic() + timeout
    while True:
        result = devtools.call("Runtime.evaluate", session, expression=PAGE_DRAWN_JS)
        if result["result"].get("value") is True:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the page was not drawn within {timeout:.0f} s")
        time.sleep(0.5)
    time.sleep(1.0)  # let the charts finish their first paint
    shot = devtools.call("Page.captureScreenshot", session, format="png")
    return base64.b64decode(shot["data"])


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@pytest.mark.slow
def test_screenshot_of_the_page(marts_url: tuple[str, list[UserPlan]], tmp_path: Path) -> None:
    chromium = chromium_binary()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian package: chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    with streamlit_server(marts_url[0], tmp_path) as port:
        devtools = DevTools(chromium, tmp_path / "chromium")
        try:
            png = capture_page(devtools, f"http://127.0.0.1:{port}/")
        finally:
            devtools.close()
    shot.write_bytes(png)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == WINDOW
    assert len(png) > 50_000, "the screenshot is nearly empty: the page did not render"

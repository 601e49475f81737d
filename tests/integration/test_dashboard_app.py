"""The Streamlit page and the Grafana engagement dashboard, against real marts in PostgreSQL.

A module fixture generates the sample export (12 users, 60 days: three users of each profile),
loads it with the real pipeline (`python -m watcher watch --once`, dbt included) into a database
of its own, and the page, its screenshot and the dashboard's SQL all read the marts dbt built.
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

from watcher.dashboard_app import TREND_CLASSES, headline, trend_shares
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


def latest_cohort_week(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT week_number, users_active, mean_pct_of_baseline, share_degrading"
            " FROM marts.cohort_weekly_engagement ORDER BY week_number DESC LIMIT 1"
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


def test_headline_takes_the_latest_week() -> None:
    cohort = pd.DataFrame(
        {
            "week_number": [2, 1],
            "users_active": [9, 10],
            "mean_pct_of_baseline": [0.8, 1.0],
            "share_degrading": [0.3, 0.0],
        }
    )
    head = headline(cohort, pd.DataFrame({"user_id": range(10), "trend_class": ["x"] * 10}))
    assert (head.users, head.latest_week, head.users_active) == (10, 2, 9)
    assert (head.latest_pct_of_baseline, head.latest_share_degrading) == (0.8, 0.3)


# --- the page against a real database -------------------------------------------------------


def test_page_shows_cohort_trend_classes_and_a_user(marts: Marts, app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", marts.url)
    at = run_app()
    assert at.title[0].value == "Wearable engagement"
    metrics = {m.label: m.value for m in at.metric}
    latest = latest_cohort_week(marts.url)
    assert metrics["Users"] == str(USERS)
    assert metrics["Users active"] == str(latest["users_active"])
    assert metrics[f"Cohort activity, week {latest['week_number']}"] == (
        f"{latest['mean_pct_of_baseline']:.0%} of baseline"
    )
    assert metrics["Users degrading"] == f"{latest['share_degrading']:.0%}"
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
    assert list(select.options) == [f"{p.user_id} ({PROFILE_CLASS[p.profile]})" for p in marts.plans]

    declining = next(p for p in marts.plans if p.profile == "declining")
    select.set_value(declining.user_id).run()
    assert not at.exception
    assert f"**User {declining.user_id} (degrading)**" in [m.value for m in at.markdown]
    weekly = at.dataframe[1].value
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


def test_page_works_for_a_read_only_role_on_the_marts(marts: Marts, app_env: pytest.MonkeyPatch) -> None:
    grants = (
        sql.SQL("GRANT USAGE ON SCHEMA marts TO {}"),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA marts TO {}"),
    )
    with role_url(marts, *grants) as url:
        app_env.setenv("DATABASE_URL", url)
        at = run_app()
    assert {m.label for m in at.metric} >= {"Users", "Users degrading", "Users active"}
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
def test_screenshot_of_the_page(marts: Marts, tmp_path: Path) -> None:
    chromium = chromium_binary()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian package: chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    with streamlit_server(marts.url, tmp_path) as port:
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

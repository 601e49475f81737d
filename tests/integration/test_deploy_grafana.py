"""Grafana's provisioning and dashboards parse and agree with each other and with the app.

Every data source a dashboard uses is provisioned (same uid and type); every metric a dashboard or
an alert queries is one watcher/metrics.py defines. The queries themselves run against a real
Prometheus (test_deploy_prometheus.py) and a real PostgreSQL (test_dashboard_app.py).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
METRIC = re.compile(r"\bwearable_[a-z_]+[a-z]")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def datasources() -> dict[str, str]:
    """uid -> type of every provisioned data source."""
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text())
    uids = [ds["uid"] for ds in config["datasources"]]
    assert len(uids) == len(set(uids)), "duplicate data source uid"
    return {ds["uid"]: ds["type"] for ds in config["datasources"]}


def load(path: Path) -> dict[str, Any]:
    board = json.loads(path.read_text())
    assert isinstance(board, dict)
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def datasource_refs(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        yield panel["title"], panel["datasource"]
        for target in panel.get("targets", []):
            yield f"{panel['title']} / {target['refId']}", target["datasource"]
    for variable in board.get("templating", {}).get("list", []):
        if "datasource" in variable:
            yield f"variable {variable['name']}", variable["datasource"]


def metric_names_defined() -> set[str]:
    tree = ast.parse((REPO_ROOT / "watcher" / "metrics.py").read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and METRIC.fullmatch(node.value)
    }


def base_name(metric: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix):
            return metric.removesuffix(suffix)
    return metric


def test_two_dashboards_ship() -> None:
    assert {p.name for p in DASHBOARDS} == {"pipeline-health.json", "engagement.json"}
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


def test_datasources_are_prometheus_and_postgres() -> None:
    assert sorted(datasources().values()) == ["grafana-postgresql-datasource", "prometheus"]


def test_dashboard_provider_is_a_file_provider() -> None:
    config = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_datasource_a_dashboard_uses_is_provisioned(path: Path) -> None:
    known = datasources()
    refs = list(datasource_refs(load(path)))
    assert refs
    for where, ref in refs:
        assert ref["uid"] in known, f"{path.name}: {where} uses unknown data source {ref['uid']}"
        assert ref["type"] == known[ref["uid"]], f"{path.name}: {where} has the wrong type"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_have_unique_ids_and_do_not_overlap(path: Path) -> None:
    board = load(path)
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_metric_queried_is_one_the_watcher_exports() -> None:
    defined = metric_names_defined()
    assert "wearable_files_pending" in defined  # the scan itself works
    texts = {p.name: p.read_text() for p in DASHBOARDS}
    texts["alerts.yml"] = (REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    for name, text in texts.items():
        used = {base_name(m) for m in METRIC.findall(text)}
        assert used <= defined, f"{name} queries metrics the watcher does not export: {used - defined}"


def test_pipeline_health_covers_every_watcher_metric() -> None:
    used = {
        base_name(m) for m in METRIC.findall((GRAFANA / "dashboards" / "pipeline-health.json").read_text())
    }
    assert used == metric_names_defined()


def test_engagement_dashboard_only_reads_the_marts() -> None:
    board = load(GRAFANA / "dashboards" / "engagement.json")
    queries = [t["rawSql"] for p in panels(board) for t in p.get("targets", [])]
    queries += [v["query"] for v in board["templating"]["list"]]
    tables = set()
    for query in queries:
        assert query.lstrip().upper().startswith("SELECT"), query
        tables |= set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_]+\.[a-z_]+)", query, re.IGNORECASE))
    assert tables == {
        "marts.cohort_weekly_engagement",
        "marts.user_engagement_trend",
        "marts.user_weekly_engagement",
        "marts.user_activity_deviation",
        "marts.cohort_daily_engagement",
        "marts.daily_volume_anomaly",
        "marts.user_data_quality",
    }

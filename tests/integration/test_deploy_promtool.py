"""The shipped Prometheus configuration and alert rules pass promtool's checks and unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    return found


def run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_config_is_valid(promtool: str) -> None:
    output = run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert "1 rule files found" in output


def test_rules_are_valid(promtool: str) -> None:
    output = run([promtool, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml")])
    assert "6 rules found" in output


def test_alert_unit_tests_pass(promtool: str) -> None:
    output = run([promtool, "test", "rules", str(PROMETHEUS_DIR / "tests" / "alerts_test.yml")])
    assert "SUCCESS" in output


def test_every_alert_has_a_unit_test_and_a_runbook_section() -> None:
    alerts = set(alert_names())
    tests = (PROMETHEUS_DIR / "tests" / "alerts_test.yml").read_text()
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for name in alerts:
        assert f"alertname: {name}\n" in tests, f"{name} has no promtool unit test"
        assert f"### {name}\n" in docs, f"docs/deploy.md does not explain {name}"


def alert_names() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]

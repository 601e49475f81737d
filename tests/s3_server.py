"""A real S3 API server for the tests: moto's server mode on 127.0.0.1, started as a process.

Buckets and objects are put with boto3 (test side only); the pipeline reads them through its own
client (obstore), configured by the standard variables in ``S3Server.env``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_helpers import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


class S3Server:
    def __init__(self, process: subprocess.Popen[bytes], endpoint: str) -> None:
        self.process = process
        self.endpoint = endpoint
        self.env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        import boto3

        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=CREDENTIALS["AWS_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self) -> str:
        name = f"lake-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body)

    def upload_folder(self, folder: Path, bucket: str, prefix: str) -> int:
        count = 0
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.client.upload_file(str(path), bucket, f"{prefix}{path.relative_to(folder).as_posix()}")
                count += 1
        return count


def serve(
    command: list[str], port: int, log_path: Path, name: str, env: dict[str, str] | None = None
) -> Generator[subprocess.Popen[bytes], None, None]:
    """Run a local test server until the generator is closed: yields once it accepts connections
    on ``port``, then terminates it (killed after 10 s)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_s3_server(log_path: Path) -> Generator[S3Server, None, None]:
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if binary is None:
        pytest.fail("moto_server is not installed: make install (the test extra has moto[s3] and flask)")
    port = free_port()
    command = [binary, "-H", "127.0.0.1", "-p", str(port)]
    for process in serve(command, port, log_path, "moto_server", {**os.environ, **CREDENTIALS}):
        yield S3Server(process, f"http://127.0.0.1:{port}")

"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

- ``/metrics``: the Prometheus registry (prometheus-client's own WSGI app), process metrics included.
- ``/healthz``: 200 while the process, its observer thread and its loop are alive, else 503.
- ``/readyz``: 200 when the daemon can turn a drop into models: started, the database answers,
  the last dbt build did not fail; else 503 with the reason in one line.

Served by wsgiref in a daemon thread, one thread per request, so a slow database check never
holds a scrape of ``/metrics``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import REGISTRY

Check = Callable[[], tuple[bool, str]]
"""Answers (ok, reason in one line)."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Requests are not logged: a scrape every few seconds is not news."""


def make_app(liveness: Check, readiness: Check, registry: CollectorRegistry = REGISTRY) -> WSGIApplication:
    metrics_app = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", "use GET\n")
        if path in ("/healthz", "/readyz"):
            ok, reason = (liveness if path == "/healthz" else readiness)()
            status = "200 OK" if ok else "503 Service Unavailable"
            return _text(start_response, status, f"{reason}\n")
        if path == "/":
            return _text(start_response, "200 OK", "wearable-pipeline: /metrics /healthz /readyz\n")
        return _text(start_response, "404 Not Found", "not found\n")

    return app


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


class HttpEndpoint:
    """The server; ``start`` binds (raising OSError when the address is taken) and serves."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        liveness: Check,
        readiness: Check,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.host = host
        self.port = port
        self._app = make_app(liveness, readiness, registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server_class = _IPv6Server if ":" in self.host else _Server
        self._server = make_server(
            self.host, self.port, self._app, server_class=server_class, handler_class=_QuietHandler
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="http-endpoint",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

"""A Harbor stand-in on 127.0.0.1: the catalog closed as Harbor closes it to non-admins, the project API that
lists a project's repositories page by page (basic auth ``admin``/``PASSWORD`` required), and every other
``/v2/`` request passed through to a real Distribution (uploads too, their ``Location`` pointed back at the stub).

    start_harbor_stub(upstream, catalog_status)   context manager yielding a HarborStub (``host``, ``pages``)
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterator

import httpx

from support.registry import RunningRegistry, registry_catalog

__all__ = ["PASSWORD", "HarborStub", "start_harbor_stub"]

PASSWORD = "harbor-stub-pw"


@dataclass
class HarborStub:
    upstream: RunningRegistry
    catalog_status: int
    host: str = ""
    pages: list[tuple[str, int, int]] = field(default_factory=list)
    """(project, page, page_size) of every repositories request that passed auth."""


def _handler(stub: HarborStub, client: httpx.Client) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._route()

        def do_HEAD(self) -> None:  # noqa: N802
            self._route()

        def do_POST(self) -> None:  # noqa: N802
            self._route()

        def do_PUT(self) -> None:  # noqa: N802
            self._route()

        def do_PATCH(self) -> None:  # noqa: N802
            self._route()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _route(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/v2/_catalog":  # as Harbor's v2auth answers a user without the admin role
                challenge = {"Www-Authenticate": 'Basic realm="harbor"'} if stub.catalog_status == 401 else {}
                self._json(stub.catalog_status, {"errors": [{"code": "UNAUTHORIZED",
                                                             "message": "unauthorized to list catalog"}]}, challenge)
            elif url.path.startswith("/api/v2.0/projects/") and url.path.endswith("/repositories"):
                self._repositories(url.path.split("/")[4], urllib.parse.parse_qs(url.query))
            elif url.path.startswith("/v2/"):
                self._pass_through()
            else:
                self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such API"}]})

        def _repositories(self, project: str, query: dict[str, list[str]]) -> None:
            expected = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "unauthorized"}]})
                return
            names = sorted(r for r in registry_catalog(stub.upstream) if r.startswith(project + "/"))
            if not names:
                self._json(404, {"errors": [{"code": "NOT_FOUND", "message": f"project {project} not found"}]})
                return
            page, size = int(query["page"][0]), int(query["page_size"][0])
            stub.pages.append((project, page, size))
            chunk = names[(page - 1) * size: page * size]
            body = [{"id": n, "name": name, "project_id": 1, "artifact_count": 1} for n, name in enumerate(chunk)]
            self._json(200, body, {"X-Total-Count": str(len(names))})

        def _pass_through(self) -> None:
            forwarded = ("accept", "range", "content-type", "content-range")
            headers = {k: v for k, v in self.headers.items() if k.lower() in forwarded}
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = client.request(self.command, f"{stub.upstream.url}{self.path}", headers=headers, content=body)
            self.send_response(answer.status_code)
            for name in ("content-type", "docker-content-digest", "link", "content-range", "range",
                         "docker-upload-uuid"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            if "location" in answer.headers:
                self.send_header("Location", answer.headers["location"].replace(stub.upstream.url, ""))
            self.send_header("Content-Length", answer.headers.get("content-length", str(len(answer.content))))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.content)

        def _json(self, status: int, value: object, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, text in (extra or {}).items():
                self.send_header(name, text)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


@contextlib.contextmanager
def start_harbor_stub(upstream: RunningRegistry, catalog_status: int) -> Iterator[HarborStub]:
    """The stub in front of ``upstream``; its catalog answers ``catalog_status`` (401, 403 or 404)."""
    stub = HarborStub(upstream, catalog_status)
    with httpx.Client(timeout=30) as client:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub, client))
        stub.host = f"127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        try:
            yield stub
        finally:
            server.shutdown()
            server.server_close()

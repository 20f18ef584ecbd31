"""unpack into a Harbor-shaped registry: a stub of Harbor's project API in front of a real Distribution.

The stub answers ``/api/v2.0`` like Harbor (systeminfo, HEAD/POST projects, a ``sid`` cookie that
turns a later POST into a CSRF failure if it is sent back), refuses writes into missing projects
with Harbor's ``401 project X not found`` and re-pushes of tags in immutable projects with 412,
and proxies everything else under ``/v2/`` to the real registry behind it.
"""

from __future__ import annotations

import http.client
import http.server
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import AuthError, InputError, PushRefusedError, Remedy
from bundler.registry import RegistryOptions
from bundler.unpack import UnpackOptions, unpack
from support.options import offline_options, registry_options
from support.registry import MANIFEST_ACCEPT, RunningRegistry, registry_catalog
from support.sources import RecordingProgress, SourceSet, assert_registry_holds, expected_state

_REPO_RE = re.compile(r"^/v2/(.+?)/(blobs|manifests|tags)(/.*)?$")
_HOP = {"connection", "transfer-encoding", "keep-alive", "content-length", "host"}


class HarborStub:
    def __init__(self, upstream: RunningRegistry, projects: set[str], *, immutable: set[str] = frozenset(),
                 systeminfo: bool = True) -> None:
        self.upstream = upstream
        self.projects = set(projects)
        self.immutable = set(immutable)
        self.systeminfo = systeminfo
        self.created: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.cookies_received: list[str] = []
        self.cookies_set = 0
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                stub.handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ---- dispatch

    def handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(req.path)
        body = self._body(req)
        self.requests.append((req.command, url.path))
        if req.headers.get("Cookie"):
            self.cookies_received.append(req.headers["Cookie"])
        if url.path.startswith("/api/v2.0/"):
            self._api(req, url, body)
        elif url.path.startswith("/v2/"):
            self._registry(req, url, body)
        else:
            self._send(req, 404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]})

    def _api(self, req: http.server.BaseHTTPRequestHandler, url: urllib.parse.SplitResult, body: bytes) -> None:
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/api/v2.0/systeminfo" and req.command == "GET" and self.systeminfo:
            self._send(req, 200, {"auth_mode": "db_auth", "harbor_version": "v2.10.0-stub"}, cookie=True)
        elif url.path == "/api/v2.0/projects" and req.command == "HEAD":
            name = (query.get("project_name") or [""])[0]
            self._send(req, 200 if name in self.projects else 404, None, cookie=True)
        elif url.path == "/api/v2.0/projects" and req.command == "POST":
            if req.headers.get("Cookie"):
                self._send(req, 403, {"errors": [{"code": "FORBIDDEN", "message": "CSRF token invalid"}]})
                return
            document = json.loads(body)
            self.created.append(document)
            name = document["project_name"]
            if name in self.projects:
                self._send(req, 409, {"errors": [{"code": "CONFLICT", "message": f"The project named {name} already exists"}]})
            else:
                self.projects.add(name)
                self._send(req, 201, None, cookie=True)
        else:
            self._send(req, 404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})

    def _registry(self, req: http.server.BaseHTTPRequestHandler, url: urllib.parse.SplitResult, body: bytes) -> None:
        match = _REPO_RE.match(url.path)
        if match and req.command in ("POST", "PUT", "PATCH", "DELETE"):
            project = match.group(1).split("/", 1)[0]
            if project not in self.projects:
                self._send(req, 401, {"errors": [{"code": "UNAUTHORIZED", "message": f"project {project} not found"}]})
                return
            reference = (match.group(3) or "").lstrip("/")
            if (project in self.immutable and match.group(2) == "manifests" and req.command == "PUT"
                    and ":" not in reference and self._upstream(req, "HEAD", url.path, b"", accept=MANIFEST_ACCEPT)[0] == 200):
                self._send(req, 412, {"errors": [{"code": "PRECONDITION",
                                                  "message": "Failed to process request due to 'tag is immutable'"}]})
                return
        status, headers, data = self._upstream(req, req.command, req.path, body)
        req.send_response(status)
        for key, value in headers:
            if key.lower() not in _HOP:
                req.send_header(key, value)
        length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
        req.send_header("Content-Length", length if req.command == "HEAD" else str(len(data)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)

    # ---- plumbing

    def _upstream(self, req: http.server.BaseHTTPRequestHandler, method: str, path: str, body: bytes, *,
                  accept: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream.host.split(":")[0], int(self.upstream.host.split(":")[1]),
                                                timeout=30)
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP}
        headers["Host"] = self.host  # Distribution builds Location from Host: uploads keep coming through us
        headers["Content-Length"] = str(len(body))
        if accept is not None:
            headers["Accept"] = accept
        try:
            connection.request(method, path, body=body if method not in ("HEAD", "GET") else None, headers=headers)
            response = connection.getresponse()
            data = response.read() if method != "HEAD" else b""
            return response.status, response.getheaders(), data
        finally:
            connection.close()

    @staticmethod
    def _body(req: http.server.BaseHTTPRequestHandler) -> bytes:
        if req.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(req.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    req.rfile.readline()
                    return b"".join(parts)
                parts.append(req.rfile.read(size))
                req.rfile.readline()
        return req.rfile.read(int(req.headers.get("Content-Length") or 0))

    def _send(self, req: http.server.BaseHTTPRequestHandler, status: int, document: Any, *, cookie: bool = False) -> None:
        payload = json.dumps(document).encode() if document is not None else b""
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(payload)))
        if cookie:
            self.cookies_set += 1
            req.send_header("Set-Cookie", "sid=stub-session-id; Path=/; HttpOnly")
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(payload)

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests if p.startswith("/v2/") and m in ("POST", "PUT", "PATCH")]


@pytest.fixture
def harbor(fresh_registry: RunningRegistry) -> Iterator[Any]:
    stubs: list[HarborStub] = []

    def make(projects: set[str] = frozenset(), **kwargs: Any) -> HarborStub:
        stub = HarborStub(fresh_registry, projects, **kwargs)
        stub.thread.start()
        stubs.append(stub)
        return stub

    yield make
    for stub in stubs:
        stub.server.shutdown()
        stub.server.server_close()


def options_for(stub: HarborStub) -> RegistryOptions:
    return offline_options(retries=1)


MAPS = [("quay.io/pause", "k8s/pause")]


def test_missing_projects_are_named_before_any_push(harbor: Any, small_bundle: Path) -> None:
    stub = harbor({"calico"})
    with pytest.raises(PushRefusedError) as caught:
        unpack(small_bundle, UnpackOptions(to=stub.host, maps=MAPS), options_for(stub))
    message = str(caught.value)
    assert "k8s" in message and "calico" not in message and caught.value.remedy is Remedy.CREATE_PROJECTS
    assert stub.host in message
    assert stub.writes() == []


def test_create_projects_then_push_without_sending_cookies(harbor: Any, small_bundle: Path,
                                                           small_source: SourceSet) -> None:
    stub = harbor({"k8s"})
    result = unpack(small_bundle, UnpackOptions(to=stub.host, maps=MAPS, create_projects=True), options_for(stub))
    assert not result.failed, result.failure_summary()
    assert result.projects_created == ["calico"]
    assert stub.created == [{"project_name": "calico", "metadata": {"public": "false"}}]
    assert stub.cookies_set > 0 and stub.cookies_received == []
    expected = expected_state(small_source, lambda i: "k8s/pause" if i.path == "pause" else i.path)
    assert_registry_holds(stub.upstream, expected)
    assert result.blobs_mounted > 0  # calico/cni took calico/node's layers through the stub

    public = unpack(small_bundle, UnpackOptions(to=f"{stub.host}/shared", create_projects=True, public=True),
                    options_for(stub))
    assert not public.failed and public.projects_created == ["shared"]
    assert stub.created[-1] == {"project_name": "shared", "metadata": {"public": "true"}}
    # a new run knows no mount source outside its own target repositories: each digest is uploaded once more
    assert public.bytes_uploaded == sum(small_source.blob_sizes().values()) and public.blobs_mounted > 0


def test_immutable_tag_is_refused_naming_it_and_only_that_image_fails(harbor: Any, small_bundle: Path) -> None:
    stub = harbor({"locked"}, immutable={"locked"})
    first = unpack(small_bundle, UnpackOptions(to=f"{stub.host}/locked", maps=[("quay.io/calico/node", "x")]),
                   options_for(stub))
    assert not first.failed
    second = unpack(small_bundle, UnpackOptions(to=f"{stub.host}/locked",
                                                maps=[("quay.io/calico/cni", "x"), ("quay.io/calico/node", "y")]),
                    options_for(stub))
    [failed] = second.failed
    assert isinstance(failed.error, PushRefusedError)
    assert "locked/x:v3.26.4" in str(failed.error) and "immutable" in failed.reason  # the reason leaves the name to its line
    assert {o.target.repository for o in second.pushed} == {"locked/y", "locked/pause"}


def test_push_error_names_missing_project_when_harbor_is_not_recognised(harbor: Any, small_bundle: Path) -> None:
    stub = harbor(set(), systeminfo=False)
    result = unpack(small_bundle, UnpackOptions(to=f"{stub.host}/mirror"), options_for(stub))
    assert len(result.failed) == len(result.images)
    error = result.failure_error()
    assert isinstance(error, AuthError)
    assert all("project mirror does not exist" in o.reason for o in result.failed)


def test_harbor_repository_without_project_is_an_input_error(harbor: Any, small_bundle: Path) -> None:
    stub = harbor({"calico", "pause"})
    with pytest.raises(InputError, match="pause"):
        unpack(small_bundle, UnpackOptions(to=stub.host), options_for(stub))
    assert stub.writes() == []


def test_create_projects_on_a_plain_registry_only_warns(registry: RunningRegistry, small_bundle: Path) -> None:
    progress = RecordingProgress()
    result = unpack(small_bundle, UnpackOptions(to=f"{registry.host}/plainproj", create_projects=True),
                    registry_options(registry), progress=progress)
    assert not result.failed and result.projects_created == []
    assert any("not Harbor" in w for w in progress.warnings)
    assert "plainproj/calico/node" in registry_catalog(registry)

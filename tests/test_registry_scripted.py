"""What a real registry will not do on demand: lies, drops, throttling, redirects, Harbor quirks.

Each test scripts a tiny HTTP server on 127.0.0.1 (``ScriptedServer``): a function from the request
seen to the reply to send, with every request recorded for assertions.
"""

from __future__ import annotations

import base64
import http.server
import json
import random
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bundler.digest import Digest
from bundler.errors import (
    AuthError,
    NotFoundError,
    PushRefusedError,
    RegistryContentError,
    RegistryError,
    Remedy,
    UnreachableError,
)
from bundler.oci import DOCKER_SCHEMA1_SIGNED, OCI_MANIFEST, RawManifest
from bundler.registry import Backoff, RegistryClient, RegistryOptions
from bundler.registry import retry as retry_module
from bundler.registry.options import MiB
from bundler.stores import Placement
from support.options import offline_options

SEED = 424242


# --------------------------------------------------------------------------------------------------
# The scripted server


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut_after: int | None = None  # send only this many body bytes, then drop the connection


Script = Callable[[Seen], "Reply | None"]


class ScriptedServer:
    """Answers with ``script(seen)``; ``None`` means: 200 for ``GET /v2/``, 404 otherwise."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.seen: list[Seen] = []
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def requests(self, method: str | None = None, path_part: str = "") -> list[Seen]:
        return [s for s in self.seen if (method is None or s.method == method) and path_part in s.path]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                seen = Seen(self.command, parsed.path, urllib.parse.parse_qs(parsed.query),
                            {k.lower(): v for k, v in self.headers.items()}, body)
                server.seen.append(seen)
                reply = server.script(seen)
                if reply is None:
                    reply = Reply(200, body=b"{}") if parsed.path == "/v2/" else Reply(404)
                self.send_response(reply.status)
                headers = {"Content-Length": str(len(reply.body)), **reply.headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body[: reply.cut_after])
                if reply.cut_after is not None:
                    self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records the retry waits instead of sleeping them."""
    recorded: list[float] = []
    monkeypatch.setattr(retry_module, "_sleep", recorded.append)
    return recorded


def options(**overrides: object) -> RegistryOptions:
    return offline_options(**{"backoff": Backoff(initial=0.001, maximum=0.002), "retries": 2, **overrides})


def payload(size: int) -> tuple[bytes, Digest]:
    data = random.Random(SEED + size).randbytes(size)
    return data, Digest.of(data)


MANIFEST = b'{"schemaVersion": 2, "mediaType": "%s", "config": {"mediaType": "x", "digest": "sha256:%s", "size": 1}}' % (
    OCI_MANIFEST.encode(), b"a" * 64)


def manifest_reply(data: bytes = MANIFEST, **headers: str) -> Reply:
    return Reply(200, {"Content-Type": OCI_MANIFEST, **headers}, data)


# --------------------------------------------------------------------------------------------------
# Content that does not match


def test_manifest_by_digest_must_hash_to_it(scripted: Callable[[Script], ScriptedServer]) -> None:
    server = scripted(lambda seen: manifest_reply() if "/manifests/" in seen.path else None)
    wanted = Digest.of(b"other bytes")
    with RegistryClient(server.host, options()) as client, pytest.raises(RegistryContentError) as caught:
        client.manifest_get("lib/app", wanted)
    assert caught.value.exit_code == 14
    assert f"{server.host}/lib/app@{wanted}" in str(caught.value)


def test_manifest_by_tag_is_checked_against_docker_content_digest(scripted: Callable[[Script], ScriptedServer]) -> None:
    lie = Digest.of(b"not it")
    server = scripted(lambda seen: manifest_reply(**{"Docker-Content-Digest": lie}) if "/manifests/" in seen.path else None)
    with RegistryClient(server.host, options()) as client, pytest.raises(RegistryContentError):
        client.manifest_get("lib/app", "1")
    honest = scripted(lambda seen: manifest_reply(**{"Docker-Content-Digest": Digest.of(MANIFEST)}) if "/manifests/" in seen.path else None)
    with RegistryClient(honest.host, options()) as client:
        assert client.manifest_get("lib/app", "1").data == MANIFEST


def test_schema1_is_refused(scripted: Callable[[Script], ScriptedServer]) -> None:
    schema1 = b'{"schemaVersion": 1, "name": "lib/app", "tag": "1", "fsLayers": []}'
    server = scripted(lambda seen: Reply(200, {"Content-Type": DOCKER_SCHEMA1_SIGNED}, schema1) if "/manifests/" in seen.path else None)
    with RegistryClient(server.host, options()) as client, pytest.raises(RegistryContentError) as caught:
        client.manifest_get("lib/app", "1")
    assert "schema1" in str(caught.value) and "re-push" in str(caught.value)


def test_oversized_manifest_is_refused_before_reading(scripted: Callable[[Script], ScriptedServer]) -> None:
    huge = Reply(200, {"Content-Type": OCI_MANIFEST, "Content-Length": str(5 * MiB)}, b"{" * 1000, cut_after=1000)
    server = scripted(lambda seen: huge if "/manifests/" in seen.path else None)
    with RegistryClient(server.host, options()) as client, pytest.raises(RegistryContentError) as caught:
        client.manifest_get("lib/app", "1")
    assert "larger than 4 MiB" in str(caught.value)
    assert len(server.requests("GET", "/manifests/")) == 1


def test_blob_with_wrong_content_or_too_long(scripted: Callable[[Script], ScriptedServer]) -> None:
    data, digest = payload(1000)
    replies = {"/blobs/": Reply(200, {}, bytes(reversed(data)))}
    server = scripted(lambda seen: next((r for part, r in replies.items() if part in seen.path), None))
    with RegistryClient(server.host, options()) as client:
        with pytest.raises(RegistryContentError) as caught:
            list(client.blob_chunks("lib/app", digest, len(data)))
        assert f"lib/app@{digest}" in str(caught.value) and caught.value.exit_code == 14
        replies["/blobs/"] = Reply(200, {}, data * 5)
        with pytest.raises(RegistryContentError) as caught:
            list(client.blob_chunks("lib/app", digest, len(data)))
        assert "more than the declared 1000 bytes" in str(caught.value)


def test_put_digests_are_checked(scripted: Callable[[Script], ScriptedServer]) -> None:
    lie = Digest.of(b"lie")

    def script(seen: Seen) -> Reply | None:
        if seen.method == "POST":
            return Reply(202, {"Location": "/v2/lib/app/blobs/uploads/1"})
        if seen.method == "PUT":
            return Reply(201, {"Docker-Content-Digest": lie})
        return None

    server = scripted(script)
    data, digest = payload(10)
    manifest = RawManifest.from_bytes(MANIFEST, OCI_MANIFEST)
    with RegistryClient(server.host, options()) as client:
        with pytest.raises(RegistryContentError):
            client.blob_upload("lib/app", digest, 10, lambda: [data])
        with pytest.raises(RegistryContentError) as caught:
            client.manifest_put("lib/app", "1", manifest)
    assert lie in str(caught.value)
    assert server.requests("PUT", "/manifests/")[0].headers["content-type"] == OCI_MANIFEST


# --------------------------------------------------------------------------------------------------
# Retries


def test_retry_honours_retry_after(scripted: Callable[[Script], ScriptedServer], sleeps: list[float]) -> None:
    answers = iter([Reply(503, {"Retry-After": "0"}), Reply(429, {"Retry-After": "3"}), manifest_reply()])
    server = scripted(lambda seen: next(answers) if "/manifests/" in seen.path else None)
    with RegistryClient(server.host, options(retry_after_max=60)) as client:
        assert client.manifest_get("lib/app", "1").data == MANIFEST
    assert sleeps == [0.0, 3.0]


def test_retry_after_is_capped(scripted: Callable[[Script], ScriptedServer], sleeps: list[float]) -> None:
    answers = iter([Reply(429, {"Retry-After": "86400"}), manifest_reply()])
    server = scripted(lambda seen: next(answers) if "/manifests/" in seen.path else None)
    with RegistryClient(server.host, options(retry_after_max=2.5)) as client:
        client.manifest_get("lib/app", "1")
    assert sleeps == [2.5]


def test_retry_budget_runs_out(scripted: Callable[[Script], ScriptedServer], sleeps: list[float]) -> None:
    body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "busy"}]}).encode()
    server = scripted(lambda seen: Reply(503, {}, body) if "/manifests/" in seen.path else None)
    with RegistryClient(server.host, options(retries=3)) as client, pytest.raises(RegistryError) as caught:
        client.manifest_get("lib/app", "1")
    assert type(caught.value) is RegistryError and "503" in str(caught.value) and "busy" in str(caught.value)
    assert len(server.requests("GET", "/manifests/")) == 4 and len(sleeps) == 3


def test_dropped_connections_end_as_unreachable(scripted: Callable[[Script], ScriptedServer], sleeps: list[float]) -> None:
    server = scripted(lambda seen: Reply(200, {}, MANIFEST, cut_after=5) if "/manifests/" in seen.path else None)
    with RegistryClient(server.host, options()) as client, pytest.raises(UnreachableError) as caught:
        client.manifest_get("lib/app", "1")
    assert server.host in str(caught.value) and len(server.requests("GET", "/manifests/")) == 3


def test_not_found_is_not_retried(scripted: Callable[[Script], ScriptedServer], sleeps: list[float]) -> None:
    server = scripted(lambda seen: None)
    with RegistryClient(server.host, options()) as client, pytest.raises(NotFoundError):
        client.manifest_get("lib/app", "1")
    assert sleeps == [] and len(server.requests("GET", "/manifests/")) == 1


# --------------------------------------------------------------------------------------------------
# Blob downloads: resume and redirects


@pytest.mark.parametrize("honours_range", [True, False])
def test_blob_download_resumes_after_a_drop(scripted: Callable[[Script], ScriptedServer], sleeps: list[float], honours_range: bool) -> None:
    data, digest = payload(2 * MiB + 12345)

    def script(seen: Seen) -> Reply | None:
        if "/blobs/" not in seen.path:
            return None
        gets = len(server.requests("GET", "/blobs/"))
        if gets == 1:
            return Reply(200, {}, data, cut_after=MiB + 5000)  # the client keeps its first whole MiB
        start = int(re.fullmatch(r"bytes=(\d+)-", seen.headers["range"]).group(1))  # type: ignore[union-attr]
        if not honours_range:
            return Reply(200, {}, data)
        return Reply(206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, data[start:])

    server = scripted(script)
    with RegistryClient(server.host, options()) as client:
        assert b"".join(client.blob_chunks("lib/app", digest, len(data))) == data
    gets = server.requests("GET", "/blobs/")
    assert len(gets) == 2 and "range" not in gets[0].headers and gets[1].headers["range"] == f"bytes={MiB}-"
    assert len(sleeps) == 1


def test_redirect_to_storage_never_carries_authorization(scripted: Callable[[Script], ScriptedServer]) -> None:
    data, digest = payload(5000)
    storage = scripted(lambda seen: Reply(200, {}, data) if seen.path == "/bucket/blob" else None)
    basic = "Basic " + base64.b64encode(b"alice:wonderland").decode()

    def registry_script(seen: Seen) -> Reply | None:
        if seen.headers.get("authorization") != basic:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="test"'})
        if "/blobs/" in seen.path:
            return Reply(307, {"Location": f"{storage.url}/bucket/blob?X-Amz-Signature=s1gn3d&X-Amz-Expires=300"})
        return None

    registry = scripted(registry_script)
    creds = {registry.host: ("alice", "wonderland")}
    with RegistryClient(registry.host, options(credentials=creds)) as client:
        assert client.blob_exists("lib/app", digest) is True
        assert storage.seen == []  # HEAD does not follow the redirect
        assert b"".join(client.blob_chunks("lib/app", digest, len(data))) == data
    (fetched,) = storage.seen
    assert "authorization" not in fetched.headers and fetched.query["X-Amz-Signature"] == ["s1gn3d"]
    assert registry.requests("GET", "/blobs/")[-1].headers["authorization"] == basic


# --------------------------------------------------------------------------------------------------
# Uploads


class UploadRegistry:
    """Distribution's upload protocol in miniature: a new ``_state`` per step, stale ones refused with 416."""

    def __init__(self, *, relative: bool = True) -> None:
        self.relative = relative
        self.sessions: dict[str, bytearray] = {}
        self.states: dict[str, int] = {}
        self.put_failures = 0
        self.server: ScriptedServer

    def location(self, session: str) -> str:
        self.states[session] = self.states.get(session, 0) + 1
        path = f"/v2/lib/app/blobs/uploads/{session}?_state={session}-{self.states[session]}"
        return path if self.relative else f"{self.server.url}{path}"

    def __call__(self, seen: Seen) -> Reply | None:
        if seen.method == "POST":
            session = f"s{len(self.sessions)}"
            self.sessions[session] = bytearray()
            return Reply(202, {"Location": self.location(session)})
        if "/uploads/" not in seen.path:
            return None
        session = seen.path.rsplit("/", 1)[1]
        if seen.query.get("_state") != [f"{session}-{self.states[session]}"]:
            return Reply(416)
        if seen.method == "PATCH":
            start, end = map(int, seen.headers["content-range"].split("-"))
            assert start == len(self.sessions[session]) and end == start + len(seen.body) - 1
            self.sessions[session] += seen.body
            self.relative = not self.relative  # alternate relative and absolute Locations
            return Reply(202, {"Location": self.location(session)})
        if seen.method == "PUT":
            if self.put_failures:
                self.put_failures -= 1
                return Reply(500)
            self.sessions[session] += seen.body
            return Reply(201, {"Docker-Content-Digest": Digest.of(bytes(self.sessions[session]))})
        return None


def start_upload_registry(scripted: Callable[[Script], ScriptedServer], **kwargs: bool) -> UploadRegistry:
    fake = UploadRegistry(**kwargs)
    fake.server = scripted(fake)
    return fake


def test_chunked_upload_always_uses_the_latest_location(scripted: Callable[[Script], ScriptedServer]) -> None:
    fake = start_upload_registry(scripted)
    data, digest = payload(10_000)
    with RegistryClient(fake.server.host, options(chunk_size=3000)) as client:
        assert client.blob_upload("lib/app", digest, len(data), lambda: [data]) is Placement.UPLOADED
    assert bytes(fake.sessions["s0"]) == data
    patches = fake.server.requests("PATCH")
    assert [p.headers["content-range"] for p in patches] == ["0-2999", "3000-5999", "6000-8999", "9000-9999"]
    assert fake.server.requests("PUT")[0].query["digest"] == [digest]


def test_failed_upload_restarts_in_a_fresh_session(scripted: Callable[[Script], ScriptedServer], sleeps: list[float]) -> None:
    fake = start_upload_registry(scripted)
    fake.put_failures = 1
    data, digest = payload(2000)
    calls: list[int] = []
    with RegistryClient(fake.server.host, options()) as client:
        assert client.blob_upload("lib/app", digest, len(data), lambda: calls.append(1) or iter([data])) is Placement.UPLOADED
    assert len(calls) == 2 and list(fake.sessions) == ["s0", "s1"] and bytes(fake.sessions["s1"]) == data


def test_refused_mount_falls_back_to_upload(scripted: Callable[[Script], ScriptedServer]) -> None:
    fake = UploadRegistry()

    def script(seen: Seen) -> Reply | None:
        if seen.method == "POST" and "mount" in seen.query:
            return Reply(401, {}, json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "project src not found"}]}).encode())
        return fake(seen)

    fake.server = scripted(script)
    data, digest = payload(300)
    with RegistryClient(fake.server.host, options()) as client:
        assert client.blob_upload("lib/app", digest, len(data), lambda: [data], mount_from="src/app") is Placement.UPLOADED
    posts = fake.server.requests("POST")
    assert [p.query.get("from") for p in posts] == [["src/app"], None]


def test_413_from_a_proxy_suggests_a_smaller_chunk_size(scripted: Callable[[Script], ScriptedServer]) -> None:
    html = b"<html><head><title>413 Request Entity Too Large</title></head><body>nginx</body></html>"

    def script(seen: Seen) -> Reply | None:
        if seen.method == "POST":
            return Reply(202, {"Location": "/v2/lib/app/blobs/uploads/x"})
        if seen.method in ("PUT", "PATCH"):
            return Reply(413, {"Content-Type": "text/html"}, html)
        return None

    server = scripted(script)
    data, digest = payload(500)
    with RegistryClient(server.host, options()) as client, pytest.raises(PushRefusedError) as caught:
        client.blob_upload("lib/app", digest, len(data), lambda: [data])
    assert caught.value.exit_code == 15 and caught.value.remedy is Remedy.SMALLER_CHUNKS
    assert "nginx" not in str(caught.value)


# --------------------------------------------------------------------------------------------------
# Harbor's ways


class HarborTokens:
    """A Bearer challenge only for requests without Authorization, ``Basic realm="harbor"`` otherwise."""

    def __init__(self) -> None:
        self.issued = 0
        self.valid: set[str] = set()
        self.server: ScriptedServer

    def token_reply(self, seen: Seen) -> Reply:
        self.issued += 1
        token = f"t{self.issued}"
        return Reply(200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode())

    def challenge(self, seen: Seen) -> Reply:
        if "authorization" in seen.headers:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="harbor"'},
                         json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "unauthorized"}]}).encode())
        realm = f"{self.server.url}/service/token"
        return Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="harbor-registry"'})

    def token_of(self, seen: Seen) -> str:
        return seen.headers.get("authorization", "").removeprefix("Bearer ")


def test_harbor_missing_project_is_fatal_after_one_token(scripted: Callable[[Script], ScriptedServer]) -> None:
    harbor = HarborTokens()
    missing = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "project newproj not found"}]}).encode()

    def script(seen: Seen) -> Reply | None:
        if seen.path == "/service/token":
            return harbor.token_reply(seen)
        if "authorization" not in seen.headers:
            return harbor.challenge(seen)
        return Reply(401, {"WWW-Authenticate": 'Basic realm="harbor"'}, missing)

    harbor.server = scripted(script)
    data, digest = payload(10)
    with RegistryClient(harbor.server.host, options(credentials={harbor.server.host: ("robot$x", "pw")})) as client:
        with pytest.raises(AuthError) as caught:
            client.blob_upload("newproj/app", digest, 10, lambda: [data])
    assert "project newproj does not exist" in str(caught.value) and "create it" in str(caught.value)
    assert harbor.issued == 1 and len(harbor.server.requests("POST")) == 2


def test_harbor_basic_challenge_after_authorization_still_gets_a_new_token(scripted: Callable[[Script], ScriptedServer]) -> None:
    harbor = HarborTokens()

    def script(seen: Seen) -> Reply | None:
        if seen.path == "/service/token":
            reply = harbor.token_reply(seen)
            harbor.valid = {f"t{harbor.issued}"}  # a new token makes the older ones stale
            return reply
        if harbor.token_of(seen) not in harbor.valid:
            return harbor.challenge(seen)
        return manifest_reply() if "/manifests/" in seen.path else None

    harbor.server = scripted(script)
    with RegistryClient(harbor.server.host, options()) as client:
        client.manifest_get("lib/app", "1")
        harbor.valid = set()  # the server forgets t1: a cached token is refused with Basic realm="harbor"
        assert client.manifest_get("lib/app", "1").data == MANIFEST
    assert harbor.issued == 2
    token_requests = harbor.server.requests("GET", "/service/token")
    assert token_requests[1].query == {"service": ["harbor-registry"], "scope": ["repository:lib/app:pull"]}
    assert all(not s.headers.get("authorization", "").startswith("Basic") for s in harbor.server.seen)


def test_harbor_412_on_head_means_the_manifest_exists(scripted: Callable[[Script], ScriptedServer]) -> None:
    server = scripted(lambda seen: Reply(412) if "/manifests/" in seen.path else None)
    digest = Digest.of(MANIFEST)
    with RegistryClient(server.host, options()) as client:
        found = client.manifest_head("lib/app", digest)
    assert found is not None and found.digest == digest


def test_identity_token_uses_docker_oauth_post(scripted: Callable[[Script], ScriptedServer], tmp_path: Path) -> None:
    harbor = HarborTokens()

    def script(seen: Seen) -> Reply | None:
        if seen.path == "/oauth/token":
            form = urllib.parse.parse_qs(seen.body.decode())
            assert seen.method == "POST" and form["grant_type"] == ["refresh_token"]
            assert form["refresh_token"] == ["refresh-xyz"] and form["scope"] == ["repository:lib/app:pull"]
            return Reply(200, {}, json.dumps({"access_token": "at1", "expires_in": 300}).encode())
        if harbor.token_of(seen) != "at1":
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="{harbor.server.url}/oauth/token",service="reg"'})
        return manifest_reply() if "/manifests/" in seen.path else None

    harbor.server = scripted(script)
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"auths": {harbor.server.host: {"identitytoken": "refresh-xyz"}}}))
    with RegistryClient(harbor.server.host, options(docker_config_dir=config_dir)) as client:
        assert client.manifest_get("lib/app", "1").data == MANIFEST


# --------------------------------------------------------------------------------------------------
# Transport habits


def test_cookies_are_never_sent_back(scripted: Callable[[Script], ScriptedServer]) -> None:
    server = scripted(lambda seen: Reply(200, {"Set-Cookie": "sid=abc123; Path=/"}, b"{}") if seen.path == "/v2/" else manifest_reply())
    with RegistryClient(server.host, options()) as client:
        client.ping()
        client.manifest_get("lib/app", "1")
    assert server.seen and all("cookie" not in seen.headers for seen in server.seen)


def test_proxy_variables_do_not_apply_to_loopback(scripted: Callable[[Script], ScriptedServer], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = scripted(lambda seen: manifest_reply() if "/manifests/" in seen.path else None)
    with RegistryClient(server.host, options(retries=0)) as client:
        assert client.manifest_get("lib/app", "1").data == MANIFEST

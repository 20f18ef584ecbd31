"""The pull side of the OCI distribution API over a ``ServedView``: one handler per connection thread.

Manifests are sent byte-exact with their stored media type (checked against their digest); blobs,
whole or a ``Range`` (206), frame by frame from the bundle, each frame checked by its zstd checksum
as it is decompressed. The blob's digest is not computed again: hashing every byte served would cost
twice the decompression (docs/serve.md), every client checks it, and ``serve --verify`` proves it
first. Damage found while a body is on its way cuts the connection, so that no client keeps the
bytes as good; the log names the blob and the images it breaks. Every write method answers 405
``UNSUPPORTED``. Errors use the spec's JSON format.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

import msgspec

from bundler.digest import Digest
from bundler.errors import BundleError, InputError, LocalIOError
from bundler.oci import OCI_INDEX
from bundler.serve.view import page

if TYPE_CHECKING:
    from bundler.serve.server import RegistryServer
    from bundler.stores.bundle import BundleStore

__all__ = ["RegistryHandler", "parse_range"]

log = logging.getLogger("bundler.serve")

_NAME = r"(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+|__[a-z0-9]+|-+[a-z0-9]+)*)"
_ROUTES = [
    ("base", re.compile(r"^/v2/?$")),
    ("catalog", re.compile(r"^/v2/_catalog$")),
    ("tags", re.compile(rf"^/v2/{_NAME}/tags/list$")),
    ("manifest", re.compile(rf"^/v2/{_NAME}/manifests/(?P<ref>[A-Za-z0-9_.:+=-]+)$")),
    ("blob", re.compile(rf"^/v2/{_NAME}/blobs/(?P<ref>[A-Za-z0-9_.:+=-]+)$")),
    ("referrers", re.compile(rf"^/v2/{_NAME}/referrers/(?P<ref>[A-Za-z0-9_.:+=-]+)$")),
]
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_JSON = "application/json"


class _Failure(Exception):
    """An answer in the spec's error format."""

    def __init__(self, status: HTTPStatus, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of a single ``bytes=`` range; None for no range or one we answer whole (several
    ranges, another unit). ``ValueError`` for a range that cannot be satisfied."""
    match = _RANGE_RE.match((header or "").strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise ValueError("empty suffix range")
        return max(0, size - suffix), size
    start = int(first)
    stop = min(int(last) + 1, size) if last else size
    if start >= size or stop <= start:
        raise ValueError(f"bytes {first}-{last} of {size}")
    return start, stop


class RegistryHandler(BaseHTTPRequestHandler):
    """One client connection (HTTP/1.1 keep-alive); ``server`` is the ``RegistryServer``."""

    protocol_version = "HTTP/1.1"
    server_version = "imgbundle"
    disable_nagle_algorithm = True
    server: RegistryServer

    def setup(self) -> None:
        self.connection = self.request
        self.connection.settimeout(self.server.settings.client_timeout)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, in the connection's thread, under its timeout
        super().setup()
        self._sent = 0
        self._status = 0

    # --- dispatch ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_POST(self) -> None:
        self._refuse_write()

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _refuse_write(self) -> None:
        started = time.monotonic()
        self._send_failure(_Failure(HTTPStatus.METHOD_NOT_ALLOWED, "UNSUPPORTED",
                                    "this registry is read-only (imgbundle serve)",
                                    {"Connection": "close"}), head=False)  # its body, if any, is not read
        self._access_line(started)

    def _answer(self, *, head: bool) -> None:
        started = time.monotonic()
        with self.server.in_flight():
            self._answer_now(head)
        self._access_line(started)

    def _answer_now(self, head: bool) -> None:
        try:
            if not self.server.allows(self.headers.get("Authorization")):
                raise _Failure(HTTPStatus.UNAUTHORIZED, "UNAUTHORIZED", "authentication required",
                               {"WWW-Authenticate": 'Basic realm="imgbundle"'})
            self._route(head)
        except _Failure as failure:
            self._send_failure(failure, head)
        except BundleError as error:
            self._damaged(error)
        except (ConnectionError, TimeoutError, ssl.SSLError) as error:
            self.close_connection = True
            log.info("%s: connection lost: %s", self.address_string(), error)

    def _route(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        for kind, pattern in _ROUTES:
            match = pattern.match(url.path)
            if match is None:
                continue
            groups = match.groupdict()
            name, ref = groups.get("name", ""), groups.get("ref", "")
            if kind == "base":
                return self._send_json({}, head)
            if kind == "catalog":
                return self._catalog(query, head)
            self._require_repository(name)
            if kind == "tags":
                return self._tags(name, query, head)
            if kind == "manifest":
                return self._manifest(name, ref, head)
            if kind == "blob":
                return self._blob(name, _digest(ref, "BLOB_UNKNOWN"), head)
            return self._referrers(name, _digest(ref, "MANIFEST_UNKNOWN"), query, head)
        raise _Failure(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no such endpoint: {url.path[:200]}")

    # --- endpoints ---------------------------------------------------------------------------

    def _catalog(self, query: dict[str, list[str]], head: bool) -> None:
        names, more = page(self.server.view.repositories, *_paging(query))
        self._send_json({"repositories": names}, head, self._next_link("/v2/_catalog", names, more, query))

    def _tags(self, name: str, query: dict[str, list[str]], head: bool) -> None:
        tags, more = page(sorted(self.server.view.tags[name]), *_paging(query))
        self._send_json({"name": name, "tags": tags}, head, self._next_link(f"/v2/{name}/tags/list", tags, more, query))

    def _manifest(self, name: str, reference: str, head: bool) -> None:
        view = self.server.view
        digest = view.resolve(name, reference)
        if digest is None:
            raise _Failure(HTTPStatus.NOT_FOUND, "MANIFEST_UNKNOWN", f"{name}:{reference[:200]} is not served")
        raw = view.manifest(digest)
        headers = {"Docker-Content-Digest": raw.digest, "ETag": f'"{raw.digest}"'}
        self._send_bytes(raw.data, raw.media_type, head, headers)

    def _blob(self, name: str, digest: Digest, head: bool) -> None:
        found = self.server.view.blob_store(digest)
        if found is None:
            raise _Failure(HTTPStatus.NOT_FOUND, "BLOB_UNKNOWN", f"blob {digest} is in no served bundle")
        status, length, headers, chunks = self._blob_part(found[0], digest, found[1])
        if head:
            self._start(status, "application/octet-stream", length, headers)
            return
        with self.server.stream_slot() as ready:
            if not ready:
                raise _Failure(HTTPStatus.SERVICE_UNAVAILABLE, "TOOMANYREQUESTS", "too many blobs on their way",
                               {"Retry-After": "1"})
            self._start(status, "application/octet-stream", length, headers)
            self._stream(digest, chunks)

    def _blob_part(self, store: BundleStore, digest: Digest, size: int
                   ) -> tuple[HTTPStatus, int, dict[str, str], Callable[[], Iterator[bytes]]]:
        """Status, length, headers and the chunks of the whole blob, or of the one range asked for."""
        headers = {"Docker-Content-Digest": digest, "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
        try:
            span = parse_range(self.headers.get("Range"), size)
        except ValueError:
            raise _Failure(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "RANGE_INVALID", "range not satisfiable",
                           {"Content-Range": f"bytes */{size}"}) from None
        status, (start, stop) = (HTTPStatus.OK, (0, size)) if span is None else (HTTPStatus.PARTIAL_CONTENT, span)
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return status, stop - start, headers, lambda: store.blob_range(digest, start, stop)

    def _referrers(self, name: str, digest: Digest, query: dict[str, list[str]], head: bool) -> None:
        descriptors = self.server.view.referrers(name, digest)
        headers = {}
        wanted = query.get("artifactType")
        if wanted:
            descriptors = [d for d in descriptors if d.artifact_type == wanted[0]]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": msgspec.to_builtins(descriptors)}
        self._send_bytes(json.dumps(body).encode(), OCI_INDEX, head, headers)

    def _require_repository(self, name: str) -> None:
        if not self.server.view.has_repository(name):
            raise _Failure(HTTPStatus.NOT_FOUND, "NAME_UNKNOWN", f"repository {name} is not served")

    # --- sending -----------------------------------------------------------------------------

    def _stream(self, digest: Digest, open_chunks: Callable[[], Iterator[bytes]]) -> None:
        """Send the chunks of a blob; damage cuts the connection."""
        try:
            for chunk in open_chunks():
                self.wfile.write(chunk)
                self._sent += len(chunk)
        except BundleError as error:
            self._cut(digest, error)

    def _cut(self, digest: Digest, error: BundleError) -> None:
        """Damage mid-body: the client must not take a short body for a whole one, so the connection goes."""
        self.close_connection = True
        images = self.server.view.images_needing(digest)
        log.error("damaged bundle data, connection cut: blob %s (%s); it breaks: %s", digest, error,
                  ", ".join(images) or "no served image")
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _damaged(self, error: BundleError) -> None:
        """Damage or a read error before any byte of the body was sent (a manifest): cut as well."""
        self.close_connection = True
        kind = "cannot read the bundle" if isinstance(error, LocalIOError) else "damaged bundle data"
        log.error("%s, connection cut: %s %s", kind, self.command, error)
        self._status = 0
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _start(self, status: HTTPStatus, content_type: str, length: int, headers: dict[str, str]) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _send_bytes(self, data: bytes, content_type: str, head: bool, headers: dict[str, str] | None = None) -> None:
        self._start(HTTPStatus.OK, content_type, len(data), headers or {})
        if not head:
            self.wfile.write(data)
            self._sent += len(data)

    def _send_json(self, body: dict, head: bool, link: str | None = None) -> None:
        self._send_bytes(json.dumps(body).encode(), _JSON, head, {"Link": link} if link else {})

    def _send_failure(self, failure: _Failure, head: bool) -> None:
        body = {"errors": [{"code": failure.code, "message": str(failure), "detail": None}]}
        data = json.dumps(body).encode()
        self._start(failure.status, _JSON, len(data), failure.headers)
        if not head:
            self.wfile.write(data)
            self._sent += len(data)

    def _next_link(self, path: str, names: list[str], more: bool, query: dict[str, list[str]]) -> str | None:
        if not more or not names:
            return None
        params = {"last": names[-1], **({"n": query["n"][0]} if "n" in query else {})}
        return f'<{path}?{urllib.parse.urlencode(params)}>; rel="next"'

    # --- logging -----------------------------------------------------------------------------

    def _access_line(self, started: float) -> None:
        path = urllib.parse.urlsplit(self.path).path
        log.info('%s "%s %s" %s %d %.3fs', self.address_string(), self.command, path[:300],
                 self._status or "-", self._sent, time.monotonic() - started)
        self._status, self._sent = 0, 0

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Replaced by ``_access_line``: one line per request, after its body."""

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


def _digest(text: str, code: str) -> Digest:
    try:
        return Digest(text)
    except InputError:
        raise _Failure(HTTPStatus.NOT_FOUND, code, f"{text[:200]!r} is not a digest") from None


def _paging(query: dict[str, list[str]]) -> tuple[int | None, str | None]:
    count = query.get("n", [None])[0]
    if count is not None and not count.isdigit():
        raise _Failure(HTTPStatus.BAD_REQUEST, "PAGINATION_NUMBER_INVALID", f"n={count[:20]!r} is not a number")
    return (int(count) if count is not None else None), query.get("last", [None])[0]

"""An httpx transport on the standard library's ``http.client``: httpx's API, a cheaper HTTP/1.1 wire.

httpx's default transport (httpcore and h11) copies every body byte three times and holds the GIL
for a long time per request; a pack is a gigabyte of bodies and thousands of requests, so that was
a large share of its CPU (docs/benchmark.md). Here a body is read straight from the socket into the chunk that
is handed on, a request is a few ``sendall`` calls, and an answer's head is parsed by hand (http.client's
email parser cost more than the rest of a small request). httpx still does everything above the
wire: auth flows, redirects, cookies, timeouts as configured, proxies from the environment (a
proxied URL goes to httpx's own transport).

One connection serves one request at a time; a finished one is kept for the next request to the
same origin, unless the server said it would close or sent something while idle.
"""

from __future__ import annotations

import http.client
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import httpx

__all__ = ["BODY_CHUNK", "BodyCutShort", "WireTransport"]

log = logging.getLogger(__name__)
"""Traces each answer's headers at DEBUG; ``install_log_redaction`` masks the secrets among them."""

BODY_CHUNK = 1024 * 1024
"""Bytes a response body is read in (the last piece is shorter)."""

_Origin = tuple[str, str, int]
MAX_LINE = 64 * 1024
"""Longest status or header line accepted, as http.client's limit."""
MAX_FIELDS = 100
"""Most header lines accepted in one answer, as http.client's limit."""
_UNSAFE_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_UNSAFE_FIELD = re.compile(rb"[\r\n\x00]")
_UNSAFE_NAME = re.compile(rb"[\x00-\x20:\x7f]")


class BodyCutShort(httpx.RemoteProtocolError):
    """The connection ended before the body its ``Content-Length`` promised."""


class WireTransport(httpx.BaseTransport):
    """HTTP/1.1 over keep-alive connections, ``keepalive`` idle ones kept per origin."""

    def __init__(self, context: ssl.SSLContext, keepalive: int) -> None:
        self._context = context
        self._keepalive = keepalive
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        connection = self._reuse(origin) or self._connect(origin, timeouts.get("connect"))
        try:
            _send(connection, request, timeouts.get("write"))
            answer = _receive(connection, request.method, timeouts.get("read"))
        except BaseException:
            connection.close()
            raise
        headers = answer.msg.items()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("answer to %s %s: %d %s %s", request.method, request.url, answer.status, answer.reason, headers)
        return httpx.Response(
            answer.status,
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            stream=_Body(connection, answer, lambda: self._release(origin, connection), timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1" if answer.version == 11 else b"HTTP/1.0",
                        "reason_phrase": answer.reason.encode("latin-1", "replace")},
        )

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, {}, True
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _reuse(self, origin: _Origin) -> http.client.HTTPConnection | None:
        """An idle connection to ``origin`` that the server has not closed (or written to) meanwhile."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    return None
                connection = idle.pop()
            if connection.sock is not None and not _readable(connection.sock):
                return connection
            connection.close()

    def _connect(self, origin: _Origin, timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=self._context
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            with _as_httpx(httpx.ConnectTimeout, httpx.ConnectError):  # ssl.SSLError is an OSError
                connection.connect()
        except BaseException:
            connection.close()
            raise
        return connection

    def _release(self, origin: _Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if not self._closed and len(idle) < self._keepalive:
                idle.append(connection)
                return
        connection.close()


def _origin(url: httpx.URL) -> _Origin:
    if url.scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


def _readable(sock: socket.socket) -> bool:
    """Whether an idle socket has something to read: the server closed it, or broke the protocol.

    ``poll`` where there is one: ``select`` refuses descriptors above 1023.
    """
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _send(connection: http.client.HTTPConnection, request: httpx.Request, timeout: float | None) -> None:
    """Request line, headers and body."""
    sock = connection.sock
    sock.settimeout(timeout)
    chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
    with _as_httpx(httpx.WriteTimeout, httpx.WriteError, broken=httpx.LocalProtocolError):
        sock.sendall(_head(request))
    for chunk in request.stream:  # type: ignore[union-attr]
        if chunk and not _write(sock, b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk):
            return
    if chunked:
        _write(sock, b"0\r\n\r\n")


def _head(request: httpx.Request) -> bytes:
    """The request line and header lines; ``ValueError`` for a target or header that would break them."""
    target = request.url.raw_path
    if _UNSAFE_TARGET.search(target):
        raise ValueError("unsafe characters in the request target")
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), target)]
    for name, value in request.headers.raw:
        if _UNSAFE_NAME.search(name) or _UNSAFE_FIELD.search(value):
            raise ValueError(f"unsafe characters in the request header {name!r}")
        lines.append(b"%s: %s" % (name, value))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def _write(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; False when the server has closed: it may have answered early (a 401, a 413), so
    the caller goes on to read the answer, and fails there when there is none."""
    try:
        sock.sendall(data)
    except TimeoutError as exc:
        raise httpx.WriteTimeout(str(exc) or "timed out") from exc
    except OSError:
        return False
    return True


def _receive(connection: http.client.HTTPConnection, method: str, timeout: float | None) -> http.client.HTTPResponse:
    """Status line and headers; an answer that ends its connection takes the socket with it."""
    connection.sock.settimeout(timeout)
    answer = _Answer(connection.sock, method=method)
    with _as_httpx(httpx.ReadTimeout, httpx.ReadError):
        answer.begin()
    if answer.will_close:
        connection.close()  # the answer's own file keeps the socket open until the body is read
    return answer


class _Fields:
    """An answer's header fields, as many as were sent and in order; ``get`` finds the first of a name."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._first: dict[str, str] = {}
        for name, value in fields:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def items(self) -> list[tuple[str, str]]:
        return self._fields


class _Answer(http.client.HTTPResponse):
    """http.client's answer with its head parsed here: the body reading (lengths, chunks) stays http.client's."""

    def __init__(self, sock: socket.socket, method: str) -> None:
        super().__init__(sock, method=method)
        self._head = method == "HEAD"

    def begin(self) -> None:
        version, status, reason = _read_status(self.fp)
        fields = _read_fields(self.fp)
        while status == http.client.CONTINUE:  # an interim answer: the real one follows
            version, status, reason = _read_status(self.fp)
            fields = _read_fields(self.fp)
        self.code = self.status = status
        self.reason = reason
        self.version = 10 if version == "HTTP/1.0" else 11
        self.headers = self.msg = fields  # type: ignore[assignment]
        self.chunked = (fields.get("transfer-encoding") or "").lower() == "chunked"
        self.chunk_left = None
        self.length = None if self.chunked else _length(fields.get("content-length"))
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or status < 200 or self._head:
            self.length = 0
        # no length and no chunks: the body ends when the connection does
        self.will_close = _closes(self.version, fields) or (not self.chunked and self.length is None)


def _read_status(fp: BinaryIO) -> tuple[str, int, str]:
    """``HTTP/1.x NNN reason``: the version, status and reason."""
    line = fp.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong("status line")
    if not line:
        raise http.client.RemoteDisconnected("the server closed the connection without an answer")
    version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise http.client.BadStatusLine(line.decode("latin-1").strip()[:80])
    return version, int(code), reason.strip()


def _closes(version: int, fields: _Fields) -> bool:
    """Whether the server ends the connection after this answer: HTTP/1.1 unless it says ``close``, HTTP/1.0
    unless it says ``keep-alive``."""
    connection = (fields.get("connection") or "").lower()
    if version == 11:
        return "close" in connection
    return "keep-alive" not in connection and fields.get("keep-alive") is None


def _read_fields(fp: BinaryIO) -> _Fields:
    """Header lines up to the empty one; a line that starts with a space or tab continues the one before."""
    fields: list[tuple[str, str]] = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return _Fields(fields)
        if len(fields) >= MAX_FIELDS:
            raise http.client.HTTPException(f"more than {MAX_FIELDS} header lines")
        text = line.decode("latin-1")
        if text[0] in " \t" and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {text.strip()}")
            continue
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip():
            raise http.client.HTTPException(f"malformed header line {text.strip()[:80]!r}")
        fields.append((name, value.strip()))


def _length(value: str | None) -> int | None:
    """A ``Content-Length``: none when absent, unreadable or negative (then the body ends with the connection)."""
    try:
        length = int(value) if value else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None


@contextmanager
def _as_httpx(
    timed_out: type[httpx.TransportError],
    failed: type[httpx.TransportError],
    broken: type[httpx.TransportError] = httpx.RemoteProtocolError,
) -> Iterator[None]:
    """The socket's and http.client's exceptions as the httpx ones that callers retry and explain."""
    try:
        yield
    except TimeoutError as exc:
        raise timed_out(str(exc) or "timed out") from exc
    except OSError as exc:  # before ValueError: ssl.SSLCertVerificationError is both
        raise failed(str(exc) or type(exc).__name__) from exc
    except (http.client.HTTPException, ValueError) as exc:  # BadStatusLine, a bad chunk size, a bad header
        raise broken(str(exc) or type(exc).__name__) from exc


class _Body(httpx.SyncByteStream):
    """A response body in ``BODY_CHUNK`` pieces; its connection goes back to the pool once read to the end.

    Each piece must arrive within the read timeout, not merely each ``recv``: a server that trickles a
    few bytes now and then is as stuck as a silent one, and the caller resumes elsewhere (``Range``).
    A slow but steady body takes as long as it needs.
    """

    def __init__(self, connection: http.client.HTTPConnection, answer: http.client.HTTPResponse,
                 release: Callable[[], None], timeout: float | None) -> None:
        self._connection: http.client.HTTPConnection | None = connection
        self._answer = answer
        self._release = release
        self._timeout = timeout
        self._complete = False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self._read()
            if not chunk:
                break
            yield chunk
        if self._answer.length:  # http.client ends a short body quietly
            raise BodyCutShort(
                f"peer closed connection without sending complete message body ({self._answer.length} bytes missing)"
            )
        self._complete = True

    def _read(self) -> bytes:
        """The next piece (short only at the end of the body), within one read timeout."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        pieces: list[bytes] = []
        size = 0
        with _as_httpx(httpx.ReadTimeout, httpx.ReadError):
            while size < BODY_CHUNK:
                if deadline is not None and self._connection is not None and self._connection.sock is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"less than {BODY_CHUNK} bytes arrived in {self._timeout} s")
                    self._connection.sock.settimeout(left)
                piece = self._answer.read1(BODY_CHUNK - size)
                if not piece:
                    break
                pieces.append(piece)
                size += len(piece)
        return b"".join(pieces)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        self._answer.close()
        if self._complete and connection.sock is not None:  # http.client drops the socket of a closing answer
            self._release()
        else:
            connection.close()

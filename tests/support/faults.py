"""A fault-injecting reverse proxy in front of a real Distribution registry (a pytest plugin).

Why: retries, resumes and refusals only prove themselves when something goes wrong on the wire, and a real
registry never fails on demand. ``FaultProxy`` listens on 127.0.0.1, forwards every request to a running
registry and, on a seeded schedule or by scripted ``Rule``, answers instead:

    500 / 502 / 503   an OCI error body; the registry never sees the request
    429               the same, with ``Retry-After``
    reset             the answer's head and part of its body, then a TCP RST (after the registry did the work)
    truncate          ``Content-Length`` promises the whole body, part is sent, then the connection closes
    stall             part of the answer, then silence for ``stall`` seconds (longer than the client's read
                      timeout), then a reset
    trickle           (by ``Rule`` only) part of the answer at once, the rest at ``trickle`` bytes per second:
                      a stuck server at 1 KiB/s, a healthy slow one at a few MiB/s

``rate`` is exact, not a probability: a credit grows by ``rate`` per request and a fault fires each time it
reaches 1, so 5 % means one request in twenty. The seed picks the phase and which kind; kinds that have not
fired yet go first, so a run long enough fires every kind. ``fired`` counts what happened, so a test can prove
that its faults fired (a test in which none did proves nothing). ``Location`` and ``Link`` headers that point
at the backend are rewritten to the proxy, so uploads keep going through it.

A ``Rule`` scripts one request kind: "the 3rd GET of blob X is cut after 1000 bytes"
(``Rule("GET", "/blobs/" + x, nth=3, fault="reset", cut_after=1000)``), or a lying registry
(``Rule("GET", "/manifests/1", answer=lambda seen, forward: ...)``).
"""

from __future__ import annotations

import fcntl
import http.client
import http.server
import json
import random
import re
import socket
import struct
import termios
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from support.registry import RunningRegistry

__all__ = ["KINDS", "STATUS_KINDS", "Answer", "FaultProxy", "Rule", "Seen", "fault_proxy"]

STATUS_KINDS = ("500", "502", "503", "429")
KINDS = (*STATUS_KINDS, "reset", "truncate", "stall")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "host", "content-length"})
_BACKEND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Seen:
    """One request as the proxy parsed it; ``number`` counts from 1 over the proxy's life."""

    number: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    """A response to send. ``close_delimited``: no ``Content-Length``, the body ends when the connection does."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    close_delimited: bool = False

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def with_header(self, name: str, value: str | None) -> Answer:
        """A copy with ``name`` replaced (or removed, for ``None``)."""
        headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        if value is not None:
            headers.append((name, value))
        return Answer(self.status, headers, self.body, self.close_delimited)


Forward = Callable[[], Answer]
Respond = Callable[[Seen, Forward], Answer]


@dataclass
class Rule:
    """What to do with requests whose method is ``method`` (None: any) and whose path matches ``path`` (a regex).

    ``nth`` picks one of them (1-based); None picks every one. ``fault`` is one of ``KINDS``; ``answer``
    replaces forwarding (it may call ``forward()`` for the registry's real answer and change it).
    """

    method: str | None = None
    path: str = ""
    nth: int | None = None
    fault: str | None = None
    cut_after: int | None = None
    answer: Respond | None = None
    matched: int = 0

    def applies(self, seen: Seen) -> bool:
        """Count a matching request; True when this is the one (or, without ``nth``, any one)."""
        if (self.method and seen.method != self.method) or not re.search(self.path, seen.path):
            return False
        self.matched += 1
        return self.nth is None or self.matched == self.nth


class FaultProxy:
    """A threaded reverse proxy on 127.0.0.1 in front of ``backend`` (``host:port``); see the module docstring."""

    def __init__(self, backend: str, *, seed: int = 0, rate: float = 0.0, kinds: tuple[str, ...] = KINDS,
                 stall: float = 2.0, retry_after: str = "1", trickle: float = 1024.0) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        self.backend = backend
        self.seed, self.rate, self.kinds, self.stall, self.retry_after = seed, rate, kinds, stall, retry_after
        self.trickle = trickle
        self.rules: list[Rule] = []
        self.fired: Counter[str] = Counter()
        self._chosen: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.faulted: list[tuple[Seen, str]] = []
        self.rewritten = 0
        self._rng = random.Random(seed)
        self._credit = self._rng.random()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"fault-proxy-{self.host}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def ref(self, path: str) -> str:
        return f"{self.host}/{path}"

    def summary(self) -> str:
        """For assertion messages: enough to reproduce the run."""
        return f"seed={self.seed} rate={self.rate} requests={len(self.seen)} fired={dict(self.fired)}"

    def requests(self, method: str | None = None, path: str = "") -> list[Seen]:
        return [s for s in self.seen if (method is None or s.method == method) and re.search(path, s.path)]

    # ---- choosing

    def _choose(self, method: str, path: str, headers: dict[str, str],
                body: bytes) -> tuple[Seen, str | None, Rule | None]:
        """The request as seen, its fault and the rule that scripted it, if any."""
        with self._lock:
            seen = Seen(len(self.seen) + 1, method, path, headers, body)
            self.seen.append(seen)
            return (seen, *self._fault_for(seen))

    def _fault_for(self, seen: Seen) -> tuple[str | None, Rule | None]:
        """Rules first, then the seeded schedule (called under the lock)."""
        chosen = [rule for rule in self.rules if rule.applies(seen)]  # every rule counts every request it matches
        if chosen:
            return chosen[0].fault, chosen[0]
        if self.rate <= 0:
            return None, None
        self._credit += self.rate
        if self._credit < 1:
            return None, None
        self._credit -= 1
        possible = [k for k in self.kinds if k != "truncate" or seen.method == "GET"] or list(self.kinds)
        fresh = [k for k in possible if not self._chosen[k]]
        kind = self._rng.choice(fresh or possible)
        self._chosen[kind] += 1
        return kind, None

    def _record(self, seen: Seen, kind: str) -> None:
        with self._lock:
            self.fired[kind] += 1
            self.faulted.append((seen, kind))

    # ---- forwarding

    def forward(self, seen: Seen) -> Answer:
        """The backend's answer to ``seen``, with backend URLs in ``Location``/``Link`` pointing at the proxy."""
        host, port = self.backend.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=_BACKEND_TIMEOUT_S)
        try:
            headers = {k: v for k, v in seen.headers.items() if k not in _HOP_BY_HOP}
            headers["Host"] = self.backend
            if seen.body or seen.method in ("PUT", "POST", "PATCH"):
                headers["Content-Length"] = str(len(seen.body))
            connection.request(seen.method, seen.path, body=seen.body or None, headers=headers)
            response = connection.getresponse()
            body = response.read()
            answer_headers = [(k, self._rewrite(k, v)) for k, v in response.getheaders()
                              if _passes(k.lower(), seen.method)]
            return Answer(response.status, answer_headers, body)
        finally:
            connection.close()

    def _rewrite(self, name: str, value: str) -> str:
        if name.lower() not in ("location", "link") or self.backend not in value:
            return value
        with self._lock:
            self.rewritten += 1
        return value.replace(f"//{self.backend}", f"//{self.host}")

    def status_answer(self, kind: str) -> Answer:
        code = {"500": "INTERNAL", "502": "BAD_GATEWAY", "503": "UNAVAILABLE", "429": "TOOMANYREQUESTS"}[kind]
        body = json.dumps({"errors": [{"code": code, "message": "injected fault"}]}).encode()
        headers = [("Content-Type", "application/json")]
        if kind == "429":
            headers.append(("Retry-After", self.retry_after))
        return Answer(int(kind), headers, body)

    # ---- serving

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so resets hit pooled connections as in real life

            def _serve(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen, kind, rule = proxy._choose(self.command, self.path, headers, _read_body(self))
                if kind in STATUS_KINDS:
                    proxy._record(seen, kind)
                    self._send(proxy.status_answer(kind))
                    return
                forward = lambda: proxy.forward(seen)  # noqa: E731
                answer = rule.answer(seen, forward) if rule is not None and rule.answer else forward()
                if kind is None:
                    self._send(answer)
                    return
                proxy._record(seen, kind)
                cut_after = rule.cut_after if rule is not None else None
                if kind == "trickle":
                    self._trickle(answer, cut_after or 0)
                else:
                    self._fail(answer, kind, cut_after)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

            def _head(self, answer: Answer, length: int | None) -> bytes:
                lines = [f"HTTP/1.1 {answer.status} {http.client.responses.get(answer.status, '')}"]
                lines += [f"{k}: {v}" for k, v in answer.headers if k.lower() != "content-length"]
                if length is not None:
                    lines.append(f"Content-Length: {length}")
                if answer.close_delimited:
                    lines.append("Connection: close")
                return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

            def _send(self, answer: Answer) -> None:
                head_only = self.command == "HEAD"
                length = None if answer.close_delimited else _declared_length(answer, head_only)
                self.wfile.write(self._head(answer, length) + (b"" if head_only else answer.body))
                if answer.close_delimited:
                    self.close_connection = True

            def _fail(self, answer: Answer, kind: str, cut_after: int | None) -> None:
                """Send the head and ``cut_after`` bytes (default: half) of the body, then break the connection."""
                has_body = self.command != "HEAD" and bool(answer.body)
                part = answer.body[: len(answer.body) // 2 if cut_after is None else cut_after] if has_body else b""
                if kind == "truncate" or has_body:
                    self.wfile.write(self._head(answer, _declared_length(answer, False)) + part)
                if kind == "stall":
                    proxy._stopping.wait(proxy.stall)
                self.close_connection = True
                if kind == "truncate":
                    self.connection.shutdown(socket.SHUT_WR)  # a clean FIN: the body just ends early
                    return
                _wait_until_delivered(self.connection, proxy._stopping)  # a reset drops what is still queued
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()

            def _trickle(self, answer: Answer, cut_after: int) -> None:
                """The head and ``cut_after`` bytes at once, the rest at ``proxy.trickle`` bytes per second."""
                self.wfile.write(self._head(answer, len(answer.body)) + answer.body[:cut_after])
                piece = max(1, int(proxy.trickle / 20))
                self.close_connection = True
                try:
                    for start in range(cut_after, len(answer.body), piece):
                        if proxy._stopping.wait(piece / proxy.trickle):
                            return
                        self.wfile.write(answer.body[start:start + piece])
                except OSError:  # the client gave up on us: that is what a trickle is for
                    return

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler


def _wait_until_delivered(sock: socket.socket, stopping: threading.Event, limit: float = 5.0) -> None:
    """Until the client's kernel has acknowledged every byte written (Linux ``SIOCOUTQ``), at most ``limit`` s.

    A reset discards what the send queue still holds: on a loaded machine a slow reader then got fewer
    bytes than the fault promised (a "cut after 1 MiB + 1000 bytes" arrived as less than 1 MiB)."""
    for _ in range(int(limit / 0.005)):
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0)))[0]
        if unsent == 0 or stopping.wait(0.005):
            return


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # broken connections are this server's purpose; keep pytest output clean


def _passes(header: str, method: str) -> bool:
    """Hop-by-hop headers stay behind; a HEAD keeps its ``Content-Length`` (there is no body to count)."""
    return header not in _HOP_BY_HOP or (method == "HEAD" and header == "content-length")


def _declared_length(answer: Answer, head_only: bool) -> int:
    """``Content-Length`` to send: a HEAD keeps the backend's value, everything else its body's length."""
    if head_only:
        declared = answer.header("content-length")
        return int(declared) if declared and declared.isdigit() else len(answer.body)
    return len(answer.body)


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """The request body, by ``Content-Length`` or de-chunked."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        pieces = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(pieces)
            pieces.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Call with a RunningRegistry (or ``host:port``) and ``FaultProxy`` settings; all are stopped after the test."""
    proxies: list[FaultProxy] = []

    def start(backend: RunningRegistry | str, **settings: object) -> FaultProxy:
        host = backend if isinstance(backend, str) else backend.host
        proxies.append(FaultProxy(host, **settings))  # type: ignore[arg-type]
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.stop()

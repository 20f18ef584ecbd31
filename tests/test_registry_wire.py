"""The HTTP/1.1 transport under httpx: connection reuse, and each way a server can end an answer.

A raw socket server on 127.0.0.1 answers with bytes a test writes, so that the wire itself (not
only a registry's answers) is what is scripted; it counts the connections it accepted.
"""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from bundler.registry import RegistryOptions
from bundler.registry.transport import make_http_client
from bundler.registry.wire import BODY_CHUNK, WireTransport


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[[Request, socket.socket], bool]
"""Writes the answer to the socket; returns whether the connection serves another request."""


class RawServer:
    def __init__(self, answer: Answer, *, read_body: bool = True) -> None:
        self.answer = answer
        self.read_body = read_body
        self.connections = 0
        self.requests: list[Request] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock, sock.makefile("rb") as incoming:
            try:
                while (request := self._read_request(incoming)) is not None:
                    self.requests.append(request)
                    if not self.answer(request, sock):
                        return
            except OSError:  # the client hung up on purpose: a part-read answer, a refused upload
                return

    def _read_request(self, incoming) -> Request | None:  # type: ignore[no-untyped-def]
        line = incoming.readline()
        if not line:
            return None
        method, path, _ = line.decode().split(" ", 2)
        headers = {}
        while (header := incoming.readline()) not in (b"\r\n", b""):
            name, value = header.decode().split(":", 1)
            headers[name.strip().lower()] = value.strip()
        body = b""
        if not self.read_body:
            pass
        elif headers.get("transfer-encoding") == "chunked":
            while size := int(incoming.readline(), 16):
                body += incoming.read(size)
                incoming.readline()
            incoming.readline()
        else:
            body = incoming.read(int(headers.get("content-length", "0")))
        return Request(method, path, headers, body)


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer, **kwargs: bool) -> RawServer:
        servers.append(RawServer(answer, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    transport = WireTransport(ssl.create_default_context(), keepalive=2)
    with httpx.Client(transport=transport, timeout=httpx.Timeout(5.0, read=1.0)) as http:
        yield http


def answer_with(body: bytes, *extra: str) -> Answer:
    def answer(request: Request, sock: socket.socket) -> bool:
        head = "\r\n".join(["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra, "", ""])
        sock.sendall(head.encode() + (b"" if request.method == "HEAD" else body))
        return True

    return answer


BODY = bytes(range(256)) * (3 * BODY_CHUNK // 256 + 7)


def test_a_finished_answer_leaves_its_connection_for_the_next_request(
    raw_server: Callable[..., RawServer], client: httpx.Client
) -> None:
    server = raw_server(answer_with(BODY))
    for method in ("GET", "HEAD", "GET", "GET"):
        response = client.request(method, server.url + "/blob")
        assert response.content == (BODY if method == "GET" else b"")
    assert server.connections == 1


def test_an_answer_read_in_part_takes_its_connection_with_it(
    raw_server: Callable[..., RawServer], client: httpx.Client
) -> None:
    def slow(request: Request, sock: socket.socket) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(BODY), BODY[:BODY_CHUNK]))
        time.sleep(0.3)  # the rest is not there yet when the client hangs up
        sock.sendall(BODY[BODY_CHUNK:])
        return True

    server = raw_server(slow)
    with client.stream("GET", server.url + "/blob") as response:
        first = next(response.iter_raw())
    assert first == BODY[:BODY_CHUNK]
    assert client.get(server.url + "/blob").content == BODY  # not the rest of the first body
    assert server.connections == 2


def test_a_connection_the_server_closed_while_idle_is_not_used_again(
    raw_server: Callable[..., RawServer], client: httpx.Client
) -> None:
    def answer_then_hang_up(request: Request, sock: socket.socket) -> bool:
        answer_with(b"ok")(request, sock)
        return False  # no "Connection: close": the client learns it only from the socket

    server = raw_server(answer_then_hang_up)
    assert client.get(server.url + "/").content == b"ok"
    time.sleep(0.2)
    assert client.get(server.url + "/").content == b"ok"
    assert server.connections == 2


def test_connection_close_is_honoured(raw_server: Callable[..., RawServer], client: httpx.Client) -> None:
    server = raw_server(answer_with(b"ok", "Connection: close"))
    assert [client.get(server.url + "/").content for _ in range(3)] == [b"ok"] * 3
    assert server.connections == 3


def test_a_body_shorter_than_its_length_is_an_error(raw_server: Callable[..., RawServer], client: httpx.Client) -> None:
    def short(request: Request, sock: socket.socket) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        return False

    server = raw_server(short)
    with pytest.raises(httpx.RemoteProtocolError, match="990 bytes missing"):
        client.get(server.url + "/")


def test_a_chunked_answer_is_decoded(raw_server: Callable[..., RawServer], client: httpx.Client) -> None:
    def chunked(request: Request, sock: socket.socket) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        return True

    server = raw_server(chunked)
    assert client.get(server.url + "/").content == b"hello world"
    assert client.get(server.url + "/").content == b"hello world"
    assert server.connections == 1


def answer_raw(head: bytes, *, serves_more: bool = True) -> Answer:
    def answer(request: Request, sock: socket.socket) -> bool:
        sock.sendall(head)
        return serves_more

    return answer


def test_the_answer_head_is_read_as_sent(raw_server: Callable[..., RawServer], client: httpx.Client) -> None:
    """Interim 100 answers skipped, repeated fields all kept (the first is ``get``'s), a folded line joined."""
    server = raw_server(answer_raw(
        b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"a\"\r\nWWW-Authenticate: Basic realm=\"b\"\r\n"
        b"X-Folded: one\r\n\ttwo\r\nContent-Length: 2\r\n\r\nno"
    ))
    response = client.get(server.url + "/")
    assert (response.status_code, response.reason_phrase, response.content) == (401, "Unauthorized", b"no")
    assert response.headers.get_list("www-authenticate") == ['Bearer realm="a"', 'Basic realm="b"']
    assert response.headers["x-folded"] == "one two"
    assert "x-interim" not in response.headers
    assert client.get(server.url + "/").content == b"no"
    assert server.connections == 1


@pytest.mark.parametrize(("head", "reused"), [
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
])
def test_http_1_0_keeps_a_connection_only_when_asked(
    raw_server: Callable[..., RawServer], client: httpx.Client, head: bytes, reused: bool
) -> None:
    server = raw_server(answer_raw(head, serves_more=reused))
    assert [client.get(server.url + "/").content for _ in range(2)] == [b"ok", b"ok"]
    assert server.connections == (1 if reused else 2)


def test_a_body_without_length_ends_with_the_connection(
    raw_server: Callable[..., RawServer], client: httpx.Client
) -> None:
    server = raw_server(answer_raw(b"HTTP/1.1 200 OK\r\n\r\nall of it", serves_more=False))
    assert client.get(server.url + "/").content == b"all of it"


@pytest.mark.parametrize("head", [
    b"HTTP/2 200 OK\r\n\r\n",
    b"HTTP/1.1 2xx OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"x" * 70000 + b"\r\n\r\n",
])
def test_a_broken_answer_head_is_a_protocol_error(
    raw_server: Callable[..., RawServer], client: httpx.Client, head: bytes
) -> None:
    server = raw_server(answer_raw(head, serves_more=False))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(server.url + "/")


def test_a_header_that_would_split_the_request_is_refused(
    raw_server: Callable[..., RawServer], client: httpx.Client
) -> None:
    server = raw_server(answer_with(b"ok"))
    with pytest.raises(httpx.LocalProtocolError):
        client.get(server.url + "/", headers={"X-Token": "a\r\nX-Injected: 1"})
    assert server.requests == []


def test_a_request_body_of_unknown_length_is_sent_chunked(
    raw_server: Callable[..., RawServer], client: httpx.Client
) -> None:
    def echo_digest(request: Request, sock: socket.socket) -> bool:
        return answer_with(hashlib.sha256(request.body).hexdigest().encode())(request, sock)

    server = raw_server(echo_digest)
    pieces = [b"", BODY[:100], b"", BODY[100:]]
    response = client.put(server.url + "/upload", content=iter(pieces))
    assert response.content == hashlib.sha256(BODY).hexdigest().encode()
    assert server.requests[0].headers["transfer-encoding"] == "chunked"


def test_an_answer_sent_before_the_body_was_read_is_returned(
    raw_server: Callable[..., RawServer], client: httpx.Client
) -> None:
    """nginx in front of Harbor refuses a too large body with 413 at once, then closes."""

    def refuse(request: Request, sock: socket.socket) -> bool:
        sock.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        time.sleep(0.2)
        return False

    server = raw_server(refuse, read_body=False)
    response = client.put(server.url + "/upload", content=b"x" * (64 * BODY_CHUNK))
    assert response.status_code == 413


def test_no_answer_is_a_read_timeout(raw_server: Callable[..., RawServer], client: httpx.Client) -> None:
    server = raw_server(lambda request, sock: time.sleep(3) or False)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.get(server.url + "/")
    assert time.monotonic() - started < 2.5


def test_a_closed_port_is_a_connect_error(client: httpx.Client) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")


def test_a_proxy_from_the_environment_still_carries_other_hosts(
    raw_server: Callable[..., RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx sends proxied URLs through its own transport; ours serves the rest (loopback, NO_PROXY)."""
    proxy = raw_server(answer_with(b"{}"))
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with make_http_client("registry.example:5000", RegistryOptions()) as http:
        assert http.get("http://registry.example:5000/v2/").content == b"{}"
    assert [(r.method, r.path) for r in proxy.requests] == [("GET", "http://registry.example:5000/v2/")]


def test_connections_on_descriptors_above_1023_are_reused(
    raw_server: Callable[..., RawServer], client: httpx.Client
) -> None:
    """``select`` cannot watch such a descriptor; a process with many open files must still reuse."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("cannot open 1100 files here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = []
    try:
        while len(fillers) < 1100 and (not fillers or fillers[-1] < 1050):
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        server = raw_server(answer_with(b"ok"))
        assert [client.get(server.url + "/").content for _ in range(3)] == [b"ok"] * 3
        assert server.connections == 1
    finally:
        for descriptor in fillers:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

"""The HTTP server under serve: the standard library's threading server, bounded.

Why the standard library: measured against waitress (docs/serve.md), it streams blobs several times
faster (a thread writes each chunk straight to its socket; waitress copies through its buffers) and
answers small keep-alive requests as fast, with no new dependency. What it lacks is added here: a
bound on connection threads (further clients wait in the listen backlog), a bound on blob streams at
once (each holds a frame in memory), a timeout on every socket operation (stalled clients), the TLS
handshake in the connection's thread (a slow handshake cannot block the accept loop), and a stop
that lets requests in flight finish for a short grace.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from socket import socket
from typing import Any

from bundler.errors import InputError, LocalIOError
from bundler.serve.auth import Htpasswd
from bundler.serve.http import RegistryHandler
from bundler.serve.view import ServedView

__all__ = ["RegistryServer", "ServeSettings", "parse_listen"]

log = logging.getLogger("bundler.serve")

STOP_GRACE = 5.0
"""Seconds a stop waits for requests in flight before it leaves them."""


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 5000
    client_timeout: float = 60.0
    """Seconds any one read from or write to a client may take: stalled and idle clients are dropped."""
    max_connections: int = 64
    max_streams: int = 8
    """Blob bodies being sent at once; each holds up to a decompressed frame and a read buffer."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    htpasswd: Path | None = None


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every interface) or ``[v6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"{text!r}: expected HOST:PORT or :PORT")
    return (host.strip("[]") or "0.0.0.0"), int(port)


class RegistryServer(ThreadingHTTPServer):
    """Serves a ``ServedView``; ``serve_forever`` in one thread, ``stop`` from another (or after it ended)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, view: ServedView, settings: ServeSettings) -> None:
        self.view = view
        self.settings = settings
        self._auth = Htpasswd.load(settings.htpasswd) if settings.htpasswd else None
        self._tls = _tls_context(settings)
        self._connections = threading.BoundedSemaphore(settings.max_connections)
        self._streams = threading.BoundedSemaphore(settings.max_streams)
        self._stopping = threading.Event()
        self._active = 0
        self._active_lock = threading.Lock()
        try:
            super().__init__((settings.host, settings.port), RegistryHandler)
        except OSError as error:
            raise LocalIOError(f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}") from None
        if self._tls is not None:
            self.socket = self._tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self.settings.host}:{self.server_address[1]}"

    def allows(self, authorization: str | None) -> bool:
        return self._auth is None or self._auth.allows(authorization)

    @contextlib.contextmanager
    def stream_slot(self) -> Iterator[bool]:
        """One of ``max_streams`` (True), waited for up to the client timeout (else False: none free)."""
        acquired = self._streams.acquire(timeout=self.settings.client_timeout)
        try:
            yield acquired
        finally:
            if acquired:
                self._streams.release()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Marks a request being answered: a stop waits for these, not for idle keep-alive connections."""
        with self._active_lock:
            self._active += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active -= 1

    # --- bounded threads ---------------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        while not self._connections.acquire(timeout=0.5):
            if self._stopping.is_set():
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request: socket | tuple[bytes, socket], client_address: Any) -> None:
        """A connection that broke (reset, timed out, failed its TLS handshake): one debug line, no traceback."""
        log.debug("%s: connection ended: %r", client_address[0], sys.exc_info()[1])

    # --- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting, give requests in flight ``STOP_GRACE`` seconds, close the socket."""
        self._stopping.set()
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:
            with self._active_lock:
                if self._active == 0:
                    break
            time.sleep(0.05)
        self.server_close()


def _tls_context(settings: ServeSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None and settings.tls_key is None:
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise InputError("TLS needs both a certificate and its key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as error:
        raise InputError(f"cannot load the TLS certificate {settings.tls_cert} and key: {error}") from None
    return context

"""A TCP proxy in front of a registry that paces or silences it, for tests that interrupt or kill a transfer
once it is under way (by the bytes that went through), and that tell which blobs were fetched."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

from imageset import ImageSet
from support.registry import RunningRegistry

__all__ = ["SlowProxy", "proxied_list"]

_BLOB_GET = re.compile(rb"GET /v2/[^ ]*/blobs/(sha256:[0-9a-f]{64}) HTTP")
"""A blob download's request line (client requests are small: each arrives whole in one read)."""
_BLOB_PUT = re.compile(rb"(?:PUT|POST) /v2/[^ ]*/blobs/uploads/[^ ]*[?&]digest=(sha256(?:%3A|%3a|:)[0-9a-f]{64})")
"""The request that completes a blob upload (a chunked upload's last PUT, or a monolithic one)."""


class SlowProxy:
    """Forwards 127.0.0.1:port to a registry, ``rate`` bytes per second per connection and direction
    (``None``: full speed). With ``stall_after``, once that many bytes came from the registry in all,
    nothing more is forwarded either way: connections stay open and silent.

    ``reset`` cuts every connection opened before it, and their bytes are never counted again: a stalled
    connection of an earlier, finished command holds a chunk, and once the stall lifts that chunk must
    not count as the next command's (it would make its transfer look under way before it even started).
    """

    def __init__(self, backend: str) -> None:
        host, port = backend.rsplit(":", 1)
        self._backend = (host, int(port))
        self.rate: float | None = None
        self.stall_after: int | None = None
        self.from_backend = 0
        self.to_backend = 0
        self.blob_gets: list[str] = []
        """Digests of the blob GETs sent through, in order (since the last ``reset``)."""
        self.blob_puts: list[str] = []
        """Digests of the blob uploads completed through it, in order (since the last ``reset``)."""
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._generation = 0
        """Bumped by ``reset``: a connection counts only while its generation is the current one."""
        self._threads: list[threading.Thread] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept, name=f"slowproxy-{self.host}", daemon=True)
        self._acceptor.start()

    @property
    def stalled(self) -> bool:
        return self.stall_after is not None and self.from_backend >= self.stall_after

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
                upstream = socket.create_connection(self._backend)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, upstream]
                generation = self._generation
                for source, sink, from_backend in ((client, upstream, False), (upstream, client, True)):
                    pump = threading.Thread(target=self._pump, args=(source, sink, from_backend, generation),
                                            daemon=True)
                    self._threads.append(pump)
                    pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_backend: bool, generation: int) -> None:
        try:
            while data := source.recv(16 * 1024):
                while self.stalled and not self._stopped.is_set():
                    time.sleep(0.05)
                sink.sendall(data)
                with self._lock:
                    if generation != self._generation:
                        return  # cut by reset(): these bytes belong to an earlier command
                    if from_backend:
                        self.from_backend += len(data)
                    else:
                        self.to_backend += len(data)
                        self.blob_gets += [m.decode() for m in _BLOB_GET.findall(data)]
                        self.blob_puts += [_unquote(m) for m in _BLOB_PUT.findall(data)]
                if self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                _shutdown(end)

    def reset(self) -> None:
        """Full speed, no stall, counters at zero, and every connection so far cut and no longer counted."""
        with self._lock:
            self._generation += 1
            self.rate, self.stall_after, self.from_backend, self.to_backend = None, None, 0, 0
            self.blob_gets, self.blob_puts = [], []
            earlier = list(self._sockets)
        for end in earlier:  # shut down, not closed: a pump may be inside recv() on it (stop() closes)
            _shutdown(end)

    def stop(self) -> None:
        """Stop accepting, cut every connection, and wait for our threads before closing any socket.

        Closing the listening socket alone does not wake a thread blocked in ``accept``: the thread lived on,
        and so did the listener, without a descriptor, for the rest of the session; its descriptor number
        went to the next socket the test process opened. ``shutdown`` wakes it, and no thread of ours is
        left to touch a descriptor number after we close it.
        """
        self._stopped.set()
        _shutdown(self._server)
        self._acceptor.join(timeout=10)
        with self._lock:
            ends, threads = list(self._sockets), list(self._threads)
        for end in ends:
            _shutdown(end)
        for thread in threads:
            thread.join(timeout=10)
        self._server.close()
        for end in ends:
            end.close()


def _shutdown(end: socket.socket) -> None:
    try:
        end.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _unquote(digest: bytes) -> str:
    algorithm, _, hex_digits = digest.decode().replace("%3A", ":").replace("%3a", ":").partition(":")
    return f"{algorithm}:{hex_digits}"


def proxied_list(registry: RunningRegistry, image_set: ImageSet, directory: Path) -> tuple[SlowProxy, Path]:
    """A pacing proxy in front of ``registry`` and the list of ``image_set``'s references through it."""
    proxy = SlowProxy(registry.host)
    image_list = directory / "images.list"
    image_list.write_text(image_set.image_list(proxy.host))
    return proxy, image_list

"""One large blob fetched as byte ranges on several connections, handed on in order.

Why: one stream of a large blob is bound by one connection (and the server's one sender), and its
reader also hashes; a blob that is most of a pack's bytes then keeps one core busy while the other
waits. Here ``streams`` threads each receive one ``part_size`` range while the caller consumes (and
hashes) the parts in order, so receiving and hashing overlap and the server sends on several
connections.

Parts are large and streamed, not buffered whole: every ranged GET costs the registry a request's
work (Distribution opens the blob and allocates its read buffer anew each time), so few large parts
cost it hardly more than one stream, and memory does not grow with the part size: each part's thread
keeps at most ``AHEAD_BYTES`` received ahead of the consumer and then waits, leaving the rest in the
socket (the server waits too, at no cost).

This module knows no HTTP: ``fetch(start, stop)`` yields the bytes ``[start, stop)`` of the blob and
raises ``RangeNotHonoured`` when the server answered with the whole body instead; then, before any byte
was handed on, the caller falls back to one plain stream.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from bundler.threads import stop_workers

__all__ = ["AHEAD_BYTES", "PART_SIZE", "RANGED_MIN_SIZE", "STREAMS", "RangeNotHonoured", "ranged_chunks"]

PART_SIZE = 64 * 1024 * 1024
"""Bytes one ranged request asks for: large, so that the registry's work per request is small beside its body."""
AHEAD_BYTES = 4 * 1024 * 1024
"""Bytes each part may hold received ahead of the consumer before its thread waits (docs/benchmark.md: the
peak RSS this costs)."""
STREAMS = 2
"""Ranges fetched at once."""
RANGED_MIN_SIZE = 64 * 1024 * 1024
"""Blobs smaller than this are fetched in one stream: the other workers keep the connections busy."""


class RangeNotHonoured(Exception):
    """The server sent the whole blob (200) to a ranged GET: fall back to one stream."""


Fetch = Callable[[int, int], Iterator[bytes]]


def ranged_chunks(fetch: Fetch, size: int, *, part_size: int | None = None, streams: int | None = None
                  ) -> Iterator[bytes]:
    """The ``size`` bytes in order, in the pieces ``fetch`` yields; raises ``RangeNotHonoured`` only before the
    first byte. ``part_size`` and ``streams`` default to ``PART_SIZE`` and ``STREAMS``."""
    part_size = part_size or PART_SIZE
    streams = streams or STREAMS
    starts = iter(range(0, size, part_size))
    condition = threading.Condition()
    stopping = threading.Event()
    executor = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="imgbundle-range")
    parts: deque[_Part] = deque()
    submitted: list[Future[None]] = []

    def submit_next() -> None:
        start = next(starts, None)
        if start is not None:
            part = _Part(condition, stopping)
            parts.append(part)
            submitted.append(executor.submit(part.receive, fetch, start, min(start + part_size, size)))

    try:
        for _ in range(streams):
            submit_next()
        while parts:
            part = parts[0]
            while (piece := part.take()) is not None:
                yield piece
            parts.popleft()
            submit_next()
    finally:
        with condition:
            stopping.set()
            condition.notify_all()
        stop_workers(executor, submitted)


class _Part:
    """One range as its thread receives it: the pieces not yet taken, at most ``AHEAD_BYTES`` (and one piece)."""

    def __init__(self, condition: threading.Condition, stopping: threading.Event) -> None:
        self._condition = condition
        self._stopping = stopping
        self._pieces: deque[bytes] = deque()
        self._held = 0
        self._ended = False
        self._error: BaseException | None = None

    def receive(self, fetch: Fetch, start: int, stop: int) -> None:
        """On the part's thread: every piece of ``[start, stop)``, waiting while ``AHEAD_BYTES`` are held."""
        pieces = fetch(start, stop)
        try:
            for piece in pieces:
                if not self._put(piece):
                    return
        except BaseException as error:  # noqa: BLE001 - raised again in the consumer's thread, in order
            self._error = error
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # drops the connection of a part left unread
            with self._condition:
                self._ended = True
                self._condition.notify_all()

    def _put(self, piece: bytes) -> bool:
        """False once the consumer has stopped."""
        with self._condition:
            while self._held >= AHEAD_BYTES and not self._stopping.is_set():
                self._condition.wait()
            if self._stopping.is_set():
                return False
            self._pieces.append(piece)
            self._held += len(piece)
            self._condition.notify_all()
            return True

    def take(self) -> bytes | None:
        """On the consumer's thread: the next piece, ``None`` at the part's end; the part's error after its
        pieces received before it."""
        with self._condition:
            while not self._pieces and not self._ended:
                self._condition.wait()
            if self._pieces:
                piece = self._pieces.popleft()
                self._held -= len(piece)
                self._condition.notify_all()
                return piece
        if self._error is not None:
            raise self._error
        return None

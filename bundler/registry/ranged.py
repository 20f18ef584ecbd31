"""One large blob fetched as byte ranges on several connections, handed on in order.

Why: one stream of a large blob is bound by one connection (and the server's one sender), and its
reader also hashes; a blob that is most of a pack's bytes then keeps one core busy while the other
waits. Here ``streams`` threads each fetch one ``part_size`` range into memory while the caller
consumes (and hashes) the parts in order, so receiving and hashing overlap and the server sends on
several connections. Memory stays bounded: at most ``streams`` parts are buffered ahead.

This module knows no HTTP: ``fetch(start, stop)`` yields the bytes ``[start, stop)`` of the blob and
raises ``RangeNotHonoured`` when the server answered with the whole body instead; then, before any byte
was handed on, the caller falls back to one plain stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from bundler.threads import stop_workers

__all__ = ["PART_SIZE", "RANGED_MIN_SIZE", "STREAMS", "RangeNotHonoured", "ranged_chunks"]

PART_SIZE = 4 * 1024 * 1024
"""Bytes one ranged request fetches: large enough that a request's overhead is small beside its body,
small enough that the parts buffered ahead stay a few frames."""
STREAMS = 2
"""Ranges fetched at once, and parts buffered ahead of the consumer (docs/benchmark.md: the peak RSS each costs)."""
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
    executor = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="imgbundle-range")
    parts: deque[Future[list[bytes]]] = deque()
    submitted: list[Future[list[bytes]]] = []

    def submit_next() -> None:
        start = next(starts, None)
        if start is not None:
            future = executor.submit(_part, fetch, start, min(start + part_size, size))
            parts.append(future)
            submitted.append(future)

    try:
        for _ in range(streams):
            submit_next()
        while parts:
            chunks = parts.popleft().result()
            submit_next()
            while chunks:
                yield chunks.pop(0)  # let go of each piece as soon as it is handed on
    finally:
        stop_workers(executor, submitted)


def _part(fetch: Fetch, start: int, stop: int) -> list[bytes]:
    return list(fetch(start, stop))

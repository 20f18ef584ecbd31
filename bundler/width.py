"""How many small requests run at once: a width that adapts to their latency, as TCP Vegas adapts its window.

Small requests (manifests, configs, small layers) are bound by round trips, not bytes: more of them in flight
hide latency until the server is saturated, and past that only queue there (each waits longer, none
finishes sooner) while costing threads and GIL switches here. No fixed width suits every registry and
link, so the width is measured: the fastest round's latency (``base``) is what a request costs unqueued;
a round's latency above it, times the width, estimates how many requests wait in queues
(``width * (1 - base / latency)``). Fewer than ``QUEUED_LOW`` waiting: the server has room, widen; more
than ``QUEUED_HIGH``: narrow. The width starts at its least, so that the base is learnt before requests
queue, and doubles each round until the first queue shows (then halves, and moves by one from there).
Large bodies are not counted here: ``--jobs`` bounds them.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["QUEUED_HIGH", "QUEUED_LOW", "AdaptiveWidth"]

QUEUED_LOW = 2.0
"""Requests waiting in queues below which the width grows by one per round."""
QUEUED_HIGH = 6.0
"""Requests waiting in queues above which the width shrinks by one per round."""


class AdaptiveWidth:
    """A gate for small requests whose width moves between ``least`` and ``most``, one step per round (as
    many completed requests as the width); thread-safe."""

    def __init__(self, *, least: int, most: int) -> None:
        self.least = least
        self.most = max(least, most)
        self.width = least
        self._starting = True
        """Doubling each round, until the first round that queues."""
        self._running = 0
        self._round: list[float] = []
        self._base = float("inf")
        self._changed = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``width`` places for the request in the block; its latency is recorded."""
        with self._changed:
            while self._running >= self.width:
                self._changed.wait()
            self._running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            with self._changed:
                self._running -= 1
                self._record(seconds)
                self._changed.notify_all()

    def record(self, seconds: float) -> None:
        """Count one request's latency (what ``slot`` does for each)."""
        with self._changed:
            self._record(seconds)
            self._changed.notify_all()

    def _record(self, seconds: float) -> None:
        self._round.append(seconds)
        if len(self._round) < self.width:
            return
        latency = statistics.median(self._round)
        self._round = []
        self._base = min(self._base, latency)
        queued = self.width * (1 - self._base / latency) if latency > 0 else 0.0
        if self._starting:
            self._starting = queued < QUEUED_LOW
            wider = self.width * 2 if self._starting else self.width // 2
        else:
            wider = self.width + (queued < QUEUED_LOW) - (queued > QUEUED_HIGH)
        self.width = max(self.least, min(self.most, wider))

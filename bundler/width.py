"""How many small requests run at once: a width that grows while the server answers as many per second.

Small requests (manifests, configs, small layers) are bound by round trips, not bytes: more of them in flight
hide latency, until the server (or the CPU it shares with us) is saturated. No fixed width suits every
registry and link, so the width is measured. A round is as many completed requests as the width (at least
``ROUND``), all started at that width; its rate is width / mean latency, the requests answered per second
(Little's law). The width starts at its least and doubles each round until the rate falls; then it moves by a
quarter of itself each round: on in the same direction while the rate rises by more than ``NOISE``, back when
it falls by more than that, and wider while it holds. So a server that answers fewer requests per second the
more it is asked (one that thrashes) keeps it near its best, and any other gets the widest.

Why not Vegas (narrow as soon as latency shows a queue): a registry on a busy host answers later the more it
is asked, yet answers more per second up to far past the width where the first queue shows; a width that
backed off at the first queue gave up that rate (docs/benchmark.md). ``most`` bounds what a server is asked
at once. Large bodies are not counted here: ``--jobs`` bounds them.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["NOISE", "ROUND", "AdaptiveWidth"]

NOISE = 0.15
"""A change of the rate between rounds smaller than this share is noise, not a reason to turn."""
ROUND = 16
"""Fewest completed requests a round measures once the doubling is over, so that a narrow round is not one or
two answers; while doubling, a round is the width, so that a short list does not wait at the least width."""


class AdaptiveWidth:
    """A gate for small requests whose width moves between ``least`` and ``most``, one step per round;
    thread-safe."""

    def __init__(self, *, least: int, most: int) -> None:
        self.least = least
        self.most = max(least, most)
        self.width = least
        self._starting = True
        """Doubling each round, until the first round whose rate fell."""
        self._direction = 1
        self._rate = 0.0
        """The last measured round's requests answered per second."""
        self._generation = 0
        """Counts the width's changes: a request started before the last change is not measured."""
        self._running = 0
        self._round: list[float] = []
        self._changed = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``width`` places for the request in the block; its latency is recorded."""
        with self._changed:
            while self._running >= self.width:
                self._changed.wait()
            self._running += 1
            generation = self._generation
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            with self._changed:
                self._running -= 1
                if generation == self._generation:
                    self._record(seconds)
                self._wake()

    def record(self, seconds: float) -> None:
        """Count one request, started at the current width, that took ``seconds`` (what ``slot`` does)."""
        with self._changed:
            self._record(seconds)
            self._wake()

    def _wake(self) -> None:
        """Wake as many waiters as there are free places, not all of them: with a long queue behind a
        narrow width, waking every waiter per finished request costs more CPU than the requests."""
        free = self.width - self._running
        if free > 0:
            self._changed.notify(free)

    def _record(self, seconds: float) -> None:
        self._round.append(seconds)
        if len(self._round) < (self.width if self._starting else max(self.width, ROUND)):
            return
        latency = statistics.fmean(self._round)
        self._round = []
        rate = self.width / latency if latency > 0 else float("inf")
        fell, rose = rate < self._rate * (1 - NOISE), rate > self._rate * (1 + NOISE)
        self._rate = rate
        width = max(self.least, min(self.most, self._next(fell, rose)))
        if width != self.width:
            self.width = width
            self._generation += 1

    def _next(self, fell: bool, rose: bool) -> int:
        if self._starting and not fell:
            return self.width * 2
        if self._starting:  # the last doubling lost: back to the width before it
            self._starting, self._direction = False, -1
            return self.width // 2
        if fell:
            self._direction = -self._direction
        elif not rose or self.width <= self.least:
            self._direction = 1
        return self.width + self._direction * max(1, self.width // 4)

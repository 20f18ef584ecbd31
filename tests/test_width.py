"""The adaptive width of small requests (bundler/width.py): it climbs to the rate a server can give, backs off
from a server that answers fewer per second the more it is asked, stays in its bounds, and holds no more
requests at once than it allows. Latencies come from models of a server, so that no test depends on real
timing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack

import pytest

from bundler.width import AdaptiveWidth

Model = Callable[[int], float]
"""A server: the latency of each request when ``width`` are in flight."""


def _queueing(capacity: int, service: float = 0.01) -> Model:
    """Serves ``capacity`` requests at once in ``service`` seconds each; the rest wait their turn."""
    return lambda width: service * max(1.0, width / capacity)


def _thrashing(capacity: int, service: float = 0.01) -> Model:
    """Like ``_queueing`` up to ``capacity``; past it every request slows everyone down: fewer answers per
    second the more it is asked."""
    return lambda width: service * max(1.0, width / capacity) ** 2


def _run(width: AdaptiveWidth, model: Model, rounds: int) -> list[int]:
    """Feed ``rounds`` rounds of the model's latency at the width of each request; the widths seen after each."""
    seen = []
    for _ in range(rounds):
        for _ in range(max(width.width, 16)):
            width.record(model(width.width))
        seen.append(width.width)
    return seen


def _rate(model: Model, width: int) -> float:
    return width / model(width)


@pytest.mark.parametrize("capacity", [4, 6, 8, 12, 24])
def test_a_queueing_server_is_given_its_full_rate(capacity: int) -> None:
    width = AdaptiveWidth(least=4, most=32)
    seen = _run(width, _queueing(capacity), rounds=60)
    best = _rate(_queueing(capacity), capacity)
    assert all(_rate(_queueing(capacity), w) == best for w in seen[-40:])
    assert seen[-1] == 32  # a queue costs the server no rate: it is not a reason to narrow


@pytest.mark.parametrize("capacity", [6, 8, 12, 16])
def test_a_thrashing_server_keeps_the_width_near_its_best(capacity: int) -> None:
    model = _thrashing(capacity)
    seen = _run(AdaptiveWidth(least=4, most=32), model, rounds=60)
    assert max(seen[-40:]) < 2 * capacity
    rates = [_rate(model, w) for w in seen[-40:]]
    assert sum(rates) / len(rates) >= 0.8 * _rate(model, capacity)


def test_a_server_that_starts_thrashing_gets_a_narrower_width() -> None:
    width = AdaptiveWidth(least=4, most=32)
    assert _run(width, _queueing(1000), rounds=20)[-1] == 32  # a long link: as wide as allowed
    seen = _run(width, _thrashing(8), rounds=40)  # then the registry is overloaded by others
    assert max(seen[-20:]) < 16


def test_no_more_requests_than_the_width_hold_a_slot_at_once() -> None:
    width = AdaptiveWidth(least=2, most=2)
    entered = threading.Event()

    def third() -> None:
        with width.slot():
            entered.set()

    with ExitStack() as held:
        held.enter_context(width.slot())
        release = held.enter_context(ExitStack())
        release.enter_context(width.slot())
        waiter = threading.Thread(target=third)
        waiter.start()
        assert not entered.wait(0.2)  # both places are taken
        release.close()
        assert entered.wait(30)
        waiter.join()

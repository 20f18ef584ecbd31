"""The adaptive width of small requests (bundler/width.py): it settles where a server's queue starts, stays in
its bounds, and holds no more requests at once than it allows. Latencies come from a model of a server that
serves ``capacity`` requests at once in ``service`` seconds each, so that no test depends on real timing."""

from __future__ import annotations

import threading
from contextlib import ExitStack

import pytest

from bundler.width import QUEUED_HIGH, QUEUED_LOW, AdaptiveWidth


def _run(width: AdaptiveWidth, capacity: int, rounds: int, service: float = 0.01) -> list[int]:
    """Feed ``rounds`` rounds of the model's latency at the current width; the widths seen after each."""
    seen = []
    for _ in range(rounds):
        latency = service * max(1.0, width.width / capacity)
        for _ in range(width.width):
            width.record(latency)
        seen.append(width.width)
    return seen


@pytest.mark.parametrize("capacity", [4, 6, 8, 12, 24])
def test_the_width_settles_just_past_what_the_server_serves_at_once(capacity: int) -> None:
    width = AdaptiveWidth(least=4, most=32)
    seen = _run(width, capacity, rounds=60)
    assert capacity + QUEUED_LOW <= seen[-1] <= capacity + QUEUED_HIGH
    assert len(set(seen[-10:])) == 1  # settled, not oscillating


def test_a_server_that_never_queues_gets_the_widest_and_one_that_slows_down_a_narrow_one() -> None:
    open_server = AdaptiveWidth(least=4, most=32)
    assert _run(open_server, capacity=1000, rounds=40)[-1] == 32
    narrow = AdaptiveWidth(least=4, most=32)
    _run(narrow, capacity=1000, rounds=3)  # the base is learnt, unqueued
    for _ in range(40):  # then every answer takes a hundred times as long: a registry that slowed down for everyone
        for _ in range(narrow.width):
            narrow.record(1.0)
    assert narrow.least <= narrow.width <= QUEUED_HIGH  # all but the queue it allows were taken back


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

"""Retry policy as data: which failures are worth another try, how long to wait, how many tries.

Only two kinds of failure are retried: a dropped connection or timeout (``httpx.TransportError``)
and an answer in ``RETRYABLE_STATUSES`` (raised by the client as ``Transient``). Everything else
is a final answer and goes straight to the error mapping.
"""

from __future__ import annotations

import email.utils
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypeVar

import httpx

from bundler.errors import RegistryError
from bundler.registry.options import Backoff, RegistryOptions

__all__ = [
    "OUTAGE_STATUSES",
    "RETRYABLE",
    "RETRYABLE_STATUSES",
    "Budget",
    "RetryPolicy",
    "Transient",
    "find_cause",
    "is_outage",
    "is_retryable",
    "parse_retry_after",
    "retry_call",
]

log = logging.getLogger("bundler.registry")

T = TypeVar("T")

_sleep = time.sleep  # tests replace it to record the waits

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Request timeout, too early, rate limited, and the 5xx a busy or restarting registry answers."""

OUTAGE_STATUSES = frozenset({429, 502, 503, 504})
"""Answers that, still there after a whole retry budget, say the host is down or shutting us out
(not that one object is bad, as a 500 may): later requests to that host are not worth their budget."""


class Transient(Exception):
    """A retryable answer; carries the error to raise once the retry budget is spent.

    Internal to ``bundler.registry``: the error mapping turns it into ``final`` at the boundary.
    """

    def __init__(self, final: RegistryError, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(str(final))
        self.final = final
        self.retry_after = retry_after
        self.status = status


RETRYABLE = (httpx.TransportError, Transient)
"""What ``except`` clauses around a try catch; ``is_retryable`` then weeds out the permanent ones."""


_NO_SUCH_NAME = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})
"""What ``getaddrinfo`` says of a name that does not exist (glibc has both)."""


def is_retryable(failure: BaseException) -> bool:
    """Retryable answers and dropped connections; not TLS trouble, a name that does not resolve, or our own
    malformed requests."""
    if isinstance(failure, Transient):
        return True
    if isinstance(failure, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)):
        return False
    return (isinstance(failure, httpx.TransportError) and find_cause(failure, ssl.SSLError) is None
            and not is_unknown_host(failure))


def is_unknown_host(failure: BaseException) -> bool:
    """The resolver answered that the name does not exist: asking again will not make it exist (a resolver
    that could not answer, ``EAI_AGAIN``, is worth another try)."""
    error = find_cause(failure, socket.gaierror)
    return isinstance(error, socket.gaierror) and error.errno in _NO_SUCH_NAME



def is_outage(failure: BaseException) -> bool:
    """A failure that speaks for the whole host: no connection, no answer in time, or an outage status."""
    if isinstance(failure, Transient):
        return failure.status in OUTAGE_STATUSES
    if isinstance(failure, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)):
        return False
    return isinstance(failure, httpx.TransportError)


def find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in the cause chain of ``exc`` (httpx wraps ssl errors twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True)
class RetryPolicy:
    budget: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    retry_after_max: float = 60.0
    notify: Callable[[str, BaseException, int, float], None] | None = field(default=None, compare=False)
    """Called with (what, failure, retry number, delay) before each retry's wait."""

    @classmethod
    def from_options(cls, options: RegistryOptions,
                     notify: Callable[[str, BaseException, int, float], None] | None = None) -> RetryPolicy:
        return cls(options.retries, options.backoff, options.retry_after_max, notify)

    def delay(self, attempt: int, failure: BaseException) -> float:
        """The server's ``Retry-After`` when it gave one (capped), else our backoff."""
        if isinstance(failure, Transient) and failure.retry_after is not None:
            return min(failure.retry_after, self.retry_after_max)
        return self.backoff.delay(attempt)

    def start(self, what: str) -> Budget:
        return Budget(self, what)


class Budget:
    """The retries left for one operation; shared by its steps (e.g. the resumes of one download)."""

    def __init__(self, policy: RetryPolicy, what: str) -> None:
        self.policy = policy
        self.what = what
        self.used = 0

    def spend(self, failure: BaseException) -> None:
        """Sleep before the next try, or re-raise ``failure`` when it is permanent or no retries are left."""
        if self.used >= self.policy.budget or not is_retryable(failure):
            raise failure
        delay = self.policy.delay(self.used, failure)
        self.used += 1
        log.debug("%s: %s; retry %d/%d in %.2fs", self.what, _describe(failure), self.used, self.policy.budget, delay)
        if self.policy.notify is not None:
            self.policy.notify(self.what, failure, self.used, delay)
        _sleep(delay)


def retry_call(policy: RetryPolicy, what: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` until it returns, retrying only ``RETRYABLE`` failures within the budget."""
    budget = policy.start(what)
    while True:
        try:
            return attempt()
        except RETRYABLE as failure:
            budget.spend(failure)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_retry_after(value: str | None, now: Callable[[], datetime] = _utcnow) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; ``None`` if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now()).total_seconds())


def _describe(failure: BaseException) -> str:
    if isinstance(failure, Transient):
        return str(failure)
    return type(failure).__name__

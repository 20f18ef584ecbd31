"""Retry policy as data: which failures are worth another try, how long to wait, when to give up.

Only two kinds of failure are retried: a dropped connection or timeout (``httpx.TransportError``)
and an answer in ``RETRYABLE_STATUSES`` (raised by the client as ``Transient``). Everything else
is a final answer and goes straight to the error mapping.

Retries follow progress, not only a count: every request gets ``budget`` retries, and more as long
as bytes keep moving with its host (``Activity``, fed by the client on every answer and body
chunk); it gives up once the host has moved nothing for ``patience`` seconds. One unlucky request
in a busy, faulty run therefore keeps trying, and a host that is down ends the run within about
``patience``. Giving up raises ``GaveUp``, which carries the mix of failures for the error message.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypeVar

import httpx

from bundler.errors import RegistryError
from bundler.registry.options import Backoff, RegistryOptions
from bundler.registry.wire import BodyCutShort

__all__ = [
    "OUTAGE_STATUSES",
    "RETRYABLE",
    "RETRYABLE_STATUSES",
    "Activity",
    "Budget",
    "GaveUp",
    "RetryPolicy",
    "Transient",
    "describe_failure",
    "find_cause",
    "is_outage",
    "is_retryable",
    "parse_retry_after",
    "retry_call",
]

log = logging.getLogger("bundler.registry.retry")
"""One INFO line per retry: shown under ``-v``, counted by the CLI's progress view."""

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


class Activity:
    """When one host last made progress (the client says what counts): what ``Budget`` measures patience by.

    Shared by every request to the host, so that one request's failures are judged by the whole run's
    progress. A plain float assignment: threads may race, and any of their times is good enough.
    """

    def __init__(self) -> None:
        self._last = time.monotonic()

    def moved(self) -> None:
        self._last = time.monotonic()

    def idle(self) -> float:
        """Seconds since the last progress (since the client started, before any)."""
        return time.monotonic() - self._last


Notify = Callable[[str, str, BaseException, int, float], None]
"""Told of a retry: what it is for, the request (``GET manifest``), the failure, the retry's number, the wait."""


@dataclass(frozen=True)
class RetryPolicy:
    budget: int = 5
    """Retries every request gets, progress or not."""
    backoff: Backoff = field(default_factory=Backoff)
    retry_after_max: float = 60.0
    patience: float = 0.0
    """Beyond ``budget``, retries go on until the host has moved no byte for this many seconds."""
    notify: Notify | None = field(default=None, compare=False)
    """Called before each retry's wait."""

    @classmethod
    def from_options(cls, options: RegistryOptions,
                     notify: Notify | None = None) -> RetryPolicy:
        return cls(options.retries, options.backoff, options.retry_after_max, options.retry_timeout, notify)

    def delay(self, attempt: int, failure: BaseException) -> float:
        """The server's ``Retry-After`` when it gave one (capped), else our backoff."""
        if isinstance(failure, Transient) and failure.retry_after is not None:
            return min(failure.retry_after, self.retry_after_max)
        return self.backoff.delay(attempt)

    def start(self, what: str, request: str = "request", activity: Activity | None = None) -> Budget:
        return Budget(self, what, request, activity or Activity())


class GaveUp(Exception):
    """A request failed for good after retries: the last failure, and the mix of all of them."""

    def __init__(self, request: str, failure: BaseException, tries: Counter[str], seconds: float) -> None:
        super().__init__(f"{request}: {failure}")
        self.request = request
        self.failure = failure
        self.tries = tries
        self.seconds = seconds

    @property
    def mix(self) -> str:
        """``6 tries in 9 s: 3× HTTP 500, 2× connection reset, 1× HTTP 429``"""
        kinds = ", ".join(f"{count}× {kind}" for kind, count in self.tries.most_common())
        return f"{sum(self.tries.values())} tries in {self.seconds:.0f} s: {kinds}"


class Budget:
    """The retries of one operation; shared by its steps (e.g. the resumes of one download)."""

    def __init__(self, policy: RetryPolicy, what: str, request: str, activity: Activity) -> None:
        self.policy = policy
        self.what = what
        self.request = request
        self.activity = activity
        self.used = 0
        self.tries: Counter[str] = Counter()
        self._started = time.monotonic()

    def spend(self, failure: BaseException) -> None:
        """Sleep before the next try; re-raise a permanent ``failure``, raise ``GaveUp`` when patience is out."""
        if not is_retryable(failure):
            raise failure
        word = describe_failure(failure)
        self.tries[word] += 1
        delay = self.policy.delay(min(self.used, 30), failure)
        if self.used >= self.policy.budget:
            patience_left = self.policy.patience - self.activity.idle()
            if patience_left <= 0:
                if self.used == 0:
                    raise failure
                raise GaveUp(self.request, failure, self.tries, time.monotonic() - self._started)
            delay = min(delay, patience_left)  # sleeping past the end of patience would only delay the verdict
        self.used += 1
        log.debug("%s: %s %s; retry %d in %.1fs", self.what, self.request, word, self.used, delay)
        if self.policy.notify is not None:
            self.policy.notify(self.what, self.request, failure, self.used, delay)
        _sleep(delay)


def retry_call(policy: RetryPolicy, what: str, attempt: Callable[[], T], request: str = "request",
               activity: Activity | None = None) -> T:
    """Run ``attempt`` until it returns, retrying only ``RETRYABLE`` failures as the policy allows."""
    budget = policy.start(what, request, activity)
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


_TRANSPORT_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (BodyCutShort, "body cut short"),
    (httpx.ConnectTimeout, "connect timeout"),
    (httpx.ReadTimeout, "read timeout"),
    (httpx.WriteTimeout, "write timeout"),
    (httpx.PoolTimeout, "pool timeout"),
    (http.client.RemoteDisconnected, "closed without answer"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (BrokenPipeError, "broken pipe"),
    (httpx.ConnectError, "cannot connect"),
    (httpx.RemoteProtocolError, "protocol error"),
    (httpx.ReadError, "read error"),
    (httpx.WriteError, "write error"),
)
"""The word for a dropped connection, most specific first (the cause chain is searched for each)."""


def describe_failure(failure: BaseException) -> str:
    """A retryable failure in two or three words, for a retry's log line and the mix of a final error."""
    if isinstance(failure, Transient):
        return f"HTTP {failure.status}" if failure.status else "retryable answer"
    for kind, word in _TRANSPORT_WORDS:
        if find_cause(failure, kind) is not None:
            return word
    return type(failure).__name__

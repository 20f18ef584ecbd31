"""Settings of the registry client as one frozen value, so every client of a run behaves alike."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bundler.errors import InputError

__all__ = ["MOST_SMALL_REQUESTS", "SMALL_REQUESTS", "Backoff", "MiB", "RegistryOptions", "RetryNotice"]

MiB = 1024 * 1024
SMALL_REQUESTS = 16
"""Requests with small bodies (manifests, configs, small layers) that may be under way at once, whatever
``jobs`` says: they are bound by round trips, not bytes, so more of them in flight costs no memory to speak
of and hides latency. ``jobs`` bounds the large bodies."""
MOST_SMALL_REQUESTS = 32
"""The widest that small requests go where their width adapts to latency (``bundler.width``); the transport
keeps as many idle connections, so that a wide round reuses them."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between retries, as data.

    With the defaults the sleeps before retries 1..5 are 0.5, 1, 2, 4 and 8 s, each stretched or
    shrunk by up to 10 % so that many threads hitting one busy registry do not retry in lockstep:
    about 15 s of waiting in all before a request is given up. Tests set ``initial`` to a few ms.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        """Seconds to sleep before retry number ``attempt`` (0-based)."""
        base = min(self.maximum, self.initial * self.factor**attempt)
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True)
class RetryNotice:
    """A request failed and is about to be tried again: what the user sees instead of a silent wait."""

    what: str
    request: str
    reason: str
    attempt: int
    budget: int
    delay: float
    unreachable: bool = False
    """The registry could not be reached at all: the whole run waits on it."""

    def __str__(self) -> str:
        count = (f"{self.attempt} of {self.budget}" if self.attempt <= self.budget
                 else f"{self.attempt} (past {self.budget}, until the retry timeout)")
        return f"{self.what}: {self.request}: {self.reason}; retry {count} in {self.delay:.1f}s"


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: TLS trust, timeouts, retries, upload sizes and where credentials live.

    ``insecure`` hosts may use plain HTTP or TLS without verification (docker's
    ``insecure-registries``, matched as ``allows_insecure`` says). ``credentials`` maps a registry host to ``(user, password)`` and wins
    over every credentials file. ``None`` for a path means "the usual place, from the environment".
    """

    ca_file: Path | None = None
    insecure: frozenset[str] = frozenset()
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    retry_timeout: float = 300.0
    """Retries go on past ``retries`` while the host moves bytes; this many seconds without it end them."""
    backoff: Backoff = Backoff()
    retry_after_max: float = 60.0
    jobs: int = 4
    chunk_size: int | None = None
    monolithic_limit: int = 64 * MiB
    default_chunk_size: int = 16 * MiB
    docker_config_dir: Path | None = None
    auth_file: Path | None = None
    certs_dir: Path = Path("/etc/docker/certs.d")
    credential_helper_timeout: float = 30.0
    credentials: Mapping[str, tuple[str, str]] = field(default_factory=dict, hash=False, repr=False)
    on_retry: Callable[[RetryNotice], None] | None = field(default=None, compare=False, repr=False)
    """Told of every retry before its wait (from worker threads)."""

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size <= 0:
            raise InputError(f"chunk size must be positive, not {self.chunk_size}")
        if self.retries < 0 or self.jobs < 1 or self.retry_timeout < 0:
            raise InputError(f"retries and retry timeout must be >= 0 and jobs >= 1 "
                             f"(got {self.retries}, {self.retry_timeout}, {self.jobs})")
        if min(self.connect_timeout, self.read_timeout) <= 0:
            raise InputError("timeouts must be positive")

    def allows_insecure(self, host: str) -> bool:
        """Whether ``host`` (``name[:port]``) is one of ``insecure``, by docker's and containerd's rule: a value
        names one registry, host and port; one without a port names the host on the HTTPS port (443), never
        ``name:5000``. Names compare without case."""
        return _host_port(host) in {_host_port(value) for value in self.insecure}

    def unmatched_insecure(self, hosts: Iterable[str]) -> list[str]:
        """The ``insecure`` values that name none of ``hosts`` (the registries a command uses)."""
        used = {_host_port(host) for host in hosts}
        return sorted(value for value in self.insecure if _host_port(value) not in used)

    def upload_chunk_size(self, size: int) -> int | None:
        """The PATCH chunk size for a blob of ``size`` bytes, or ``None`` for one monolithic PUT."""
        if self.chunk_size is not None:
            return None if size <= self.chunk_size else self.chunk_size
        return None if size <= self.monolithic_limit else self.default_chunk_size


def _host_port(host: str) -> str:
    """``name:port`` in lower case; a bare name (or ``[v6]``) gets the HTTPS port."""
    host = host.strip().lower()
    bare = host.rfind(":") <= host.rfind("]") if host.startswith("[") else ":" not in host
    return f"{host}:443" if bare else host

"""Everything the CLI shows: the two consoles, progress renderers, sizes and JSON."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, final

import msgspec
from rich.console import Console

from bundler.errors import InputError
from bundler.words import counted

if TYPE_CHECKING:
    from typing import TypeAlias

    from bundler.cli.bars import RichProgress
    from bundler.registry.options import RetryNotice

# The bars (rich.progress) are imported when a terminal shows them: ``serve`` and piped runs start without.

__all__ = ["CliProgress", "err", "format_bytes", "make_progress", "out", "parse_size", "print_json"]

out = Console(highlight=False, soft_wrap=True)
"""Results on stdout; when piped, wide enough that tables never wrap a reference or digest."""
if not out.is_terminal:
    out.width = 400
err = Console(stderr=True, highlight=False, soft_wrap=True)

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def parse_size(text: str) -> int:
    """``16M``, ``3900M``, ``4G``, ``512k``, ``1048576`` → bytes (binary units); 0 or less is refused."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in _UNITS and cleaned[-1:] else (cleaned, "")
    try:
        value = int(float(number) * _UNITS[unit])
    except ValueError:
        raise InputError(f"not a size: {text!r} (use e.g. 16M, 4G)") from None
    if value <= 0:
        raise InputError(f"size must be positive: {text!r}")
    return value


def print_json(value: object) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


@final
class _PlainProgress:
    """Lines for logs and pipes: one per phase, then at most one every few seconds."""

    INTERVAL = 5.0

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet
        self._lock = threading.Lock()
        self._name = ""
        self._bytes = self._total_bytes = self._done = self._total_items = 0
        self._last = 0.0
        self._retries = 0

    def __enter__(self) -> _PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._quiet and self._name:
            self._line()

    def phase(self, name: str, total_bytes: int = 0, total_items: int = 0) -> None:
        with self._lock:
            if self._name and not self._quiet:
                self._line()
            self._name, self._total_bytes, self._total_items = name, total_bytes, total_items
            self._bytes = self._done = 0
            self._last = time.monotonic()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes
            self._maybe_line()

    def item_done(self, name: str, ok: bool = True) -> None:
        with self._lock:
            self._done += 1
            self._maybe_line()

    def warn(self, message: str) -> None:
        err.print(f"warning: {message}", markup=False)

    def retried(self, notice: RetryNotice, *, shown: bool) -> None:
        """Their count on the next line; a line each when ``shown`` or the registry cannot be reached, so that a
        wait for a registry that is down is never silent (not with ``--quiet``)."""
        with self._lock:
            self._retries += 1
        if not self._quiet and (shown or notice.unreachable):
            err.print(str(notice), markup=False)

    def _maybe_line(self) -> None:
        if not self._quiet and time.monotonic() - self._last >= self.INTERVAL:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        parts = [f"{self._name}:"]
        if self._total_items:
            parts.append(f"{self._done}/{self._total_items}")
        if self._total_bytes:
            parts.append(f"{format_bytes(self._bytes)} of {format_bytes(self._total_bytes)}")
        if self._retries:
            parts.append(f"({counted(self._retries, 'retry', 'retries')})")
        err.print(" ".join(parts), markup=False)


CliProgress: TypeAlias = "RichProgress | _PlainProgress"
"""The plans' ``Progress``, plus ``retried`` for the registry client's retry notices."""


def make_progress(quiet: bool) -> CliProgress:
    """Bars on an interactive terminal, plain lines otherwise, only warnings with ``--quiet``."""
    if not quiet and err.is_terminal:
        from bundler.cli.bars import RichProgress

        return RichProgress()
    return _PlainProgress(quiet)

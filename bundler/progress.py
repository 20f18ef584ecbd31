"""How the plans report progress without knowing who is watching.

pack, verify and unpack call a ``Progress``; the CLI supplies one that draws rich bars on a
terminal or prints plain lines, tests supply their own. Calls may come from worker threads.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NULL_PROGRESS", "NullProgress", "Progress"]


class Progress(Protocol):
    def phase(self, name: str, total_bytes: int = 0, total_items: int = 0) -> None:
        """A new phase starts (``resolve``, ``download``, ``verify``, ``push``…) with its totals."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more bytes moved in the current phase."""

    def item_done(self, name: str, ok: bool = True) -> None:
        """One image, blob or manifest of the current phase is finished."""

    def warn(self, message: str) -> None:
        """Something the user should read that does not stop the job."""


class NullProgress:
    """Reports nowhere: the default for library callers and tests."""

    def phase(self, name: str, total_bytes: int = 0, total_items: int = 0) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def item_done(self, name: str, ok: bool = True) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


NULL_PROGRESS = NullProgress()
"""The shared do-nothing instance, for default arguments."""

"""Counted nouns for messages: ``1 volume``, ``2 volumes``, never ``1 volumes`` or ``blob(s)``."""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, noun: str, plural: str = "") -> str:
    """``count`` and ``noun``, in the plural (``plural``, else ``noun + "s"``) unless ``count`` is 1."""
    return f"{count} {noun}" if count == 1 else f"{count} {plural or noun + 's'}"

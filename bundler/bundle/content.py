"""The content digest (spec/bundle-format.md section 10): the sha256 of the tar stream without the data of
the ``blobs/<alg>/<hex>`` members.

Each blob member's name is its data's digest, so a reader that checks every blob member's data against
its name and this digest against the sidecar has checked the whole tar stream, hashing each byte once.
"""

from __future__ import annotations

import hashlib

from bundler.bundle.tar import header_bytes, padding

__all__ = ["ContentDigest"]


class ContentDigest:
    """Fed the tar stream in order: whole stretches with ``add``, blob members with ``add_without_data``."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()

    def add(self, data: bytes | memoryview) -> None:
        self._sha256.update(data)

    def add_without_data(self, name: str, size: int) -> None:
        """A ``blobs/<alg>/<hex>`` member of ``size`` data bytes: its header(s) and padding, not its data."""
        self._sha256.update(header_bytes(name, size))
        self._sha256.update(bytes(padding(size)))

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()

"""Content digests (``sha256:<hex>``) and the one verifier every blob byte passes through."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from bundler.errors import ContentMismatchError, InputError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Digest", "DigestVerifier", "sha256_of"]

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([a-f0-9]+)$")


class Digest(str):
    """A validated ``algorithm:hex`` string; it is a ``str``, so it encodes to JSON as one."""

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        match = _DIGEST_RE.match(value)
        if not match or len(match.group(2)) != _HEX_LENGTH[match.group(1)]:
            raise InputError(f"not a valid digest: {value!r}")
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return self.split(":", 1)[0]

    @property
    def hex(self) -> str:
        return self.split(":", 1)[1]

    @property
    def short(self) -> str:
        """The first 12 hex digits, the way people quote image ids."""
        return self.hex[:12]

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")


def sha256_of(data: bytes) -> Digest:
    return Digest.of(data)


class DigestVerifier:
    """Hashes a stream as it passes and checks size and digest when it ends.

    Feed every chunk to ``update``; ``update`` fails early once more bytes arrive than
    ``size`` allows, so a lying or endless stream is cut off without being buffered.
    """

    def __init__(self, digest: Digest, size: int | None = None, *, what: str = "") -> None:
        self.digest = digest
        self.size = size
        self.what = what or digest
        self.received = 0
        self._hash = hashlib.new(digest.algorithm)

    def update(self, chunk: bytes | memoryview) -> None:
        self.received += len(chunk)
        if self.size is not None and self.received > self.size:
            raise ContentMismatchError(f"more than the declared {self.size} bytes", subject=self.what)
        self._hash.update(chunk)

    def check(self) -> None:
        """Raise ``ContentMismatchError`` unless size and digest match."""
        if self.size is not None and self.received != self.size:
            raise ContentMismatchError(f"got {self.received} bytes, expected {self.size}", subject=self.what)
        actual = f"{self.digest.algorithm}:{self._hash.hexdigest()}"
        if actual != self.digest:
            raise ContentMismatchError(f"content has digest {actual}", subject=self.what)

"""The sidecar check: the sha256 of the compressed file, hashed as the scan reads it."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from bundler.bundle.volumes import BundleFiles, VolumeDigests, check_volume_digests

__all__ = ["HashingReader", "sidecar_state", "volumes_state"]


class HashingReader:
    """A non-seekable view of a file that hashes every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._raw.readinto(buffer)
        self.sha256.update(memoryview(buffer)[:n])
        return n

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def volumes_state(files: BundleFiles, digests: VolumeDigests) -> str:
    """The sidecar check of a split bundle: one line per volume, each volume named when it is wrong."""
    if not files.sidecar.exists():
        return "no sidecar (skipped)"
    if not digests.complete:
        return "not checked (stream damaged)"
    mismatch = check_volume_digests(files, digests.hexdigests())
    return f"MISMATCH: {mismatch}" if mismatch else f"ok (sha256 of all {len(files.volumes)} volumes match sidecar)"


def sidecar_state(expected: str | None, actual: str | None, *, piped: bool) -> str:
    if actual is None:
        return "not checked (stream damaged)"
    if piped:
        return f"no sidecar for a pipe; compare by hand: sha256 {actual}"
    if expected is None:
        return "no sidecar (skipped)"
    return "ok (sha256 matches sidecar)" if actual == expected else f"MISMATCH: file {actual}, sidecar {expected}"

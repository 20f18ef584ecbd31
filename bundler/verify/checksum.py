"""The sidecar check: the sha256 of the compressed file, hashed as the scan reads it."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from bundler.bundle.volumes import BundleFiles, VolumeDigests, check_volume_digests
from bundler.verify.report import SidecarCheck, SidecarState

__all__ = ["HashingReader", "file_check", "volumes_check"]


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


def file_check(expected: str | None, actual: str) -> SidecarCheck:
    """The sidecar check of a one-file bundle: its sha256 against the sidecar's (``expected``)."""
    if expected is None:
        return SidecarCheck(SidecarState.ABSENT)
    if actual != expected:
        return SidecarCheck(SidecarState.MISMATCH, f"file {actual}, sidecar {expected}")
    return SidecarCheck(SidecarState.OK)


def volumes_check(files: BundleFiles, digests: VolumeDigests) -> SidecarCheck:
    """The sidecar check of a split bundle: one line per volume, each volume named when it is wrong."""
    if not files.sidecar.exists():
        return SidecarCheck(SidecarState.ABSENT)
    if not digests.complete:
        return SidecarCheck(SidecarState.UNCHECKED)
    mismatch = check_volume_digests(files, digests.hexdigests())
    if mismatch:
        return SidecarCheck(SidecarState.MISMATCH, mismatch)
    return SidecarCheck(SidecarState.OK, volumes=len(files.volumes))

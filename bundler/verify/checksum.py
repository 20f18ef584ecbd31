"""The sidecar check: the sha256 of the compressed file, hashed as the scan reads it."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from bundler.bundle.volumes import BundleFiles, VolumeDigests, check_volume_digests
from bundler.verify.report import SidecarCheck, SidecarState

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["HashingReader", "file_check", "volumes_check"]


class HashingReader:
    """The bundle's bytes read once, front to back, through ``file`` (not seekable), each byte hashed.

    The sidecar's sha256 is of the compressed file, so it is taken here, below the reader.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._hashing = _Hashing(raw)
        self.file: BinaryIO = io.BufferedReader(self._hashing)

    def drain(self) -> None:
        """Read (and hash) what the reader left, to the end of the file."""
        while self.file.read(1 << 20):
            pass

    def hexdigest(self) -> str:
        return self._hashing.sha256.hexdigest()


class _Hashing(io.RawIOBase):
    """``raw`` as a raw stream that hashes what passes: the buffered reader on top has it read
    straight into the caller's buffer, so no byte is copied for the hash."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._readinto = _readinto_of(raw)
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int | None:
        view = memoryview(buffer).cast("B")
        count = self._readinto(view)
        if count:
            self.sha256.update(view[:count])
        return count


def _readinto_of(raw: BinaryIO) -> Callable[[memoryview], int | None]:
    """``raw.readinto``: every binary file of ``io`` has it (files, volume sets, pipes), though
    ``typing.BinaryIO`` does not declare it."""
    if isinstance(raw, (io.RawIOBase, io.BufferedIOBase)):
        return raw.readinto
    raise TypeError(f"{type(raw).__name__} is not a binary file of io: it cannot be read for the sidecar checksum")


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

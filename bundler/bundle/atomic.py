"""Files that appear whole or not at all: written to ``NAME.part-<random>``, renamed into place when done.

A temp file is locked (``flock``) while it is written, so that a later write of the same name can tell
the temp files a killed write left behind from those of a write still running, and remove the former.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

try:
    import fcntl
except ImportError:  # Windows: temp files are not locked, and not swept
    fcntl = None  # type: ignore[assignment]

from bundler.bundle.pagecache import WriteBehind
from bundler.errors import LocalIOError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ABANDONED_AFTER", "TempFile", "sweep_abandoned", "sync_directory", "write_error"]

ABANDONED_AFTER = 60.0
"""Seconds since its last write after which an unlocked temp file counts as abandoned."""

log = logging.getLogger("bundler.bundle")


def write_error(path: Path, error: OSError) -> LocalIOError:
    return LocalIOError(f"cannot write {path}: {error.strerror or error}")


def sweep_abandoned(target: Path) -> None:
    """Remove the temp files that writes of ``target`` (its volumes, its sidecar) killed earlier left.

    Why: a forced second Ctrl-C or a power cut leaves ``<target>.part-<random>``, up to a bundle's size,
    on what is often a USB stick. A temp file is locked (``flock``) while it is written, so one that
    nobody holds and that nobody wrote to for ``ABANDONED_AFTER`` seconds belongs to no live write.
    Best effort: what cannot be checked or removed is left alone.
    """
    if fcntl is None:
        return
    ours = re.compile(re.escape(target.name) + r"(\.sha256|\.\d{3})?\.part-[0-9a-f]{12}")
    try:
        entries = [entry for entry in os.scandir(target.parent) if ours.fullmatch(entry.name)]
    except OSError:
        return
    for entry in entries:
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < ABANDONED_AFTER:
                continue
            with open(entry.path, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a write holds it
                os.unlink(entry.path)
        except OSError:
            continue
        log.info("removed %s, left by an interrupted write", entry.path)


class TempFile:
    """``<target>.part-<random>`` in the target's directory, locked while open: renamed into place by
    ``commit``, removed if the block is left any other way."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.temp = target.with_name(f"{target.name}.part-{secrets.token_hex(6)}")
        self.file: WriteBehind
        self._committed = False

    def __enter__(self) -> Self:
        try:
            descriptor = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as error:
            raise LocalIOError(f"cannot create {self.temp}: {error.strerror or error}") from None
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # tells sweep_abandoned it is in use
            except OSError:
                pass  # a filesystem without locks: sweep_abandoned cannot lock it either, so leaves it
        self.file = WriteBehind(os.fdopen(descriptor, "wb", buffering=1024 * 1024))
        return self

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as error:
            raise write_error(self.target, error) from None

    def sync(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as error:
            raise write_error(self.target, error) from None

    def commit(self, *, overwrite: bool) -> None:
        """Move the finished file into place; without ``overwrite`` never replace an existing one."""
        try:
            self.file.close()
            if overwrite:
                os.replace(self.temp, self.target)
            else:
                _link_into_place(self.temp, self.target)
        except FileExistsError:
            raise LocalIOError(f"{self.target} already exists; refusing to overwrite it") from None
        except OSError as error:
            raise write_error(self.target, error) from None
        self._committed = True

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._committed:
            return
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass


def _link_into_place(temp: Path, target: Path) -> None:
    """Atomic no-clobber rename: hard link then unlink; plain rename where links are unsupported."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(target):
            raise FileExistsError(target) from None
        os.replace(temp, target)
        return
    os.unlink(temp)


def sync_directory(directory: Path) -> None:
    """Make the renames durable; some filesystems cannot fsync a directory, which is harmless."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)

"""Files that appear whole or not at all: written to ``NAME.part-<random>``, renamed into place when done.

A temp file is locked (``flock``) while it is written, so that a later write of the same name can tell
the temp files a killed write left behind from those of a write still running, and remove the former.
"""

from __future__ import annotations

import errno
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
from bundler.errors import DiskFullError, LocalIOError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ABANDONED_AFTER", "TempFile", "WriteClaim", "hold_while_written", "remove_if_abandoned",
           "sweep_abandoned", "sync_directory", "write_error"]

ABANDONED_AFTER = 60.0
"""Seconds since its last write after which an unlocked temp file counts as abandoned: anyone's to delete.
Why a minute: a live write holds its lock, so the age only guards a file between its creation and its
lock, and a filesystem whose locks do not work across the processes that share it (then a live write
of a stalled transfer stays safe for a minute of silence)."""

log = logging.getLogger("bundler.bundle")


_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def write_error(path: Path, error: OSError, *, written: int | None = None,
                needed: int | None = None) -> LocalIOError:
    """The one-line error for a failed write of ``path``; out of space, it says how much was ``written``
    and, when known, how many more bytes may be ``needed`` at most."""
    message = f"cannot write {path}: {error.strerror or error}"
    if error.errno not in _OUT_OF_SPACE:
        return LocalIOError(message)
    if written is not None and needed is not None:
        message += f" ({written} bytes written, up to {needed} more needed)"
    return DiskFullError(message)


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
        entries = [entry.path for entry in os.scandir(target.parent) if ours.fullmatch(entry.name)]
    except OSError:
        return
    for path in entries:
        if remove_if_abandoned(path):
            log.info("removed %s, left by an interrupted write", path)


def remove_if_abandoned(path: str | os.PathLike[str]) -> bool:
    """Remove the temp file ``path`` if no write holds it (``hold_while_written``) and nobody wrote to it for
    ``ABANDONED_AFTER`` seconds; whether it was removed. Best effort: what cannot be checked stays."""
    if fcntl is None:
        return False
    try:
        if time.time() - os.stat(path, follow_symlinks=False).st_mtime < ABANDONED_AFTER:
            return False
        with open(path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a write holds it
            os.unlink(path)
    except OSError:
        return False
    return True


def hold_while_written(descriptor: int) -> None:
    """Lock a temp file for as long as ``descriptor`` is open, so that ``remove_if_abandoned`` leaves it be;
    the kernel drops the lock when the process dies, however it dies."""
    if fcntl is None:
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # a filesystem without locks: remove_if_abandoned cannot lock it either, so leaves it


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
        hold_while_written(descriptor)
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


class WriteClaim:
    """``<target>.part-000000000000``, locked by the one process writing ``target`` and holding its process id,
    so that a second write of the same name refuses at once, naming the first (a context manager).

    The file is removed when the claim ends; one a killed write left is claimed again (the kernel dropped its
    lock) or swept like any abandoned temp file. Without ``flock`` (Windows) nothing is claimed.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.with_name(f"{target.name}.part-{'0' * 12}")
        self._descriptor: int | None = None

    def __enter__(self) -> Self:
        if fcntl is None:
            return self
        while self._descriptor is None:
            descriptor = self._open()
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(descriptor)
                os.close(descriptor)
                raise LocalIOError(f"{self.target} is being written by another imgbundle (process {holder}); "
                                   "let it finish, or write elsewhere") from None
            if self._still_named(descriptor):
                self._descriptor = descriptor
            else:  # its last holder removed it between our open and our lock: claim a fresh one
                os.close(descriptor)
        os.ftruncate(self._descriptor, 0)
        os.pwrite(self._descriptor, f"{os.getpid()}\n".encode(), 0)
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as error:
            raise LocalIOError(f"cannot create {self.path}: {error.strerror or error}") from None

    def _still_named(self, descriptor: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._descriptor is None:
            return
        try:
            os.unlink(self.path)  # still locked, so no other write claims it in between
        except OSError:
            pass
        os.close(self._descriptor)
        self._descriptor = None


def _holder(descriptor: int) -> str:
    """The process id in a claim file another process holds: it writes it just after taking the lock, so
    wait a moment for it rather than report a claim that is not written yet."""
    for _ in range(50):
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        if holder:
            return holder
        time.sleep(0.01)
    return "unknown"


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

"""Bundle files are written once and read once, front to back: keep them out of the page cache.

Why: a bundle is often larger than RAM, and nothing reads the same bytes again soon. Left to itself,
Linux lets up to a fifth of RAM fill with a bundle's dirty pages before it writes any back, so the
closing fsync stalled for as long as the disk (a USB stick) needed, and reading or writing a bundle
pushed out the pages of everything else on the host, the Harbor that unpack feeds among them.
``WriteBehind`` has the kernel write each ``WINDOW`` as soon as it is full and drops it from the
cache once it is on disk; ``open_read_once`` drops what it has read. Dropped pages are reused for
the next ones, which also costs the kernel less than filling the cache with new pages (measured
in docs/benchmark.md).
``DirectReader``, for the positioned reads of unpack's threads, goes around the cache altogether.

Linux only (``sync_file_range``, called through ctypes because the os module lacks it,
``posix_fadvise`` and ``O_DIRECT``). Elsewhere, and on pipes, files are plain buffered files.
"""

from __future__ import annotations

import ctypes
import errno
import io
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

__all__ = ["WINDOW", "DirectReader", "WriteBehind", "drop_cached", "open_read_once", "read_fully",
           "release_thread_buffer"]

WINDOW = 32 * 1024 * 1024
"""Bytes written, or read, between two requests to the kernel to write them out or drop them."""

WINDOWS_IN_FLIGHT = 2
"""Windows the disk may still be writing while the next one fills: waiting for the one just before
it stalls the writer on a slow disk (docs/benchmark.md)."""

_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # SYNC_FILE_RANGE_* from <fcntl.h>
_UNSUPPORTED = (errno.EINVAL, errno.ESPIPE, errno.ENOSYS, errno.EOPNOTSUPP)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _load_sync_file_range() -> Callable[[int, int, int, int], None] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):  # not Linux, or no C library to load
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def sync_file_range(fd: int, offset: int, length: int, flags: int) -> None:
        if function(fd, offset, length, flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return sync_file_range


_sync_file_range = _load_sync_file_range()
_CAN_DROP = hasattr(os, "posix_fadvise")
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_DIRECT_ALIGN = 4096
"""Offsets, lengths and buffers of direct reads are multiples of this: the logical block size of
nearly every disk (512 or 4096). A disk that wants more refuses the read, and the reader falls back."""


class WriteBehind:
    """Wraps a buffered file opened for writing from its start; ``write``, ``flush``, ``fileno`` and
    ``close`` as a file's. Write errors (disk full, I/O errors found while waiting) raise ``OSError``."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._written = 0
        self._window_start = 0
        self._in_flight: deque[tuple[int, int]] = deque()
        """Windows handed to the kernel to write and not yet waited for: [start, end), oldest first."""
        self._enabled = _sync_file_range is not None and _CAN_DROP

    def write(self, data: bytes | memoryview) -> int:
        count = self._file.write(data)
        self._written += len(data)
        if self._enabled and self._written - self._window_start >= WINDOW:
            self._next_window()
        return count

    def _next_window(self) -> None:
        assert _sync_file_range is not None
        self._file.flush()
        fd = self._file.fileno()
        try:
            _sync_file_range(fd, self._window_start, self._written - self._window_start, _WRITE)
            self._in_flight.append((self._window_start, self._written))
            if len(self._in_flight) > WINDOWS_IN_FLIGHT:
                start, end = self._in_flight.popleft()
                _sync_file_range(fd, start, end - start, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
                _drop(fd, 0, end, overlap=start)
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                raise
            self._enabled = False  # a pipe, or a filesystem without it: the final fsync does it all
        self._window_start = self._written

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        """Close; what the disk holds by now (all of it after an fsync) is dropped from the cache."""
        if self._enabled and not self._file.closed:
            self._file.flush()
            _drop(self._file.fileno(), 0, self._written)
        self._file.close()


def read_fully(file: BinaryIO, size: int) -> bytes:
    """``size`` bytes from where ``file`` stands, fewer only where it ends (a raw read may return less)."""
    parts = []
    while size:
        part = file.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def open_read_once(path: Path | str) -> io.BufferedReader:
    """``open(path, "rb")``, except that the pages read are dropped from the page cache: every
    ``WINDOW`` of a run of consecutive reads, and the rest when the run ends or the file closes."""
    if not _CAN_DROP:
        return open(path, "rb")
    return io.BufferedReader(_ReadOnce(path))


class _ReadOnce(io.FileIO):
    def __init__(self, path: Path | str) -> None:
        super().__init__(path, "rb")
        self._position = 0
        self._run = (0, 0)
        """The run of consecutive reads so far: [start, end)."""
        self._dropped_to = 0
        """The end of what this run has dropped so far."""

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._position = super().seek(offset, whence)
        return self._position

    def readinto(self, buffer: Buffer) -> int:
        start = self._position
        count = super().readinto(buffer)
        if count:
            if start != self._run[1]:  # a seek ended the run: this read starts another
                self._drop_run()
                self._run = (start, start)
                self._dropped_to = start
            self._position = start + count
            self._run = (self._run[0], self._position)
            if self._position - self._dropped_to >= WINDOW:
                self._drop_run()
        return count

    def close(self) -> None:
        if not self.closed:
            self._drop_run()
        super().close()

    def _drop_run(self) -> None:
        start, end = self._run
        _drop(self.fileno(), start, end, overlap=self._dropped_to)
        self._dropped_to = end


def _drop(fd: int, start: int, end: int, overlap: int | None = None) -> None:
    """Drop [start, end) from the page cache, from one window before ``overlap`` when given.

    Why the overlap: the cache holds files in folios of up to megabytes, and a folio is dropped only
    when the range covers all of it; one that straddles the previous end is covered this time.
    """
    if overlap is not None:
        start = max(start, overlap - WINDOW)
    if end > start:
        try:
            os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # only advice


def drop_cached(path: Path | str) -> None:
    """Drop the whole file ``path`` from the page cache: after reading it past the cache (``DirectReader``),
    whatever of it was cached before (a bundle just written) goes too, as a read through ``open_read_once`` drops it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return  # only advice
    try:
        _drop(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


class DirectReader:
    """``read_at(offset, size)`` on a file from the disk straight into memory (``O_DIRECT``): the page
    cache is neither filled nor dropped, which costs the kernel less than reading through the cache
    with ``open_read_once`` dropping behind (docs/benchmark.md). Each read covers whole blocks, into a buffer kept per
    thread (a fresh one per read would cost a page fault per 4 KiB), and the asked-for bytes are handed
    out as a view of that buffer, not copied: a copy holds the GIL that every other thread waits for.
    Where the system or the file system refuses ``O_DIRECT`` (not Linux, some FUSE mounts), reads go
    through ``open_read_once`` instead; so does a reader whose direct read was refused.

    Not thread-safe: one reader per thread, as ``BundleReader`` opens one per blob stream.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = path
        self._fd: int | None = None
        self._file: BinaryIO | None = None
        if _O_DIRECT:
            try:
                self._fd = os.open(path, os.O_RDONLY | _O_DIRECT | getattr(os, "O_CLOEXEC", 0))
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
        if self._fd is None:
            self._file = open_read_once(path)

    def read_at(self, offset: int, size: int) -> bytes | memoryview:
        """``size`` bytes from ``offset``, fewer only where the file ends. A view is valid until this
        thread's next direct read, by any reader: use it at once, or copy it."""
        if self._fd is not None:
            try:
                return self._read_direct(offset, size)
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                self._fall_back()
        assert self._file is not None
        self._file.seek(offset)
        return read_fully(self._file, size)

    def close(self) -> None:
        """Close the file and give this thread's buffer back: a pool thread that read one large blob
        would otherwise hold its pages while it does small work, and every thread of a wide pool would."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            release_thread_buffer()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_direct(self, offset: int, size: int) -> memoryview:
        assert self._fd is not None
        start = offset - offset % _DIRECT_ALIGN
        end = offset + size + -(offset + size) % _DIRECT_ALIGN
        blocks = memoryview(_thread_buffer(end - start))[: end - start]
        got = 0
        while got < offset + size - start:
            count = os.preadv(self._fd, [blocks[got:]], start + got)
            got += count
            if count == 0 or got % _DIRECT_ALIGN:  # the end of the file
                break
        return blocks[offset - start : min(got, offset + size - start)].toreadonly()

    def _fall_back(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        self._file = open_read_once(self._path)


_buffers = threading.local()


def _thread_buffer(size: int) -> mmap.mmap:
    """This thread's buffer for direct reads, at least ``size`` bytes (mmap: page-aligned)."""
    buffer: mmap.mmap | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _buffers.buffer = mmap.mmap(-1, max(size, 8 * 1024 * 1024))
    return buffer


def release_thread_buffer() -> None:
    """Give this thread's direct-read buffer back to the system (the next direct read maps a fresh one,
    whose pages cost memory only once touched)."""
    _buffers.buffer = None  # unmapped when the last view of it goes

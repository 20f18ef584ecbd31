"""Blob members built in parallel and handed to the one writer in digest order.

Workers each take one blob: pull its chunks from ``open_blob``, cut header + data + padding into
``FRAME_SIZE`` pieces and compress every piece into a ``_Spool`` (the full pieces on a shared
compression pool, so that one large blob uses more than one core). The writer drains the spools strictly
in digest order, so the output does not depend on thread timing. The spool being written streams
straight through (its worker waits when it is ``STREAM_MEMORY`` ahead); the spools further ahead share
``SPOOL_MEMORY`` and spill the rest to an unnamed temp file in ``spill_dir``. Look-ahead is bounded: at
most ``2 * jobs`` members in flight (the one being written included), and at most ``LOOKAHEAD_BYTES`` of
blobs behind it (the next blob may always start).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

import zstandard

from bundler.bundle.frames import FRAME_SIZE, blob_level, new_compressor
from bundler.bundle.index import blob_path
from bundler.bundle.layout import BlobSpec
from bundler.bundle.tar import header_bytes, padding
from bundler.digest import Digest, DigestVerifier
from bundler.errors import ContentMismatchError, LocalIOError
from bundler.threads import Cancelled, stop_workers

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LOOKAHEAD_BYTES", "SPOOL_MEMORY", "STREAM_MEMORY", "BlobPipeline"]

SPOOL_MEMORY = 24 * 1024 * 1024
"""Compressed bytes all the spools waiting to be written keep in memory together; the rest is
spilled to disk. One budget for all, so the peak does not grow with ``jobs``."""
STREAM_MEMORY = 8 * 1024 * 1024
"""Compressed bytes the spool being written may hold before its worker waits for the writer."""
LOOKAHEAD_BYTES = 256 * 1024 * 1024
"""Blob bytes that may be fetched ahead of the one being written (the next one always may)."""
FRAMES_IN_FLIGHT = 2
"""Frames of one member a worker may have buffered: the ones on the compression pool and the one it fills."""
POOLED_MEMBER_SIZE = 8 * FRAME_SIZE
"""Members at least this large have their frames compressed on the pool. Smaller ones are compressed by their
worker: the other workers keep the cores busy meanwhile, and the pool's buffers would cost memory for nothing."""


class _Spool:
    """The compressed frames of one blob member, in order: bytes in memory or ranges of a temp file."""

    def __init__(self, spec: BlobSpec, pipeline: BlobPipeline) -> None:
        self.spec = spec
        self._pipeline = pipeline
        self._frames: deque[tuple[bytes | tuple[int, int], int]] = deque()
        self._memory = 0
        self._file: BinaryIO | None = None
        self._file_end = 0
        self.done = False
        self.streaming = False
        """Set when the writer drains this spool: the worker then waits instead of spilling."""

    def put(self, frame: bytes, decompressed_size: int) -> None:
        """Called by the worker for each frame, in order."""
        condition = self._pipeline.condition
        with condition:
            while self.streaming and self._memory and self._memory + len(frame) > STREAM_MEMORY:
                self._pipeline.check_cancelled()
                condition.wait(timeout=1.0)
            self._pipeline.check_cancelled()
            if self.streaming or self._pipeline.memory + len(frame) <= SPOOL_MEMORY:
                self._frames.append((frame, decompressed_size))
                self._memory += len(frame)
                self._pipeline.memory += len(frame)
                condition.notify_all()
                return
        location = self._spill(frame)
        with condition:
            self._frames.append((location, decompressed_size))
            condition.notify_all()

    def _spill(self, frame: bytes) -> tuple[int, int]:
        try:
            if self._file is None:
                # no with-block: the spool keeps its file open across put() calls; close() closes it
                self._file = tempfile.TemporaryFile(dir=self._pipeline.spill_dir)  # noqa: SIM115
            written = 0
            while written < len(frame):
                written += os.pwrite(self._file.fileno(), frame[written:], self._file_end + written)
        except OSError as error:
            directory = self._pipeline.spill_dir
            raise LocalIOError(f"cannot write a temporary file in {directory}: {error.strerror}") from None
        location = (self._file_end, len(frame))
        self._file_end += len(frame)
        return location

    def drain(self) -> Iterator[tuple[bytes, int]]:
        """Called by the writer: every frame in order, as soon as it exists; raises the first worker error."""
        condition = self._pipeline.condition
        with condition:
            self.streaming = True
            condition.notify_all()
        while True:
            with condition:
                while not self._frames and not self.done and self._pipeline.error is None:
                    condition.wait(timeout=1.0)
                if self._pipeline.error is not None:
                    raise self._pipeline.error
                if not self._frames:
                    return
                item, size = self._frames.popleft()
                if isinstance(item, bytes):
                    self._memory -= len(item)
                    self._pipeline.memory -= len(item)
                    condition.notify_all()
            yield (item if isinstance(item, bytes) else self._unspill(item)), size

    def _unspill(self, location: tuple[int, int]) -> bytes:
        offset, length = location
        assert self._file is not None
        try:
            data = os.pread(self._file.fileno(), length, offset)
        except OSError as error:
            raise LocalIOError(f"cannot read back a temporary file: {error.strerror}") from None
        if len(data) != length:
            raise LocalIOError("temporary spool file is shorter than written")
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class BlobPipeline:
    """Runs blob workers ahead of the writer and hands their spools out in digest order."""

    def __init__(
        self,
        specs: Sequence[BlobSpec],
        open_blob: Callable[[BlobSpec], Iterable[bytes]],
        *,
        level: int,
        jobs: int,
        verify: bool,
        spill_dir: Path,
    ) -> None:
        self.condition = threading.Condition()
        self.error: BaseException | None = None
        self.memory = 0
        """Compressed bytes held in memory by all spools (under ``condition``)."""
        self.spill_dir = spill_dir
        self._cancelled = False
        self._specs = specs
        self._open_blob = open_blob
        self._level = level
        self._verify = verify
        self._max_pending = max(1, 2 * jobs - 1)
        self._next = 0
        self._pending: deque[_Spool] = deque()
        self._ahead = 0
        self._all: list[_Spool] = []
        self._futures: list[Future[None]] = []
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="imgbundle-blob")
        self._compress_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="imgbundle-zstd")
        self._local = threading.local()

    def __enter__(self) -> Self:
        self._refill()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Cancel the workers; on an error or interrupt do not wait for one stuck on the network:
        the spools of workers still running are closed by those workers when they end."""
        with self.condition:
            self._cancelled = True
            self.condition.notify_all()
        if kind is None:
            self._executor.shutdown(wait=True)
        else:
            stop_workers(self._executor, self._futures)
        self._compress_pool.shutdown(wait=kind is None, cancel_futures=True)  # short tasks that hold no files
        with self.condition:
            self._closed = True
            finished = [spool for spool in self._all if spool.done]
        for spool in finished:
            spool.close()

    def spools(self) -> Iterator[_Spool]:
        """Spools in digest order; the caller drains each one before asking for the next."""
        while True:
            self._refill()
            if not self._pending:
                return
            spool = self._pending.popleft()
            self._ahead -= spool.spec.size
            self._refill()  # the members behind it start while it is written
            yield spool

    def _refill(self) -> None:
        while self._next < len(self._specs) and len(self._pending) < self._max_pending:
            spec = self._specs[self._next]
            if self._pending and self._ahead + spec.size > LOOKAHEAD_BYTES:
                return
            spool = _Spool(spec, self)
            self._all.append(spool)
            self._pending.append(spool)
            self._ahead += spec.size
            self._next += 1
            self._futures.append(self._executor.submit(self._work, spool))

    def check_cancelled(self) -> None:
        if self._cancelled:
            raise Cancelled()

    def _work(self, spool: _Spool) -> None:
        try:
            self.check_cancelled()
            self._fill(spool)
        except Cancelled:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the writer thread, which re-raises it
            with self.condition:
                if self.error is None:
                    self.error = error
                self._cancelled = True
        finally:
            with self.condition:
                spool.done = True
                abandoned = self._closed
                self.condition.notify_all()
            if abandoned:
                spool.close()

    def _fill(self, spool: _Spool) -> None:
        """Build one blob member: header, data as it arrives, padding; frames cut at FRAME_SIZE."""
        spec = spool.spec
        check = _BlobCheck(spec, self._verify)
        frame = self._frame_builder()
        frame.start(spool.put, blob_level(spec.media_type, self._level), pooled=spec.size >= POOLED_MEMBER_SIZE)
        frame.add(header_bytes(blob_path(spec.digest), spec.size))
        chunks = self._open_blob(spec)
        try:
            for chunk in chunks:
                self.check_cancelled()
                check.update(chunk)
                frame.add(chunk)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        check.finish()
        frame.add(bytes(padding(spec.size)))
        frame.finish()

    def _frame_builder(self) -> _FrameBuilder:
        """This worker thread's builder: one buffer and one compressor per level, reused for every blob."""
        builder = getattr(self._local, "builder", None)
        if builder is None:
            builder = self._local.builder = _FrameBuilder(self._compress_pool)
        return builder


class _FrameBuilder:
    """Cuts a member's bytes into FRAME_SIZE frames and has them compressed on ``compress_pool``, in order.

    The frames of a large member are compressed on the pool while this worker fills the next one, so one
    large blob uses more than one core (the frames are independent); at most ``FRAMES_IN_FLIGHT`` frames
    of a member are buffered. Why reuse buffers: a fresh 4 MiB buffer per frame is fresh memory,
    and first touching fresh memory costs a page fault per 4 KiB.
    """

    def __init__(self, compress_pool: ThreadPoolExecutor) -> None:
        self._pool = compress_pool
        self._free = [memoryview(bytearray(FRAME_SIZE))]
        self._buffer = self._free.pop()
        self._filled = 0
        self._in_flight: deque[tuple[Future[bytes], int, memoryview]] = deque()
        self._level = 0
        self._pooled = False
        self._emit: Callable[[bytes, int], None] = lambda frame, size: None

    def start(self, emit: Callable[[bytes, int], None], level: int, *, pooled: bool) -> None:
        """Begin a member compressed at ``level`` whose frames go to ``emit(frame, decompressed_size)``, on the
        pool when ``pooled``; drops any unfinished one."""
        self._drop_in_flight()
        self._emit = emit
        self._filled = 0
        self._level = level
        self._pooled = pooled

    def add(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(FRAME_SIZE - self._filled, len(view))
            self._buffer[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == FRAME_SIZE:
                self._flush()

    def finish(self) -> None:
        """Compress the rest as the member's last frame and emit every frame still in flight, in order."""
        if self._filled:
            self._flush()
        while self._in_flight:
            self._emit_oldest()

    def _flush(self) -> None:
        if self._pooled:
            self._hand_over()
        else:
            size, self._filled = self._filled, 0
            self._emit(_compress(self._level, self._buffer[:size]), size)

    def _hand_over(self) -> None:
        """The full buffer goes to the pool; the next frame fills a free buffer (waiting for one if need be)."""
        size, self._filled = self._filled, 0
        buffer = self._buffer
        self._in_flight.append((self._pool.submit(_compress, self._level, buffer[:size]), size, buffer))
        if not self._free and len(self._in_flight) < FRAMES_IN_FLIGHT:
            self._free.append(memoryview(bytearray(FRAME_SIZE)))
        while not self._free:
            self._emit_oldest()
        self._buffer = self._free.pop()

    def _emit_oldest(self) -> None:
        future, size, buffer = self._in_flight.popleft()
        try:
            self._emit(future.result(), size)
        finally:
            self._free.append(buffer)

    def _drop_in_flight(self) -> None:
        """After a member ended early: wait for its frames still on the pool (their buffers are reused)."""
        while self._in_flight:
            future, _, buffer = self._in_flight.popleft()
            wait([future])
            self._free.append(buffer)


_compressors = threading.local()


def _compress(level: int, data: memoryview) -> bytes:
    """One frame, with this thread's compressor for ``level`` (compressors are not thread-safe)."""
    by_level: dict[int, zstandard.ZstdCompressor] | None = getattr(_compressors, "by_level", None)
    if by_level is None:
        by_level = _compressors.by_level = {}
    compressor = by_level.get(level)
    if compressor is None:
        compressor = by_level[level] = new_compressor(level)
    return compressor.compress(data)


class _BlobCheck:
    """Counts (and optionally hashes) blob bytes; a blob must be exactly as its spec says."""

    def __init__(self, spec: BlobSpec, verify_digest: bool) -> None:
        self._spec = spec
        self._verifier = (
            DigestVerifier(Digest(spec.digest), spec.size, what=f"blob {spec.digest}") if verify_digest else None
        )
        self._received = 0

    def update(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._verifier is not None:
            self._verifier.update(chunk)
        elif self._received > self._spec.size:
            raise ContentMismatchError(f"blob {self._spec.digest}: more than the declared {self._spec.size} bytes")

    def finish(self) -> None:
        if self._verifier is not None:
            self._verifier.check()
        elif self._received != self._spec.size:
            raise ContentMismatchError(
                f"blob {self._spec.digest}: got {self._received} bytes, expected {self._spec.size}"
            )

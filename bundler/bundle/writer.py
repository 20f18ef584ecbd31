"""Write a bundle: metadata members first, blobs fetched and compressed in parallel, one writer.

Workers each take one blob: pull its chunks from ``open_blob``, cut header + data + padding into
``FRAME_SIZE`` pieces and compress every piece into a ``_Spool``. The single writer appends the
spools strictly in digest order, so the output does not depend on thread timing. The spool
being written streams straight through (its worker waits when it is ``STREAM_MEMORY`` ahead);
the spools further ahead share ``SPOOL_MEMORY`` and spill the rest to an unnamed temp file next to
the output. Look-ahead is bounded: at most ``2 * jobs`` members in flight (the one being written included),
and at most ``LOOKAHEAD_BYTES`` of blobs behind it (the next blob may always start).

The output goes to ``NAME.part-<random>`` and is renamed into place only when complete and
fsynced; any exception (or Ctrl-C) removes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence

import zstandard

try:
    import fcntl
except ImportError:  # Windows: temp files are not locked, and not swept
    fcntl = None  # type: ignore[assignment]

from bundler.bundle.delta import delta_plan
from bundler.bundle.frames import FRAME_SIZE, blob_level, compress_frames, new_compressor
from bundler.bundle.index import INDEX_NAME, BundleIndex, ImageEntry, SkippedEntry, blob_path
from bundler.bundle.layout import (
    LAYOUT_NAME,
    OCI_INDEX_NAME,
    OCI_LAYOUT_BYTES,
    BlobSpec,
    BundlePlan,
    plan_bundle,
)
from bundler.bundle.pagecache import WriteBehind
from bundler.bundle.seektable import encode_seek_table
from bundler.bundle.sidecar import format_sidecar, sidecar_path
from bundler.bundle.tar import END_OF_ARCHIVE, header_bytes, padding
from bundler.bundle.volumes import VolumeWriter, check_split, existing_outputs, remove_stale
from bundler.digest import Digest, DigestVerifier
from bundler.errors import ContentMismatchError, ImgbundleError, InputError, LocalIOError
from bundler.oci import RawManifest
from bundler.threads import stop_workers

__all__ = ["WriteResult", "write_bundle", "SPOOL_MEMORY", "STREAM_MEMORY", "LOOKAHEAD_BYTES"]

SPOOL_MEMORY = 24 * 1024 * 1024
"""Compressed bytes all the spools waiting to be written keep in memory together; the rest is
spilled to disk. One budget for all, so the peak does not grow with ``jobs``."""
STREAM_MEMORY = 8 * 1024 * 1024
"""Compressed bytes the spool being written may hold before its worker waits for the writer."""
LOOKAHEAD_BYTES = 256 * 1024 * 1024
"""Blob bytes that may be fetched ahead of the one being written (the next one always may)."""
MAX_LEVEL = 22
ABANDONED_AFTER = 60.0
"""Seconds since its last write after which an unlocked temp file counts as abandoned."""

log = logging.getLogger("bundler.bundle")


@dataclass(frozen=True)
class WriteResult:
    path: Path
    sidecar: Path
    sha256: str
    """Hex sha256 of the whole bundle file, as in the sidecar."""
    compressed_size: int
    index: BundleIndex
    volumes: tuple[Path, ...] = ()
    """With ``split``: the volumes written, in order (``path`` itself is then not written)."""


def write_bundle(
    path: Path,
    *,
    images: Sequence[ImageEntry],
    skipped: Sequence[SkippedEntry],
    manifests: Sequence[RawManifest],
    blobs: Sequence[BlobSpec],
    open_blob: Callable[[BlobSpec], Iterable[bytes]],
    created: str,
    level: int = 3,
    jobs: int = 4,
    overwrite: bool = False,
    verify_digests: bool = True,
    split: int | None = None,
    base: str | None = None,
    external: Sequence[BlobSpec] = (),
) -> WriteResult:
    """Write the bundle ``path`` and its ``.sha256`` sidecar; see spec/bundle-format.md.

    ``open_blob`` is called from worker threads and must yield exactly ``spec.size`` bytes
    (``ContentMismatchError`` otherwise; with ``verify_digests`` the digest is checked too).
    The first exception from any worker is re-raised after the others are cancelled; the
    partial output is removed. ``LocalIOError`` for an existing output (without ``overwrite``)
    and for any local I/O failure.

    ``split``: write volumes ``path.000``, ``path.001`` … each smaller than ``split`` bytes, and one
    sidecar line per volume. ``base``: a delta bundle (format 1.1) of the bundle with that id, whose
    images also need the ``external`` blobs (not written; the target must hold them).
    """
    path = Path(path)
    if not 1 <= level <= MAX_LEVEL or jobs < 1:
        raise InputError(f"compression level must be 1..{MAX_LEVEL} and jobs at least 1")
    plan = plan_bundle(images=images, skipped=skipped, manifests=manifests, blobs=blobs, created=created)
    if base is not None:
        plan = delta_plan(plan, base, external)
    if split is not None:
        check_split(split, plan.index.totals.manifest_bytes + plan.index.totals.blob_bytes)
    if not overwrite and (existing := existing_outputs(path)):
        raise LocalIOError(f"{existing[0]} already exists; refusing to overwrite it")
    sidecar = sidecar_path(path)
    _sweep_abandoned(path)
    with (VolumeWriter(path, split - 1, _TempFile) if split else _TempFile(path)) as bundle_temp:
        output = _FrameOutput(bundle_temp.file, path)
        _write_members(output, plan, open_blob, level=level, jobs=jobs, verify=verify_digests, spill_dir=path.parent)
        sha256 = output.finish()
        with _TempFile(sidecar) as sidecar_temp:
            sidecar_temp.write(bundle_temp.sidecar_bytes() if split else format_sidecar(sha256, path.name))
            sidecar_temp.sync()
            bundle_temp.commit(overwrite=overwrite)
            sidecar_temp.commit(overwrite=True)
    volumes = bundle_temp.volumes if split else ()
    if overwrite:
        remove_stale(path, volumes=len(volumes))
    _sync_directory(path.parent)
    return WriteResult(path, sidecar, sha256, output.size, plan.index, volumes)


def _write_members(
    output: "_FrameOutput",
    plan: BundlePlan,
    open_blob: Callable[[BlobSpec], Iterable[bytes]],
    *,
    level: int,
    jobs: int,
    verify: bool,
    spill_dir: Path,
) -> None:
    """All members in canonical order; blob workers start before the metadata is written."""
    compressor = new_compressor(level)
    with _BlobPipeline(plan.blobs, open_blob, level=level, jobs=jobs, verify=verify, spill_dir=spill_dir) as pipeline:
        output.write_member(compressor, INDEX_NAME, plan.index_bytes)
        base = output.position
        output.write_member(compressor, LAYOUT_NAME, OCI_LAYOUT_BYTES)
        output.write_member(compressor, OCI_INDEX_NAME, plan.oci_index_bytes)
        for manifest, entry in zip(plan.manifests, plan.index.manifests):
            _expect_position(output, base + entry.offset, entry.digest)
            output.write_member(compressor, blob_path(manifest.digest), manifest.data)
        for spool, entry in zip(pipeline.spools(), plan.index.blobs):
            _expect_position(output, base + entry.offset, entry.digest)
            for frame, size in spool.drain():
                output.write_frame(frame, size)
            spool.close()
    output.write_frame(compressor.compress(END_OF_ARCHIVE), len(END_OF_ARCHIVE))


def _expect_position(output: "_FrameOutput", position: int, digest: str) -> None:
    if output.position != position:
        raise ImgbundleError(f"internal error: {digest} written at {output.position}, planned at {position}")


class _FrameOutput:
    """The bundle file as it is written: frames, their sizes for the seek table, a running sha256."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self._file = file
        self._path = path
        self._hash = hashlib.sha256()
        self.frames: list[tuple[int, int]] = []
        self.size = 0
        self.position = 0
        """Bytes of decompressed tar stream written so far."""

    def write_member(self, compressor: zstandard.ZstdCompressor, name: str, data: bytes) -> None:
        member = header_bytes(name, len(data)) + data + bytes(padding(len(data)))
        for frame, size in compress_frames(compressor, member):
            self.write_frame(frame, size)

    def write_frame(self, frame: bytes, decompressed_size: int) -> None:
        self._write(frame)
        self.frames.append((len(frame), decompressed_size))
        self.position += decompressed_size

    def finish(self) -> str:
        """Append the seek table, flush and fsync; return the file's hex sha256."""
        self._write(encode_seek_table(self.frames))
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:
            raise _local_error(self._path, error) from None
        return self._hash.hexdigest()

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as error:
            raise _local_error(self._path, error) from None
        self._hash.update(data)
        self.size += len(data)


def _local_error(path: Path, error: OSError) -> LocalIOError:
    return LocalIOError(f"cannot write {path}: {error.strerror or error}")


def _sweep_abandoned(target: Path) -> None:
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


class _TempFile:
    """``<target>.part-<random>`` in the target's directory, locked while open: renamed into place by
    ``commit``, removed if the block is left any other way."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.temp = target.with_name(f"{target.name}.part-{secrets.token_hex(6)}")
        self.file: WriteBehind
        self._committed = False

    def __enter__(self) -> "_TempFile":
        try:
            descriptor = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as error:
            raise LocalIOError(f"cannot create {self.temp}: {error.strerror or error}") from None
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # tells _sweep_abandoned it is in use
            except OSError:
                pass  # a filesystem without locks: _sweep_abandoned cannot lock it either, so leaves it
        self.file = WriteBehind(os.fdopen(descriptor, "wb", buffering=1024 * 1024))
        return self

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as error:
            raise _local_error(self.target, error) from None

    def sync(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as error:
            raise _local_error(self.target, error) from None

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
            raise _local_error(self.target, error) from None
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


def _sync_directory(directory: Path) -> None:
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


# --- parallel blob members -----------------------------------------------------------------


class _Cancelled(Exception):
    """Raised inside a worker when another worker (or the writer) failed."""


class _Spool:
    """The compressed frames of one blob member, in order: bytes in memory or ranges of a temp file."""

    def __init__(self, spec: BlobSpec, pipeline: "_BlobPipeline") -> None:
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
                self._file = tempfile.TemporaryFile(dir=self._pipeline.spill_dir)
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


class _BlobPipeline:
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
        self._local = threading.local()

    def __enter__(self) -> "_BlobPipeline":
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
            raise _Cancelled()

    def _work(self, spool: _Spool) -> None:
        try:
            self.check_cancelled()
            self._fill(spool)
        except _Cancelled:
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
        frame.start(spool.put, blob_level(spec.media_type, self._level))
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
        frame.flush()

    def _frame_builder(self) -> "_FrameBuilder":
        """This worker thread's builder: one buffer and one compressor per level, reused for every blob."""
        builder = getattr(self._local, "builder", None)
        if builder is None:
            builder = self._local.builder = _FrameBuilder()
        return builder


class _FrameBuilder:
    """Cuts a member's bytes into FRAME_SIZE frames in one reused buffer and compresses each.

    Why reuse: a fresh 4 MiB buffer per frame is fresh memory, and first touching fresh memory costs a
    page fault per 4 KiB; at a gigabyte per second that is a sizeable share of a core.
    """

    def __init__(self) -> None:
        self._buffer = memoryview(bytearray(FRAME_SIZE))
        self._filled = 0
        self._compressors: dict[int, zstandard.ZstdCompressor] = {}
        self._compressor: zstandard.ZstdCompressor | None = None
        self._emit: Callable[[bytes, int], None] = lambda frame, size: None

    def start(self, emit: Callable[[bytes, int], None], level: int) -> None:
        """Begin a member compressed at ``level`` whose frames go to ``emit(frame, decompressed_size)``;
        drops any unfinished one."""
        self._emit = emit
        self._filled = 0
        if level not in self._compressors:
            self._compressors[level] = new_compressor(level)
        self._compressor = self._compressors[level]

    def add(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(FRAME_SIZE - self._filled, len(view))
            self._buffer[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == FRAME_SIZE:
                self.flush()

    def flush(self) -> None:
        """Compress what is buffered as one frame (nothing when the buffer is empty)."""
        if self._filled:
            size, self._filled = self._filled, 0
            assert self._compressor is not None
            self._emit(self._compressor.compress(self._buffer[:size]), size)


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

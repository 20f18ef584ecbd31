"""Write a bundle: metadata members first, then the blob members the ``BlobPipeline`` compresses in parallel.

The one writer appends members in canonical order (blobs in digest order), so the output does not depend
on thread timing. The output goes to ``NAME.part-<random>`` and is renamed into place only when complete
and fsynced; any exception (or Ctrl-C) removes it (see ``atomic``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from bundler.bundle.atomic import TempFile, sweep_abandoned, sync_directory, write_error
from bundler.bundle.content import ContentDigest
from bundler.bundle.delta import Since, delta_plan
from bundler.bundle.frames import compress_frames, new_compressor
from bundler.bundle.index import INDEX_NAME, BundleIndex, ImageEntry, SkippedEntry, blob_path
from bundler.bundle.layout import (
    LAYOUT_NAME,
    OCI_INDEX_NAME,
    OCI_LAYOUT_BYTES,
    BlobSpec,
    BundlePlan,
    plan_bundle,
)
from bundler.bundle.pipeline import BlobPipeline
from bundler.bundle.seektable import encode_seek_table
from bundler.bundle.sidecar import content_line, format_sidecar, sidecar_path
from bundler.bundle.tar import END_OF_ARCHIVE, header_bytes, padding
from bundler.bundle.volumes import VolumeWriter, WritableFile, check_split, existing_outputs, remove_stale
from bundler.errors import ImgbundleError, InputError, LocalIOError
from bundler.oci import RawManifest

__all__ = ["WriteResult", "write_bundle"]

MAX_LEVEL = 22


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
    content: str = ""
    """Hex content digest (the tar stream without blob data), as in the sidecar's comment line."""


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
    base: Since | None = None,
    external: Sequence[BlobSpec] = (),
) -> WriteResult:
    """Write the bundle ``path`` and its ``.sha256`` sidecar; see spec/bundle-format.md.

    ``open_blob`` is called from worker threads and must yield exactly ``spec.size`` bytes
    (``ContentMismatchError`` otherwise; with ``verify_digests`` the digest is checked too).
    The first exception from any worker is re-raised after the others are cancelled; the
    partial output is removed. ``LocalIOError`` for an existing output (without ``overwrite``)
    and for any local I/O failure.

    ``split``: write volumes ``path.000``, ``path.001`` … each smaller than ``split`` bytes, and one
    sidecar line per volume. ``base``: a delta bundle (format 1.1 or 1.3) of those bases, whose
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
    sweep_abandoned(path)
    volume_writer = VolumeWriter(path, split - 1, TempFile) if split else None
    bundle_temp = volume_writer if volume_writer is not None else TempFile(path)
    with bundle_temp:
        output = _FrameOutput(bundle_temp.file, path, _stream_bytes(plan))
        pipeline = BlobPipeline(plan.blobs, open_blob, level=level, jobs=jobs, verify=verify_digests,
                                spill_dir=path.parent)
        _write_members(output, plan, pipeline, level=level)
        sha256 = output.finish()
        with TempFile(sidecar) as sidecar_temp:
            checksums = volume_writer.sidecar_bytes() if volume_writer is not None else format_sidecar(sha256, path.name)
            sidecar_temp.write(checksums + content_line(output.content.hexdigest()))
            sidecar_temp.sync()
            bundle_temp.commit(overwrite=overwrite)
            sidecar_temp.commit(overwrite=True)
    volumes = volume_writer.volumes if volume_writer is not None else ()
    if overwrite:
        remove_stale(path, volumes=len(volumes))
    sync_directory(path.parent)
    return WriteResult(path, sidecar, sha256, output.size, plan.index, volumes, output.content.hexdigest())


def _write_members(output: _FrameOutput, plan: BundlePlan, pipeline: BlobPipeline, *, level: int) -> None:
    """All members in canonical order; the blob workers start before the metadata is written."""
    compressor = new_compressor(level)
    with pipeline:
        output.write_member(compressor, INDEX_NAME, plan.index_bytes)
        base = output.position
        output.write_member(compressor, LAYOUT_NAME, OCI_LAYOUT_BYTES)
        output.write_member(compressor, OCI_INDEX_NAME, plan.oci_index_bytes)
        for manifest, entry in zip(plan.manifests, plan.index.manifests):
            _expect_position(output, base + entry.offset, entry.digest)
            output.write_member(compressor, blob_path(manifest.digest), manifest.data, data_in_content=False)
        for spool, entry in zip(pipeline.spools(), plan.index.blobs):
            _expect_position(output, base + entry.offset, entry.digest)
            output.content.add_without_data(blob_path(entry.digest), entry.size)
            for frame, size in spool.drain():
                output.write_frame(frame, size)
            spool.close()
    output.content.add(END_OF_ARCHIVE)
    output.write_frame(compressor.compress(END_OF_ARCHIVE), len(END_OF_ARCHIVE))


def _stream_bytes(plan: BundlePlan) -> int:
    """The members' bytes before compression: at most what the bundle needs on disk, give or take headers."""
    totals = plan.index.totals
    return len(plan.index_bytes) + len(plan.oci_index_bytes) + totals.manifest_bytes + totals.blob_bytes


def _expect_position(output: _FrameOutput, position: int, digest: str) -> None:
    if output.position != position:
        raise ImgbundleError(f"internal error: {digest} written at {output.position}, planned at {position}")


class _FrameOutput:
    """The bundle file as it is written: frames, their sizes for the seek table, a running sha256, and the
    content digest of the tar stream (``ContentDigest``)."""

    def __init__(self, file: WritableFile, path: Path, planned: int) -> None:
        self._file = file
        self._path = path
        self._planned = planned
        """Uncompressed bytes the members take: on a full disk, what may still be needed."""
        self._hash = hashlib.sha256()
        self.content = ContentDigest()
        self.frames: list[tuple[int, int]] = []
        self.size = 0
        self.position = 0
        """Bytes of decompressed tar stream written so far."""

    def write_member(self, compressor: zstandard.ZstdCompressor, name: str, data: bytes, *,
                     data_in_content: bool = True) -> None:
        """One member in frames; ``data_in_content`` false for a ``blobs/`` member (a manifest)."""
        member = header_bytes(name, len(data)) + data + bytes(padding(len(data)))
        if data_in_content:
            self.content.add(member)
        else:
            self.content.add_without_data(name, len(data))
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
            raise self._error(error) from None
        return self._hash.hexdigest()

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as error:
            raise self._error(error) from None
        self._hash.update(data)
        self.size += len(data)

    def _error(self, error: OSError) -> LocalIOError:
        return write_error(self._path, error, written=self.size, needed=max(self._planned - self.position, 0))

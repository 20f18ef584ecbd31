"""Delta bundles, the pack side: what an older bundle already brought to the site.

``pack --since OLD`` leaves out every blob OLD carried (and every blob OLD itself expected from
its own base: once OLD was unpacked the site holds those too) and records OLD's id. OLD can be
the bundle (a file or its volumes) or the JSON that ``imgbundle list --json OLD`` printed, so the
multi-GB file need not be kept. Manifests are always carried: they are small, and with them a
delta's graph can be checked on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bundler.bundle import BlobSpec, BundleIndex, read_index
from bundler.bundle.frames import ZSTD_MAGIC
from bundler.bundle.index import bundle_id, decode_index
from bundler.bundle.layout import MAX_INDEX_BYTES
from bundler.bundle.volumes import find_bundle
from bundler.errors import BundleError, InputError, LocalIOError

__all__ = ["DeltaBase", "load_base", "split_blobs"]


@dataclass(frozen=True)
class DeltaBase:
    """The bundle a delta builds on: its id, and the blobs the site holds once it was unpacked."""

    id: str
    blobs: frozenset[str]
    source: str

    @classmethod
    def of(cls, index: BundleIndex, source: str) -> "DeltaBase":
        blobs = {entry.digest for entry in index.blobs} | {entry.digest for entry in index.external}
        return cls(bundle_id(index), frozenset(blobs), source)


def load_base(path: Path) -> DeltaBase:
    """The base named by ``--since``: a bundle, its volumes, or the JSON of ``list --json``.

    ``InputError`` when it is none of these, ``LocalIOError`` when it cannot be read.
    """
    files = find_bundle(path)
    head = _head(files.parts[0])
    try:
        if head == ZSTD_MAGIC:
            index = read_index(files)
        else:
            index = decode_index(_read_json(files.name))
    except BundleError as error:
        raise InputError(
            f"--since {path}: not a bundle or a bundle index from 'imgbundle list --json': {error}"
        ) from None
    return DeltaBase.of(index, str(path))


def split_blobs(blobs: Sequence[BlobSpec], base: DeltaBase) -> tuple[list[BlobSpec], list[BlobSpec]]:
    """``(carried, external)``: the blobs to write, and those left to the base."""
    carried = [blob for blob in blobs if blob.digest not in base.blobs]
    external = [blob for blob in blobs if blob.digest in base.blobs]
    return carried, external


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(len(ZSTD_MAGIC))
    except OSError as error:
        raise LocalIOError(f"cannot read {path}: {error.strerror or error}") from None


def _read_json(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_INDEX_BYTES + 1)
    except OSError as error:
        raise LocalIOError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_INDEX_BYTES:
        raise InputError(f"--since {path}: larger than any bundle index can be")
    return data

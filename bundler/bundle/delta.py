"""Delta bundles (format 1.1): the index names a base bundle and the blobs left to it.

The member layout is that of any bundle; only ``imgbundle.json`` gains ``base`` and ``external``
(offsets count from the end of that member, so a longer index moves nothing).

A delta leaves out every blob its base carried (and every blob the base itself expected from its
own base: once the base was unpacked the site holds those too) and records the base's id. The base
can be the bundle (a file or its volumes) or its index as JSON, so the multi-GB file need not be
kept. Manifests are always carried: they are small, and with them a delta's graph can be checked
on its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import msgspec

from bundler.bundle.frames import ZSTD_MAGIC
from bundler.bundle.index import (
    DELTA_VERSION,
    BundleIndex,
    ExternalEntry,
    bundle_id,
    decode_index,
    encode_index,
    newer_version,
)
from bundler.bundle.layout import MAX_INDEX_BYTES, BlobSpec, BundlePlan
from bundler.bundle.reader import read_index
from bundler.bundle.volumes import find_bundle
from bundler.errors import BundleError, InputError, LocalIOError, Remedy

__all__ = ["DeltaBase", "delta_plan", "load_base", "split_blobs"]


@dataclasses.dataclass(frozen=True)
class DeltaBase:
    """The bundle a delta builds on: its id, and the blobs the site holds once it was unpacked."""

    id: str
    blobs: frozenset[str]
    path: Path
    """The bundle, or the JSON of its index, the base was read from."""

    @classmethod
    def of(cls, index: BundleIndex, path: Path) -> DeltaBase:
        blobs = {entry.digest for entry in index.blobs} | {entry.digest for entry in index.external}
        return cls(bundle_id(index), frozenset(blobs), path)


def load_base(path: Path) -> DeltaBase:
    """The base at ``path``: a bundle, its volumes, or the JSON of its index.

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
        raise InputError(f"{path}: not a bundle or a bundle index: {error}", remedy=Remedy.NAME_BASE) from None
    return DeltaBase.of(index, path)


def split_blobs(blobs: Sequence[BlobSpec], base: DeltaBase) -> tuple[list[BlobSpec], list[BlobSpec]]:
    """``(carried, external)``: the blobs to write, and those left to the base."""
    carried = [blob for blob in blobs if blob.digest not in base.blobs]
    external = [blob for blob in blobs if blob.digest in base.blobs]
    return carried, external


def delta_plan(plan: BundlePlan, base: str, external: Sequence[BlobSpec]) -> BundlePlan:
    """``plan`` as a delta of the bundle whose id is ``base``, expecting ``external`` at the target.

    ``InputError`` (the caller's bug) when the result is not a valid index, e.g. a blob both
    carried and external.
    """
    unique = {spec.digest: spec for spec in external}
    entries = [ExternalEntry(digest=d, size=unique[d].size, media_type=unique[d].media_type) for d in sorted(unique)]
    index = msgspec.structs.replace(plan.index, version=newer_version(plan.index.version, DELTA_VERSION), base=base, external=entries)
    data = encode_index(index)
    try:
        index = decode_index(data)
    except BundleError as error:
        raise InputError(f"cannot build a valid delta bundle index: {error}") from None
    return dataclasses.replace(plan, index=index, index_bytes=data)


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
        raise InputError(f"{path}: larger than any bundle index can be")
    return data

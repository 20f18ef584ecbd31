"""Delta bundles (format 1.1, 1.3 with inventories): the index names what the delta builds on and the
blobs left to it.

The member layout is that of any bundle; only ``imgbundle.json`` gains ``base`` and ``external``
(and, from 1.3, ``bases`` and ``external[].repository``; offsets count from the end of that member,
so a longer index moves nothing).

A delta leaves out every blob its bases hold: a bundle's blobs (and every blob that bundle itself
expected from its own base: once it was unpacked the site holds those too), and every blob a site
inventory (``bundler.inventory.format``) lists, in whichever repository. Several bases count as
their union. A bundle base can be the file (or its volumes) or its index as JSON, so the multi-GB
file need not be kept. Manifests are always carried: they are small, and with them a delta's graph
can be checked on its own.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec

from bundler.bundle.frames import ZSTD_MAGIC
from bundler.bundle.index import (
    BASES_VERSION,
    DELTA_VERSION,
    BaseEntry,
    BundleIndex,
    ExternalEntry,
    bases_id,
    bundle_id,
    decode_index,
    encode_index,
    newer_version,
)
from bundler.bundle.layout import MAX_INDEX_BYTES, BlobSpec, BundlePlan
from bundler.bundle.reader import read_index
from bundler.bundle.volumes import find_bundle
from bundler.errors import BundleError, InputError, LocalIOError, Remedy
from bundler.inventory.format import MAX_INVENTORY_BYTES, Inventory, decode_inventory, is_inventory

__all__ = ["BaseKind", "DeltaBase", "Since", "delta_plan", "load_base", "split_blobs"]


class BaseKind(enum.Enum):
    BUNDLE = "bundle"
    INVENTORY = "inventory"


@dataclasses.dataclass(frozen=True)
class DeltaBase:
    """One thing a delta builds on: its id, and the blobs the site holds once it was unpacked or listed."""

    kind: BaseKind
    id: str
    blobs: frozenset[str]
    path: Path
    """The bundle, the JSON of its index, or the inventory the base was read from."""
    created: str
    source: str = ""
    holders: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """An inventory's blobs: a repository of the site holding each (the first by name)."""
    failed: tuple[str, ...] = ()
    """An inventory's repositories that could not be listed: it is incomplete."""

    @classmethod
    def of(cls, index: BundleIndex, path: Path) -> DeltaBase:
        blobs = {entry.digest for entry in index.blobs} | {entry.digest for entry in index.external}
        return cls(BaseKind.BUNDLE, bundle_id(index), frozenset(blobs), path, index.created)

    @classmethod
    def of_inventory(cls, inventory: Inventory, path: Path) -> DeltaBase:
        holders: dict[str, str] = {}
        for repository in inventory.repositories:  # sorted by name: the first holder wins
            for digest in repository.blobs:
                holders.setdefault(digest, repository.name)
        return cls(BaseKind.INVENTORY, inventory.checksum, frozenset(holders), path, inventory.created,
                   inventory.source, holders, tuple(entry.repository for entry in inventory.failed))

    def entry(self) -> BaseEntry:
        return BaseEntry(kind=self.kind.value, id=self.id, created=self.created, source=self.source)


@dataclasses.dataclass(frozen=True)
class Since:
    """The union of a delta's bases, each once, sorted by id so that their order does not matter."""

    bases: tuple[DeltaBase, ...]

    @classmethod
    def of(cls, bases: Sequence[DeltaBase], *, allow_incomplete: bool = False) -> Since:
        """``InputError`` for an incomplete inventory unless allowed: it does not say what the site holds."""
        unique = {base.id: base for base in bases}
        since = cls(tuple(unique[i] for i in sorted(unique)))
        if since.incomplete and not allow_incomplete:
            first = since.incomplete[0]
            raise InputError(f"{first.path}: an incomplete inventory: {len(first.failed)} repositories could not "
                             f"be listed ({', '.join(first.failed[:3])})", remedy=Remedy.ALLOW_INCOMPLETE)
        return since

    @property
    def id(self) -> str:
        return bases_id([base.id for base in self.bases])

    @property
    def blobs(self) -> frozenset[str]:
        return frozenset().union(*(base.blobs for base in self.bases))

    @property
    def incomplete(self) -> list[DeltaBase]:
        return [base for base in self.bases if base.failed]

    def holder(self, digest: str) -> str:
        """A repository of the site that holds ``digest`` by some inventory; empty when none says so."""
        return next((base.holders[digest] for base in self.bases if digest in base.holders), "")

    @property
    def recorded(self) -> list[BaseEntry]:
        """What the index records in ``bases``: nothing for one bundle, as format 1.1 did."""
        if len(self.bases) == 1 and self.bases[0].kind is BaseKind.BUNDLE:
            return []
        return [base.entry() for base in self.bases]


def load_base(path: Path) -> DeltaBase:
    """The base at ``path``: a bundle, its volumes, the JSON of its index, or a site inventory.

    ``InputError`` when it is none of these or a damaged inventory, ``LocalIOError`` when it cannot be read.
    """
    files = find_bundle(path)
    if _head(files.parts[0]) == ZSTD_MAGIC:
        return DeltaBase.of(_decoded(path, lambda: read_index(files)), path)
    data = _read_json(files.name)
    if is_inventory(data):
        try:
            return DeltaBase.of_inventory(decode_inventory(data), path)
        except InputError as error:
            raise error.reworded(f"{path}: {error}") from None
    if len(data) > MAX_INDEX_BYTES:
        raise InputError(f"{path}: larger than any bundle index can be")
    return DeltaBase.of(_decoded(path, lambda: decode_index(data)), path)


def _decoded(path: Path, decode: Callable[[], BundleIndex]) -> BundleIndex:
    try:
        return decode()
    except BundleError as error:
        raise InputError(f"{path}: not a bundle or a bundle index (nor a site inventory): {error}",
                         remedy=Remedy.NAME_BASE) from None


def split_blobs(blobs: Sequence[BlobSpec], since: Since) -> tuple[list[BlobSpec], list[BlobSpec]]:
    """``(carried, external)``: the blobs to write, and those left to the bases."""
    held = since.blobs
    carried = [blob for blob in blobs if blob.digest not in held]
    external = [blob for blob in blobs if blob.digest in held]
    return carried, external


def delta_plan(plan: BundlePlan, since: Since, external: Sequence[BlobSpec]) -> BundlePlan:
    """``plan`` as a delta of ``since``, expecting ``external`` at the target (each with the repository an
    inventory saw it in).

    ``InputError`` (the caller's bug) when the result is not a valid index, e.g. a blob both
    carried and external.
    """
    unique = {spec.digest: spec for spec in external}
    entries = [ExternalEntry(digest=d, size=unique[d].size, media_type=unique[d].media_type,
                             repository=since.holder(d)) for d in sorted(unique)]
    bases = since.recorded
    delta_version = BASES_VERSION if bases or any(entry.repository for entry in entries) else DELTA_VERSION
    version = newer_version(plan.index.version, delta_version)
    index = msgspec.structs.replace(plan.index, version=version, base=since.id, external=entries, bases=bases)
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
            data = file.read(MAX_INVENTORY_BYTES + 1)
    except OSError as error:
        raise LocalIOError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_INVENTORY_BYTES:
        raise InputError(f"{path}: larger than any bundle index or inventory can be")
    return data

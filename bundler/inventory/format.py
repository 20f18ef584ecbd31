"""The inventory file (spec/inventory-format.md): what a site's registry holds, as msgspec structs.

Compact JSON, keys in the order of the structs, every list sorted: the same holdings give the same
bytes (but for ``created``). The file closes with its own checksum, the SHA-256 of every byte before
``,"checksum":``, so a damaged or hand-edited file is refused before anything in it is trusted:
leaving out a blob the site lacks makes a bundle that cannot be unpacked.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Annotated

import msgspec

from bundler.errors import InputError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_INVENTORY_BYTES",
    "BlobEntry",
    "FailedEntry",
    "Inventory",
    "RepositoryEntry",
    "decode_inventory",
    "encode_inventory",
    "is_inventory",
]

FORMAT_NAME = "imgbundle-inventory"
FORMAT_VERSION = "1.0"
SUPPORTED_MAJOR = 1
MAX_INVENTORY_BYTES = 256 * 1024 * 1024
"""Far above any registry's inventory; a bigger file is not one."""

_CHECKSUM_KEY = b',"checksum":"'
_CHECKSUM_RE = re.compile(rb'^sha256:[a-f0-9]{64}$')
_VERSION_RE = re.compile(r"^([0-9]{1,6})\.([0-9]{1,6})$")
_MAGIC = b'{"format":"' + FORMAT_NAME.encode() + b'"'

DigestText = Annotated[str, msgspec.Meta(pattern=r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class BlobEntry(msgspec.Struct, frozen=True):
    """A blob (config or layer) some manifest of the site references, with its size."""

    digest: DigestText
    size: Count


class RepositoryEntry(msgspec.Struct, frozen=True):
    """One repository: its tags, every manifest they reach (index children too), every blob those list."""

    name: str
    tags: dict[str, DigestText]
    manifests: list[DigestText]
    blobs: list[DigestText]


class FailedEntry(msgspec.Struct, frozen=True):
    """A repository that could not be listed whole: what the site holds there is unknown."""

    repository: str
    reason: str


class Inventory(msgspec.Struct, frozen=True):
    format: str
    version: str
    created: str
    tool: str
    source: str
    """What was listed: ``HOST``, ``HOST/PROJECT`` or ``storage:PATH``."""
    complete: bool
    failed: list[FailedEntry]
    repositories: list[RepositoryEntry]
    blobs: list[BlobEntry]

    @property
    def checksum(self) -> str:
        """The checksum the file of this inventory carries: it names the inventory, as a bundle id does a bundle."""
        return _checksum(_encoder.encode(self)[:-1])


class _Head(msgspec.Struct):
    format: object = None
    version: object = None


_encoder = msgspec.json.Encoder()
_head_decoder = msgspec.json.Decoder(_Head)
_decoder = msgspec.json.Decoder(Inventory)


def _checksum(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def encode_inventory(inventory: Inventory) -> bytes:
    """The file's bytes: the JSON object with ``checksum`` as its last key, and a line feed."""
    body = _encoder.encode(inventory)[:-1]
    return body + _CHECKSUM_KEY + _checksum(body).encode() + b'"}\n'


def is_inventory(data: bytes) -> bool:
    """Whether the bytes start as an inventory does, damaged or not: ``format`` is always the first key."""
    return data.startswith(_MAGIC)


def decode_inventory(data: bytes) -> Inventory:
    """The inventory in ``data``, its checksum and consistency checked; ``InputError`` naming what is wrong."""
    body, stored = _without_checksum(data)
    if stored != _checksum(body).encode():
        raise InputError("damaged inventory: its checksum does not match its content")
    try:
        head = _head_decoder.decode(body + b"}")
    except msgspec.DecodeError:
        raise InputError("damaged inventory: not a JSON object") from None
    if head.format != FORMAT_NAME:
        raise InputError(f"not an inventory: format is {head.format!r}")
    _check_version(head.version)
    try:
        inventory = _decoder.decode(body + b"}")
    except msgspec.DecodeError as error:
        raise InputError(f"damaged inventory: {error}") from None
    _check(inventory)
    return inventory


def _without_checksum(data: bytes) -> tuple[bytes, bytes]:
    """``(body, checksum)``: the bytes the checksum covers, and the checksum the file states."""
    text = data[:-1] if data.endswith(b"\n") else data
    body, found, tail = text.rpartition(_CHECKSUM_KEY)
    if not found or not tail.endswith(b'"}') or not _CHECKSUM_RE.match(tail[:-2]):
        raise InputError("damaged inventory: it does not end with its checksum")
    return body, tail[:-2]


def _check_version(version: object) -> None:
    match = _VERSION_RE.match(version) if isinstance(version, str) else None
    if not match:
        raise InputError(f"damaged inventory: version {version!r} is not MAJOR.MINOR")
    if int(match.group(1)) != SUPPORTED_MAJOR:
        raise InputError(f"inventory format version {version} is not supported; this reader supports "
                         f"{SUPPORTED_MAJOR}.x")


def _check(inventory: Inventory) -> None:
    """Sorted, unique, every repository's blob listed with its size, tags pointing at listed manifests."""
    _sorted_unique([r.name for r in inventory.repositories], "repositories")
    _sorted_unique([b.digest for b in inventory.blobs], "blobs")
    _sorted_unique([f.repository for f in inventory.failed], "failed repositories")
    if inventory.complete == bool(inventory.failed):
        raise InputError("damaged inventory: 'complete' disagrees with the failed repositories")
    sizes = {blob.digest for blob in inventory.blobs}
    for repository in inventory.repositories:
        _sorted_unique(repository.manifests, f"manifests of {repository.name}")
        _sorted_unique(repository.blobs, f"blobs of {repository.name}")
        if not sizes.issuperset(repository.blobs):
            raise InputError(f"damaged inventory: a blob of {repository.name} has no size")
        if not set(repository.manifests).issuperset(repository.tags.values()):
            raise InputError(f"damaged inventory: a tag of {repository.name} names an unlisted manifest")


def _sorted_unique(values: Sequence[str], what: str) -> None:
    if any(a >= b for a, b in itertools.pairwise(values)):
        raise InputError(f"damaged inventory: {what} are not sorted or not unique")

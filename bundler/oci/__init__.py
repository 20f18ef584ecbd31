"""OCI and Docker media types and msgspec structs for manifests and indexes.

Decode only: the bytes a registry served are what we store, hash and push; these structs
exist so that we can read descriptors out of them, never to re-encode them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from bundler.digest import Digest
from bundler.errors import ContentMismatchError

__all__ = [
    "ACCEPT_MANIFESTS",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_SCHEMA1",
    "DOCKER_SCHEMA1_SIGNED",
    "IMAGE_CONFIG_TYPES",
    "IMAGE_MANIFEST_TYPES",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "MAX_MANIFEST_BYTES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "REF_NAME_ANNOTATION",
    "Descriptor",
    "Index",
    "JsonTooDeepError",
    "Manifest",
    "Placement",
    "Platform",
    "RawManifest",
    "decode_json",
    "detect_media_type",
    "parse_index",
    "parse_manifest",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_MANIFEST_TYPES
IMAGE_CONFIG_TYPES = frozenset({"application/vnd.oci.image.config.v1+json",
                                "application/vnd.docker.container.image.v1+json"})
"""Config media types of container images; any other config makes a manifest an artifact (a Helm chart, …)."""
ACCEPT_MANIFESTS = f"{OCI_INDEX}, {DOCKER_MANIFEST_LIST}, {OCI_MANIFEST}, {DOCKER_MANIFEST}"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""Distribution refuses larger manifests; we refuse to read them."""


class Placement(enum.Enum):
    """How a blob came to be in a repository: the distribution API's two ways, here so that the registry
    client and the write stores name them without either importing the other."""

    UPLOADED = "uploaded"
    MOUNTED = "mounted"
    """Taken from another repository of the same registry: no bytes sent."""

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


class Platform(msgspec.Struct, frozen=True, omit_defaults=True, rename={"os_version": "os.version", "os_features": "os.features"}):
    architecture: str = ""
    os: str = ""
    variant: str = ""
    os_version: str = ""
    os_features: list[str] = []

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


class Descriptor(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = {}
    urls: list[str] = []
    artifact_type: str = ""


class Index(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    schema_version: int
    manifests: list[Descriptor] = []
    media_type: str = ""
    annotations: dict[str, str] = {}
    subject: Descriptor | None = None
    artifact_type: str = ""


class Manifest(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    schema_version: int
    config: Descriptor
    layers: list[Descriptor] = []
    media_type: str = ""
    annotations: dict[str, str] = {}
    subject: Descriptor | None = None
    artifact_type: str = ""

    @property
    def blobs(self) -> list[Descriptor]:
        """Config first, then layers: the blobs a registry needs before this manifest."""
        return [self.config, *self.layers]


class _Probe(msgspec.Struct):
    schemaVersion: int = 0
    mediaType: str = ""
    manifests: list[msgspec.Raw] | None = None
    config: msgspec.Raw = msgspec.Raw()  # msgspec cannot decode an object into ``Raw | None``


_T = TypeVar("_T")


class JsonTooDeepError(msgspec.DecodeError):
    """JSON nested deeper than the decoder's recursion limit: crafted, since no manifest or index needs it."""


def decode_json(decoder: msgspec.json.Decoder[_T], data: bytes) -> _T:
    """``decoder.decode(data)``, where JSON nested deeper than the decoder's recursion limit is a
    ``msgspec.DecodeError`` (``JsonTooDeepError``) like any other bad JSON: hostile bytes end in the
    caller's refusal, not a crash."""
    try:
        return decoder.decode(data)
    except RecursionError:
        raise JsonTooDeepError("JSON nested too deeply") from None


_probe_decoder = msgspec.json.Decoder(_Probe)
_index_decoder = msgspec.json.Decoder(Index)
_manifest_decoder = msgspec.json.Decoder(Manifest)


def detect_media_type(data: bytes, declared: str = "") -> str:
    """The media type of manifest bytes: ``mediaType`` inside, else the declared one, else by shape.

    Raises ``msgspec.DecodeError`` for bytes that are not a JSON object.
    """
    probe = decode_json(_probe_decoder, data)
    if probe.mediaType:
        return probe.mediaType
    if probe.schemaVersion == 1:
        return DOCKER_SCHEMA1
    if declared and declared.split(";")[0].strip() in MANIFEST_TYPES:
        return declared.split(";")[0].strip()
    if probe.manifests is not None:
        return OCI_INDEX
    if probe.config:
        return OCI_MANIFEST
    return declared


def parse_index(data: bytes) -> Index:
    return decode_json(_index_decoder, data)


def parse_manifest(data: bytes) -> Manifest:
    return decode_json(_manifest_decoder, data)


@dataclass(frozen=True)
class RawManifest:
    """A manifest or index exactly as served: the bytes, their media type and their digest."""

    data: bytes
    media_type: str
    digest: Digest

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str, expected: Digest | None = None) -> RawManifest:
        """Wrap served bytes; with ``expected``, refuse bytes whose digest differs."""
        digest = Digest.of(data, expected.algorithm if expected else "sha256")
        if expected and digest != expected:
            raise ContentMismatchError(f"manifest bytes have digest {digest}, expected {expected}")
        return cls(data, media_type, digest)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def index(self) -> Index:
        return parse_index(self.data)

    def manifest(self) -> Manifest:
        return parse_manifest(self.data)

    def descriptor(self, platform: Platform | None = None) -> Descriptor:
        return Descriptor(media_type=self.media_type, digest=self.digest, size=len(self.data), platform=platform)

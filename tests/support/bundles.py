"""Synthetic images and bundle surgery for the bundle format tests and the hostile-bundle CLI tests.

A hostile bundle is made without the writer (which refuses what readers refuse): ``ImageSet.crafted``
lays an image set out as the writer does and frames it with ``craft``, checking nothing.

Images are real enough for skopeo: gzip'd tar layers, configs with matching diff_ids, OCI and
Docker manifests, an OCI index with two platforms. Random bytes come from seeded generators.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import struct
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator

import zstandard

from bundler.bundle import (INDEX_NAME, BlobSpec, ImageEntry, SkippedEntry, WriteResult, blob_path, read_index,
                            write_bundle)
from bundler.bundle.frames import blob_level, compress_frames, new_compressor
from bundler.bundle.layout import LAYOUT_NAME, OCI_INDEX_NAME, OCI_LAYOUT_BYTES, lay_out
from bundler.bundle.seektable import encode_seek_table
from bundler.bundle.tar import END_OF_ARCHIVE, header_bytes, padding, read_header
from bundler.digest import Digest
from bundler.oci import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RawManifest

SEED = 20261123
CREATED = "2026-11-23T10:00:00Z"
CRAFT_LEVEL = 3
"""The writer's default level, so that a crafted bundle of a valid set is the written one."""
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass
class ImageSet:
    """Everything ``write_bundle`` needs, plus the expected bytes of every member."""

    images: list[ImageEntry] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)
    manifests: dict[str, RawManifest] = field(default_factory=dict)
    blobs: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    def add_blob(self, data: bytes, media_type: str, algorithm: str = "sha256") -> dict:
        digest = Digest.of(data, algorithm)
        self.blobs[digest] = (data, media_type)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def add_manifest(self, document: dict, media_type: str) -> RawManifest:
        return self.add_manifest_bytes(json.dumps(document, indent=3).encode(), media_type)

    def add_manifest_bytes(self, data: bytes, media_type: str) -> RawManifest:
        """A manifest of any bytes (hostile ones too: write those with ``crafted``)."""
        raw = RawManifest.from_bytes(data, media_type)
        self.manifests[raw.digest] = raw
        return raw

    @property
    def specs(self) -> list[BlobSpec]:
        return [BlobSpec(Digest(d), len(data), media_type) for d, (data, media_type) in self.blobs.items()]

    def open_blob(self, chunk_size: int = 64 * 1024) -> Callable[[BlobSpec], Iterator[bytes]]:
        def open_blob(spec: BlobSpec) -> Iterator[bytes]:
            data = self.blobs[spec.digest][0]
            for start in range(0, len(data), chunk_size):
                yield data[start : start + chunk_size]

        return open_blob

    def write(self, path: Path, **options) -> WriteResult:
        options.setdefault("open_blob", self.open_blob())
        options.setdefault("created", CREATED)
        options.setdefault("images", self.images)
        options.setdefault("skipped", self.skipped)
        options.setdefault("manifests", list(self.manifests.values()))
        options.setdefault("blobs", self.specs)
        return write_bundle(path, **options)

    def crafted(self) -> bytes:
        """The bundle file as a tool that checks nothing might write it: the writer's layout and framing,
        none of its checks on the manifests, so that a hostile one gets through to the readers."""
        plan = lay_out(images=self.images, skipped=self.skipped, manifests=list(self.manifests.values()),
                       blobs=self.specs, created=CREATED)
        members = [(INDEX_NAME, plan.index_bytes), (LAYOUT_NAME, OCI_LAYOUT_BYTES),
                   (OCI_INDEX_NAME, plan.oci_index_bytes),
                   *((blob_path(m.digest), m.data) for m in plan.manifests),
                   *((blob_path(b.digest), self.blobs[b.digest][0]) for b in plan.blobs)]
        levels = [CRAFT_LEVEL] * (len(members) - len(plan.blobs)) + [blob_level(b.media_type, CRAFT_LEVEL)
                                                                       for b in plan.blobs]
        return craft([member_bytes(name, data) for name, data in members], level=CRAFT_LEVEL, levels=levels)

    def content(self, digest: str) -> bytes:
        if digest in self.manifests:
            return self.manifests[digest].data
        return self.blobs[digest][0]


def layer(rng: random.Random, name: str, size: int) -> tuple[bytes, str]:
    """A gzip'd tar holding one file of ``size`` random bytes; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = size
        archive.addfile(info, io.BytesIO(rng.randbytes(size)))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, compresslevel=1, mtime=0), "sha256:" + hashlib.sha256(uncompressed).hexdigest()


def _image_manifest(images: ImageSet, rng: random.Random, arch: str, sizes: list[int], docker: bool = False,
                    shared: tuple[bytes, str] | None = None) -> RawManifest:
    layer_type, config_type = (DOCKER_LAYER, DOCKER_CONFIG) if docker else (OCI_LAYER, OCI_CONFIG)
    layers = [layer(rng, f"file-{arch}-{n}", size) for n, size in enumerate(sizes)]
    if shared:
        layers.insert(0, shared)
    config = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
              "config": {}}
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": images.add_blob(json.dumps(config).encode(), config_type),
        "layers": [images.add_blob(blob, layer_type) for blob, _ in layers],
    }
    return images.add_manifest(document, DOCKER_MANIFEST if docker else OCI_MANIFEST)


def make_image_set(*, big: bool = False, seed: int = SEED) -> ImageSet:
    """Four references: a two-platform OCI index (tag and digest-only), a Docker v2 image, an
    OCI image (with a layer over FRAME_SIZE when ``big``), one skipped line; plus a sha512 blob."""
    rng = random.Random(seed)
    images = ImageSet()
    shared = layer(rng, "shared", 3000)
    amd64 = _image_manifest(images, rng, "amd64", [2000, 70_000], shared=shared)
    arm64 = _image_manifest(images, rng, "arm64", [1500], shared=shared)
    index = images.add_manifest(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": amd64.digest, "size": len(amd64.data),
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": arm64.digest, "size": len(arm64.data),
                 "platform": {"architecture": "arm64", "os": "linux"}},
            ],
        },
        OCI_INDEX,
    )
    docker = _image_manifest(images, rng, "amd64", [5000], docker=True)
    plain = _image_manifest(images, rng, "amd64", [9 * 1024 * 1024 + 123] if big else [40_000])
    images.add_blob(rng.randbytes(700), "application/octet-stream", "sha512")

    def entry(source: str, reference: str, raw: RawManifest, platforms: list[str]) -> ImageEntry:
        size = len(raw.data) + sum(len(data) for data, _ in images.blobs.values())
        return ImageEntry(source=source, reference=reference, digest=raw.digest, media_type=raw.media_type,
                          platforms=platforms, size=size)

    images.images = [
        entry("quay.io/calico/node:v3.26.4", "quay.io/calico/node:v3.26.4", index, ["linux/amd64", "linux/arm64"]),
        entry(f"example.com/multi@{index.digest}", f"example.com/multi@{index.digest}", index,
              ["linux/amd64", "linux/arm64"]),
        entry("busybox", "docker.io/library/busybox:latest", docker, ["linux/amd64"]),
        entry("localhost:5000/team/app:1.0", "localhost:5000/team/app:1.0", plain, ["linux/amd64"]),
    ]
    images.skipped = [SkippedEntry(source="example.com/gone:1", reason="manifest unknown")]
    return images


# --- bundle surgery -------------------------------------------------------------------------


def decompress_all(bundle: bytes) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bundle), read_across_frames=True).read()


def split_members(bundle: bytes) -> list[tuple[str, bytes]]:
    """The (name, data) of every member of a (small, valid) bundle, in order."""
    tar = decompress_all(bundle)
    position = 0
    members = []

    def read_exact(size: int) -> bytes:
        nonlocal position
        data = tar[position : position + size]
        position += size
        return data

    while (header := read_header(read_exact)) is not None:
        members.append((header.name, read_exact(header.size)))
        read_exact(padding(header.size))
    return members


def member_bytes(name: str, data: bytes) -> bytes:
    return header_bytes(name, len(data)) + data + bytes(padding(len(data)))


def replace_member(bundle: bytes, position: int, raw: bytes) -> bytes:
    """The bundle framed again with member ``position`` replaced by the raw tar bytes ``raw``."""
    members = [member_bytes(n, d) for n, d in split_members(bundle)]
    members[position] = raw
    return craft(members)


def retype(raw: bytes, typeflag: bytes, linkname: bytes = b"") -> bytes:
    """A raw tar member with another type (and link target), its header checksum made right again."""
    header = bytearray(raw[:512])
    header[156:157] = typeflag
    header[157 : 157 + len(linkname)] = linkname
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header) + raw[512:]


def craft(members: list[bytes], *, end: bytes = END_OF_ARCHIVE, seek_table: bool = True, level: int = 3,
          levels: list[int] | None = None) -> bytes:
    """A bundle file from raw tar member bytes: each member in its own frames (at ``level``, or member i at
    ``levels[i]``), then ``end`` and the seek table, exactly as the writer frames them (but with no checks at all)."""
    compressors = {n: new_compressor(n) for n in {level, *(levels or ())}}
    frames = []
    for number, raw in enumerate([*members, end] if end else members):
        member_level = levels[number] if levels and number < len(levels) else level
        frames.extend(compress_frames(compressors[member_level], raw))
    body = b"".join(frame for frame, _ in frames)
    table = encode_seek_table([(len(frame), size) for frame, size in frames]) if seek_table else b""
    return body + table


def rebuild(bundle: bytes, transform: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]) -> bytes:
    """Split a bundle into members, let ``transform`` edit the list, frame it again."""
    return craft([member_bytes(name, data) for name, data in transform(split_members(bundle))])


def seek_entries(bundle: bytes) -> list[tuple[int, int]]:
    """(compressed, decompressed) size of every frame, from the seek table at the end of the bundle."""
    count = struct.unpack("<I", bundle[-9:-5])[0]
    return list(struct.iter_unpack("<II", bundle[len(bundle) - 9 - 8 * count : len(bundle) - 9]))


def blob_frame_offset(bundle: bytes, digest: str) -> int:
    """Compressed offset of the frame where ``digest``'s member starts (via the seek table)."""
    index_length = 512 + (len(split_members(bundle)[0][1]) + 511) // 512 * 512
    entry = next(e for e in read_index(io.BytesIO(bundle)).blobs if e.digest == digest)
    compressed = decompressed = 0
    for csize, dsize in seek_entries(bundle):
        if decompressed == index_length + entry.offset:
            return compressed
        compressed += csize
        decompressed += dsize
    raise AssertionError("no frame starts at the member")


def flip(bundle: bytes, position: int, mask: int = 0x20) -> bytes:
    """``bundle`` with the bits of ``mask`` flipped in the byte at ``position``."""
    damaged = bytearray(bundle)
    damaged[position] ^= mask
    return bytes(damaged)


def rewrite_index(members: list[tuple[str, bytes]], edit: Callable[[dict], None]) -> list[tuple[str, bytes]]:
    """Edit ``imgbundle.json`` as a dict; offsets stay valid since they count from after it."""
    document = json.loads(members[0][1])
    edit(document)
    return [(members[0][0], json.dumps(document).encode()), *members[1:]]


def pipe_from(path: Path) -> subprocess.Popen:
    """``cat path |``: a real non-seekable pipe to read a bundle from."""
    return subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)

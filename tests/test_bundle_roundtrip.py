"""Write a bundle, read it back every way: index, random access, sequential scans, seek table."""

from __future__ import annotations

import io
import json
import random
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard

from bundler.bundle import (
    FRAME_SIZE,
    MemberKind,
    BundleReader,
    ImageEntry,
    blob_path,
    read_index,
)
from bundler.bundle.seektable import SEEKABLE_MAGIC, SKIPPABLE_MAGIC
from bundler.bundle.tar import read_header
from bundler.errors import BundleError
from bundler.oci import REF_NAME_ANNOTATION
from support.bundles import CREATED, make_image_set, pipe_from, split_members


@pytest.fixture(scope="module")
def image_set():
    return make_image_set(big=True)


@pytest.fixture(scope="module")
def written(image_set, tmp_path_factory):
    return image_set.write(tmp_path_factory.mktemp("roundtrip") / "b.tar.zst", jobs=3)


def expected_order(image_set) -> list[str]:
    manifests = sorted(image_set.manifests)
    blobs = sorted(image_set.blobs)
    return ["imgbundle.json", "oci-layout", "index.json", *map(blob_path, manifests), *map(blob_path, blobs)]


def test_index_round_trip(image_set, written) -> None:
    index = read_index(written.path)
    assert index == written.index
    assert (index.format, index.version, index.created, index.tool) == ("imgbundle", "1.0", CREATED, "imgbundle 0.1.0")
    assert index.images == image_set.images
    assert index.skipped == image_set.skipped
    assert [e.digest for e in index.manifests] == sorted(image_set.manifests)
    assert [e.digest for e in index.blobs] == sorted(image_set.blobs)
    assert index.totals.images == 4 and index.totals.manifests == len(image_set.manifests)
    assert index.totals.blob_bytes == sum(len(d) for d, _ in image_set.blobs.values())
    oci_index = split_members(written.path.read_bytes())[2][1]
    assert index.manifests[0].offset == 1024 + 512 + (len(oci_index) + 511) // 512 * 512


def test_index_json_shape(written) -> None:
    """camelCase keys in the documented order; originalDigest only when set."""
    document = json.loads(split_members(written.path.read_bytes())[0][1])
    assert list(document) == [
        "format", "version", "created", "tool", "images", "skipped", "manifests", "blobs", "totals"]
    assert list(document["images"][0]) == ["source", "reference", "digest", "mediaType", "platforms", "size"]
    assert list(document["manifests"][0]) == ["digest", "size", "mediaType", "offset"]
    assert list(document["totals"]) == ["images", "manifests", "blobs", "manifestBytes", "blobBytes"]
    assert document["skipped"] == [{"source": "example.com/gone:1", "reason": "manifest unknown"}]


def test_original_digest_is_written_when_set(image_set, tmp_path) -> None:
    first = image_set.images[0]
    rewritten = ImageEntry(source=first.source, reference=first.reference, digest=first.digest,
                           media_type=first.media_type, platforms=["linux/amd64"], size=first.size,
                           original_digest="sha256:" + "ab" * 32)
    image_set_copy = make_image_set()
    image_set_copy.images = [rewritten]
    result = image_set_copy.write(tmp_path / "o.tar.zst")
    document = json.loads(split_members(result.path.read_bytes())[0][1])
    assert document["images"][0]["originalDigest"] == "sha256:" + "ab" * 32
    assert read_index(result.path).images[0].original_digest == "sha256:" + "ab" * 32


def test_random_access_returns_identical_bytes(image_set, written) -> None:
    with BundleReader.open(written.path) as reader:
        assert reader.seekable
        for digest, raw in image_set.manifests.items():
            assert reader.manifest_bytes(digest) == raw.data
        for digest, (data, _) in image_set.blobs.items():
            chunks = list(reader.blob_chunks(digest))
            assert b"".join(chunks) == data
            assert all(len(chunk) <= FRAME_SIZE for chunk in chunks)
            if len(data) > 2 * FRAME_SIZE:  # the big layer: its middle frame comes out whole, as one chunk
                assert FRAME_SIZE in [len(chunk) for chunk in chunks]
        with pytest.raises(BundleError, match="not in this bundle"):
            reader.blob_chunks("sha256:" + "0" * 64)


def test_blob_chunks_from_many_threads(image_set, written) -> None:
    """Opened by path every call has its own handle; opened from a file object, reads are locked."""
    digests = sorted(image_set.blobs) * 3
    random.Random(1).shuffle(digests)
    with open(written.path, "rb") as raw:
        for source in (written.path, raw):
            with BundleReader.open(source) as reader, ThreadPoolExecutor(6) as pool:
                results = list(pool.map(lambda d: b"".join(reader.blob_chunks(d)), digests))
            assert results == [image_set.blobs[d][0] for d in digests]


def _consume(reader: BundleReader) -> list[tuple[str, str, str | None, bytes]]:
    return [(m.name, m.kind, m.digest, b"".join(m.chunks)) for m in reader.members()]


def test_sequential_scan_of_file_and_pipe(image_set, written) -> None:
    with BundleReader.open(written.path) as reader:
        from_file = _consume(reader)
        assert _consume(reader) == from_file  # a file can be scanned again
    process = pipe_from(written.path)
    with BundleReader.open(process.stdout) as reader:
        assert not reader.seekable
        from_pipe = _consume(reader)
        with pytest.raises(BundleError, match="only once"):
            reader.members()
        with pytest.raises(BundleError, match="random access"):
            reader.manifest_bytes(next(iter(image_set.manifests)))
    process.wait()
    assert from_pipe == from_file
    assert [name for name, *_ in from_file] == expected_order(image_set)
    kinds = [kind for _, kind, _, _ in from_file]
    assert kinds[:3] == [MemberKind.INDEX, MemberKind.LAYOUT, MemberKind.OCI_INDEX]
    assert set(kinds[3:]) == {MemberKind.MANIFEST, MemberKind.BLOB}
    for name, kind, digest, data in from_file[3:]:
        assert digest is not None and blob_path(digest) == name
        assert data == image_set.content(digest)
    assert json.loads(from_file[1][3]) == {"imageLayoutVersion": "1.0.0"}


def test_members_left_unread_are_skipped(image_set, written) -> None:
    """Chunks may be abandoned part-way; the scan still lands on the next member."""
    with BundleReader.open(written.path) as reader:
        names = []
        for member in reader.members():
            names.append(member.name)
            if member.kind == MemberKind.BLOB:
                next(iter(member.chunks), None)
        assert names == expected_order(image_set)


def test_oci_index_names_every_reference_sorted(image_set, written) -> None:
    oci_index = json.loads(split_members(written.path.read_bytes())[2][1])
    assert oci_index["schemaVersion"] == 2
    assert oci_index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    names = [d["annotations"][REF_NAME_ANNOTATION] for d in oci_index["manifests"]]
    assert names == sorted(image.reference for image in image_set.images)
    for descriptor in oci_index["manifests"]:
        raw = image_set.manifests[descriptor["digest"]]
        assert (descriptor["mediaType"], descriptor["size"]) == (raw.media_type, len(raw.data))


def test_writes_are_deterministic(image_set, written, tmp_path) -> None:
    """Same inputs and created: same bytes, whatever the job count or the input order."""
    one = image_set.write(tmp_path / "one.tar.zst", jobs=1)
    shuffled = make_image_set(big=True)
    items = list(shuffled.blobs.items())
    random.Random(7).shuffle(items)
    shuffled.blobs = dict(items)
    shuffled.manifests = dict(reversed(list(shuffled.manifests.items())))
    four = shuffled.write(tmp_path / "four.tar.zst", jobs=4, open_blob=shuffled.open_blob(chunk_size=1_000_003))
    assert one.path.read_bytes() == written.path.read_bytes() == four.path.read_bytes()
    assert one.sha256 == written.sha256 == four.sha256


def test_seek_table_bytes_and_member_offsets(image_set, written) -> None:
    data = written.path.read_bytes()
    count, descriptor, magic = struct.unpack("<IBI", data[-9:])
    assert (descriptor, magic) == (0, SEEKABLE_MAGIC)
    table_start = len(data) - (8 + 8 * count + 9)
    assert struct.unpack_from("<II", data, table_start) == (SKIPPABLE_MAGIC, 8 * count + 9)
    entries = list(struct.iter_unpack("<II", data[table_start + 8 : len(data) - 9]))
    assert sum(c for c, _ in entries) == table_start == written.compressed_size - (8 + 8 * count + 9)

    frames, position, starts = [], 0, {}
    for compressed, decompressed in entries:
        frame = data[position : position + compressed]
        params = zstandard.get_frame_parameters(frame)
        assert params.has_checksum and params.content_size == decompressed <= FRAME_SIZE
        starts[sum(len(f) for f in frames)] = frame
        frames.append(zstandard.ZstdDecompressor().decompress(frame))
        position += compressed

    index_member = 512 + (len(split_members(data)[0][1]) + 511) // 512 * 512
    for entry in [*written.index.manifests, *written.index.blobs]:
        frame = starts[index_member + entry.offset]  # every member starts a frame at its offset
        header = read_header(io.BytesIO(zstandard.ZstdDecompressor().decompress(frame)).read)
        assert (header.name, header.size) == (blob_path(entry.digest), entry.size)
    assert frames[-1] == bytes(1024)  # end of archive in its own frame
    big = max(written.index.blobs, key=lambda e: e.size)
    assert big.size > 2 * FRAME_SIZE
    first = list(starts).index(index_member + big.offset)
    last = 512 + big.size + (-big.size % 512) - 2 * FRAME_SIZE
    assert [len(f) for f in frames[first : first + 3]] == [FRAME_SIZE, FRAME_SIZE, last]


def test_bundle_without_images(tmp_path) -> None:
    """Everything skipped still makes a valid, readable bundle."""
    empty = make_image_set()
    empty.images, empty.manifests, empty.blobs = [], {}, {}
    result = empty.write(tmp_path / "empty.tar.zst")
    with BundleReader.open(result.path) as reader:
        assert [m.name for m in reader.members()] == ["imgbundle.json", "oci-layout", "index.json"]
        assert reader.index.skipped == empty.skipped


def test_read_index_reads_only_the_first_member(written) -> None:
    """A multi-GB bundle lists fast: everything after imgbundle.json may even be missing."""
    head = written.path.read_bytes()[:2000]
    assert read_index(io.BytesIO(head)) == written.index


def test_any_object_with_read_is_a_pipe(image_set, written) -> None:
    class ReadOnly:
        def __init__(self, raw) -> None:
            self.read = raw.read

    with open(written.path, "rb") as raw, BundleReader.open(ReadOnly(raw)) as reader:
        assert not reader.seekable
        assert [m.name for m in reader.members()] == expected_order(image_set)


def test_public_surface() -> None:
    import bundler.bundle as bundle

    assert set(bundle.__all__) == {
        "FORMAT_NAME", "FORMAT_VERSION", "FRAME_SIZE", "CHUNK_SIZE", "INDEX_NAME", "BundleIndex", "ImageEntry",
        "SkippedEntry", "MemberEntry", "Totals", "BlobSpec", "WriteResult", "write_bundle", "BundleReader", "Member",
        "MemberKind", "read_index", "blob_path", "FoundBy", "ReferrerEntry",
        "sidecar_path", "read_sidecar", "file_sha256", "check_sidecar",
    }
    assert all(hasattr(bundle, name) for name in bundle.__all__)
    assert (bundle.FORMAT_NAME, bundle.FORMAT_VERSION, bundle.FRAME_SIZE) == ("imgbundle", "1.0", 4 * 1024 * 1024)

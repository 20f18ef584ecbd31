"""The reader refuses what is not a bundle, what is damaged and what is crafted to hurt."""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from bundler.bundle import BundleReader, blob_path, read_index
from bundler.bundle.seektable import SEEKABLE_MAGIC, encode_seek_table
from bundler.bundle.tar import _pax_record, header_bytes, padding
from bundler.errors import CorruptBundleError, NotABundleError, UnsupportedVersionError
from support.bundles import (
    blob_frame_offset,
    craft,
    make_image_set,
    member_bytes,
    pipe_from,
    rebuild,
    replace_member,
    retype,
    rewrite_index,
    seek_entries,
    split_members,
)


@pytest.fixture(scope="module")
def image_set():
    return make_image_set()


@pytest.fixture(scope="module")
def good(image_set, tmp_path_factory) -> bytes:
    return image_set.write(tmp_path_factory.mktemp("good") / "b.tar.zst").path.read_bytes()


def read_everything(path: Path, *, pipe: bool = False) -> None:
    """Open, scan every member, and (from a file) read every member by random access."""
    if pipe:
        process = pipe_from(path)
        try:
            with BundleReader.open(process.stdout) as reader:
                for member in reader.members():
                    b"".join(member.chunks)
        finally:
            process.stdout.close()
            process.wait()
        return
    with BundleReader.open(path) as reader:
        for member in reader.members():
            b"".join(member.chunks)
        for entry in reader.index.blobs:
            b"".join(reader.blob_chunks(entry.digest))


def refused(tmp_path: Path, data: bytes, error: type[Exception], match: str, *, pipe: bool | None = None) -> None:
    """``data`` is refused with ``error`` matching ``match`` from a file and (by default) from a pipe."""
    path = tmp_path / "hostile.tar.zst"
    path.write_bytes(data)
    for mode in ([False, True] if pipe is None else [pipe]):
        with pytest.raises(error, match=match):
            read_everything(path, pipe=mode)


# --- not a bundle at all --------------------------------------------------------------------


def test_empty_file(tmp_path) -> None:
    refused(tmp_path, b"", NotABundleError, "empty")
    with pytest.raises(NotABundleError, match="empty"):
        read_index(tmp_path / "hostile.tar.zst")


def test_random_bytes(tmp_path) -> None:
    refused(tmp_path, bytes(range(256)) * 40, NotABundleError, "not zstd")


def test_other_compression(tmp_path) -> None:
    refused(tmp_path, gzip.compress(b"hello" * 1000), NotABundleError, "not zstd")


def test_plain_tar_zst_without_index(tmp_path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo("oci-layout")
        info.size = 30
        archive.addfile(info, io.BytesIO(b'{"imageLayoutVersion":"1.0.0"}'))
    data = zstandard.ZstdCompressor().compress(raw.getvalue())
    refused(tmp_path, data, NotABundleError, "first member is 'oci-layout'")


def test_zstd_of_something_that_is_not_tar(tmp_path) -> None:
    refused(tmp_path, zstandard.ZstdCompressor().compress(b"hello"), NotABundleError, "too short")
    refused(tmp_path, zstandard.ZstdCompressor().compress(b"x" * 5000), NotABundleError, "not a tar archive")


def test_other_format_name(tmp_path, good) -> None:
    data = rebuild(good, lambda m: rewrite_index(m, lambda d: d.update(format="something-else")))
    refused(tmp_path, data, NotABundleError, "format is 'something-else'")


# --- versions --------------------------------------------------------------------------------


def test_unknown_major_version_is_refused_with_both_versions_named(tmp_path, good) -> None:
    data = rebuild(good, lambda m: rewrite_index(m, lambda d: d.update(version="2.0", newField=[1, 2])))
    refused(tmp_path, data, UnsupportedVersionError, r"version 2\.0 is not supported; this reader supports 1\.x")
    with pytest.raises(UnsupportedVersionError):
        read_index(tmp_path / "hostile.tar.zst")


def test_newer_minor_version_with_additions_is_read(tmp_path, good, image_set) -> None:
    def newer(document: dict) -> None:
        document.update(version="1.7", signedBy="someone")
        document["images"][0]["labels"] = {"team": "x"}

    path = tmp_path / "minor.tar.zst"
    path.write_bytes(rebuild(good, lambda m: rewrite_index(m, newer)))
    read_everything(path)
    read_everything(path, pipe=True)
    assert read_index(path).version == "1.7"


@pytest.mark.parametrize("version", ["1", "v1.0", "", 1.0, None])
def test_malformed_version_is_corrupt(tmp_path, good, version) -> None:
    data = rebuild(good, lambda m: rewrite_index(m, lambda d: d.update(version=version)))
    refused(tmp_path, data, CorruptBundleError, "MAJOR.MINOR", pipe=False)


# --- damage ----------------------------------------------------------------------------------


def test_flipped_byte_in_a_blob_names_the_blob(tmp_path, good, image_set) -> None:
    digest = max(image_set.blobs, key=lambda d: len(image_set.blobs[d][0]))
    start = blob_frame_offset(good, digest)
    damaged = bytearray(good)
    damaged[start + 600] ^= 0x20
    refused(tmp_path, bytes(damaged), CorruptBundleError, f"blob {digest}")
    with BundleReader.open(tmp_path / "hostile.tar.zst") as reader:
        for other in image_set.blobs:  # everything else is still readable by random access
            if other != digest:
                assert b"".join(reader.blob_chunks(other)) == image_set.blobs[other][0]


def test_wrong_content_with_valid_framing_names_the_blob(tmp_path, good, image_set) -> None:
    """Same size, valid zstd, wrong bytes: only the digest check can catch it."""
    digest = sorted(image_set.blobs)[0]

    def swap(members):
        return [(n, bytes(len(d)) if n == blob_path(digest) else d) for n, d in members]

    refused(tmp_path, rebuild(good, swap), CorruptBundleError, f"blob {digest}: content has digest")


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9, -1, -9, -20])
def test_truncated_file(tmp_path, good, cut) -> None:
    """Cut anywhere, even inside the trailing seek table: refused from a file and from a pipe."""
    end = int(len(good) * cut) if isinstance(cut, float) else len(good) + cut
    refused(tmp_path, good[:end], CorruptBundleError, "seek table", pipe=False)
    refused(tmp_path, good[:end], CorruptBundleError, "truncated|ends inside a frame", pipe=True)


def test_truncated_index_member(tmp_path, good) -> None:
    """A cut inside imgbundle.json is damage, not "some other file"."""
    index = split_members(good)[0][1]
    noise = random.Random(5).randbytes(2_500_000).hex()  # incompressible enough to cut inside a frame
    big_index = json.dumps({**json.loads(index), "padding": noise}).encode()
    data = craft([member_bytes("imgbundle.json", big_index)], level=1)
    refused(tmp_path, data[: len(data) // 2], CorruptBundleError, "imgbundle.json: truncated")


def test_data_after_the_end_of_archive(tmp_path, good) -> None:
    members = [member_bytes(n, d) for n, d in split_members(good)]
    longer = craft(members, end=bytes(1024) + bytes(512))
    refused(tmp_path, longer, CorruptBundleError, "seek table: frame sizes disagree", pipe=False)
    refused(tmp_path, longer, CorruptBundleError, "more data follows", pipe=True)
    refused(tmp_path, craft(members, end=b""), CorruptBundleError, "truncated|end of archive|seek table")
    refused(tmp_path, good + b"junk", CorruptBundleError, "seek table|damaged|end of archive")


# --- crafted members -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "blobs/sha256/../../x", "blobs/md5/abc", "oci-layout/"])
def test_member_with_a_hostile_name(tmp_path, good, name) -> None:
    data = replace_member(good, 1, member_bytes(name, b'{"imageLayoutVersion":"1.0.0"}'))
    refused(tmp_path, data, CorruptBundleError, "name not allowed")


@pytest.mark.parametrize("typeflag", [b"1", b"2", b"3", b"4", b"5", b"6", b"g", b"L", b"\x00"])
def test_member_that_is_not_a_regular_file(tmp_path, good, typeflag) -> None:
    raw = retype(member_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), typeflag, b"/etc/shadow")
    refused(tmp_path, replace_member(good, 1, raw), CorruptBundleError, "not a regular file")


def test_bad_header_checksum(tmp_path, good) -> None:
    raw = bytearray(member_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'))
    raw[100] = ord("7")  # mode digit changed, checksum left alone
    refused(tmp_path, replace_member(good, 1, bytes(raw)), CorruptBundleError, "checksum")


def test_duplicate_member(tmp_path, good, image_set) -> None:
    members = [member_bytes(n, d) for n, d in split_members(good)]
    members.insert(4, members[3])
    refused(tmp_path, craft(members), CorruptBundleError, "seek table: (frame sizes disagree|seek table claims)", pipe=False)
    refused(tmp_path, craft(members), CorruptBundleError, "found where|offset", pipe=True)


def test_member_missing(tmp_path, good) -> None:
    members = [member_bytes(n, d) for n, d in split_members(good)]
    del members[-1]
    refused(tmp_path, craft(members), CorruptBundleError, "seek table|archive ends", pipe=False)
    refused(tmp_path, craft(members), CorruptBundleError, "archive ends", pipe=True)


def test_tar_size_disagreeing_with_the_index(tmp_path, good, image_set) -> None:
    digest = sorted(image_set.blobs)[-1]
    data = image_set.blobs[digest][0] + b"extra"
    data = rebuild(good, lambda m: [(n, data if n == blob_path(digest) else d) for n, d in m])
    refused(tmp_path, data, CorruptBundleError, "seek table|says", pipe=False)
    refused(tmp_path, data, CorruptBundleError, f"blob {digest}: tar header says", pipe=True)


def test_pax_header_with_an_unknown_key(tmp_path, good) -> None:
    record = _pax_record("linkpath", "/etc/shadow")
    pax = header_bytes("././@PaxHeader", len(record))
    pax = pax[:156] + b"x" + pax[157:]
    pax = pax[:148] + b" " * 8 + pax[156:]
    pax = pax[:148] + b"%06o\x00 " % sum(pax) + pax[156:]
    raw = pax + record + bytes(padding(len(record))) + member_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    data = replace_member(good, 1, raw)
    refused(tmp_path, data, CorruptBundleError, "pax record b'linkpath' is not allowed", pipe=True)


def test_oci_index_disagreeing_with_the_bundle_index(tmp_path, good) -> None:
    def edit(members):
        document = json.loads(members[2][1])
        document["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "evil.example/x:1"
        return [*members[:2], ("index.json", json.dumps(document).encode()), *members[3:]]

    refused(tmp_path, rebuild(good, edit), CorruptBundleError, "index.json")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["blobs"].reverse(), "not sorted"),
        (lambda d: d["blobs"][1].update(offset=d["blobs"][1]["offset"] + 512), "does not follow"),
        (lambda d: d["totals"].update(blobs=1), "totals"),
        (lambda d: d["manifests"][0].update(size=5 * 1024 * 1024), "larger than 4 MiB"),
        (lambda d: d["images"][0].update(digest="sha256:" + "0" * 64), "has no manifest"),
        (lambda d: d["blobs"][0].update(digest="sha256:XYZ"), "imgbundle.json"),
        (lambda d: d["blobs"][0].update(size=-1), "imgbundle.json"),
        (lambda d: d.pop("totals"), "imgbundle.json"),
    ],
    ids=["unsorted", "offset-gap", "totals", "huge-manifest", "dangling-image", "bad-digest", "negative", "missing"],
)
def test_inconsistent_index_is_corrupt(tmp_path, good, edit, match) -> None:
    refused(tmp_path, rebuild(good, lambda m: rewrite_index(m, edit)), CorruptBundleError, match, pipe=False)


def test_index_that_is_not_json(tmp_path, good) -> None:
    data = rebuild(good, lambda m: [("imgbundle.json", b"{not json"), *m[1:]])
    refused(tmp_path, data, NotABundleError, "not a JSON object", pipe=False)


# --- framing ---------------------------------------------------------------------------------


def test_members_sharing_a_frame(tmp_path, good) -> None:
    """Valid zstd and valid tar, but oci-layout and index.json in one frame: not our framing."""
    members = [member_bytes(n, d) for n, d in split_members(good)]
    merged = [members[0], members[1] + members[2], *members[3:]]
    refused(tmp_path, craft(merged), CorruptBundleError, "index.json: does not start a new zstd frame")


def test_frames_without_content_size_or_checksum(tmp_path, good) -> None:
    members = [member_bytes(n, d) for n, d in split_members(good)]
    body = craft(members, seek_table=False)
    count = len(members) + 1
    for options, match in (({"write_content_size": False}, "content size"), ({"write_checksum": False}, "checksum")):
        odd = zstandard.ZstdCompressor(level=3, **{"write_checksum": True, **options})
        frames = [zstandard.ZstdCompressor(level=3, write_checksum=True).compress(m) for m in members]
        frames[1] = odd.compress(members[1])
        frames.append(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(bytes(1024)))
        sizes = [len(m) for m in members] + [1024]
        data = b"".join(frames) + encode_seek_table(list(zip(map(len, frames), sizes)))
        assert len(frames) == count and body
        refused(tmp_path, data, CorruptBundleError, f"oci-layout: .*{match}")


def test_missing_seek_table(tmp_path, good) -> None:
    members = [member_bytes(n, d) for n, d in split_members(good)]
    data = craft(members, seek_table=False)
    refused(tmp_path, data, CorruptBundleError, "seek table: no seek table", pipe=False)
    refused(tmp_path, data, CorruptBundleError, "seek table: the stream ends without a seek table", pipe=True)


# --- the seek table -------------------------------------------------------------------------


def test_seek_table_damage(tmp_path, good) -> None:
    count = struct.unpack("<I", good[-9:-5])[0]
    checksum_flag = good[:-5] + b"\x80" + good[-4:]
    refused(tmp_path, checksum_flag, CorruptBundleError, "descriptor", pipe=False)
    too_many = good[:-9] + struct.pack("<IBI", 10**8, 0, SEEKABLE_MAGIC)
    refused(tmp_path, too_many, CorruptBundleError, "more than the file holds", pipe=False)
    entry = len(good) - 9 - 8 * count
    shifted = bytearray(good)
    shifted[entry : entry + 8] = struct.pack("<II", *[v + 1 for v in struct.unpack_from("<II", good, entry)])
    refused(tmp_path, bytes(shifted), CorruptBundleError, "add up", pipe=False)
    # sizes swapped between two frames still add up, but the frames no longer match the table
    swapped = bytearray(good)
    first, second = struct.unpack_from("<II", good, entry + 8), struct.unpack_from("<II", good, entry + 16)
    swapped[entry + 8 : entry + 24] = struct.pack("<IIII", second[0], first[1], first[0], second[1])
    refused(tmp_path, bytes(swapped), CorruptBundleError, "the seek table says|unused data", pipe=False)
    refused(tmp_path, bytes(swapped), CorruptBundleError, "seek table: the seek table does not match", pipe=True)


def test_zstd_bomb_is_never_decompressed_past_the_declared_sizes(tmp_path, good) -> None:
    """The end-of-archive frame swapped for one that inflates to 1 GiB (the table still says 1024)."""
    bomb = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(bytes(1024**3))
    assert len(bomb) < 100_000
    entries = seek_entries(good)
    body = good[: sum(c for c, _ in entries[:-1])]
    entries[-1] = (len(bomb), 1024)
    data = body + bomb + encode_seek_table(entries)
    begin = time.monotonic()
    declared = "end of archive: frame .* declares 1073741824 bytes"
    refused(tmp_path, data, CorruptBundleError, declared + "; the seek table says 1024", pipe=False)
    refused(tmp_path, data, CorruptBundleError, declared, pipe=True)
    assert time.monotonic() - begin < 10

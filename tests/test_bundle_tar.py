"""The tar subset and the seek table, byte by byte, against Python's tarfile and the zstd spec."""

from __future__ import annotations

import io
import struct
import tarfile

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.bundle.framecheck import FrameError, FrameTracker
from bundler.bundle.seektable import SeekTableError, encode_seek_table, parse_seek_table
from bundler.bundle.tar import (
    MAX_USTAR_SIZE,
    TarFormatError,
    _pax_record,
    header_bytes,
    member_length,
    padding,
    read_header,
)

names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300)
sizes = st.one_of(st.integers(0, 10_000), st.integers(MAX_USTAR_SIZE - 2, MAX_USTAR_SIZE + 2), st.integers(0, 2**62))


def tarfile_view(name: str, size: int) -> tarfile.TarInfo:
    """How Python's tarfile reads our header bytes (data left out: only headers are parsed)."""
    archive = tarfile.open(fileobj=io.BytesIO(header_bytes(name, size) + bytes(1024)), mode="r:")
    member = archive.next()
    assert member is not None
    return member


def test_simple_header_fields() -> None:
    header = header_bytes("blobs/sha256/" + "a" * 64, 1234)
    assert len(header) == 512
    member = tarfile_view("blobs/sha256/" + "a" * 64, 1234)
    assert (member.name, member.size, member.mode, member.mtime, member.uid, member.gid) == (
        "blobs/sha256/" + "a" * 64, 1234, 0o644, 0, 0, 0)
    assert (member.uname, member.gname, member.type, member.linkname) == ("", "", tarfile.REGTYPE, "")
    assert header[257:265] == b"ustar\x0000"
    assert header[148:156] == b"%06o\x00 " % (sum(header[:148]) + 256 + sum(header[156:]))
    assert header_bytes("oci-layout", 30) == header_bytes("oci-layout", 30)  # no hidden time or id


def test_long_names_and_huge_sizes_use_pax() -> None:
    long_name = "blobs/sha512/" + "b" * 128
    header = header_bytes(long_name, 7)
    assert len(header) == 3 * 512 and header[156:157] == b"x"
    assert tarfile_view(long_name, 7).name == long_name
    huge = 9 * 1024**3
    assert tarfile_view("oci-layout", huge).size == huge
    assert len(header_bytes("oci-layout", MAX_USTAR_SIZE)) == 512
    assert len(header_bytes("oci-layout", MAX_USTAR_SIZE + 1)) == 3 * 512


@settings(max_examples=300, deadline=None)
@given(names, sizes)
def test_header_round_trip(name: str, size: int) -> None:
    raw = header_bytes(name, size)
    header = read_header(io.BytesIO(raw).read)
    assert header is not None
    assert (header.name, header.size, header.header_length) == (name, size, len(raw))
    assert member_length(name, size) == len(raw) + size + padding(size)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=0, max_size=2000))
def test_pax_record_length_counts_itself(value: str) -> None:
    record = _pax_record("path", value)
    length, _, rest = record.partition(b" ")
    assert int(length) == len(record) and rest == f"path={value}\n".encode()


def _with(header: bytes, offset: int, value: bytes) -> bytes:
    block = bytearray(header[:512])
    block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block) + header[512:]


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda h: h[:148] + b"0000000\x00" + h[156:], "checksum"),
        (lambda h: _with(h, 257, b"gnutar"), "not a ustar header"),
        (lambda h: _with(h, 156, b"2"), "not a regular file"),
        (lambda h: _with(h, 345, b"prefix"), "prefix"),
        (lambda h: _with(h, 124, b"\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"), "bad size"),
        (lambda h: _with(h, 124, b"0000000009a\x00"), "bad size"),
        (lambda h: _with(h, 0, b"\xff\xfe" + b"\x00" * 98), "not UTF-8"),
    ],
    ids=["checksum", "magic", "symlink", "prefix", "base256", "digits", "utf8"],
)
def test_header_refusals(edit, match) -> None:
    with pytest.raises(TarFormatError, match=match):
        read_header(io.BytesIO(edit(header_bytes("oci-layout", 30))).read)


def test_pax_refusals() -> None:
    long = header_bytes("blobs/sha512/" + "c" * 128, 10)
    pax_data = long[512:1024]
    for bad, match in (
        (pax_data.replace(b"path=", b"linkpath="[:5]), "not allowed|malformed"),
        (b"9999 path=x\n".ljust(512, b"\x00"), "malformed"),
    ):
        data = _with(long[:512], 124, b"%011o\x00" % len(bad.rstrip(b"\x00"))) + bad + long[1024:]
        with pytest.raises(TarFormatError, match=match):
            read_header(io.BytesIO(data).read)
    twice = header_bytes("x", 0)  # a pax header followed by another pax header
    pax_only = long[:1024]
    with pytest.raises(TarFormatError, match="pax"):
        read_header(io.BytesIO(pax_only + pax_only + twice).read)
    assert read_header(io.BytesIO(bytes(512)).read) is None


# --- seek table ------------------------------------------------------------------------------


def test_seek_table_bytes_follow_the_seekable_format() -> None:
    table = encode_seek_table([(100, 200), (5, 1024)])
    assert table == (
        struct.pack("<I", 0x184D2A5E) + struct.pack("<I", 2 * 8 + 9)
        + struct.pack("<II", 100, 200) + struct.pack("<II", 5, 1024)
        + struct.pack("<I", 2) + b"\x00" + struct.pack("<I", 0x8F92EAB1)
    )
    assert table[-4:] == bytes.fromhex("b1ea928f")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(1, 4 * 1024 * 1024)), min_size=1, max_size=50))
def test_seek_table_round_trip(frames) -> None:
    body = b"\x00" * sum(c for c, _ in frames)
    data = body + encode_seek_table(frames)
    table = parse_seek_table(lambda o, n: data[o : o + n], len(data), max_compressed=5000, max_decompressed=4 << 20)
    assert list(zip(table.compressed_sizes, table.decompressed_sizes)) == frames
    assert table.frame_starting_at(0) == 0
    assert table.decompressed_total == sum(d for _, d in frames)
    for number, start in enumerate(table.decompressed_offsets):
        assert table.frame_starting_at(start) == number
        assert table.compressed_offsets[number] == sum(c for c, _ in frames[:number])


@pytest.mark.parametrize(
    "frames, limit, match",
    [([(0, 10)], 100, "impossible"), ([(10, 0)], 100, "impossible"), ([(200, 10)], 100, "impossible")],
)
def test_seek_table_refuses_impossible_entries(frames, limit, match) -> None:
    data = b"\x00" * sum(c for c, _ in frames) + encode_seek_table(frames)
    with pytest.raises(SeekTableError, match=match):
        parse_seek_table(lambda o, n: data[o : o + n], len(data), max_compressed=limit, max_decompressed=100)


# --- frame tracker ---------------------------------------------------------------------------


def _track(data: bytes, read_size: int = 7) -> FrameTracker:
    tracker = FrameTracker(io.BytesIO(data), max_content=1 << 22)
    while tracker.read(read_size):
        pass
    return tracker


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=6), st.integers(1, 5000))
def test_tracker_sees_the_frames_the_compressor_wrote(pieces, read_size) -> None:
    """Every frame is found whatever the read sizes, and the seek table must match them."""
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    frames = [compressor.compress(piece) for piece in pieces]
    table = encode_seek_table([(len(f), len(p)) for f, p in zip(frames, pieces)])
    tracker = _track(b"".join(frames) + table, read_size)
    tracker.finish()
    assert tracker.frame_starts == [sum(map(len, pieces[:n])) for n in range(len(pieces))]
    wrong = encode_seek_table([(len(f), len(p) + 1) for f, p in zip(frames, pieces)])
    with pytest.raises(FrameError, match="does not match"):
        _track(b"".join(frames) + wrong, read_size).finish()
    with pytest.raises(FrameError, match="inside a frame|without a seek table"):
        _track(b"".join(frames) + table[:-1], read_size).finish()

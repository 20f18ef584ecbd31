"""Property: whatever bytes of a bundle are flipped, inserted, deleted or cut, reading it either gives
exactly the original content or a clean refusal: an ``ImgbundleError`` with a one-line message (or a
verify report listing one-line problems), never another exception.

Offsets are drawn uniformly and also next to frame starts and in the trailing seek table, where a
uniform draw rarely lands. Hypothesis runs derandomized with a fixed example budget, so the examples
(and the run time, a few seconds) are the same on every run; a failure prints the mutation.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.bundle import BundleReader, read_index
from bundler.errors import ImgbundleError
from bundler.oci import OCI_MANIFEST
from bundler.verify import verify_bundle
from support.bundles import CREATED, ImageEntry, ImageSet, make_image_set, rebuild, rewrite_index

FUZZ = settings(max_examples=250, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Original:
    """A valid bundle and what every reader must get from it: its index, and each member's bytes."""

    data: bytes
    images: ImageSet
    frame_starts: tuple[int, ...]

    def content(self, digest: str) -> bytes:
        return self.images.content(digest)


def tiny_image_set() -> ImageSet:
    """One image with a 40-byte config and a 90-byte layer: a bundle of a few KiB, mostly structure."""
    images = ImageSet()
    config = images.add_blob(b'{"architecture":"amd64","os":"linux","x":1}', "application/vnd.oci.image.config.v1+json")
    layer = images.add_blob(bytes(range(90)), "application/vnd.oci.image.layer.v1.tar")
    raw = images.add_manifest({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]},
                              OCI_MANIFEST)
    images.images = [ImageEntry(source="tiny:1", reference="docker.io/library/tiny:1", digest=raw.digest,
                                media_type=OCI_MANIFEST, platforms=["linux/amd64"], size=1)]
    return images


def _frame_starts(data: bytes) -> tuple[int, ...]:
    count = struct.unpack("<I", data[-9:-5])[0]
    sizes = [c for c, _ in struct.iter_unpack("<II", data[len(data) - 9 - 8 * count : len(data) - 9])]
    starts, position = [], 0
    for size in sizes:
        starts.append(position)
        position += size
    return tuple(starts)


def _original(images: ImageSet, directory: Path) -> Original:
    data = images.write(directory / "original.tar.zst", created=CREATED).path.read_bytes()
    return Original(data, images, _frame_starts(data))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Original:
    return _original(tiny_image_set(), tmp_path_factory.mktemp("fuzz-tiny"))


@pytest.fixture(scope="module")
def four_images(tmp_path_factory: pytest.TempPathFactory) -> Original:
    return _original(make_image_set(), tmp_path_factory.mktemp("fuzz-four"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-work")


# --- mutations --------------------------------------------------------------------------------------


@st.composite
def mutations(draw: st.DrawFn, original: Original) -> tuple[str, int, bytes]:
    """(kind, offset, bytes): offsets uniform, at a frame start (+0..15) or in the last 64 bytes."""
    size = len(original.data)
    offset = draw(st.one_of(
        st.integers(0, size - 1),
        st.builds(lambda start, delta: min(size - 1, start + delta), st.sampled_from(original.frame_starts),
                  st.integers(0, 15)),
        st.integers(max(0, size - 64), size - 1),
    ))
    kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
    payload = draw(st.binary(min_size=1, max_size=8)) if kind in ("set", "insert") else b""
    if kind == "flip":
        payload = bytes([1 << draw(st.integers(0, 7))])
    if kind == "delete":
        payload = bytes(draw(st.integers(1, 16)))  # its length is how many bytes go
    return kind, offset, payload


def mutate(data: bytes, kind: str, offset: int, payload: bytes) -> bytes:
    if kind == "flip":
        return data[:offset] + bytes([data[offset] ^ payload[0]]) + data[offset + 1 :]
    if kind == "set":
        return data[:offset] + payload + data[offset + len(payload) :]
    if kind == "insert":
        return data[:offset] + payload + data[offset:]
    if kind == "delete":
        return data[:offset] + data[offset + len(payload) :]
    return data[:offset]


# --- the property ----------------------------------------------------------------------------------


class _Pipe(io.RawIOBase):
    """The bytes as a non-seekable stream, as ``verify -`` reads them."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._data.readinto(buffer)


def _clean(error: ImgbundleError) -> None:
    message = str(error)
    assert message and "\n" not in message, repr(message)


def check(original: Original, data: bytes, path: Path) -> None:
    """Every reader either refuses cleanly or gets exactly the original content."""
    path.write_bytes(data)
    unchanged = data == original.data
    for stream in (None, _Pipe(data)):
        try:
            report = verify_bundle(path, stream=stream)
        except ImgbundleError as error:
            _clean(error)
            assert not unchanged, error
            continue
        for problem in report.problems:
            assert problem.message and "\n" not in problem.message, problem
        if report.ok:
            _assert_same_content(path, original)
        else:
            assert not unchanged, report.problems
    try:
        _assert_same_content(path, original)
    except ImgbundleError as error:
        _clean(error)
        assert not unchanged, error


def _assert_same_content(path: Path, original: Original) -> None:
    """What a reader got from bytes it accepted: the very index and members of the original."""
    with BundleReader.open(path) as reader:
        index = reader.index
        assert [(i.reference, i.digest) for i in index.images] == [
            (i.reference, i.digest) for i in original.images.images]
        for entry in [*index.manifests, *index.blobs]:
            assert b"".join(reader.blob_chunks(entry.digest)) == original.content(entry.digest)
        for member in reader.members():
            data = b"".join(member.chunks)
            if member.digest is not None:
                assert data == original.content(member.digest)


def _property(original: Original, workdir: Path, mutation: tuple[str, int, bytes]) -> None:
    check(original, mutate(original.data, *mutation), workdir / "mutated.tar.zst")


def test_the_originals_read_back(tiny: Original, four_images: Original, workdir: Path) -> None:
    """The control: unmutated bytes verify and read back (so a refusal below is the mutation's)."""
    for original in (tiny, four_images):
        check(original, original.data, workdir / "control.tar.zst")
        assert verify_bundle(workdir / "control.tar.zst").ok


@FUZZ
@given(data=st.data())
def test_mutated_tiny_bundle_reads_correctly_or_is_refused(tiny: Original, workdir: Path, data: st.DataObject) -> None:
    _property(tiny, workdir, data.draw(mutations(tiny), label="mutation"))


@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_mutated_four_image_bundle_reads_correctly_or_is_refused(four_images: Original, workdir: Path,
                                                                 data: st.DataObject) -> None:
    _property(four_images, workdir, data.draw(mutations(four_images), label="mutation"))


def test_index_edits_that_keep_the_meaning_are_read(tiny: Original, workdir: Path) -> None:
    """The other side of "correct verify": a harmless change (an unknown field, as a newer minor
    version may add) is accepted, so the property above is not satisfied by refusing everything."""
    data = rebuild(tiny.data, lambda m: rewrite_index(m, lambda d: d.update(version="1.9", note="added later")))
    check(tiny, data, workdir / "newer.tar.zst")
    assert verify_bundle(workdir / "newer.tar.zst").ok
    assert read_index(workdir / "newer.tar.zst").version == "1.9"

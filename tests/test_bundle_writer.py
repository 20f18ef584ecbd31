"""Writer guarantees: all-or-nothing output, no clobbering, exact blob sizes, bounded look-ahead."""

from __future__ import annotations

import collections
import errno
import os
import threading
import time

import msgspec
import pytest
import zstandard

try:
    import fcntl
except ImportError:
    fcntl = None  # type: ignore[assignment]

from bundler.bundle import BlobSpec, BundleReader, ImageEntry, read_index
from bundler.bundle import pipeline as pipeline_module
from bundler.bundle import writer as writer_module
from bundler.bundle.frames import FRAME_SIZE, MAX_FRAME_COMPRESSED, new_compressor
from bundler.bundle.seektable import parse_seek_table
from bundler.digest import Digest
from bundler.errors import ContentMismatchError, InputError, LocalIOError
from bundler.oci import OCI_INDEX, OCI_MANIFEST, RawManifest

from support.bundles import make_image_set


@pytest.fixture(scope="module")
def image_set():
    return make_image_set(big=True)


@pytest.fixture(scope="module")
def reference_bytes(image_set, tmp_path_factory) -> bytes:
    return image_set.write(tmp_path_factory.mktemp("ref") / "b.tar.zst").path.read_bytes()


class Boom(Exception):
    pass


def failing_open_blob(image_set, fail_digest: str, after_chunks: int = 3, error: BaseException | None = None):
    inner = image_set.open_blob()

    def open_blob(spec: BlobSpec):
        for number, chunk in enumerate(inner(spec)):
            if spec.digest == fail_digest and number == after_chunks:
                raise error or Boom(f"network dropped while reading {spec.digest}")
            yield chunk

    return open_blob


def biggest(image_set) -> str:
    return max(image_set.blobs, key=lambda d: len(image_set.blobs[d][0]))


@pytest.mark.parametrize("jobs", [1, 4])
def test_failure_midway_leaves_nothing_behind(image_set, tmp_path, jobs) -> None:
    target = tmp_path / "b.tar.zst"
    with pytest.raises(Boom, match="network dropped"):
        image_set.write(target, jobs=jobs, open_blob=failing_open_blob(image_set, biggest(image_set)))
    assert list(tmp_path.iterdir()) == []


def test_interrupt_midway_leaves_nothing_behind(image_set, tmp_path) -> None:
    """Ctrl-C (KeyboardInterrupt) propagates and cleans up like any other exception."""
    target = tmp_path / "b.tar.zst"
    with pytest.raises(KeyboardInterrupt):
        image_set.write(target, open_blob=failing_open_blob(image_set, biggest(image_set), error=KeyboardInterrupt()))
    assert list(tmp_path.iterdir()) == []


def test_first_failure_wins_and_the_rest_are_cancelled(image_set, tmp_path) -> None:
    """One blob fails fast while the blob being written stalls: the writer gives up at once."""
    ordered = sorted(image_set.blobs)
    slow, failing = ordered[0], ordered[1]
    started = threading.Event()
    inner = image_set.open_blob(chunk_size=100)

    def open_blob(spec: BlobSpec):
        if spec.digest == failing:
            started.wait(5)
            raise Boom("second blob failed")
        for chunk in inner(spec):
            if spec.digest == slow:
                started.set()
                time.sleep(0.01)
            yield chunk

    begin = time.monotonic()
    with pytest.raises(Boom, match="second blob failed"):
        image_set.write(tmp_path / "b.tar.zst", jobs=3, open_blob=open_blob)
    assert time.monotonic() - begin < 5
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_then_overwritten_on_request(image_set, reference_bytes, tmp_path) -> None:
    target = tmp_path / "b.tar.zst"
    target.write_bytes(b"precious")
    with pytest.raises(LocalIOError, match="already exists"):
        image_set.write(target)
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.zst"]
    (tmp_path / "b.tar.zst.sha256").write_text("stale\n")
    result = image_set.write(target, overwrite=True)
    assert target.read_bytes() == reference_bytes
    assert result.sidecar.read_text() == f"{result.sha256}  b.tar.zst\n# imgbundle content sha256:{result.content}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.zst", "b.tar.zst.sha256"]


def test_output_appearing_during_the_write_is_not_clobbered(image_set, tmp_path) -> None:
    """The final rename is no-clobber: a file created meanwhile survives and the write fails."""
    target = tmp_path / "b.tar.zst"
    inner = image_set.open_blob()

    def open_blob(spec: BlobSpec):
        if not target.exists():
            target.write_bytes(b"someone else")
        yield from inner(spec)

    with pytest.raises(LocalIOError, match="already exists"):
        image_set.write(target, open_blob=open_blob)
    assert target.read_bytes() == b"someone else"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.zst"]


def _with_blob(image_set, digest: str, data: bytes):
    inner = image_set.open_blob()

    def open_blob(spec: BlobSpec):
        if spec.digest == digest:
            yield data
        else:
            yield from inner(spec)

    return open_blob


@pytest.mark.parametrize("change", ["short", "long", "same-size-other-bytes"])
def test_blob_bytes_must_match_the_spec(image_set, tmp_path, change) -> None:
    digest = sorted(image_set.blobs)[0]
    data = image_set.blobs[digest][0]
    wrong = {"short": data[:-1], "long": data + b"!", "same-size-other-bytes": bytes(len(data))}[change]
    with pytest.raises(ContentMismatchError, match=digest):
        image_set.write(tmp_path / "b.tar.zst", open_blob=_with_blob(image_set, digest, wrong))
    assert list(tmp_path.iterdir()) == []


def test_digest_check_can_be_left_to_the_caller(image_set, tmp_path) -> None:
    """With verify_digests=False only sizes are enforced; the reader still catches the lie."""
    digest = sorted(image_set.blobs)[0]
    size = len(image_set.blobs[digest][0])
    result = image_set.write(tmp_path / "b.tar.zst", verify_digests=False,
                             open_blob=_with_blob(image_set, digest, bytes(size)))
    with BundleReader.open(result.path) as reader, pytest.raises(Exception, match=digest):
        b"".join(reader.blob_chunks(digest))


def test_spilled_spools_give_identical_bytes(image_set, reference_bytes, tmp_path, monkeypatch) -> None:
    """With a tiny memory budget the look-ahead spools go to temp files; the output is unchanged."""
    monkeypatch.setattr(pipeline_module, "SPOOL_MEMORY", 1024)
    spilled = []
    real = pipeline_module.tempfile.TemporaryFile

    def counting(*args, **kwargs):
        spilled.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module.tempfile, "TemporaryFile", counting)
    ordered = sorted(image_set.blobs)
    inner = image_set.open_blob()

    def slow_first(spec: BlobSpec):
        if spec.digest == ordered[0]:
            time.sleep(0.3)  # let the blobs behind it finish and spool
        yield from inner(spec)

    result = image_set.write(tmp_path / "b.tar.zst", jobs=4, open_blob=slow_first)
    assert spilled and set(spilled) == {tmp_path}
    assert result.path.read_bytes() == reference_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.zst", "b.tar.zst.sha256"]


def _count_started_while_first_blocks(image_set, tmp_path, jobs: int, expected: int) -> int:
    """How many blobs were opened while the first one (the one being written) is stalled."""
    ordered = sorted(image_set.blobs)
    release = threading.Event()
    started: list[str] = []
    inner = image_set.open_blob()

    def open_blob(spec: BlobSpec):
        started.append(spec.digest)
        if spec.digest == ordered[0]:
            release.wait(10)
        yield from inner(spec)

    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(image_set.write(tmp_path / "b.tar.zst", jobs=jobs,
                                                                             open_blob=open_blob)))
    thread.start()
    deadline = time.monotonic() + 10
    while len(started) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # would more start if the bound were missing?
    count = len(started)
    release.set()
    thread.join(20)
    assert outcome and len(started) == len(image_set.blobs)
    return count


def test_look_ahead_is_bounded_by_member_count(image_set, tmp_path) -> None:
    assert len(image_set.blobs) > 6
    assert _count_started_while_first_blocks(image_set, tmp_path, jobs=2, expected=4) == 4  # 2 * jobs in flight


def test_look_ahead_is_bounded_by_bytes(image_set, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline_module, "LOOKAHEAD_BYTES", 1)
    assert _count_started_while_first_blocks(image_set, tmp_path, jobs=4, expected=2) == 2  # the next one may


def test_local_io_errors_are_mapped_and_cleaned_up(image_set, tmp_path, monkeypatch) -> None:
    with pytest.raises(LocalIOError, match="cannot create"):
        image_set.write(tmp_path / "missing-dir" / "b.tar.zst")

    def no_space(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer_module.os, "fsync", no_space)
    with pytest.raises(LocalIOError, match="No space left"):
        image_set.write(tmp_path / "b.tar.zst")
    assert list(tmp_path.iterdir()) == []


def test_inputs_that_cannot_make_a_bundle_are_refused(image_set, tmp_path) -> None:
    some = next(iter(image_set.manifests.values()))
    with pytest.raises(InputError, match="RFC 3339"):
        image_set.write(tmp_path / "b.tar.zst", created="yesterday")
    with pytest.raises(InputError, match="level"):
        image_set.write(tmp_path / "b.tar.zst", level=0)
    forged = RawManifest(some.data + b" ", some.media_type, some.digest)
    with pytest.raises(InputError, match="do not match"):
        image_set.write(tmp_path / "b.tar.zst", manifests=[forged])
    bad_original = msgspec.structs.replace(image_set.images[0], original_digest="sha256:short")
    with pytest.raises(InputError, match="originalDigest"):
        image_set.write(tmp_path / "b.tar.zst", images=[bad_original])
    missing = make_image_set()
    missing.manifests.pop(missing.images[2].digest)
    with pytest.raises(InputError, match="not among the manifests"):
        missing.write(tmp_path / "b.tar.zst")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("data, media_type, refusal", [
    (b'{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}' % (OCI_INDEX.encode(), b",".join(
        [b'{"mediaType":"%s","digest":"sha256:%s","size":1}' % (OCI_MANIFEST.encode(), b"ab" * 32)] * 4097)),
     OCI_INDEX, "an index listing 4097 manifests, more than the 4096 allowed"),
    (b"this is not json {", OCI_MANIFEST, "does not parse"),
    (b'{"schemaVersion":2,"mediaType":"application/x-unknown"}', "application/x-unknown", "unsupported media type"),
], ids=["children-past-cap", "not-json", "unknown-type"])
def test_a_manifest_readers_would_refuse_is_refused_and_nothing_written(tmp_path, data, media_type, refusal) -> None:
    """What the writer writes every reader accepts (links.manifest_links, spec 7.5): such a manifest is the caller's
    bug (pack checks each image first, to name it)."""
    images = make_image_set()
    raw = images.add_manifest_bytes(data, media_type)
    images.images.append(ImageEntry(source="bad", reference="example.com/bad:1", digest=raw.digest,
                                    media_type=media_type, platforms=[], size=1))
    with pytest.raises(InputError, match=f"manifest {raw.digest}: .*{refusal}.*; no bundle can carry it"):
        images.write(tmp_path / "b.tar.zst")
    assert list(tmp_path.iterdir()) == []


def test_duplicate_inputs_are_stored_once(image_set, reference_bytes, tmp_path) -> None:
    from bundler.bundle import write_bundle

    result = write_bundle(
        tmp_path / "b.tar.zst",
        images=image_set.images,
        skipped=image_set.skipped,
        manifests=[*image_set.manifests.values(), *image_set.manifests.values()],
        blobs=[*image_set.specs, *reversed(image_set.specs)],
        open_blob=image_set.open_blob(),
        created="2026-11-23T10:00:00Z",
    )
    assert result.path.read_bytes() == reference_bytes
    assert read_index(result.path).totals.blobs == len(image_set.blobs)
    with pytest.raises(InputError, match="different sizes"):
        spec = image_set.specs[0]
        write_bundle(tmp_path / "c.tar.zst", images=[], skipped=[], manifests=[],
                     blobs=[spec, BlobSpec(Digest(spec.digest), spec.size + 1, spec.media_type)],
                     open_blob=image_set.open_blob(), created="2026-11-23T10:00:00Z")


@pytest.mark.skipif(fcntl is None, reason="no flock on this system")
def test_temp_files_a_killed_write_left_are_swept_and_live_ones_kept(image_set, tmp_path) -> None:
    """A forced exit leaves ``NAME.part-*`` (volumes and sidecar too); the next write of NAME removes those,
    but not one a running write holds locked, nor one just created, nor another bundle's."""
    hour_ago = time.time() - 3600
    abandoned = [tmp_path / f"b.tar.zst{suffix}.part-{letter * 12}"
                 for suffix, letter in (("", "a"), (".sha256", "b"), (".001", "c"))]
    held = tmp_path / f"b.tar.zst.part-{'d' * 12}"
    fresh = tmp_path / f"b.tar.zst.part-{'e' * 12}"
    others = [tmp_path / f"c.tar.zst.part-{'f' * 12}", tmp_path / "b.tar.zst.part-notours"]
    for path in [*abandoned, held, fresh, *others]:
        path.write_bytes(b"partial")
    for path in [*abandoned, held, *others]:
        os.utime(path, (hour_ago, hour_ago))
    with open(held, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        image_set.write(tmp_path / "b.tar.zst")
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == sorted(["b.tar.zst", "b.tar.zst.sha256", held.name, fresh.name, *(p.name for p in others)])


@pytest.mark.skipif(fcntl is None, reason="no flock on this system")
def test_the_temp_file_is_locked_while_written(image_set, tmp_path) -> None:
    inner = image_set.open_blob()
    locked = []

    def open_blob(spec: BlobSpec):
        part = next(tmp_path.glob("b.tar.zst.part-*"))
        with open(part, "rb") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked.append(False)
            except BlockingIOError:
                locked.append(True)
        yield from inner(spec)

    image_set.write(tmp_path / "b.tar.zst", open_blob=open_blob)
    assert locked and all(locked)


def test_blobs_already_compressed_are_compressed_at_level_1(tmp_path, monkeypatch) -> None:
    """gzip and zstd layers hardly compress further; the level asked for applies to everything else."""
    compressed_at: collections.Counter[int] = collections.Counter()
    real = writer_module.new_compressor

    class Recording:
        def __init__(self, level: int) -> None:
            self.level, self.inner = level, real(level)

        def compress(self, data: bytes) -> bytes:
            compressed_at[self.level] += len(data)
            return self.inner.compress(data)

    monkeypatch.setattr(writer_module, "new_compressor", Recording)
    monkeypatch.setattr(pipeline_module, "new_compressor", Recording)
    image_set = make_image_set()
    result = image_set.write(tmp_path / "b.tar.zst", level=9)
    layers = sum(len(data) for data, media_type in image_set.blobs.values() if media_type.endswith("gzip"))
    assert layers and layers < compressed_at[1] < layers + 1024 * len(image_set.blobs)  # with tar headers, padding
    assert compressed_at[9] > sum(len(m.data) for m in image_set.manifests.values())
    assert set(compressed_at) == {1, 9}
    with BundleReader.open(result.path) as reader:
        assert all(b"".join(reader.blob_chunks(d)) == data for d, (data, _) in image_set.blobs.items())


def test_frames_compressed_on_the_pool_are_what_one_thread_makes(image_set, tmp_path, monkeypatch) -> None:
    """A large blob's full frames go to the compression pool; every frame in the file is still exactly the
    one-threaded compression of its bytes, so the bundle does not depend on which thread made it."""
    threads: set[str] = set()
    real = pipeline_module.new_compressor

    def recording(level: int):
        threads.add(threading.current_thread().name)
        return real(level)

    monkeypatch.setattr(pipeline_module, "new_compressor", recording)
    monkeypatch.setattr(pipeline_module, "POOLED_MEMBER_SIZE", FRAME_SIZE)
    data = image_set.write(tmp_path / "b.tar.zst", jobs=1).path.read_bytes()
    assert any(name.startswith("imgbundle-zstd") for name in threads), threads
    table = parse_seek_table(lambda offset, size: data[offset : offset + size], len(data),
                             max_compressed=MAX_FRAME_COMPRESSED, max_decompressed=FRAME_SIZE)
    assert max(table.decompressed_sizes) == FRAME_SIZE
    for offset, size in zip(table.compressed_offsets, table.compressed_sizes):
        frame = data[offset : offset + size]
        plain = zstandard.ZstdDecompressor().decompress(frame)
        assert frame in (new_compressor(1).compress(plain), new_compressor(3).compress(plain))

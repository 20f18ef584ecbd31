"""Bundles stay out of the page cache: written behind, dropped once read or read around it (counted with
mincore)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading
from pathlib import Path

import pytest

from bundler.bundle import BundleReader, pagecache
from bundler.verify import verify_bundle
from support.bundles import make_image_set

MiB = 1024 * 1024
PAGE = mmap.PAGESIZE

pytestmark = pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this system")


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache now (mincore over a private mapping, which reads nothing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = (ctypes.c_ubyte * ((size + PAGE - 1) // PAGE))()
    with open(path, "rb") as file, mmap.mmap(file.fileno(), size, access=mmap.ACCESS_COPY) as mapping:
        anchor = ctypes.c_char.from_buffer(mapping)
        try:
            if libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), pages) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del anchor
    return sum(page & 1 for page in pages) * PAGE


@pytest.fixture
def drops_pages(tmp_path) -> None:
    """Skip unless this filesystem caches file pages and drops them when advised to (tmpfs does not)."""
    probe = tmp_path / "probe"
    probe.write_bytes(os.urandom(MiB))
    probe.read_bytes()
    if resident_bytes(probe) < MiB:
        pytest.skip("this filesystem does not cache file pages")
    with open(probe, "rb") as file:
        os.fsync(file.fileno())
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if resident_bytes(probe) > PAGE:
        pytest.skip("this filesystem keeps pages it is advised to drop")


def cached(path: Path) -> Path:
    """``path`` whole in the page cache, and on disk (dirty pages cannot be dropped)."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())
    path.read_bytes()
    assert resident_bytes(path) >= path.stat().st_size - PAGE
    return path


@pytest.fixture(scope="module")
def image_set():
    return make_image_set(big=True)  # one layer of 9 MiB


@pytest.fixture
def small_window(monkeypatch):
    monkeypatch.setattr(pagecache, "WINDOW", MiB)


def test_a_bundle_keeps_a_few_windows_in_the_cache_while_written_and_none_after(
    image_set, tmp_path, drops_pages, small_window, monkeypatch
) -> None:
    if pagecache._sync_file_range is None:
        pytest.skip("no sync_file_range on this system")
    beyond_in_flight = []
    next_window = pagecache.WriteBehind._next_window

    def measured(self) -> None:
        next_window(self)
        oldest_in_flight = self._in_flight[0][0]
        cached = resident_bytes(Path(f"/proc/self/fd/{self.fileno()}"))
        beyond_in_flight.append(cached - (self._written - oldest_in_flight))

    monkeypatch.setattr(pagecache.WriteBehind, "_next_window", measured)
    target = image_set.write(tmp_path / "b.tar.zst").path
    assert len(beyond_in_flight) > pagecache.WINDOWS_IN_FLIGHT, "too few windows to drop one"
    assert max(beyond_in_flight) <= 2 * MiB, "windows written before those in flight stayed cached"  # 2 MiB: a folio
    assert resident_bytes(target) <= PAGE, "the written bundle stayed cached"
    with BundleReader.open(target) as reader:
        assert sorted(m.name for m in reader.members())  # still a whole, readable bundle


def test_verify_drops_the_bundle_it_read(image_set, tmp_path, drops_pages, small_window) -> None:
    target = cached(image_set.write(tmp_path / "b.tar.zst").path)
    assert verify_bundle(target).ok
    assert resident_bytes(target) <= 2 * PAGE


def test_reading_a_blob_puts_nothing_in_the_cache(image_set, tmp_path, drops_pages) -> None:
    target = image_set.write(tmp_path / "b.tar.zst").path
    big = max(image_set.blobs, key=lambda d: len(image_set.blobs[d][0]))
    with BundleReader.open(target) as reader:
        before = resident_bytes(target)  # the index and the seek table, read to open it
        data = b"".join(reader.blob_chunks(big))
        assert data == image_set.blobs[big][0]
        assert resident_bytes(target) <= before + PAGE, "the blob read went through the cache"


@pytest.fixture
def sample(tmp_path) -> tuple[Path, bytes]:
    data = os.urandom(3 * MiB + 1234)  # ends inside a block
    path = tmp_path / "sample"
    path.write_bytes(data)
    return path, data


RANGES = [(0, 10), (4095, 2), (4096, 4096), (12345, MiB), (3 * MiB, 5000), (3 * MiB + 1000, 1000), (4 * MiB, 10)]


def read_ranges(reader: pagecache.DirectReader, data: bytes) -> None:
    for offset, size in RANGES:
        assert reader.read_at(offset, size) == data[offset:offset + size], (offset, size)


def test_a_direct_reader_reads_any_range_up_to_the_end(sample) -> None:
    path, data = sample
    with pagecache.DirectReader(path) as reader:
        if reader._fd is None:
            pytest.skip("this filesystem refuses O_DIRECT")
        read_ranges(reader, data)
        assert reader._fd is not None, "a direct read was refused"


def test_a_direct_read_is_a_view_of_the_thread_buffer_until_the_next_read(sample) -> None:
    """No copy under the GIL: the caller gets the buffer itself, which the thread's next read reuses."""
    path, data = sample
    with pagecache.DirectReader(path) as reader:
        if reader._fd is None:
            pytest.skip("this filesystem refuses O_DIRECT")
        first = reader.read_at(0, 4096)
        assert isinstance(first, memoryview) and first.readonly
        assert first == data[:4096]
        reader.read_at(8192, 4096)
        assert first == data[8192:12288]


def test_a_direct_reader_falls_back_where_o_direct_is_refused(sample, monkeypatch) -> None:
    path, data = sample
    real_open = os.open

    def refuse_direct(name, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(name, flags, *args)

    monkeypatch.setattr(os, "open", refuse_direct)
    with pagecache.DirectReader(path) as reader:
        read_ranges(reader, data)


def test_a_direct_reader_falls_back_when_a_direct_read_is_refused(sample, monkeypatch) -> None:
    path, data = sample
    if not getattr(os, "O_DIRECT", 0):
        pytest.skip("no O_DIRECT here")

    def refuse(*args):
        raise OSError(errno.EINVAL, "Invalid argument")

    with pagecache.DirectReader(path) as reader:
        monkeypatch.setattr(os, "preadv", refuse)
        read_ranges(reader, data)
        assert reader._fd is None


def test_a_direct_reader_raises_other_read_errors(sample, monkeypatch) -> None:
    path, _ = sample

    def fail(*args):
        raise OSError(errno.EIO, "Input/output error")

    with pagecache.DirectReader(path) as reader:
        if reader._fd is None:
            pytest.skip("this filesystem refuses O_DIRECT")
        monkeypatch.setattr(os, "preadv", fail)
        with pytest.raises(OSError, match="Input/output"):
            reader.read_at(0, 10)


def test_reading_here_and_there_drops_exactly_what_was_read(tmp_path, drops_pages) -> None:
    """Each run of reads is dropped when a seek ends it; pages never read stay (2 MiB-aligned: whole folios)."""
    path = tmp_path / "file"
    path.write_bytes(os.urandom(16 * MiB))
    cached(path)
    with pagecache.open_read_once(path) as file:
        file.seek(8 * MiB)
        assert len(file.read(2 * MiB)) == 2 * MiB  # like the seek table at the end
        file.seek(0)
        assert len(file.read(2 * MiB)) == 2 * MiB  # then a member at the start
    left = resident_bytes(path)
    assert left <= 12 * MiB, "a region read is still cached"
    assert left >= 11 * MiB, "pages never read were dropped"  # (a little slack for reclaim under pressure)


def test_write_behind_on_a_pipe_just_writes(small_window) -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader, os.fdopen(write_end, "wb") as raw:
        chunks = []
        drain = threading.Thread(target=lambda: chunks.append(reader.read()))
        drain.start()
        out = pagecache.WriteBehind(raw)
        for _ in range(5):
            out.write(b"x" * MiB)
        out.close()
        drain.join()
    assert chunks == [b"x" * 5 * MiB]

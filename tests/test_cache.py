"""The local blob cache: filled while packing, verified on every read, capped least-recently-used first.

The end-to-end checks pack the small image set from a real registry twice: the second pack must
read no blob byte from the registry and write the same bundle, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

import pytest

from bundler.stores import cache as cache_module
from bundler.stores.base import SinglePool
from bundler.stores.cache import BlobCache, CachedPool
from bundler.digest import Digest
from bundler.errors import ContentMismatchError
from support.cli import run_main
from support.registry import RunningRegistry

CREATED = "2024-02-03T04:05:06Z"


def blob(text: str, size: int = 3000) -> tuple[Digest, bytes]:
    data = (text.encode() * (size // len(text) + 1))[:size]
    return Digest.of(data), data


def pieces(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def store(cache: BlobCache, digest: Digest, data: bytes) -> None:
    assert b"".join(cache.fill(digest, len(data), iter(pieces(data)))) == data


def test_an_entry_appears_only_after_the_whole_verified_stream(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    digest, data = blob("layer")
    stream = cache.fill(digest, len(data), iter(pieces(data)))
    next(stream)
    assert not cache.path(digest).exists()
    stream.close()  # the pack stopped after one chunk
    assert not cache.path(digest).exists() and list((tmp_path / "tmp").iterdir()) == []
    store(cache, digest, data)
    assert cache.path(digest).read_bytes() == data
    assert cache.path(digest) == tmp_path / "blobs" / "sha256" / digest.hex
    assert b"".join(cache.read(digest, len(data))) == data


def test_a_source_that_fails_its_check_leaves_no_entry(tmp_path: Path) -> None:
    """fill leaves the digest to its source, which raises before it ends (RegistryClient.blob_chunks does)."""
    cache = BlobCache(tmp_path)
    digest, data = blob("promised")
    _, other = blob("served!!")

    def verifying_source() -> Iterator[bytes]:
        yield from pieces(other)
        raise ContentMismatchError(f"blob {digest}: digest mismatch")

    with pytest.raises(ContentMismatchError):
        b"".join(cache.fill(digest, len(data), verifying_source()))
    assert not cache.path(digest).exists() and list((tmp_path / "tmp").iterdir()) == []


def test_a_stream_of_the_wrong_size_is_not_cached(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    digest, data = blob("promised")
    assert b"".join(cache.fill(digest, len(data), iter(pieces(data[:-1])))) == data[:-1]
    assert not cache.path(digest).exists() and list((tmp_path / "tmp").iterdir()) == []


def test_a_lying_stream_that_got_in_is_never_served(tmp_path: Path) -> None:
    """A source that did not check (a bug) could store wrong bytes: the read finds them and deletes the entry."""
    cache = BlobCache(tmp_path)
    digest, data = blob("promised")
    _, other = blob("served!!")
    assert b"".join(cache.fill(digest, len(data), iter(pieces(other)))) == other
    warnings: list[str] = []
    assert cache.read(digest, len(data), on_corrupt=warnings.append) is None
    assert warnings and not cache.path(digest).exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_a_damaged_entry_is_deleted_never_served(tmp_path: Path, damage: str) -> None:
    cache = BlobCache(tmp_path)
    digest, data = blob("config")
    store(cache, digest, data)
    bad = bytearray(data)
    if damage == "flip":
        bad[100] ^= 0x40
    elif damage == "truncate":
        del bad[-1]
    else:
        bad += b"x"
    cache.path(digest).write_bytes(bytes(bad))
    warnings: list[str] = []
    assert cache.read(digest, len(data), on_corrupt=warnings.append) is None
    assert not cache.path(digest).exists()
    assert len(warnings) == 1 and str(cache.path(digest)) in warnings[0]


def test_prune_drops_least_recently_used_first(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    entries = [blob(name, 1000) for name in ("oldest", "middle", "newest")]
    for age, (digest, data) in zip((300, 200, 100), entries):
        store(cache, digest, data)
        stamp = time.time() - age
        os.utime(cache.path(digest), (stamp, stamp))
    oldest, middle, newest = (digest for digest, _ in entries)
    assert cache.read(oldest, 1000) is not None  # a hit makes it the most recently used
    result = cache.prune(2000)
    assert (result.removed, result.removed_bytes, result.kept, result.kept_bytes) == (1, 1000, 2, 2000)
    assert not cache.path(middle).exists() and cache.path(oldest).exists() and cache.path(newest).exists()
    assert cache.info().entries == 2 and cache.info().bytes == 2000


def test_prune_removes_temp_files_of_dead_packs(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    (tmp_path / "tmp").mkdir()
    stale, fresh = tmp_path / "tmp" / "dead.part", tmp_path / "tmp" / "running.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (time.time() - 3 * 86400,) * 2)
    cache.prune(10**9)
    assert not stale.exists() and fresh.exists()


def test_an_unwritable_cache_never_fails_the_stream(tmp_path: Path) -> None:
    root = tmp_path / "not-a-dir"
    root.write_text("a file where the cache should be")
    cache = BlobCache(root)
    digest, data = blob("still works")
    assert b"".join(cache.fill(digest, len(data), iter(pieces(data)))) == data
    assert cache.read(digest, len(data)) is None


# --------------------------------------------------------------------------------------------------
# Packing with the cache, against a real registry


def pack_json(capsys: pytest.CaptureFixture[str], image_list: Path, output: Path, *extra: str) -> dict:
    code, stdout, stderr = run_main(capsys, "pack", "-f", str(image_list), "-o", str(output), "--created", CREATED,
                                    "--json", "--force", *extra)
    assert code == 0, stderr
    result = json.loads(stdout)
    result["stderr"] = stderr
    return result


def test_second_pack_downloads_no_blob_and_writes_the_same_bundle(
        seeded_registry: tuple[RunningRegistry, object], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry, image_set = seeded_registry
    monkeypatch.setenv("IMGBUNDLE_CACHE_DIR", str(tmp_path / "cache"))
    image_list = tmp_path / "images.list"
    image_list.write_text(image_set.image_list(registry.host))

    first = pack_json(capsys, image_list, tmp_path / "first.tar.zst")
    assert first["downloadedBytes"] == first["blobBytes"] > 0 and first["cachedBytes"] == 0
    cache = BlobCache(tmp_path / "cache")
    assert (cache.info().entries, cache.info().bytes) == (first["blobs"], first["blobBytes"])

    second = pack_json(capsys, image_list, tmp_path / "second.tar.zst")
    assert second["downloadedBytes"] == 0 and second["cachedBytes"] == second["blobBytes"]
    assert (tmp_path / "second.tar.zst").read_bytes() == (tmp_path / "first.tar.zst").read_bytes()

    damaged = max(cache.blobs_dir().iterdir(), key=lambda p: p.stat().st_size)
    content = bytearray(damaged.read_bytes())
    content[-1] ^= 0x01
    damaged.write_bytes(bytes(content))
    third = pack_json(capsys, image_list, tmp_path / "third.tar.zst")
    assert third["downloadedBytes"] == len(content) and "is damaged" in third["stderr"]
    assert "sha256:" + hashlib.sha256(damaged.read_bytes()).hexdigest() == f"sha256:{damaged.name}"
    assert (tmp_path / "third.tar.zst").read_bytes() == (tmp_path / "first.tar.zst").read_bytes()

    untouched = {p.name: p.stat().st_mtime_ns for p in cache.blobs_dir().iterdir()}
    no_cache = pack_json(capsys, image_list, tmp_path / "fourth.tar.zst", "--no-cache")
    assert no_cache["downloadedBytes"] == no_cache["blobBytes"] and no_cache["cachedBytes"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in cache.blobs_dir().iterdir()} == untouched


def test_cache_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGBUNDLE_CACHE_DIR", str(tmp_path))
    cache = BlobCache()
    for n in range(4):
        store(cache, *blob(f"entry-{n}", 1024))
    code, stdout, _ = run_main(capsys, "cache", "info", "--json")
    assert code == 0 and json.loads(stdout) == {"path": str(tmp_path), "blobs": 4, "bytes": 4096}
    code, stdout, _ = run_main(capsys, "cache", "prune", "--max-size", "2K", "--json")
    assert code == 0 and json.loads(stdout)["removed"] == 2 and cache.info().bytes == 2048
    assert run_main(capsys, "cache", "prune", "--max-size", "lots")[0] == 3
    code, stdout, _ = run_main(capsys, "cache", "prune", "--all")
    assert code == 0 and "removed 2 blobs" in stdout and cache.info().entries == 0


# --------------------------------------------------------------------------------------------------
# Prefetched small blobs (what pack reads while other images are still being resolved)


class _CountingStore:
    """The blob-reading part of a read store: serves ``blobs`` and counts each fetch."""

    def __init__(self, blobs: dict[Digest, bytes]) -> None:
        self.blobs = blobs
        self.fetches: list[Digest] = []

    def blob_chunks(self, repository: str, digest: Digest, size: int) -> Iterator[bytes]:
        self.fetches.append(digest)
        return iter([self.blobs[digest]])


def _blobs(*sizes: int) -> dict[Digest, bytes]:
    out = {}
    for number, size in enumerate(sizes):
        data = bytes([number]) * size
        out[Digest.of(data)] = data
    return out


def test_a_prefetched_blob_is_fetched_once_and_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "PREFETCH_BLOB", 1000)
    blobs = _blobs(900, 1001)
    small, large = blobs
    inner = _CountingStore(blobs)
    store = CachedPool(SinglePool("r.example", inner)).get("r.example")  # type: ignore[arg-type]
    for digest, data in blobs.items():
        store.prefetch("repo", digest, len(data))
        store.prefetch("repo", digest, len(data))  # a second image sharing it
    assert inner.fetches == [small]  # the large one is left to the writer
    assert b"".join(store.blob_chunks("repo", small, 900)) == blobs[small]
    assert b"".join(store.blob_chunks("repo", small, 900)) == blobs[small]  # not kept after it was handed out
    assert inner.fetches == [small, small]


def test_prefetches_keep_no_more_than_their_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "PREFETCH_BYTES", 2000)
    blobs = _blobs(900, 900, 900)
    first, second, third = blobs
    inner = _CountingStore(blobs)
    store = CachedPool(SinglePool("r.example", inner)).get("r.example")  # type: ignore[arg-type]
    for digest in (first, second, third):
        store.prefetch("repo", digest, 900)
    assert inner.fetches == [first, second]
    b"".join(store.blob_chunks("repo", first, 900))  # handed out: its room is free again
    store.prefetch("repo", third, 900)
    assert inner.fetches == [first, second, third]

"""A local, content-addressed blob cache, so that repeated packs download only manifests; and the
read store that puts it in front of another store (``CachedPool`` hands those out per host).

Entries live at ``ROOT/blobs/sha256/<hex>`` (``ROOT`` is platformdirs' user cache dir for
``imgbundle``, or ``IMGBUNDLE_CACHE_DIR``). Nothing in it is trusted: an entry is hashed before it
is used and deleted when it does not match. New entries are written to ``ROOT/tmp`` and renamed into
place only when their stream ended, at the declared size. Their digest is not hashed a second time:
the chunks come from a source that verifies as it streams and raises before the end when they do not
match (as the bundle writer, the cache trusts that; a second sha256 would cost CPU on every byte),
and a wrong entry would be caught when it is read anyway. The cache is an optimisation: when it
cannot be written (disk full, read-only) the pack goes on without it. Least recently used entries
(by mtime, refreshed on every hit) go first when ``prune`` caps its size. A temp file is locked while
it is filled; those a killed pack left are removed by the next pack that writes here, or by ``prune``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import platformdirs

from bundler.bundle.atomic import hold_while_written, remove_if_abandoned
from bundler.digest import Digest, DigestVerifier
from bundler.errors import ContentMismatchError, LocalIOError
from bundler.oci import Descriptor, RawManifest
from bundler.stores.base import ReadStore, StorePool

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["CACHE_ENV", "BlobCache", "CacheInfo", "CachedPool", "CachedStore", "PruneResult", "default_cache_dir"]

log = logging.getLogger(__name__)

CACHE_ENV = "IMGBUNDLE_CACHE_DIR"
READ_CHUNK = 1024 * 1024


def default_cache_dir() -> Path:
    """``$IMGBUNDLE_CACHE_DIR``, else the user cache dir (``~/.cache/imgbundle`` on Linux)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    return Path(platformdirs.user_cache_dir("imgbundle", appauthor=False))


@dataclass(frozen=True)
class CacheInfo:
    root: Path
    entries: int
    bytes: int


@dataclass(frozen=True)
class PruneResult:
    removed: int
    removed_bytes: int
    kept: int
    kept_bytes: int


@dataclass(frozen=True)
class _Entry:
    path: Path
    size: int
    used: float


class BlobCache:
    """Blobs by digest on local disk; thread-safe (every write goes to its own temp file)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._swept = False
        self._sweep_lock = threading.Lock()

    def blobs_dir(self, algorithm: str = "sha256") -> Path:
        return self.root / "blobs" / algorithm

    def path(self, digest: Digest) -> Path:
        return self.blobs_dir(digest.algorithm) / digest.hex

    # Reading and filling -------------------------------------------------------------------------

    def read(
        self, digest: Digest, size: int, on_corrupt: Callable[[str], None] = log.warning
    ) -> Iterator[bytes] | None:
        """The cached blob in chunks, or None when there is no entry or it was damaged (then deleted).

        The entry is hashed before this returns; the chunks come from the same open file.
        """
        handle = self._open_verified(digest, size, on_corrupt)
        return None if handle is None else _file_chunks(handle)

    def fill(self, digest: Digest, size: int, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """``chunks`` passed through; stored as the entry only when they ended, ``size`` bytes long.

        ``chunks`` must verify ``digest`` themselves (raise before they end when the bytes do not match).
        """
        with _Filling(self, digest, size) as filling:
            for chunk in chunks:
                filling.write(chunk)
                yield chunk
            filling.commit()

    def _open_verified(self, digest: Digest, size: int, on_corrupt: Callable[[str], None]) -> BinaryIO | None:
        """An open entry whose bytes hash to ``digest`` (rewound), or None; a bad entry is deleted."""
        path = self.path(digest)
        try:
            handle = path.open("rb")
        except OSError:
            return None
        try:
            verifier = DigestVerifier(digest, size, what=f"cached blob {digest}")
            while chunk := handle.read(READ_CHUNK):
                verifier.update(chunk)
            verifier.check()
            handle.seek(0)
        except (ContentMismatchError, OSError) as error:
            handle.close()
            on_corrupt(f"cache entry {path} is damaged ({error}); deleted, fetching the blob again")
            _unlink(path)
            return None
        _touch(path)
        return handle

    def _temp(self, digest: Digest) -> tuple[BinaryIO, Path] | None:
        """A new temp file beside the entries, or None when the cache cannot be written."""
        directory = self.root / "tmp"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._sweep_once()
            fd, name = tempfile.mkstemp(prefix=f"{digest.hex[:16]}.", suffix=".part", dir=directory)
        except OSError as error:
            log.warning("blob cache %s is not writable (%s); packing without it", self.root, error)
            return None
        hold_while_written(fd)
        return os.fdopen(fd, "wb"), Path(name)

    def _sweep_once(self) -> None:
        """Before this process first writes here: remove the temp files that killed packs left."""
        with self._sweep_lock:
            if not self._swept:
                self._swept = True
                self._drop_abandoned_temps()

    # Housekeeping --------------------------------------------------------------------------------

    def _entries(self) -> list[_Entry]:
        entries = []
        blobs = self.root / "blobs"
        for algorithm in _listdir(blobs):
            for name in _listdir(blobs / algorithm):
                path = blobs / algorithm / name
                try:
                    stat = path.stat()
                except FileNotFoundError:  # pruned by another process meanwhile
                    continue
                entries.append(_Entry(path, stat.st_size, stat.st_mtime))
        return entries

    def info(self) -> CacheInfo:
        entries = self._entries()
        return CacheInfo(self.root, len(entries), sum(e.size for e in entries))

    def prune(self, max_bytes: int) -> PruneResult:
        """Delete least recently used entries until at most ``max_bytes`` remain; drop stale temp files."""
        self._drop_abandoned_temps()
        entries = sorted(self._entries(), key=lambda e: (e.used, e.path.name))
        total = sum(e.size for e in entries)
        removed = removed_bytes = 0
        for entry in entries:
            if total - removed_bytes <= max_bytes:
                break
            _unlink(entry.path)
            removed += 1
            removed_bytes += entry.size
        return PruneResult(removed, removed_bytes, len(entries) - removed, total - removed_bytes)

    def _drop_abandoned_temps(self) -> None:
        """Temp files no live fill holds and nobody wrote to for a while (``remove_if_abandoned``)."""
        directory = self.root / "tmp"
        for name in _listdir(directory):
            if remove_if_abandoned(directory / name):
                log.info("removed %s, left by an interrupted pack", directory / name)


class _Filling:
    """One blob being written into the cache: temp file, size checked, renamed; abandoned on any trouble."""

    def __init__(self, cache: BlobCache, digest: Digest, size: int) -> None:
        self._cache = cache
        self._digest = digest
        self._size = size
        self._written = 0
        self._temp: tuple[BinaryIO, Path] | None = None

    def __enter__(self) -> Self:
        self._temp = self._cache._temp(self._digest)
        return self

    def write(self, chunk: bytes) -> None:
        if self._temp is None:
            return
        try:
            self._written += self._temp[0].write(chunk)
        except OSError as error:
            self._abandon(error)

    def commit(self) -> None:
        if self._temp is None:
            return
        handle, temp = self._temp
        try:
            if self._written != self._size:
                raise ContentMismatchError(f"got {self._written} bytes, expected {self._size}")
            handle.close()
            target = self._cache.path(self._digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
            self._temp = None
        except (OSError, ContentMismatchError) as error:
            self._abandon(error)

    def _abandon(self, error: Exception) -> None:
        log.warning("not caching %s: %s", self._digest, error)
        self.__exit__()

    def __exit__(self, *exc_info: object) -> None:
        if self._temp is not None:
            handle, temp = self._temp
            self._temp = None
            handle.close()
            _unlink(temp)


PREFETCH_BLOB = 32 * 1024
"""Largest blob ``CachedStore.prefetch`` reads ahead: about what a link moves in one round trip, below which
a blob costs its request, not its bytes. Larger blobs wait for the writer and its ``--jobs`` bound."""
PREFETCH_BYTES = 32 * 1024 * 1024
"""Blob bytes kept in memory by prefetches at most, until the writer takes them."""


class CachedPool:
    """Hands out, per host, the pool's store with the cache in front; counts where blob bytes came from.

    Two tiers: blobs read whole (``CachedStore.blob_bytes``: config blobs, while resolving;
    ``CachedStore.prefetch``: small layers, read while other images are still being resolved) stay in
    memory until ``blob_chunks`` hands them out once more, so a small blob is never fetched twice; and
    the disk cache, when there is one. The pool's owner closes the inner pool.
    """

    def __init__(self, pool: StorePool, cache: BlobCache | None = None,
                 on_corrupt: Callable[[str], None] = log.warning) -> None:
        self.pool = pool
        self.cache = cache
        self.on_corrupt = on_corrupt
        self.fetched = Counter()
        """Blob bytes read from the inner stores."""
        self.cached = Counter()
        """Blob bytes the disk cache served instead."""
        self._kept: dict[Digest, bytes] = {}
        self._kept_bytes = 0
        """Bytes in ``_kept`` and reserved for prefetches under way."""
        self._reserved: set[Digest] = set()
        """Blobs being prefetched: no second prefetch of a blob that two images share."""
        self._lock = threading.Lock()

    def get(self, host: str) -> CachedStore:
        return CachedStore(self, self.pool.get(host))

    def close(self) -> None:
        """Nothing to close: the inner pool belongs to whoever made it."""

    def keep(self, digest: Digest, data: bytes) -> None:
        with self._lock:
            previous = self._kept.get(digest)
            self._kept[digest] = data
            self._kept_bytes += len(data) - (len(previous) if previous is not None else 0)

    def kept(self, digest: Digest, *, forget: bool) -> bytes | None:
        with self._lock:
            data = self._kept.pop(digest, None) if forget else self._kept.get(digest)
            if forget and data is not None:
                self._kept_bytes -= len(data)
            return data

    def reserve(self, digest: Digest, size: int) -> bool:
        """Room for a prefetch of ``size`` bytes, unless ``digest`` is kept or being fetched already, or the
        room is used up."""
        with self._lock:
            if digest in self._kept or digest in self._reserved or self._kept_bytes + size > PREFETCH_BYTES:
                return False
            self._reserved.add(digest)
            self._kept_bytes += size
            return True

    def release(self, digest: Digest, size: int) -> None:
        """A prefetch ended: its reservation goes (``keep`` counted what it kept)."""
        with self._lock:
            self._reserved.discard(digest)
            self._kept_bytes -= size


class CachedStore:
    """A read store in front of ``inner``: manifests and listings pass through, blobs come from the cache
    when it holds them and fill it when it does not."""

    def __init__(self, pool: CachedPool, inner: ReadStore) -> None:
        self._pool = pool
        self._inner = inner

    def manifest_get(self, repository: str, reference: str) -> RawManifest:
        return self._inner.manifest_get(repository, reference)

    def manifest_head(self, repository: str, reference: str) -> Descriptor | None:
        return self._inner.manifest_head(repository, reference)

    def tags_list(self, repository: str) -> list[str]:
        return self._inner.tags_list(repository)

    def catalog(self) -> list[str]:
        return self._inner.catalog()

    def referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        return self._inner.referrers(repository, digest)

    def blob_bytes(self, repository: str, digest: Digest, size: int) -> bytes:
        """A small blob, whole; kept in memory for the one ``blob_chunks`` call that will want it again."""
        data = self._pool.kept(digest, forget=False)
        if data is None:
            data = b"".join(self._read(repository, digest, size))
            self._pool.keep(digest, data)
        return data

    def prefetch(self, repository: str, digest: Digest, size: int) -> None:
        """Read a small blob now and keep it for ``blob_chunks``, while the memory kept for that allows
        (``PREFETCH_BYTES``); nothing when it is larger than ``PREFETCH_BLOB`` or kept already."""
        if size <= PREFETCH_BLOB and self._pool.reserve(digest, size):
            try:
                self._pool.keep(digest, b"".join(self._read(repository, digest, size)))
            finally:
                self._pool.release(digest, size)

    def blob_chunks(self, repository: str, digest: Digest, size: int) -> Iterator[bytes]:
        kept = self._pool.kept(digest, forget=True)
        return iter([kept]) if kept is not None else self._read(repository, digest, size)

    def _read(self, repository: str, digest: Digest, size: int) -> Iterator[bytes]:
        cache = self._pool.cache
        if cache is None:
            return self._fetch(repository, digest, size)
        hit = cache.read(digest, size, on_corrupt=self._pool.on_corrupt)
        if hit is not None:
            return _counted(hit, self._pool.cached)
        return cache.fill(digest, size, self._fetch(repository, digest, size))

    def _fetch(self, repository: str, digest: Digest, size: int) -> Iterator[bytes]:
        return _counted(self._inner.blob_chunks(repository, digest, size), self._pool.fetched)


class Counter:
    """A byte counter shared by download threads (``+=`` on an int attribute is not atomic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


def _counted(chunks: Iterator[bytes], counter: Counter) -> Iterator[bytes]:
    for chunk in chunks:
        counter.add(len(chunk))
        yield chunk


def _file_chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(READ_CHUNK):
            yield chunk


def _listdir(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as error:
        raise LocalIOError(f"{error.strerror or error}: {directory}") from None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("cannot remove %s: %s", path, error)


def _touch(path: Path) -> None:
    """Mark an entry used now (mtime, since atime is often not kept): prune keeps it longest."""
    try:
        os.utime(path)
    except OSError:
        pass

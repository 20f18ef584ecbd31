"""A strict registry in memory, for the push's ordering rules without a registry process."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from bundler.errors import PushRefusedError, ReferenceUnknownError, RegistryError, UnreachableError
from bundler.oci import Descriptor, RawManifest
from bundler.stores import Placement

__all__ = ["HOST", "MemoryRegistry"]

HOST = "mem.invalid"


class MemoryRegistry:
    """A strict, thread-safe registry in memory that logs every write."""

    def __init__(self, *, upload_delay: float = 0.002) -> None:
        self.blobs: dict[str, set[str]] = {}
        self.manifests: dict[tuple[str, str], RawManifest] = {}
        self.tags: dict[tuple[str, str], str] = {}
        self.log: list[tuple[str, str, str]] = []
        self.uploads: Counter[str] = Counter()
        self.violations: list[str] = []
        self.upload_delay = upload_delay
        self.refuse_blob_repos: set[str] = set()
        self.refuse_tags: set[tuple[str, str]] = set()
        self.unreachable_after: int | None = None
        self._inflight: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.max_parallel = 0
        self._parallel = 0

    # the WriteStore protocol (what a push uses of it)

    def manifest_head(self, repository: str, reference: str) -> Descriptor | None:
        with self._lock:
            digest = self.tags.get((repository, reference)) if ":" not in reference else reference
            raw = self.manifests.get((repository, digest)) if digest else None
        return raw.descriptor() if raw else None

    def manifest_put(self, repository: str, reference: str, manifest: RawManifest) -> None:
        with self._lock:
            self._check_manifest(repository, reference, manifest)
            self.manifests[(repository, manifest.digest)] = manifest
            if ":" not in reference:
                self.tags[(repository, reference)] = manifest.digest
            self.log.append(("manifest", repository, reference))

    def blob_exists(self, repository: str, digest: str) -> bool:
        with self._lock:
            return digest in self.blobs.get(repository, set())

    def blob_upload(self, repository: str, digest: str, size: int, chunks: Callable[[], Iterable[bytes]], *,
                    mount_from: str | None = None) -> Placement:
        key = (repository, digest)
        with self._lock:
            if self.unreachable_after is not None and len(self.log) >= self.unreachable_after:
                raise UnreachableError(f"{HOST}: connection refused")
            if repository in self.refuse_blob_repos:
                raise PushRefusedError(f"{HOST}/{repository}: quota exceeded")
            if key in self._inflight:
                self.violations.append(f"concurrent upload of {digest} into {repository}")
            self._inflight.add(key)
            self._parallel += 1
            self.max_parallel = max(self.max_parallel, self._parallel)
        try:
            if mount_from and self.blob_exists(mount_from, digest):
                how = Placement.MOUNTED
            else:
                data = b"".join(chunks())
                time.sleep(self.upload_delay)
                if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    raise RegistryError(f"{repository}@{digest}: DIGEST_INVALID")
                how = Placement.UPLOADED
            with self._lock:
                self.blobs.setdefault(repository, set()).add(digest)
                self.log.append((how.value, repository, digest))
                if how is Placement.UPLOADED:
                    self.uploads[digest] += 1
            return how
        finally:
            with self._lock:
                self._inflight.discard(key)
                self._parallel -= 1

    def blob_mount(self, repository: str, digest: str, source: str) -> bool:
        with self._lock:
            if digest not in self.blobs.get(source, set()):
                return False
            self.blobs.setdefault(repository, set()).add(digest)
            self.log.append(("mounted", repository, digest))
            return True

    def _check_manifest(self, repository: str, reference: str, manifest: RawManifest) -> None:
        """As Distribution: a manifest put by tag or by digest needs its children or blobs in the repository."""
        if ":" not in reference:
            if (repository, reference) in self.refuse_tags:
                raise PushRefusedError(f"{HOST}/{repository}:{reference}: the tag is immutable (412)")
            if (repository, manifest.digest) in self.manifests:
                return
        if manifest.is_index:
            missing = [c.digest for c in manifest.index().manifests if (repository, c.digest) not in self.manifests]
            if missing:
                self.violations.append(f"index {reference} before children {missing}")
                raise ReferenceUnknownError(f"{repository}@{reference}: MANIFEST_BLOB_UNKNOWN")
        else:
            have = self.blobs.get(repository, set())
            missing = [b.digest for b in manifest.manifest().blobs if b.digest not in have]
            if missing:
                self.violations.append(f"manifest {reference} before blobs {missing}")
                raise ReferenceUnknownError(f"{repository}@{reference}: MANIFEST_BLOB_UNKNOWN")

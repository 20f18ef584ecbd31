"""What is attached to an image's manifests: signatures, attestations, SBOMs (OCI 1.1 referrers).

Registries keep them three ways, and pack looks in all three, for the top manifest and every child:
the referrers API (``GET /v2/NAME/referrers/DIGEST``); where that lists nothing, the referrers tag
schema (an index of referrers under the tag ``<alg>-<hex>``); and cosign's tags ``<alg>-<hex>.sig``,
``.att`` and ``.sbom``, which most signed images still use. Referrers of referrers (a signature on
an SBOM) are followed to a small depth. None found is normal; a referrer whose ``subject`` is not
what was asked, a cycle or an absurd fan-out is a registry that lies.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from bundler.bundle import FoundBy, ReferrerEntry
from bundler.bundle.index import COSIGN_SUFFIXES, cosign_tag, fallback_tag
from bundler.digest import Digest
from bundler.errors import AuthError, NotFoundError, RegistryContentError
from bundler.oci import IMAGE_MANIFEST_TYPES, Descriptor, RawManifest
from bundler.stores import ReadStore

__all__ = [
    "ALL_REFERRERS",
    "MAX_REFERRERS",
    "MAX_REFERRER_DEPTH",
    "FoundReferrer",
    "ReferrerFinder",
    "ReferrerPolicy",
    "TagLists",
    "is_referrer_tag",
]

MAX_REFERRER_DEPTH = 3
"""An image's referrers, theirs (a signature on an SBOM), and theirs: deeper chains are not followed."""
MAX_REFERRERS = 256
"""Per subject. A few signatures and attestations are normal; hundreds are a registry that lies."""


_REFERRER_TAG = re.compile(r"(sha256-[a-f0-9]{64}|sha512-[a-f0-9]{128})(\.(sig|att|sbom))?")


def is_referrer_tag(tag: str) -> bool:
    """A fallback tag or a cosign tag: it names what is attached to an image, not an image of its own."""
    return _REFERRER_TAG.fullmatch(tag) is not None


@dataclass(frozen=True)
class ReferrerPolicy:
    """Which referrers pack carries: none, all, or only those of some artifact types."""

    enabled: bool = True
    artifact_types: frozenset[str] = frozenset()

    def keeps(self, artifact_type: str) -> bool:
        return self.enabled and (not self.artifact_types or artifact_type in self.artifact_types)


ALL_REFERRERS = ReferrerPolicy()


@dataclass
class FoundReferrer:
    """One referrer as the bundle records it, with its manifests (itself first) and blobs."""

    entry: ReferrerEntry
    manifests: dict[Digest, RawManifest] = field(default_factory=dict)
    blobs: dict[Digest, Descriptor] = field(default_factory=dict)


class TagLists:
    """Each repository's tags, listed once and shared by the finders of every image in it: a catalogue of
    thousands of images in a few repositories costs one listing per repository, not one per image."""

    def __init__(self) -> None:
        self._listed: dict[tuple[str, str], set[str]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def tags(self, store: ReadStore, registry: str, repository: str) -> set[str]:
        """The tags of ``repository`` on ``registry`` (read from ``store`` the first time); none where it
        cannot be listed. Finders asking at once wait for the one listing under way."""
        key = (registry, repository)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._listed:
                try:
                    self._listed[key] = set(store.tags_list(repository))
                except (NotFoundError, AuthError):
                    self._listed[key] = set()
            return self._listed[key]


class ReferrerFinder:
    """Finds the referrers of manifests in one repository of one store; ``what`` names the image in errors.

    Finders of one run share ``tag_lists`` (by ``registry`` and repository); by default a finder lists its own."""

    def __init__(self, store: ReadStore, repository: str, policy: ReferrerPolicy, what: str, *,
                 tag_lists: TagLists | None = None, registry: str = "") -> None:
        self.store = store
        self.repository = repository
        self.policy = policy
        self.what = what
        self._tag_lists = tag_lists if tag_lists is not None else TagLists()
        self._registry = registry

    def attached(self, subjects: Iterable[Digest]) -> list[FoundReferrer]:
        """The referrers of ``subjects`` and, to ``MAX_REFERRER_DEPTH``, of those; each once, after its subject."""
        seen = set(subjects)
        level, found = list(seen), []
        for _ in range(MAX_REFERRER_DEPTH):
            level_found = [referrer for subject in level for referrer in self.direct(subject)]
            for referrer in level_found:
                digest = Digest(referrer.entry.digest)
                if digest in seen:
                    raise RegistryContentError(f"{self.what}: referrer {digest} is listed twice or refers to itself")
                seen.add(digest)
            found += level_found
            level = [Digest(referrer.entry.digest) for referrer in level_found]
        return found

    def direct(self, subject: Digest) -> list[FoundReferrer]:
        """The referrers the policy keeps whose subject is ``subject``."""
        listed, how = self._listed(subject)
        if len(listed) > MAX_REFERRERS:
            raise RegistryContentError(f"{self.what}: {len(listed)} referrers of {subject}, refused as absurd")
        found = [self._found(self._manifest(descriptor.digest), subject, how) for descriptor in listed
                 if not descriptor.artifact_type or self.policy.keeps(descriptor.artifact_type)]
        for suffix in COSIGN_SUFFIXES:
            tag = cosign_tag(subject, suffix)
            if tag in self._tag_set():
                found.append(self._found(self._manifest(tag), subject, FoundBy.COSIGN_TAG, tag))
        unique = {referrer.entry.digest: referrer for referrer in found}
        return [referrer for referrer in unique.values() if self.policy.keeps(referrer.entry.artifact_type)]

    def _listed(self, subject: Digest) -> tuple[list[Descriptor], FoundBy]:
        """From the referrers API, else from the fallback tag's index."""
        listed = self.store.referrers(self.repository, subject)
        if listed:
            return listed, FoundBy.REFERRERS_API
        tag = fallback_tag(subject)
        if tag not in self._tag_set():
            return [], FoundBy.FALLBACK_TAG
        index = self._manifest(tag)
        if not index.is_index:
            raise RegistryContentError(f"{self.what}: the referrers tag {tag} is not an index")
        return index.index().manifests, FoundBy.FALLBACK_TAG

    def _found(self, raw: RawManifest, subject: Digest, how: FoundBy, tag: str = "") -> FoundReferrer:
        """A referrer's record and content, its ``subject`` checked (a cosign artifact has none)."""
        document = raw.index() if raw.is_index else raw.manifest() if raw.media_type in IMAGE_MANIFEST_TYPES else None
        if document is None:
            raise RegistryContentError(f"{self.what}: referrer {raw.digest} has media type {raw.media_type!r}")
        named = document.subject.digest if document.subject else None
        if how is not FoundBy.COSIGN_TAG and named != subject:
            raise RegistryContentError(f"{self.what}: referrer {raw.digest} of {subject} names subject {named}")
        entry = ReferrerEntry(digest=raw.digest, media_type=raw.media_type, artifact_type=_artifact_type(raw, how),
                              subject=subject, found_by=how, tag=tag, annotations=dict(document.annotations))
        referrer = FoundReferrer(entry)
        self._collect(referrer, raw, depth=0)
        return referrer

    def _collect(self, referrer: FoundReferrer, raw: RawManifest, depth: int) -> None:
        """The referrer's manifests and blobs; an index of artifacts may list manifests, not nested deeper."""
        referrer.manifests[raw.digest] = raw
        if raw.media_type in IMAGE_MANIFEST_TYPES:
            referrer.blobs.update((Digest(blob.digest), blob) for blob in raw.manifest().blobs)
            return
        if not raw.is_index or depth > 0:
            raise RegistryContentError(f"{self.what}: referrer {raw.digest} has media type {raw.media_type!r}")
        for child in raw.index().manifests:
            self._collect(referrer, self._manifest(child.digest), depth + 1)

    def _manifest(self, reference: str) -> RawManifest:
        return self.store.manifest_get(self.repository, reference)

    def _tag_set(self) -> set[str]:
        """The repository's tags, listed once: one request instead of four HEADs per manifest."""
        return self._tag_lists.tags(self.store, self._registry, self.repository)


def _artifact_type(raw: RawManifest, how: FoundBy) -> str:
    """What the referrers API shows (``artifactType``, else the config media type); for cosign's tagged
    artifacts, whose config is a plain image config, the media type of the first layer says what they are."""
    if raw.is_index:
        return raw.index().artifact_type
    manifest = raw.manifest()
    if how is FoundBy.COSIGN_TAG and manifest.layers:
        return manifest.layers[0].media_type
    return manifest.artifact_type or manifest.config.media_type

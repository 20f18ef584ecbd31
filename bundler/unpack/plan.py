"""The push plan: for every target, which manifests (bottom-up) and blobs it needs. No registry I/O.

Reading a bundle's manifests is all it takes to know what a push will consider; ``dry_run``
returns this plan, and the executor runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bundler.digest import Digest
from bundler.errors import BundleError, CorruptBundleError, ImgbundleError, NotFoundError
from bundler.mapping import Target
from bundler.oci import IMAGE_MANIFEST_TYPES, INDEX_TYPES, RawManifest
from bundler.stores.bundle import BundleStore

__all__ = ["MAX_INDEX_DEPTH", "BlobPlan", "ImagePlan", "ManifestNode", "PushPlan", "build_plan"]

MAX_INDEX_DEPTH = 4
"""Same bound as ``pack``: indexes of indexes exist, deeper nesting is a broken bundle."""


@dataclass(frozen=True)
class ManifestNode:
    """One manifest as it will be pushed: raw bytes, and what must be in the repository first."""

    raw: RawManifest
    children: tuple[Digest, ...] = ()
    blobs: tuple[Digest, ...] = ()


@dataclass
class ImagePlan:
    """One target's push: ``manifests`` children first, the top one last; ``error`` when the bundle
    cannot supply it (the image then fails without touching the registry)."""

    target: Target
    manifests: list[Digest] = field(default_factory=list)
    blobs: list[Digest] = field(default_factory=list)
    error: ImgbundleError | None = None


@dataclass(frozen=True)
class BlobPlan:
    """A blob to consider: its size (``None`` if the bundle lacks it), the target repositories needing it,
    and the bundle repository it is read from (that of the first image needing it)."""

    digest: Digest
    size: int | None
    repositories: tuple[str, ...]
    origin: str


@dataclass
class PushPlan:
    images: list[ImagePlan]
    manifests: dict[Digest, ManifestNode]
    bundle_blobs: dict[Digest, int]

    @property
    def targets(self) -> list[Target]:
        return [image.target for image in self.images]

    def blobs(self) -> list[BlobPlan]:
        """Each blob digest once, in first-use order, with every target repository that needs it."""
        repos: dict[Digest, dict[str, None]] = {}
        origins: dict[Digest, str] = {}
        for image in self.images:
            if image.error is None:
                for digest in image.blobs:
                    repos.setdefault(digest, {})[image.target.repository] = None
                    origins.setdefault(digest, image.target.source_name)
        return [BlobPlan(d, self.bundle_blobs.get(d), tuple(r), origins[d]) for d, r in repos.items()]

    @property
    def total_blob_bytes(self) -> int:
        """Bytes of the blobs to consider, counted once per digest (what a fresh target uploads)."""
        return sum(blob.size or 0 for blob in self.blobs())


def build_plan(bundle: BundleStore, targets: list[Target]) -> PushPlan:
    """Walk every target's manifests in the bundle; a bundle problem fails only that image."""
    walker = _Walker(bundle)
    images = [walker.image(target) for target in targets]
    return PushPlan(images, walker.nodes, walker.bundle_blobs)


class _Walker:
    """Reads each manifest once, however many images share it."""

    def __init__(self, bundle: BundleStore) -> None:
        self.bundle = bundle
        self.bundle_blobs = {Digest(b.digest): b.size for b in bundle.index.blobs}
        self.nodes: dict[Digest, ManifestNode] = {}

    def image(self, target: Target) -> ImagePlan:
        plan = ImagePlan(target)
        try:
            self._visit(target.digest, plan, depth=0, seen=set())
        except ImgbundleError as error:
            return ImagePlan(target, error=error)
        plan.blobs = list(dict.fromkeys(plan.blobs))
        return plan

    def _visit(self, digest: Digest, plan: ImagePlan, depth: int, seen: set[Digest]) -> None:
        """Post-order: children before their index, so ``plan.manifests`` is a valid push order."""
        if digest in seen:
            return
        seen.add(digest)
        if depth > MAX_INDEX_DEPTH:
            raise CorruptBundleError(f"{plan.target.source_ref}: indexes nested more than {MAX_INDEX_DEPTH} deep")
        node = self._node(digest, plan.target)
        for child in node.children:
            self._visit(child, plan, depth + 1, seen)
        plan.blobs.extend(node.blobs)
        plan.manifests.append(digest)

    def _node(self, digest: Digest, target: Target) -> ManifestNode:
        node = self.nodes.get(digest)
        if node is None:
            node = self.nodes[digest] = self._read(digest, target)
        return node

    def _read(self, digest: Digest, target: Target) -> ManifestNode:
        source = target.source_ref
        try:
            raw = self.bundle.manifest_get(target.source_name, digest)
        except NotFoundError:
            raise CorruptBundleError(f"{source}: the bundle lacks manifest {digest}") from None
        except CorruptBundleError as error:
            raise CorruptBundleError(f"{source}: {error}") from None
        return self._node_of(raw, source)

    def _node_of(self, raw: RawManifest, source: str) -> ManifestNode:
        if raw.media_type in INDEX_TYPES:
            return ManifestNode(raw, children=tuple(Digest(c.digest) for c in raw.index().manifests))
        if raw.media_type in IMAGE_MANIFEST_TYPES:
            needed = [b for b in raw.manifest().blobs if not (b.urls and Digest(b.digest) not in self.bundle_blobs)]
            return ManifestNode(raw, blobs=tuple(dict.fromkeys(Digest(b.digest) for b in needed)))
        raise BundleError(f"{source}: manifest {raw.digest} has unsupported media type {raw.media_type!r}")

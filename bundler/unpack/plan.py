"""The push plan: for every target, which manifests (bottom-up) and blobs it needs. No registry I/O.

Reading a bundle's manifests is all it takes to know what a push will consider; ``dry_run``
returns this plan, and the executor runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bundler.bundle.links import check_children, manifest_links
from bundler.digest import Digest
from bundler.errors import CorruptBundleError, ImgbundleError, NotFoundError
from bundler.mapping import Target
from bundler.stores.bundle import BundleStore

__all__ = ["MAX_INDEX_DEPTH", "BlobPlan", "ImagePlan", "ManifestNode", "PushPlan", "build_plan"]

MAX_INDEX_DEPTH = 4
"""Same bound as ``pack``: indexes of indexes exist, deeper nesting is a broken bundle."""


@dataclass(frozen=True)
class ManifestNode:
    """One manifest as it will be pushed: what must be in the repository first. Its bytes stay in the
    bundle and are read again when pushed, so a plan's memory does not grow with manifest sizes."""

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
        index = bundle.index
        self.bundle_blobs = {Digest(b.digest): b.size for b in index.blobs}
        self.media_types = {entry.digest: entry.media_type for entry in index.manifests}
        self.carried = self.media_types.keys() | self.bundle_blobs.keys()
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
        """The manifest's links, by the rules verify applies too (``bundler.bundle.links``)."""
        source = target.source_ref
        try:
            raw = self.bundle.manifest_get(target.source_name, digest)
        except NotFoundError:
            raise CorruptBundleError(f"{source}: the bundle lacks manifest {digest}") from None
        try:
            links = manifest_links(raw.data, self.media_types[digest])
        except CorruptBundleError as error:
            raise CorruptBundleError(f"{source}: manifest {digest}: {error}") from None
        broken = check_children(digest, links, self.media_types, self.carried)
        if broken:
            raise CorruptBundleError(f"{source}: {broken[0].digest}: {broken[0].message}")
        needed = (blob for blob in links.blobs if blob not in links.foreign or blob in self.bundle_blobs)
        return ManifestNode(children=links.children, blobs=tuple(needed))

"""A generated image set as an independent oracle of what a source holds, bundles built from it, what a target
registry must hold after an unpack, and recording progress (a pytest plugin: conftest lists it in pytest_plugins).

The bundle is written with ``bundler.bundle.write_bundle`` straight from the OCI layout that
``scripts/imageset.py`` generated, so unpack is tested without depending on ``pack``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest

from bundler.bundle import BlobSpec, ImageEntry, write_bundle
from bundler.digest import Digest
from bundler.oci import RawManifest, detect_media_type
from bundler.reference import parse_reference
from support.registry import MANIFEST_ACCEPT, RunningRegistry, TokenRegistry, registry_client

SOURCE_HOST = "quay.io"
CREATED = "2024-01-01T00:00:00Z"


@dataclass
class SourceImage:
    """One image as the layout holds it: its reference line, top digest, every manifest and blob it needs."""

    line: str
    reference: str
    digest: str
    media_type: str
    manifests: dict[str, bytes] = field(default_factory=dict)
    blobs: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return parse_reference(self.reference).repository

    @property
    def tag(self) -> str | None:
        ref = parse_reference(self.reference)
        return None if ref.digest and not ref.tag else ref.tag


@dataclass
class SourceSet:
    layout: Path
    images: list[SourceImage]

    def blob_sizes(self) -> dict[str, int]:
        return {d: s for image in self.images for d, s in image.blobs.items()}

    def select(self, names: list[str]) -> SourceSet:
        return SourceSet(self.layout, [i for i in self.images if i.path in names])


def read_source(image_set: Any, source_host: str = SOURCE_HOST) -> SourceSet:
    """Every image of an imageset, walked from the layout files with hashlib and json only."""
    lines = [line for line in image_set.image_list(source_host).splitlines() if line and not line.startswith("#")]
    images = []
    for line, info in zip(lines, image_set.images, strict=True):
        image = SourceImage(line, str(parse_reference(line)), info.digest, info.media_type)
        _walk(image_set.layout, info.digest, image)
        images.append(image)
    return SourceSet(image_set.layout, images)


def _layout_bytes(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def _walk(layout: Path, digest: str, image: SourceImage) -> None:
    data = _layout_bytes(layout, digest)
    image.manifests[digest] = data
    body = json.loads(data)
    if "manifests" in body:
        for child in body["manifests"]:
            _walk(layout, child["digest"], image)
    else:
        for blob in [body["config"], *body["layers"]]:
            image.blobs[blob["digest"]] = blob["size"]


def build_bundle(source: SourceSet, output: Path) -> Path:
    """Write a bundle holding ``source``'s images, their manifests byte-exact and every blob once."""
    manifests: dict[str, RawManifest] = {}
    blobs: dict[str, BlobSpec] = {}
    entries = []
    for image in source.images:
        for digest, data in image.manifests.items():
            manifests[digest] = RawManifest.from_bytes(data, detect_media_type(data), Digest(digest))
        for digest, size in image.blobs.items():
            blobs[digest] = BlobSpec(Digest(digest), size, "application/octet-stream")
        size = sum(len(d) for d in image.manifests.values()) + sum(image.blobs.values())
        entries.append(ImageEntry(source=image.line, reference=image.reference, digest=image.digest,
                                  media_type=manifests[image.digest].media_type, platforms=[], size=size))

    def open_blob(spec: BlobSpec) -> Iterator[bytes]:
        with (source.layout / "blobs" / "sha256" / spec.digest.hex).open("rb") as handle:
            while chunk := handle.read(256 * 1024):
                yield chunk

    write_bundle(output, images=entries, skipped=[], manifests=list(manifests.values()),
                 blobs=list(blobs.values()), open_blob=open_blob, created=CREATED, jobs=2)
    return output


# ------------------------------------------------------------------------------------------------
# What a registry should hold after an unpack, computed from the source alone


@dataclass
class Expected:
    """Target state: tags, manifests and blobs per repository, and what a fresh push must do."""

    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    manifests: set[tuple[str, str]] = field(default_factory=set)
    blobs: dict[str, set[str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def repositories(self) -> set[str]:
        return {repo for repo, _ in self.manifests}

    @property
    def unique_bytes(self) -> int:
        return sum(self.sizes[d] for d in self.blobs)

    @property
    def mounts(self) -> int:
        return sum(len(repos) - 1 for repos in self.blobs.values())


def expected_state(source: SourceSet, repo_of: Any) -> Expected:
    """``repo_of(image) -> target repository`` decides the naming; the rest follows from the source."""
    expected = Expected(sizes=source.blob_sizes())
    for image in source.images:
        repo = repo_of(image)
        if image.tag:
            expected.tags[(repo, image.tag)] = image.digest
        expected.manifests.update((repo, d) for d in image.manifests)
        for digest in image.blobs:
            expected.blobs.setdefault(digest, set()).add(repo)
    return expected


def assert_registry_holds(reg: RunningRegistry, expected: Expected) -> None:
    """Every tag points at its digest, every manifest and blob is in its repository (plain httpx)."""
    scopes = [f"repository:{repo}:pull" for repo in sorted(expected.repositories)]
    with registry_client(reg, scopes if isinstance(reg, TokenRegistry) else None) as client:
        for (repo, tag), digest in expected.tags.items():
            response = client.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
            assert response.status_code == 200, f"{repo}:{tag} missing"
            assert response.headers["Docker-Content-Digest"] == digest, f"{repo}:{tag} points elsewhere"
        for repo, digest in expected.manifests:
            response = client.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": MANIFEST_ACCEPT})
            assert response.status_code == 200, f"{repo}@{digest} missing"
            assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
        for digest, repos in expected.blobs.items():
            for repo in repos:
                response = client.head(f"/v2/{repo}/blobs/{digest}")
                assert response.status_code == 200, f"blob {digest} missing in {repo}"


def registry_tags_state(reg: RunningRegistry, repositories: set[str]) -> dict[tuple[str, str], str]:
    """(repo, tag) -> digest for every tag of ``repositories``: the state two runs must agree on."""
    state = {}
    scopes = [f"repository:{repo}:pull" for repo in sorted(repositories)]
    with registry_client(reg, scopes if isinstance(reg, TokenRegistry) else None) as client:
        for repo in sorted(repositories):
            response = client.get(f"/v2/{repo}/tags/list")
            tags = response.json().get("tags") or [] if response.status_code == 200 else []
            for tag in tags:
                head = client.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
                state[(repo, tag)] = head.headers["Docker-Content-Digest"]
    return state


def stored_blob_digests(reg: RunningRegistry) -> set[str]:
    """Blobs whose upload completed, read from the registry's storage tree (not through our client)."""
    root = reg.storage_dir / "docker" / "registry" / "v2" / "blobs" / "sha256"
    if not root.is_dir():
        return set()
    return {f"sha256:{path.parent.name}" for path in root.glob("*/*/data")}


def skopeo_raw(reference: str, *options: str) -> bytes:
    """The manifest bytes skopeo reads at ``reference`` (``docker://HOST/REPO@DIGEST``, ``oci:LAYOUT:NAME``):
    an oracle that shares no code with ours."""
    done = subprocess.run(["skopeo", "inspect", "--raw", *options, reference], capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, f"skopeo inspect --raw {reference}: {done.stderr.decode(errors='replace')}"
    return done.stdout


class RecordingProgress:
    """A Progress that remembers everything, and can stop the run after ``stop_after`` bytes."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.phases: list[tuple[str, int, int]] = []
        self.bytes = 0
        self.items: list[tuple[str, bool]] = []
        self.warnings: list[str] = []
        self.stop_after = stop_after
        self._lock = threading.Lock()

    def phase(self, name: str, total_bytes: int = 0, total_items: int = 0) -> None:
        self.phases.append((name, total_bytes, total_items))

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.bytes += nbytes
            stop = self.stop_after is not None and self.bytes > self.stop_after
        if stop:
            raise KeyboardInterrupt

    def item_done(self, name: str, ok: bool = True) -> None:
        with self._lock:
            self.items.append((name, ok))

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@pytest.fixture(scope="session")
def source_set(small_imageset: Any) -> SourceSet:
    return read_source(small_imageset)


@pytest.fixture(scope="session")
def bundle_file(source_set: SourceSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole small image set as a bundle, as if packed from quay.io (read-only: copy it to modify)."""
    return build_bundle(source_set, tmp_path_factory.mktemp("unpack-bundle") / "small.tar.zst")


SMALL_NAMES = ["calico/node", "calico/cni", "pause"]
"""Two images sharing layers (a mount) and the digest-only one: enough for auth and Harbor tests."""


@pytest.fixture(scope="session")
def small_source(source_set: SourceSet) -> SourceSet:
    return source_set.select(SMALL_NAMES)


@pytest.fixture(scope="session")
def small_bundle(small_source: SourceSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(small_source, tmp_path_factory.mktemp("unpack-small") / "small3.tar.zst")

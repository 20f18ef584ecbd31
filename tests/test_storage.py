"""``pack --from-storage``: images read straight from a storage tree that a real Distribution wrote.

The expectations come from the generated OCI layout (walked with json and hashlib in
support.sources) and from the registry's own HTTP answers, never from ``StorageTree`` itself.
Trees are broken on copies, so the module's registry stays whole.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from bundler.digest import Digest
from bundler.errors import NotFoundError, RegistryContentError
from bundler.registry import RegistryClient
from bundler.stores import ReadStore
from bundler.stores.storage import StorageTree
from support.cli import bundle_index, run_main
from support.images import seed_into
from support.registry import RunningRegistry, registry_catalog, registry_tags, start_registry
from support.servers import starts_server
from support.sources import SourceImage, read_source

CREATED = "2024-05-06T07:08:09Z"


@dataclass
class Written:
    """A registry that wrote the small image set through its HTTP API, and what the set holds."""

    registry: RunningRegistry
    images: dict[str, SourceImage]
    """``repo:tag`` -> the image as walked from the layout."""

    @property
    def storage(self) -> Path:
        return self.registry.storage_dir

    def broken_copy(self, target: Path) -> Path:
        shutil.copytree(self.storage, target, symlinks=True)
        return target

    def users_of(self, digest: str) -> set[str]:
        return {name for name, image in self.images.items() if digest in image.blobs or digest in image.manifests}


@pytest.fixture(scope="module")
@starts_server
def written(tmp_path_factory: pytest.TempPathFactory, small_imageset) -> Iterator[Written]:
    """A registry of its own, so that its catalog is exactly the small set (nested paths, an alias tag)."""
    with start_registry(tmp_path_factory.mktemp("storage-registry")) as reg:
        seed_into(reg, small_imageset)
        walked = read_source(small_imageset, "localhost")
        images = {info.name: image for info, image in zip(small_imageset.images, walked.images, strict=True)}
        yield Written(reg, images)


def test_registry_client_and_storage_tree_are_both_image_sources(written: Written) -> None:
    with RegistryClient(written.registry.host) as client:
        assert isinstance(client, ReadStore) and isinstance(StorageTree(written.storage), ReadStore)
        tree = StorageTree(written.storage)
        for name in ("calico/node:v3.26.4", "pause:3.9"):
            repository, tag = name.split(":")
            assert tree.manifest_get(repository, tag) == client.manifest_get(repository, tag)
            assert tree.manifest_head(repository, tag) == client.manifest_head(repository, tag)
        assert tree.manifest_head("pause", "no-such-tag") is None is client.manifest_head("pause", "no-such-tag")


def test_listing_agrees_with_the_registry(written: Written) -> None:
    """Nested repository paths and every tag, as the running registry itself lists them."""
    tree = StorageTree(written.storage)
    catalog = registry_catalog(written.registry)
    assert tree.catalog() == sorted(catalog)
    assert "k8s/sig-storage/local-volume-provisioner" in catalog
    for repository in catalog:
        assert tree.tags_list(repository) == sorted(registry_tags(written.registry, repository))


@pytest.mark.parametrize("below", ["", "docker/registry/v2"])
def test_pack_from_storage_holds_every_tag_byte_exact(written: Written, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str], below: str) -> None:
    bundle = tmp_path / "recovered.tar.zst"
    code, _, stderr = run_main(capsys, "pack", "--from-storage", str(written.storage / below), "-o", str(bundle),
                               "--created", CREATED, "-q")
    assert code == 0, stderr
    index = bundle_index(capsys, bundle)
    assert {i["reference"]: i["digest"] for i in index["images"]} == {
        f"localhost/{name}": image.digest for name, image in written.images.items()}
    expected_blobs = {d: s for image in written.images.values() for d, s in image.blobs.items()}
    assert {b["digest"]: b["size"] for b in index["blobs"]} == expected_blobs
    assert {m["digest"] for m in index["manifests"]} == {d for i in written.images.values() for d in i.manifests}
    assert index["skipped"] == []
    code, stdout, stderr = run_main(capsys, "verify", str(bundle))
    assert code == 0 and f"OK {len(written.images)} images" in stdout, stdout + stderr


def test_repo_patterns_and_storage_host(written: Written, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "some.tar.zst"
    code, _, stderr = run_main(capsys, "pack", "--from-storage", str(written.storage), "--repo", "calico/*",
                               "--repo", "k8s/*", "--storage-host", "harbor.site.lan", "-o", str(bundle), "-q")
    assert code == 0, stderr
    references = {i["reference"] for i in bundle_index(capsys, bundle)["images"]}
    assert references == {f"harbor.site.lan/{name}" for name in written.images
                          if name.startswith(("calico/", "k8s/"))}
    assert len(references) == 3


def test_broken_images_are_named_then_skipped(written: Written, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A deleted layer, a deleted child manifest and a dangling tag link: each breaks exactly its images."""
    root = written.broken_copy(tmp_path / "storage")
    tree = StorageTree(root)
    layer = _blob_of_one_image(written, "mirantis/k8s-netchecker-server:v1.2.2")
    tree.blob_path(Digest(layer)).unlink()
    child = written.images["calico/cni:v3.26.4"]
    child_digest = next(d for d in child.manifests if d != child.digest)
    tree.blob_path(Digest(child_digest)).unlink()
    link = tree.root / "repositories/pause/_manifests/tags/3.9/current/link"
    link.write_text("sha256:" + hashlib.sha256(b"long gone").hexdigest())
    broken = written.users_of(layer) | written.users_of(child_digest) | {"pause:3.9"}
    assert len(broken) == 3

    bundle = tmp_path / "b.tar.zst"
    code, _, stderr = run_main(capsys, "pack", "--from-storage", str(root), "-o", str(bundle), "-q")
    assert code == NotFoundError.exit_code and not bundle.exists()
    assert f"3 of {len(written.images)} references failed" in stderr
    for name in broken:
        assert f"localhost/{name}: " in stderr
    assert layer in stderr and child_digest in stderr and "data is missing" in stderr

    code, _, stderr = run_main(capsys, "pack", "--from-storage", str(root), "-o", str(bundle), "-q", "--skip-missing")
    assert code == 0, stderr
    index = bundle_index(capsys, bundle)
    assert {s["source"] for s in index["skipped"]} == {f"localhost/{name}" for name in broken}
    assert {i["reference"] for i in index["images"]} == {f"localhost/{n}" for n in written.images if n not in broken}
    assert run_main(capsys, "verify", str(bundle))[0] == 0


def _blob_of_one_image(written: Written, name: str) -> str:
    return next(d for d in sorted(written.images[name].blobs) if written.users_of(d) == {name})


def test_damaged_blob_data_fails_the_pack_naming_it(written: Written, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Same size, one byte flipped: only the digest check can tell, and no bundle is left behind."""
    root = written.broken_copy(tmp_path / "storage")
    layer = _blob_of_one_image(written, "pause:3.9")
    data = StorageTree(root).blob_path(Digest(layer))
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0x01
    data.write_bytes(bytes(content))
    bundle = tmp_path / "b.tar.zst"
    code, _, stderr = run_main(capsys, "pack", "--from-storage", str(root), "-o", str(bundle), "-q")
    assert code == RegistryContentError.exit_code, stderr
    assert layer in stderr and "content has digest" in stderr
    assert stderr.rstrip().endswith("(breaks: localhost/pause:3.9)")  # the one image that needs it, as verify says
    assert not bundle.exists() and list(tmp_path.glob("b.tar.zst*")) == []


def test_recovered_bundle_unpacks_with_the_same_digests(written: Written, fresh_registry: RunningRegistry,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "r.tar.zst"
    assert run_main(capsys, "pack", "--from-storage", str(written.storage), "--repo", "library/*",
                    "-o", str(bundle), "-q")[0] == 0
    code, _, stderr = run_main(capsys, "unpack", str(bundle), "--to", fresh_registry.host, "-q")
    assert code == 0, stderr
    for name in ("library/nginx:1.25.2-alpine", "library/nginx:stable-alpine"):
        repository, tag = name.split(":")
        assert tag in registry_tags(fresh_registry, repository)
    restored = StorageTree(fresh_registry.storage_dir)
    assert restored.manifest_get("library/nginx", "stable-alpine").digest == written.images[name].digest


@pytest.mark.parametrize("args, message", [
    (["--from-storage", "{tmp}"], "not a registry storage tree"),
    (["--from-storage", "{storage}", "--repo", "nothing/*"], "no repository matches nothing/*"),
    (["--from-storage", "{storage}", "quay.io/x:1"], "one of them"),
    (["--repo", "x/*", "quay.io/x:1"], "--repo selects"),
    (["--from-storage", "{storage}", "--storage-host", "not a host"], "--storage-host"),
])
def test_input_mistakes_exit_3(written: Written, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               args: list[str], message: str) -> None:
    filled = [a.format(tmp=tmp_path, storage=written.storage) for a in args]
    code, _, stderr = run_main(capsys, "pack", *filled, "-o", str(tmp_path / "x.tar.zst"))
    assert code == 3 and message in stderr, stderr

"""``imgbundle inventory`` and ``pack --since INVENTORY``: a delta of exactly what a site lacks.

The site is a real Distribution holding half the 12-image test set (under ``old/``, unpacked from a
bundle) and a second generated set (under ``other/``). Its inventory is taken through the CLI; the
whole set is then packed ``--since`` it, and unpacked under ``site/``: every blob the delta leaves out
must be mounted from the repository the inventory saw it in. Expectations come from walking the
generated layouts (support/sources.py) and from the registry's own storage tree.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import msgspec
import pytest

import imageset
from bundler.bundle import read_index
from bundler.errors import AuthError, InputError, NotFoundError, PartialFailureError, PushRefusedError
from bundler.inventory.format import Inventory, RepositoryEntry, decode_inventory, encode_inventory
from bundler.pack import pack, read_requests
from bundler.stores.bundle import BundleStore
from bundler.unpack import UnpackOptions, build_plan, plan_targets, unpack
from bundler.unpack.expected import check_expected
from support.cli import run_cli, run_main
from support.harbor import PASSWORD, start_harbor_stub
from support.images import seed_into
from support.memory import HOST, MemoryRegistry
from support.options import registry_options
from support.registry import RunningRegistry, start_registry
from support.servers import starts_server
from support.sources import SourceSet, assert_registry_holds, expected_state, read_source

CREATED = "2026-03-01T00:00:00Z"


@dataclass
class Site:
    source: RunningRegistry
    target: RunningRegistry
    whole: SourceSet
    """The 12-image set, with references on ``source``."""
    second: imageset.ImageSet
    """A second generated set (2 MiB), also at the site."""
    held: dict[str, int]
    """Blob digest -> size of every blob the target's tags reach: half the set and the second set."""
    inventory: Path
    workdir: Path

    def image_lines(self) -> list[str]:
        return [image.line for image in self.whole.images]


@pytest.fixture(scope="module")
@starts_server
def site(seeded_registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:  # noqa: ANN001
    source, images = seeded_registry
    workdir = tmp_path_factory.mktemp("inventory")
    whole = read_source(images, source.host)
    half = whole.images[: len(whole.images) // 2]
    second = imageset.generate(workdir / "second", images=imageset.MIN_IMAGES, total_size=2 * imageset.MiB, seed=7)
    with start_registry(workdir / "target") as target:
        bundle = workdir / "half.tar.zst"
        pack(read_requests([image.line for image in half], "half"), bundle, registry_options(source), jobs=4)
        unpack(bundle, UnpackOptions(to=f"{target.host}/old"), registry_options(target))
        seed_into(target, second, repo_prefix="other")
        tagged = [image for image in half if image.tag]  # the registry API lists no untagged manifest
        held = {d: s for image in tagged for d, s in image.blobs.items()} | read_source(second).blob_sizes()
        inventory = workdir / "site.json"
        run_cli("inventory", "--from", target.host, "-o", str(inventory), "-q")
        yield Site(source, target, whole, second, held, inventory, workdir)


def pack_since(site: Site, output: Path, *since: Path, extra: tuple[str, ...] = (), expect: int = 0) -> str:
    """``imgbundle pack`` of the whole set ``--since`` each of ``since``; its stderr."""
    arguments = [arg for path in since for arg in ("--since", str(path))]
    done = run_cli("pack", *site.image_lines(), "-o", str(output), "--created", CREATED, "-q", *arguments, *extra,
                   expect=expect)
    return done.stderr


@pytest.mark.registry
def test_the_inventory_lists_every_blob_the_site_holds_with_its_size(site: Site) -> None:
    inventory = decode_inventory(site.inventory.read_bytes())
    assert inventory.complete and inventory.source == site.target.host
    assert {blob.digest: blob.size for blob in inventory.blobs} == site.held
    names = {repository.name for repository in inventory.repositories}
    assert {f"old/{image.path}" for image in site.whole.images[:6]} <= names
    node = next(r for r in inventory.repositories if r.name == "old/calico/node")
    image = next(i for i in site.whole.images if i.path == "calico/node")
    assert node.tags == {"v3.26.4": image.digest} and set(node.manifests) == set(image.manifests)


@pytest.mark.registry
def test_a_delta_of_the_inventory_carries_exactly_what_the_site_lacks_and_unpacks_whole(site: Site,
                                                                                        tmp_path: Path) -> None:
    delta, again = tmp_path / "delta.tar.zst", tmp_path / "again.tar.zst"
    pack_since(site, delta, site.inventory)
    index = read_index(delta)
    needed = site.whole.blob_sizes()
    assert {entry.digest for entry in index.blobs} == set(needed) - set(site.held)
    assert {entry.digest for entry in index.external} == set(needed) & set(site.held)
    inventory = decode_inventory(site.inventory.read_bytes())
    holders = {r.name: set(r.blobs) for r in inventory.repositories}
    assert all(entry.digest in holders[entry.repository] for entry in index.external)
    assert [(b.kind, b.id) for b in index.bases] == [("inventory", inventory.checksum)] and index.version == "1.3"
    pack_since(site, again, site.inventory)
    assert hashlib.sha256(delta.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    listed = run_cli("list", str(delta)).stdout
    left = sum(entry.size for entry in index.external)
    assert f"delta of inventory {inventory.checksum} of {site.target.host}" in listed
    assert f"expects {len(index.external)} blobs" in listed and left > 0
    run_cli("unpack", str(delta), "--to", f"{site.target.host}/site", "-q")
    assert_registry_holds(site.target, expected_state(site.whole, lambda image: f"site/{image.path}"))


@pytest.mark.registry
def test_several_bases_count_as_their_union(site: Site, tmp_path: Path) -> None:
    """The inventory and a bundle of the rest (and of pause, untagged at the site): only manifests are carried."""
    rest = tmp_path / "rest.tar.zst"
    run_cli("pack", *[image.line for image in site.whole.images if not image.tag], *site.image_lines()[6:],
            "-o", str(rest), "-q")
    delta = tmp_path / "union.tar.zst"
    pack_since(site, delta, site.inventory, rest)
    index = read_index(delta)
    assert index.blobs == [] and len(index.bases) == 2
    assert {entry.digest for entry in index.external} == set(site.whole.blob_sizes())


@pytest.mark.registry
def test_harbor_inventory_through_the_project_api_and_a_round_trip_through_it(site: Site, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str],
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGBUNDLE_PASSWORD", PASSWORD)
    with start_harbor_stub(site.target, 401) as stub:
        inventory = tmp_path / "harbor.json"
        code, _, stderr = run_main(capsys, "inventory", "--from", stub.host, "--project", "old", "--username",
                                   "admin", "-o", str(inventory), "-q")
        assert code == 0, stderr
        listed = decode_inventory(inventory.read_bytes())
        half = {f"old/{image.path}" for image in site.whole.images[:6]}
        assert {r.name for r in listed.repositories} == half and listed.source == f"{stub.host}/old"
        assert stub.pages and all(project == "old" for project, _, _ in stub.pages)
        delta = tmp_path / "delta.tar.zst"
        pack_since(site, delta, inventory)
        assert {e.repository for e in read_index(delta).external} <= half
        code, _, stderr = run_main(capsys, "unpack", str(delta), "--to", f"{stub.host}/harbor", "-q")
        assert code == 0, stderr
    assert_registry_holds(site.target, expected_state(site.whole, lambda image: f"harbor/{image.path}"))


@pytest.mark.registry
def test_a_repository_list_file_chooses_what_is_listed(site: Site, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    names = tmp_path / "repos.txt"
    names.write_text("# two of them\nold/calico/node\n\nother/pause/\n")
    output = tmp_path / "two.json"
    code, _, stderr = run_main(capsys, "inventory", "--from", site.target.host, "-f", str(names), "-o", str(output),
                               "-q")
    assert code == 0, stderr
    assert [r.name for r in decode_inventory(output.read_bytes()).repositories] == ["old/calico/node", "other/pause"]


@pytest.mark.registry
def test_a_closed_htpasswd_catalog_needs_credentials(basic_registry: RunningRegistry, site: Site, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seed_into(basic_registry, site.second, repo_prefix="inventory")
    output = tmp_path / "basic.json"
    code, _, stderr = run_main(capsys, "inventory", "--from", basic_registry.host, "-o", str(output), "-q")
    assert code == AuthError.exit_code and "log in with docker login" in stderr and not output.exists()
    monkeypatch.setenv("IMGBUNDLE_PASSWORD", basic_registry.password or "")
    code, stdout, stderr = run_main(capsys, "inventory", "--from", basic_registry.host, "--repo", "inventory/*",
                                    "--username", basic_registry.username or "", "-o", str(output), "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["complete"] and summary["blobs"] == len(read_source(site.second).blob_sizes())
    assert summary["bytes"] == output.stat().st_size


@pytest.mark.registry
@pytest.mark.parametrize("damage", ["flip", "truncate", "edit"])
def test_a_damaged_inventory_is_refused(site: Site, tmp_path: Path, damage: str) -> None:
    data = bytearray(site.inventory.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[-40:]
    else:  # a consistent-looking edit: one blob size changed
        data[:] = data.replace(b'"size":', b'"size":1', 1)
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(bytes(data))
    stderr = pack_since(site, tmp_path / "x.tar.zst", damaged, expect=InputError.exit_code)
    assert f"--since {damaged}: damaged inventory" in stderr and not (tmp_path / "x.tar.zst").exists()


@pytest.mark.registry
def test_an_incomplete_inventory_is_refused_unless_allowed(site: Site, tmp_path: Path) -> None:
    """A storage tree in which one repository's layer is gone: that repository is named, the rest listed."""
    storage = tmp_path / "storage"
    shutil.copytree(site.target.storage_dir, storage)
    node = next(image for image in site.whole.images if image.path == "calico/node")
    layer = max(node.blobs, key=node.blobs.__getitem__)
    shutil.rmtree(storage / "docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:])
    inventory = tmp_path / "partial.json"
    done = run_cli("inventory", "--from-storage", str(storage), "-o", str(inventory), "-q",
                   expect=PartialFailureError.exit_code)
    assert "old/calico/node" in done.stderr and "marked incomplete" in done.stderr
    partial = decode_inventory(inventory.read_bytes())
    assert not partial.complete and "old/calico/node" in [entry.repository for entry in partial.failed]
    stderr = pack_since(site, tmp_path / "x.tar.zst", inventory, expect=InputError.exit_code)
    assert "an incomplete inventory" in stderr and "--allow-incomplete" in stderr
    pack_since(site, tmp_path / "x.tar.zst", inventory, extra=("--allow-incomplete",))
    carried = {entry.digest for entry in read_index(tmp_path / "x.tar.zst").blobs}
    assert layer in carried


def _inventory(**changes: object) -> Inventory:
    digest = "sha256:" + "a" * 64
    inventory = Inventory(format="imgbundle-inventory", version="1.0", created=CREATED, tool="test", source="h",
                          complete=True, failed=[], repositories=[RepositoryEntry("r", {"t": digest}, [digest], [])],
                          blobs=[])
    return msgspec.structs.replace(inventory, **changes)


def test_an_inventory_reads_back_as_written_and_its_checksum_names_it() -> None:
    inventory = _inventory()
    data = encode_inventory(inventory)
    assert decode_inventory(data) == inventory and data.endswith(f'"checksum":"{inventory.checksum}"}}\n'.encode())
    assert decode_inventory(data.rstrip(b"\n")) == inventory


@pytest.mark.parametrize("changes, message", [
    ({"complete": False}, "'complete' disagrees"),
    ({"repositories": [RepositoryEntry("r", {"t": "sha256:" + "b" * 64}, [], [])]}, "names an unlisted manifest"),
    ({"repositories": [RepositoryEntry("r", {}, [], ["sha256:" + "c" * 64])]}, "has no size"),
    ({"version": "2.0"}, "version 2.0 is not supported"),
])
def test_an_inventory_that_contradicts_itself_is_refused_even_with_a_good_checksum(changes: dict,
                                                                                   message: str) -> None:
    with pytest.raises(InputError, match=message):
        decode_inventory(encode_inventory(_inventory(**changes)))


class _RefusingMounts(MemoryRegistry):
    def blob_mount(self, repository: str, digest: str, source: str) -> bool:
        return False


@pytest.mark.parametrize("registry_class", [MemoryRegistry, _RefusingMounts])
def test_a_blob_only_the_recorded_repository_holds_is_mounted_from_it_or_the_refusal_names_both(
        bundle_file: Path, registry_class: type[MemoryRegistry]) -> None:
    with BundleStore.open(bundle_file) as store:
        plan = build_plan(store, plan_targets(list(store.index.images), f"{HOST}/site", False, False, []))
    blob = next(blob for blob in plan.blobs() if len(blob.repositories) == 1)
    memory = registry_class()
    memory.blobs["old/elsewhere"] = {blob.digest}  # not a repository of this push
    needer = blob.repositories[0]
    if registry_class is _RefusingMounts:
        with pytest.raises(PushRefusedError, match=f"{needer}: the target refused to mount {blob.digest} from "
                                                   "old/elsewhere, which holds it"):
            check_expected(plan, [blob.digest], memory, base="b", recorded={blob.digest: "old/elsewhere"})
        return
    with pytest.raises(NotFoundError, match="lacks 1 of the 1 blob"):
        check_expected(plan, [blob.digest], memory, base="b")
    check = check_expected(plan, [blob.digest], memory, base="b", recorded={blob.digest: "old/elsewhere"})
    assert check.mounted == 1 and blob.digest in memory.blobs[needer]

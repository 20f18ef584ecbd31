"""The image-set generator and seeder: the set is what it claims, and a registry serves it byte for byte.

Checks read the layout with our own small walker and with skopeo, and the registry with skopeo and plain
httpx, so that neither the generator nor the seeder is trusted to describe its own output.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import imageset
from bundler.reference import parse_image_list
from support.images import SMALL_IMAGES, SMALL_SEED, SMALL_SIZE, seed_into
from support.registry import RunningRegistry, registry_client, registry_get_manifest
from support.sources import skopeo_raw

SCRIPT = Path(imageset.__file__)
MiB = imageset.MiB
INDEX_TYPES = {imageset.OCI_INDEX, imageset.DOCKER_LIST}


# --------------------------------------------------------------------------------------------------------------
# Helpers: an independent reading of the layout


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def reachable(layout: Path, digest: str, media_type: str) -> dict[str, int]:
    """digest -> size of every blob an image reaches (manifests included), read from the layout files."""
    data = blob(layout, digest)
    found = {digest: len(data)}
    body = json.loads(data)
    if media_type in INDEX_TYPES:
        for child in body["manifests"]:
            found |= reachable(layout, child["digest"], child["mediaType"])
    else:
        for desc in [body["config"], *body["layers"]]:
            found[desc["digest"]] = desc["size"]
    return found


def layout_entries(layout: Path) -> list[dict[str, Any]]:
    return json.loads((layout / "index.json").read_text())["manifests"]


def canonical(data: bytes) -> bytes:
    return json.dumps(json.loads(data), separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------------------------
# The generated layout


def test_same_seed_gives_same_bytes_and_another_seed_does_not(small_imageset, tmp_path: Path) -> None:
    again = imageset.generate(tmp_path / "again", images=SMALL_IMAGES, total_size=SMALL_SIZE, seed=SMALL_SEED)
    assert [(i.name, i.digest) for i in again.images] == [(i.name, i.digest) for i in small_imageset.images]
    assert (tmp_path / "again" / "index.json").read_bytes() == (small_imageset.layout / "index.json").read_bytes()
    assert sorted(p.name for p in (tmp_path / "again" / "blobs" / "sha256").iterdir()) == \
        sorted(p.name for p in (small_imageset.layout / "blobs" / "sha256").iterdir())
    other = imageset.generate(tmp_path / "other", images=SMALL_IMAGES, total_size=SMALL_SIZE, seed=SMALL_SEED + 1)
    assert not {i.digest for i in other.images} & {i.digest for i in small_imageset.images}
    assert other.seed == SMALL_SEED + 1
    assert json.loads((tmp_path / "other" / "imageset.json").read_text())["seed"] == SMALL_SEED + 1


def test_layout_is_an_oci_layout_whose_blobs_match_their_names(small_imageset) -> None:
    layout = small_imageset.layout
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    files = list((layout / "blobs" / "sha256").iterdir())
    assert not [f for f in files if f.name.startswith(".tmp")], "temporary files left behind"
    for path in files:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    names = [e["annotations"][imageset.REF_NAME] for e in layout_entries(layout)]
    assert names == [i.name for i in small_imageset.images]
    hosts = [i.repository.split("/")[0] for i in small_imageset.images]
    assert not [h for h in hosts if "." in h or ":" in h or h == "localhost"], "names must carry no registry host"
    for entry in layout_entries(layout):
        for digest, size in reachable(layout, entry["digest"], entry["mediaType"]).items():
            assert len(blob(layout, digest)) == size, f"{digest} size differs from its descriptor"


def test_recorded_sizes_and_sharing_match_the_layout(small_imageset) -> None:
    layout = small_imageset.layout
    unique = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
    per_image = [sum(reachable(layout, i.digest, i.media_type).values()) for i in small_imageset.images]
    assert small_imageset.unique_bytes == unique
    assert [i.bytes for i in small_imageset.images] == per_image
    assert small_imageset.image_bytes_sum == sum(per_image)
    assert abs(unique - SMALL_SIZE) < 0.05 * SMALL_SIZE
    assert 0.2 < small_imageset.sharing < 0.6


def test_full_set_shares_like_real_life(tmp_path: Path) -> None:
    """Sixty kubespray-like images share 40-50% of their bytes (bases, calico's common layers)."""
    full = imageset.generate(tmp_path, images=60, total_size=20 * MiB, seed=SMALL_SEED)
    assert len(full.images) == 60
    assert 0.40 <= full.sharing <= 0.50, full.sharing
    assert abs(full.unique_bytes - 20 * MiB) < 0.03 * 20 * MiB
    assert len({i.name for i in full.images}) == 60


def test_every_special_case_is_in_the_small_set(small_imageset) -> None:
    kinds = {i.kind for i in small_imageset.images}
    assert kinds == {"docker-list", "oci-index", "oci-index+attestations", "docker-manifest", "oci-manifest"}
    for info in small_imageset.images:
        body = json.loads(blob(small_imageset.layout, info.digest))
        assert body["mediaType"] == info.media_type
        if info.kind == "docker-list":
            assert {c["mediaType"] for c in body["manifests"]} == {imageset.DOCKER_MANIFEST}
        if info.kind == "oci-index":
            assert {c["mediaType"] for c in body["manifests"]} == {imageset.OCI_MANIFEST}
        if info.kind in {"docker-manifest", "oci-manifest"}:
            assert len(info.platforms) == 1 and not info.children
    paths = [i.repository for i in small_imageset.images]
    assert sum(p.count("/") >= 1 for p in paths) >= 8 and any(p.count("/") >= 2 for p in paths)
    assert "pause" in paths and "calico/node" in paths and "library/nginx" in paths
    assert any(len(i.platforms) >= 5 for i in small_imageset.images)


def test_attestations_look_like_buildx_ones(small_imageset) -> None:
    attested = [i for i in small_imageset.images if i.kind == "oci-index+attestations"]
    assert len(attested) >= 2
    for info in attested:
        index = json.loads(blob(small_imageset.layout, info.digest))
        images = [m for m in index["manifests"] if m["platform"]["os"] != "unknown"]
        attestations = [m for m in index["manifests"] if m["platform"] == {"architecture": "unknown", "os": "unknown"}]
        assert len(attestations) == len(images) > 0
        assert {a["annotations"]["vnd.docker.reference.digest"] for a in attestations} == {m["digest"] for m in images}
        assert {a["annotations"]["vnd.docker.reference.type"] for a in attestations} == {"attestation-manifest"}
        for att in attestations:
            manifest = json.loads(blob(small_imageset.layout, att["digest"]))
            assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.in-toto+json"]
            statement = json.loads(blob(small_imageset.layout, manifest["layers"][0]["digest"]))
            subject = "sha256:" + statement["subject"][0]["digest"]["sha256"]
            assert subject == att["annotations"]["vnd.docker.reference.digest"]


def test_alias_and_noncanonical_manifests(small_imageset) -> None:
    aliases = [i for i in small_imageset.images if i.alias_of]
    assert len(aliases) == 1
    assert aliases[0].digest == small_imageset.image(aliases[0].alias_of).digest
    assert aliases[0].name != aliases[0].alias_of
    assert len(small_imageset.noncanonical) == 2  # an index and one of its children
    for digest in small_imageset.noncanonical:
        data = blob(small_imageset.layout, digest)
        assert b"\n" in data and b'" : ' in data
        assert canonical(data) != data and sha(canonical(data)) != digest


def test_configs_describe_their_platform_and_layers(small_imageset) -> None:
    layout = small_imageset.layout
    node = small_imageset.image("calico/node:v3.26.4")
    for child in node.children:
        manifest = json.loads(blob(layout, child.digest))
        config = json.loads(blob(layout, manifest["config"]["digest"]))
        os_name, arch, *variant = child.platform.split("/")
        assert (config["os"], config["architecture"], config.get("variant")) == (os_name, arch, (variant or [None])[0])
        assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])
        assert config["config"]["Labels"]["io.imgbundle.testdata.seed"] == str(small_imageset.seed)


def test_big_layer_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    big = 32 * MiB
    tracemalloc.start()
    try:
        image_set = imageset.generate(tmp_path, images=SMALL_IMAGES, total_size=2 * MiB, seed=7, big_layer=big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"generation peaked at {peak} bytes of Python memory"
    assert (tmp_path / "blobs" / "sha256" / image_set.big_layer_digest.split(":")[1]).stat().st_size == big
    cilium = image_set.image("cilium/cilium:v1.13.4")
    first = json.loads(blob(tmp_path, cilium.children[0].digest))
    assert image_set.big_layer_digest in [layer["digest"] for layer in first["layers"]]
    assert sha(blob(tmp_path, image_set.big_layer_digest)) == image_set.big_layer_digest


def test_image_list_parses_with_pins_comments_and_blank_lines(small_imageset) -> None:
    text = small_imageset.image_list("127.0.0.1:5000", repo_prefix="mirror")
    lines = text.splitlines()
    assert lines[0].startswith("#") and "" in lines
    refs = [ref for _, ref in parse_image_list(lines, "images.list")]
    assert len(refs) == len(small_imageset.images)
    assert {r.registry for r in refs} == {"127.0.0.1:5000"}
    assert all(r.repository.startswith("mirror/") for r in refs)
    coredns = small_imageset.image("coredns/coredns:v1.10.1")
    pause = small_imageset.image("pause:3.9")
    assert any(r.repository == "mirror/coredns/coredns" and r.tag == "v1.10.1" and r.digest == coredns.digest
               for r in refs)
    assert any(r.repository == "mirror/pause" and r.tag is None and r.digest == pause.digest for r in refs)


def test_imageset_json_round_trips(small_imageset) -> None:
    assert imageset.ImageSet.load(small_imageset.layout) == small_imageset


@pytest.mark.registry
def test_skopeo_reads_the_layout(small_imageset) -> None:
    """skopeo 1.9's oci: transport only sees OCI-typed index.json entries, so Docker-typed ones are not asked."""
    layout = small_imageset.layout
    oci = [i for i in small_imageset.images if i.media_type in {imageset.OCI_INDEX, imageset.OCI_MANIFEST}]
    assert "calico/node:v3.26.4" in [i.name for i in oci]
    for info in oci:
        assert sha(skopeo_raw(f"oci:{layout}:{info.name}")) == info.digest
    proc = subprocess.run(["skopeo", "inspect", "--override-arch", "arm64", f"oci:{layout}:calico/node:v3.26.4"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    inspected = json.loads(proc.stdout)
    arm64 = next(c for c in small_imageset.image("calico/node:v3.26.4").children if c.platform == "linux/arm64")
    manifest = json.loads(blob(layout, arm64.digest))
    assert inspected["Architecture"] == "arm64"
    assert inspected["Layers"] == [layer["digest"] for layer in manifest["layers"]]


def test_generate_refuses_a_non_empty_directory_and_too_few_images(tmp_path: Path) -> None:
    (tmp_path / "stale").write_text("x")
    with pytest.raises(FileExistsError):
        imageset.generate(tmp_path, images=SMALL_IMAGES, total_size=MiB)
    with pytest.raises(ValueError):
        imageset.generate(tmp_path / "new", images=SMALL_IMAGES - 1, total_size=MiB)


@pytest.mark.parametrize(("text", "size"), [("300M", 300 * MiB), ("5MiB", 5 * MiB), ("1.5G", 1536 * MiB),
                                            ("123", 123), ("4k", 4096)])
def test_parse_size(text: str, size: int) -> None:
    assert imageset.parse_size(text) == size


# --------------------------------------------------------------------------------------------------------------
# The seeded registry


def test_registry_serves_every_manifest_with_its_digest(seeded_registry) -> None:
    reg, image_set = seeded_registry
    for info in image_set.images:
        assert sha(skopeo_raw(f"docker://{reg.host}/{info.name}", "--tls-verify=false")) == info.digest, info.name
        for child in info.children:
            ref = f"docker://{reg.host}/{info.repository}@{child.digest}"
            assert sha(skopeo_raw(ref, "--tls-verify=false")) == child.digest


def test_registry_serves_noncanonical_bytes_unchanged(seeded_registry) -> None:
    reg, image_set = seeded_registry
    owner = next(i for i in image_set.images if i.digest in image_set.noncanonical)
    for digest in image_set.noncanonical:
        data, content_type, served_digest = registry_get_manifest(reg, owner.repository, digest)
        assert data == blob(image_set.layout, digest)
        assert served_digest == digest and content_type == json.loads(data)["mediaType"]
    by_tag, _, _ = registry_get_manifest(reg, owner.repository, owner.tag)
    assert by_tag == blob(image_set.layout, owner.digest) and canonical(by_tag) != by_tag


def test_registry_has_every_blob_in_every_repository(seeded_registry) -> None:
    reg, image_set = seeded_registry
    with registry_client(reg) as client:
        for info in image_set.images:
            for digest, size in reachable(image_set.layout, info.digest, info.media_type).items():
                if digest == info.digest or digest in {c.digest for c in info.children}:
                    continue
                head = client.head(f"/v2/{info.repository}/blobs/{digest}")
                assert head.status_code == 200, f"{info.repository} lacks {digest}"
                assert int(head.headers["Content-Length"]) == size
        biggest = max(image_set.images, key=lambda i: i.bytes)
        layer = max(reachable(image_set.layout, biggest.digest, biggest.media_type).items(), key=lambda kv: kv[1])
        assert sha(client.get(f"/v2/{biggest.repository}/blobs/{layer[0]}").content) == layer[0]


def test_seeding_again_uploads_nothing(seeded_registry) -> None:
    reg, image_set = seeded_registry
    result = seed_into(reg, image_set, jobs=2)
    assert (result.blobs_uploaded, result.blobs_mounted, result.bytes_uploaded) == (0, 0, 0)
    assert result.blobs_skipped > 0 and result.tags_pushed == len(image_set.images)


@pytest.mark.registry  # its registry fixture is looked up by name, out of the automatic rule
@pytest.mark.parametrize("flavour", ["tls_registry", "basic_registry", "token_registry"])
def test_seed_with_tls_basic_or_token_auth_and_a_prefix(flavour: str, small_imageset,
                                                          request: pytest.FixtureRequest) -> None:
    reg: RunningRegistry = request.getfixturevalue(flavour)
    prefix = f"seed-{flavour.split('_')[0]}/k8s"
    result = seed_into(reg, small_imageset, repo_prefix=prefix)
    assert result.blobs_uploaded > 0 and result.tags_pushed == len(small_imageset.images)
    assert result.blobs_mounted > 0, "shared layers should be mounted, not uploaded twice"
    for info in small_imageset.images:
        data, _, _ = registry_get_manifest(reg, f"{prefix}/{info.repository}", info.tag)
        assert sha(data) == info.digest


def test_seed_without_credentials_fails_loudly(basic_registry: RunningRegistry, small_imageset) -> None:
    with pytest.raises(imageset.SeedError, match="401"):
        imageset.seed_registry(small_imageset.layout, basic_registry.url, repo_prefix="anonymous")


def test_cli_generates_and_seeds(registry: RunningRegistry, tmp_path: Path) -> None:
    out = tmp_path / "set"
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--images", "14", "--size", "2M",
                          "--seed", "5", "--list-host", registry.host], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    image_set = imageset.ImageSet.load(out)
    assert (image_set.seed, len(image_set.images)) == (5, 14)
    assert parse_image_list((out / "images.list").read_text().splitlines())
    run = subprocess.run([sys.executable, str(SCRIPT), "seed", "--layout", str(out), "--to", registry.url,
                          "--repo-prefix", "cli-seed", "--jobs", "2"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for info in image_set.images:
        data, _, _ = registry_get_manifest(registry, f"cli-seed/{info.repository}", info.tag)
        assert sha(data) == info.digest
    bad = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "few"), "--images", "3"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "at least" in bad.stderr
    refused = subprocess.run([sys.executable, str(SCRIPT), "seed", "--layout", str(out), "--to",
                              "http://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "imageset seed:" in refused.stderr

"""The product end to end through the real ``imgbundle`` command, on a ~60-image multi-arch set.

These are the "Done when" checks of the pack and unpack issues: a bundle within 1% of the unique
blob bytes and byte-identical when packed twice; verify naming exactly the images a flipped byte
breaks; every reference, child manifest and blob on the target under the source digests; a second
unpack that uploads nothing. Expectations come from walking the generated OCI layout with json and
hashlib (tests/support/sources.py), never from our own code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import zstandard

import imageset
from support.cli import run_cli
from support.registry import RunningRegistry, registry_catalog, start_registry
from support.servers import starts_server
from support.sources import SourceSet, assert_registry_holds, expected_state, read_source, skopeo_raw

CREATED = "2026-01-02T03:04:05Z"
SEEKABLE_MAGIC = 0x8F92EAB1


@dataclass
class Site:
    """A source registry seeded with the 60-image set, its image list and its walked layout."""

    source: RunningRegistry
    image_set: "imageset.ImageSet"
    walked: SourceSet
    image_list: Path
    workdir: Path


@pytest.fixture(scope="module")
@starts_server
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("site")
    image_set = imageset.generate(workdir / "layout", images=60, total_size=40 * imageset.MiB, seed=7)
    with start_registry(workdir / "source") as source:
        imageset.seed_registry(image_set.layout, source.url)
        image_list = workdir / "images.list"
        image_list.write_text(image_set.image_list(source.host))
        walked = read_source(image_set, source.host)
        yield Site(source, image_set, walked, image_list, workdir)


@pytest.fixture(scope="module")
def bundle(site: Site) -> Path:
    output = site.workdir / "site.tar.zst"
    run_cli("pack", "-f", str(site.image_list), "-o", str(output), "--created", CREATED, "-q")
    return output


def test_bundle_is_within_one_percent_of_unique_bytes(site: Site, bundle: Path) -> None:
    unique = sum(site.walked.blob_sizes().values())
    assert abs(bundle.stat().st_size - unique) / unique < 0.01, (bundle.stat().st_size, unique)
    index = json.loads(run_cli("list", str(bundle), "--json").stdout)
    assert index["totals"]["images"] == 60
    assert index["totals"]["blobBytes"] == unique


def test_packing_twice_gives_identical_bytes(site: Site, bundle: Path) -> None:
    again = site.workdir / "again.tar.zst"
    run_cli("pack", "-f", str(site.image_list), "-o", str(again), "--created", CREATED, "-q", "--jobs", "1")
    assert again.read_bytes() == bundle.read_bytes()


def test_sidecar_works_with_sha256sum(bundle: Path) -> None:
    proc = subprocess.run(["sha256sum", "-c", bundle.name + ".sha256"], cwd=bundle.parent, capture_output=True, text=True)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


def test_bundle_holds_what_skopeo_sees_at_the_source(site: Site, bundle: Path) -> None:
    """Digests in the bundle index equal the digests of the bytes the source serves (a sample of 8)."""
    index = json.loads(run_cli("list", str(bundle), "--json").stdout)
    by_reference = {image["reference"]: image["digest"] for image in index["images"]}
    for image in site.walked.images[::8]:
        served = skopeo_raw(f"docker://{image.reference}", "--tls-verify=false")
        assert by_reference[image.reference] == "sha256:" + hashlib.sha256(served).hexdigest() == image.digest


def test_verify_says_ok(bundle: Path) -> None:
    proc = run_cli("verify", str(bundle))
    assert "OK 60 images" in proc.stdout and "content digest matches sidecar" in proc.stdout
    proc = run_cli("verify", "--file-checksum", str(bundle))
    assert "OK 60 images" in proc.stdout and "content digest and sha256 match sidecar" in proc.stdout


def test_verify_and_list_run_without_the_http_stack(bundle: Path) -> None:
    """They need no network: importing httpx and the plans would only delay them (0.17 s)."""
    script = (
        "import sys\n"
        "from bundler.cli import main\n"
        "for argv in (['verify', '-q', sys.argv[1]], ['list', sys.argv[1]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as done:\n"
        "        assert done.code in (0, None), done.code\n"
        "print(sorted(m for m in sys.modules if m == 'httpx' or m in ('bundler.pack', 'bundler.registry')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(bundle)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def _frame_containing(data: bytes, tar_offset: int) -> int:
    """Compressed offset of the zstd frame holding decompressed byte ``tar_offset`` (spec: seek table)."""
    (frames,) = struct.unpack_from("<I", data, len(data) - 9)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == SEEKABLE_MAGIC
    entries = len(data) - 9 - 8 * frames
    compressed = decompressed = 0
    for n in range(frames):
        csize, dsize = struct.unpack_from("<II", data, entries + 8 * n)
        if decompressed + dsize > tar_offset:
            return compressed
        compressed += csize
        decompressed += dsize
    raise AssertionError("offset beyond the bundle")


def _index_member_length(data: bytes) -> int:
    header = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read(512)
    size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
    return 512 + (size + 511) // 512 * 512


@pytest.mark.parametrize("which", ["shared base layer", "single-image layer", "config"])
def test_one_flipped_byte_names_exactly_the_images_it_breaks(site: Site, bundle: Path, tmp_path: Path, which: str) -> None:
    users: dict[str, set[str]] = {}
    for image in site.walked.images:
        for digest in image.blobs:
            users.setdefault(digest, set()).add(image.reference)
    configs = {json.loads(image.manifests[d])["config"]["digest"]
               for image in site.walked.images for d in image.manifests if b'"config"' in image.manifests[d]}
    sizes = site.walked.blob_sizes()
    candidates = sorted(d for d in users if sizes[d] > 4096 and d not in configs)
    pick = {
        "shared base layer": max(candidates, key=lambda d: (len(users[d]), d)),
        "single-image layer": next(d for d in candidates if len(users[d]) == 1),
        "config": sorted(configs)[0],
    }[which]
    index = json.loads(run_cli("list", str(bundle), "--json").stdout)
    entry = next(b for b in index["blobs"] if b["digest"] == pick)
    data = bytearray(bundle.read_bytes())
    frame = _frame_containing(bytes(data), _index_member_length(bytes(data)) + entry["offset"] + 512)
    data[frame + 200] ^= 0x20
    damaged = tmp_path / "damaged.tar.zst"
    damaged.write_bytes(bytes(data))

    proc = run_cli("verify", str(damaged), "-q", expect=23)
    bad_lines = [line for line in proc.stdout.splitlines() if line.startswith("BAD")]
    named = {ref for line in bad_lines if line.startswith(f"BAD {pick}:")
             for ref in line.split("(breaks: ")[1].rstrip(")").split(", ")}
    assert named == users[pick], proc.stdout
    assert "broken" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
@starts_server
def target(site: Site) -> Iterator[RunningRegistry]:
    with start_registry(site.workdir / "target") as registry:
        yield registry


def test_unpack_puts_everything_under_the_source_digests_and_reruns_upload_nothing(
    site: Site, bundle: Path, target: RunningRegistry
) -> None:
    first = json.loads(run_cli("unpack", str(bundle), "--to", f"{target.host}/mirror", "--json").stdout)
    assert all(image["ok"] for image in first["images"]) and len(first["images"]) == 60
    assert first["bytesUploaded"] == sum(site.walked.blob_sizes().values())
    assert_registry_holds(target, expected_state(site.walked, lambda image: f"mirror/{image.path}"))

    pinned = site.walked.images[0]
    served = skopeo_raw(f"docker://{target.host}/mirror/{pinned.path}@{pinned.digest}", "--tls-verify=false")
    assert "sha256:" + hashlib.sha256(served).hexdigest() == pinned.digest

    second = json.loads(run_cli("unpack", str(bundle), "--to", f"{target.host}/mirror", "--json").stdout)
    assert second["bytesUploaded"] == 0 and second["blobs"]["uploaded"] == 0
    assert second["manifests"]["pushed"] == 0 and second["tags"]["set"] == 0


def test_dry_run_prints_the_plan_without_pushing(site: Site, bundle: Path, target: RunningRegistry) -> None:
    proc = run_cli("unpack", str(bundle), "--to", f"{target.host}/elsewhere", "--dry-run")
    image = site.walked.images[1]
    assert f"{image.reference} -> {target.host}/elsewhere/{image.path}:{image.tag}@{image.digest}" in proc.stdout
    assert not any(repo.startswith("elsewhere/") for repo in registry_catalog(target))


def test_platform_subset_rewrites_the_index_and_says_so(site: Site, tmp_path: Path, registry_factory) -> None:
    attested = next(i for i in site.image_set.images if i.kind == "oci-index+attestations")
    reference = f"{site.source.host}/{attested.name}"
    output = tmp_path / "arm.tar.zst"
    proc = run_cli("pack", reference, "-o", str(output), "--platform", "linux/arm64")
    assert "digest" in proc.stderr and attested.digest in proc.stderr
    entry = json.loads(run_cli("list", str(output), "--json").stdout)["images"][0]
    assert entry["originalDigest"] == attested.digest and entry["digest"] != attested.digest
    assert entry["platforms"] == ["linux/arm64/v8"]

    extracted = _extract(output, tmp_path / "layout")
    index = json.loads((extracted / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes())
    kinds = sorted((m.get("platform", {}).get("architecture"), m.get("annotations", {}).get(
        "vnd.docker.reference.type", "image")) for m in index["manifests"])
    assert kinds == [("arm64", "image"), ("unknown", "attestation-manifest")]

    target = registry_factory()
    run_cli("unpack", str(output), "--to", target.host, "-q")
    served = skopeo_raw(f"docker://{target.host}/{attested.repository}:{attested.tag}", "--tls-verify=false")
    assert "sha256:" + hashlib.sha256(served).hexdigest() == entry["digest"]


def _extract(bundle: Path, into: Path) -> Path:
    into.mkdir()
    with contextlib.ExitStack() as stack:
        zstd = stack.enter_context(subprocess.Popen(["zstd", "-dc", str(bundle)], stdout=subprocess.PIPE))
        subprocess.run(["tar", "-x", "-C", str(into)], stdin=zstd.stdout, check=True)
    return into


def test_extracted_bundle_is_an_oci_layout_skopeo_copies_from(site: Site, bundle: Path, tmp_path: Path) -> None:
    layout = _extract(bundle, tmp_path / "layout")
    image = next(i for i in site.walked.images if i.media_type.startswith("application/vnd.oci.image.index"))
    proc = subprocess.run(
        ["skopeo", "copy", "--all", "--preserve-digests", f"oci:{layout}:{image.reference}", f"oci:{tmp_path / 'out'}:x"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out_index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert out_index["manifests"][0]["digest"] == image.digest


def test_missing_images_fail_listing_all_of_them_or_are_skipped(site: Site, tmp_path: Path) -> None:
    good = site.walked.images[1].reference
    missing = [f"{site.source.host}/nope/one:1", f"{site.source.host}/nope/two:2"]
    listing = tmp_path / "images.list"
    listing.write_text("\n".join([good, *missing]) + "\n")
    proc = run_cli("pack", "-f", str(listing), "-o", str(tmp_path / "x.tar.zst"), "-q", expect=12)
    assert all(ref in proc.stderr for ref in missing) and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("x.tar.zst*"))

    run_cli("pack", "-f", str(listing), "-o", str(tmp_path / "x.tar.zst"), "-q", "--skip-missing")
    index = json.loads(run_cli("list", str(tmp_path / "x.tar.zst"), "--json").stdout)
    assert [s["source"] for s in index["skipped"]] == missing
    assert [i["reference"] for i in index["images"]] == [good]


def test_bad_list_line_is_named_with_file_and_line(tmp_path: Path) -> None:
    listing = tmp_path / "images.list"
    listing.write_text("# comment\n\nquay.io/calico/node:v3.26.4\nquay.io/Calico/Node:v1\n")
    proc = run_cli("pack", "-f", str(listing), "-o", str(tmp_path / "x.tar.zst"), expect=3)
    assert f"{listing}:4:" in proc.stderr


def test_image_list_from_stdin(site: Site, tmp_path: Path) -> None:
    refs = "\n".join(image.reference for image in site.walked.images[10:13])
    run_cli("pack", "-f", "-", "-o", str(tmp_path / "s.tar.zst"), "-q", stdin=refs)
    index = json.loads(run_cli("list", str(tmp_path / "s.tar.zst"), "--json").stdout)
    assert len(index["images"]) == 3


def test_existing_output_is_refused_before_any_download(site: Site, bundle: Path) -> None:
    before = bundle.read_bytes()
    proc = run_cli("pack", f"{site.source.host}/nope/absent:1", "-o", str(bundle), expect=40)
    assert "exists" in proc.stderr and bundle.read_bytes() == before


"""Signatures, attestations and SBOMs travel with their images (issue #17).

A small signed set (tests/support/signing.py: two multi-arch images and a single one, every manifest
signed, one attested and with a signed SBOM, and a Helm chart artifact) is pushed into Distribution 2.8
(no referrers API: fallback tags and cosign tags) and into Distribution behind the referrers API stub
(tests/support/referrers_api.py). Packed, verified and unpacked into a fresh registry of the other kind
(so referrers found through the API land where only the fallback tag can list them, and the other way
round), every signature is checked at the target by the independent oracle of tests/support/signing.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.cli import run_cli
from support.faults import Answer, FaultProxy, Rule
from support.referrers_api import ReferrersApi
from support.registry import start_registry
from support.servers import starts_server
from support.signing import SignedSet, add_signed_sbom, make_signed_set, oracle_check

pytestmark = pytest.mark.registry

CREATED = "2026-12-01T00:00:00Z"


@dataclass
class Source:
    host: str
    signed: SignedSet
    bundle: Path
    storage: Path | None = None


def _pack(signed: SignedSet, output: Path, *flags: str) -> Path:
    listing = output.with_suffix(".list")
    listing.write_text("\n".join(signed.lines()) + "\n")
    run_cli("pack", "-f", str(listing), "-o", str(output), "--created", CREATED, "--no-cache", "--quiet", *flags)
    return output


@pytest.fixture(scope="module")
@starts_server
def plain_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """Distribution 2.8 without the referrers API, holding the signed set; packed once."""
    with start_registry(tmp_path_factory.mktemp("plain-source")) as registry:
        signed = make_signed_set(registry.host, "signed")
        yield Source(registry.host, signed, _pack(signed, tmp_path_factory.mktemp("plain") / "b.tar.zst"),
                     registry.storage_dir)


@pytest.fixture(scope="module")
@starts_server
def api_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """Distribution behind the referrers API stub, holding the signed set; packed once."""
    with start_registry(tmp_path_factory.mktemp("api-source")) as registry:
        proxy = FaultProxy(registry.host)
        try:
            ReferrersApi(proxy)
            signed = make_signed_set(proxy.host, "signed")
            yield Source(proxy.host, signed, _pack(signed, tmp_path_factory.mktemp("api") / "b.tar.zst"))
        finally:
            proxy.stop()


def _index(bundle: Path) -> dict:
    return json.loads(run_cli("list", "--json", str(bundle)).stdout)


@pytest.mark.parametrize("source_name", ["plain_source", "api_source"])
def test_pack_records_every_referrer(source_name: str, request: pytest.FixtureRequest) -> None:
    source: Source = request.getfixturevalue(source_name)
    index = _index(source.bundle)
    assert index["version"] == "1.2"
    images = {image["reference"].split("/", 1)[1]: image for image in index["images"]}
    app0 = images["signed/app0:1.0"]
    by_subject = {}
    for referrer in app0["referrers"]:
        by_subject.setdefault(referrer["subject"], []).append((referrer["foundBy"], referrer["artifactType"]))
    oci_way = "referrers-api" if source_name == "api_source" else "fallback-tag"
    signed = next(image for image in source.signed.images if image.repo == "signed/app0")
    sbom = next(r["digest"] for r in app0["referrers"] if r["artifactType"] == "application/spdx+json")
    assert sorted(by_subject[signed.digest]) == sorted([
        ("cosign-tag", "application/vnd.dev.cosign.simplesigning.v1+json"),
        ("cosign-tag", "application/vnd.dsse.envelope.v1+json"), (oci_way, "application/spdx+json")])
    for child in signed.children:
        assert by_subject[child] == [(oci_way, "application/vnd.dev.cosign.artifact.sig.v1+json")]
    assert by_subject[sbom] == [(oci_way, "application/vnd.dev.cosign.artifact.sig.v1+json")]
    assert len(app0["referrers"]) == 6
    carried = {entry["digest"] for entry in index["manifests"]}
    assert {r["digest"] for image in index["images"] for r in image.get("referrers", [])} <= carried
    chart = images["signed/charts/demo:0.1.0"]
    assert chart["artifactType"] == "application/vnd.cncf.helm.config.v1+json" and "referrers" not in chart


@pytest.fixture(scope="module")
@starts_server
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two fresh registries for the whole module: Distribution 2.8, and Distribution behind the API stub."""
    with start_registry(tmp_path_factory.mktemp("plain-target")) as plain, \
            start_registry(tmp_path_factory.mktemp("api-target")) as behind:
        proxy = FaultProxy(behind.host)
        try:
            ReferrersApi(proxy)
            yield {"plain": plain.host, "api": proxy.host}
        finally:
            proxy.stop()


def _unpack(bundle: Path, host: str, prefix: str) -> dict:
    run = run_cli("unpack", str(bundle), "--to", f"{host}/{prefix}", "--json")
    return json.loads(run.stdout)


def _oracle(signed: SignedSet, host: str, prefix: str) -> list[str]:
    return [problem for image in signed.images
            for problem in oracle_check(host, f"{prefix}/{image.repo}", image.tag, signed.signer)]


@pytest.mark.parametrize(("source_name", "target"), [("plain_source", "api"), ("api_source", "plain")])
def test_signatures_verify_at_the_target(source_name: str, target: str, targets: dict[str, str],
                                          request: pytest.FixtureRequest) -> None:
    source: Source = request.getfixturevalue(source_name)
    host, prefix = targets[target], f"from-{source_name.split('_')[0]}"
    run_cli("verify", str(source.bundle))
    first = _unpack(source.bundle, host, prefix)
    assert first["referrers"]["pushed"] == 6 + 3 + 1  # app0: 6; app1: its index and two children; app2: one
    assert first["referrers"]["fallbackIndexesUpdated"] == (6 if target == "plain" else 0)
    assert _oracle(source.signed, host, prefix) == []
    again = _unpack(source.bundle, host, prefix)
    assert again["referrers"] == {"pushed": 0, "present": 10, "fallbackIndexesUpdated": 0}
    assert again["manifests"]["pushed"] == 0 and again["tags"]["set"] == 0 and again["blobs"]["uploaded"] == 0


def test_no_referrers_leaves_them_out_and_the_oracle_fails(plain_source: Source, targets: dict[str, str],
                                                           tmp_path: Path) -> None:
    bundle = _pack(plain_source.signed, tmp_path / "bare.tar.zst", "--no-referrers")
    index = _index(bundle)
    assert index["version"] == "1.0" and not any("referrers" in image for image in index["images"])
    _unpack(bundle, targets["plain"], "bare")
    assert len(_oracle(plain_source.signed, targets["plain"], "bare")) == 3 + 3 + 1  # every digest unsigned


def test_artifact_type_keeps_only_that_kind(api_source: Source, tmp_path: Path) -> None:
    bundle = _pack(api_source.signed, tmp_path / "sbom.tar.zst", "--artifact-type", "application/spdx+json")
    referrers = [r for image in _index(bundle)["images"] for r in image.get("referrers", [])]
    assert [r["artifactType"] for r in referrers] == ["application/spdx+json"]
    run_cli("pack", "x", "-o", str(tmp_path / "x.tar.zst"), "--no-referrers", "--artifact-type", "a/b", expect=2)


def test_platform_subset_drops_referrers_of_dropped_children(plain_source: Source, tmp_path: Path) -> None:
    listing = tmp_path / "one.list"
    listing.write_text(f"{plain_source.host}/signed/app0:1.0\n")
    output = tmp_path / "amd64.tar.zst"
    run = run_cli("pack", "-f", str(listing), "-o", str(output), "--platform", "linux/amd64", "--no-cache")
    assert "3 signatures or other referrers" in run.stderr
    (image,) = _index(output)["images"]
    signed = plain_source.signed.images[0]
    assert image["originalDigest"] == signed.digest and image["originalReferrers"] == 3
    kept_children = {r["subject"] for r in image["referrers"]}
    assert len(image["referrers"]) == 1 and kept_children < set(signed.children)


def test_list_shows_what_is_attached_and_what_an_artifact_is(plain_source: Source) -> None:
    rows = {line.split()[0].split("/", 1)[1]: line.rstrip()
            for line in run_cli("list", str(plain_source.bundle), env={"COLUMNS": "250"}).stdout.splitlines()
            if "/signed/" in line}
    assert rows["signed/app0:1.0"].endswith("4 signatures, 1 attestation, 1 SBOM (spdx)")
    assert rows["signed/app2:1.0"].endswith("1 signature")
    assert "artifact application/vnd.cncf.helm.config.v1+json" in rows["signed/charts/demo:0.1.0"]


def test_a_delta_carries_new_referrers_of_old_images(tmp_path: Path, targets: dict[str, str]) -> None:
    with start_registry(tmp_path / "registry") as registry:
        signed = make_signed_set(registry.host, "delta")
        base = _pack(signed, tmp_path / "base.tar.zst")
        single = signed.images[2]
        add_signed_sbom(signed, single)
        delta = _pack(signed, tmp_path / "delta.tar.zst", "--since", str(base))
    index = _index(delta)
    assert index["version"] == "1.2" and index["base"]
    (entry,) = [image for image in index["images"] if image["reference"].endswith("/delta/app2:1.0")]
    assert sorted(r["artifactType"] for r in entry["referrers"]) == [
        "application/spdx+json", "application/vnd.dev.cosign.artifact.sig.v1+json",
        "application/vnd.dev.cosign.simplesigning.v1+json"]
    assert index["external"]  # the signatures' shared config blob came with the base
    _unpack(base, targets["plain"], "monthly")
    second = _unpack(delta, targets["plain"], "monthly")
    assert second["referrers"]["pushed"] == 2 and second["manifests"]["pushed"] == 0
    assert _oracle(signed, targets["plain"], "monthly") == []


def test_a_registry_listing_a_referrer_of_something_else_is_refused(plain_source: Source, tmp_path: Path) -> None:
    image = plain_source.signed.images[2]
    signature = httpx.head(f"http://{plain_source.host}/v2/{image.repo}/manifests/{image.digest.replace(':', '-')}.sig",
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    listing = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": int(signature.headers["content-length"]),
         "digest": signature.headers["docker-content-digest"]}]}  # a signature without subject: not a referrer
    proxy = FaultProxy(plain_source.host)
    try:
        proxy.rules.append(Rule("GET", "/referrers/", answer=lambda seen, forward: Answer(
            200, [("Content-Type", "application/vnd.oci.image.index.v1+json")], json.dumps(listing).encode())))
        run = run_cli("pack", f"{proxy.host}/{image.repo}:{image.tag}", "-o", str(tmp_path / "b.tar.zst"),
                      "--no-cache", expect=14)
    finally:
        proxy.stop()
    assert "names subject None" in run.stderr


def test_all_from_packs_images_with_their_referrers_not_referrer_tags_as_images(plain_source: Source,
                                                                                 tmp_path: Path) -> None:
    output = tmp_path / "all.tar.zst"
    run_cli("pack", "--all-from", plain_source.host, "--repo", "signed/app0", "-o", str(output), "--no-cache")
    (image,) = _index(output)["images"]
    assert image["reference"].endswith("/signed/app0:1.0") and len(image["referrers"]) == 6


def test_a_registry_without_the_referrers_api_is_asked_once(plain_source: Source, tmp_path: Path) -> None:
    proxy = FaultProxy(plain_source.host)
    try:
        lines = [line.replace(plain_source.host, proxy.host) for line in plain_source.signed.lines()]
        first = plain_source.signed.images[0]
        lines.append(f"{proxy.host}/{first.repo}@{first.digest}")  # a second image of the first repository
        run_cli("pack", *lines, "-o", str(tmp_path / "b.tar.zst"), "--no-cache")
        assert len(proxy.requests("GET", "/referrers/")) == 1  # its 404 says there is no such API
        assert len(proxy.requests("GET", "/tags/list")) == len(lines) - 1  # one listing per repository
    finally:
        proxy.stop()
    images = _index(tmp_path / "b.tar.zst")["images"]
    found = [len(image["referrers"]) for image in images if f"/{first.repo}:" in image["reference"]
             or f"/{first.repo}@" in image["reference"]]
    assert found == [6, 6]  # the shared listing finds every tag for both


def test_an_image_whose_signature_is_refused_fails(plain_source: Source, targets: dict[str, str]) -> None:
    refusal = json.dumps({"errors": [{"code": "DENIED", "message": "signatures are not welcome"}]}).encode()
    proxy = FaultProxy(targets["plain"])
    try:
        proxy.rules.append(Rule("PUT", r"/manifests/sha256-[0-9a-f]+\.sig$", answer=lambda seen, forward: Answer(
            403, [("Content-Type", "application/json")], refusal)))
        run = run_cli("unpack", str(plain_source.bundle), "--to", f"{proxy.host}/refused", expect=30)  # partly
    finally:
        proxy.stop()
    assert "3 of 4 images failed" in run.stderr and "signed/app0:1.0: referrers: " in run.stderr
    assert "signatures are not welcome" in run.stderr
    assert "signed/charts/demo" not in run.stderr  # the unsigned artifact went through


def test_from_storage_finds_the_referrers_by_their_tags(plain_source: Source, tmp_path: Path) -> None:
    output = tmp_path / "disk.tar.zst"
    run_cli("pack", "--from-storage", str(plain_source.storage), "--repo", "signed/app0", "-o", str(output))
    (image,) = _index(output)["images"]
    assert sorted(r["foundBy"] for r in image["referrers"]) == ["cosign-tag"] * 2 + ["fallback-tag"] * 4

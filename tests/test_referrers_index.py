"""Format 1.2: the per-image referrer records of ``imgbundle.json``, how readers check them, and the bundle
as a read store serving them (no registry: bundles written from the synthetic set of tests/support/bundles)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from bundler.bundle import FoundBy, ReferrerEntry
from bundler.bundle.index import decode_index, encode_index
from bundler.digest import Digest
from bundler.errors import CorruptBundleError
from bundler.oci import OCI_MANIFEST
from bundler.stores.bundle import BundleStore
from bundler.verify import verify_bundle
from bundler.verify.report import ProblemKind

from support.bundles import ImageSet, blob_frame_offset, flip, make_image_set
from support.cli import run_cli

SUBJECT_TYPE = "application/spdx+json"


def _signed_set() -> tuple[ImageSet, list[ReferrerEntry]]:
    """The synthetic set with two referrers on its multi-arch image: an SBOM (OCI 1.1) and a cosign signature."""
    images = make_image_set()
    top = images.images[0]
    sbom = images.add_manifest({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SUBJECT_TYPE,
                                "config": images.add_blob(b"{}", "application/vnd.oci.empty.v1+json"),
                                "layers": [images.add_blob(b'{"spdxVersion":"SPDX-2.3"}', SUBJECT_TYPE)],
                                "subject": {"mediaType": top.media_type, "digest": top.digest, "size": 1},
                                "annotations": {"created": "today"}}, OCI_MANIFEST)
    signature = images.add_manifest({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                     "config": images.add_blob(b"{}", "application/vnd.oci.image.config.v1+json"),
                                     "layers": [images.add_blob(b"payload", "application/vnd.dev.cosign.simplesigning.v1+json")]},
                                    OCI_MANIFEST)
    referrers = [
        ReferrerEntry(digest=sbom.digest, media_type=OCI_MANIFEST, artifact_type=SUBJECT_TYPE, subject=top.digest,
                      found_by=FoundBy.REFERRERS_API, annotations={"created": "today"}),
        ReferrerEntry(digest=signature.digest, media_type=OCI_MANIFEST,
                      artifact_type="application/vnd.dev.cosign.simplesigning.v1+json", subject=top.digest,
                      found_by=FoundBy.COSIGN_TAG, tag=top.digest.replace(":", "-") + ".sig"),
    ]
    images.images[0] = msgspec.structs.replace(top, referrers=referrers)
    return images, referrers


@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ReferrerEntry]]:
    images, referrers = _signed_set()
    return images.write(tmp_path_factory.mktemp("signed") / "b.tar.zst").path, referrers


def test_a_bundle_with_referrers_is_version_1_2_and_serves_them(signed_bundle) -> None:
    path, (sbom, signature) = signed_bundle
    with BundleStore.open(path) as store:
        assert store.index.version == "1.2"
        repository = "quay.io/calico/node"
        (listed,) = store.referrers(repository, Digest(sbom.subject))
        assert (listed.digest, listed.artifact_type, listed.annotations) == (sbom.digest, SUBJECT_TYPE,
                                                                              {"created": "today"})
        assert listed.size == len(store.manifest_get(repository, sbom.digest).data)
        assert store.referrers("example.com/multi", Digest(sbom.subject)) == []  # recorded per image
        assert signature.tag in store.tags_list(repository)
        assert store.manifest_get(repository, signature.tag).digest == signature.digest


def test_a_dry_run_says_per_image_what_attached_artifacts_would_go_too(signed_bundle) -> None:
    """In list's ATTACHED words; images with none attached keep the plain line (no registry is asked)."""
    path, _ = signed_bundle
    run = run_cli("unpack", "--dry-run", str(path), "--to", "127.0.0.1:9/m")
    lines = {line.split(" -> ")[0]: line for line in run.stdout.splitlines() if " -> " in line}
    assert lines["quay.io/calico/node:v3.26.4"].endswith("(attached: 1 signature, 1 SBOM (spdx))"), run.stdout
    assert [source for source, line in lines.items() if "attached" in line] == ["quay.io/calico/node:v3.26.4"]
    assert "dry run: 4 images with 2 attached artifacts, " in run.stdout, run.stdout


def test_without_referrers_the_version_stays_1_0(tmp_path: Path) -> None:
    assert make_image_set().write(tmp_path / "b.tar.zst").index.version == "1.0"


def _edited(path: Path, edit) -> bytes:
    with BundleStore.open(path) as store:
        document = msgspec.json.decode(encode_index(store.index))
    edit(document["images"][0]["referrers"])
    return msgspec.json.encode(document)


@pytest.mark.parametrize("edit", [
    pytest.param(lambda refs: refs[0].update(digest="sha256:" + "0" * 64), id="not-carried"),
    pytest.param(lambda refs: refs[1].update(tag="latest"), id="cosign-tag-not-its-subject"),
    pytest.param(lambda refs: refs[0].update(tag=refs[1]["tag"]), id="tag-on-an-oci-referrer"),
    pytest.param(lambda refs: refs[0].update(subject=refs[1]["digest"]), id="before-its-subject"),
])
def test_readers_refuse_inconsistent_referrer_records(signed_bundle, edit) -> None:
    with pytest.raises(CorruptBundleError):
        decode_index(_edited(signed_bundle[0], edit))


def test_verify_names_the_image_a_damaged_referrer_breaks(signed_bundle, tmp_path: Path) -> None:
    path, (sbom, _) = signed_bundle
    with BundleStore.open(path) as store:
        spdx = store.manifest_get("", sbom.digest).manifest().layers[0].digest
    data = path.read_bytes()
    damaged = tmp_path / "damaged.tar.zst"
    damaged.write_bytes(flip(data, blob_frame_offset(data, spdx) + 20))
    report = verify_bundle(damaged)
    (problem,) = [p for p in report.problems if p.member == spdx]
    assert problem.images == ["quay.io/calico/node:v3.26.4"]


def test_verify_refuses_a_referrer_recorded_on_another_subject(tmp_path: Path) -> None:
    images, (sbom, signature) = _signed_set()
    child = images.manifests[images.images[0].digest].index().manifests[0].digest
    moved = msgspec.structs.replace(sbom, subject=child)  # part of the image, but not what the SBOM names
    images.images[0] = msgspec.structs.replace(images.images[0], referrers=[moved, signature])
    report = verify_bundle(images.write(tmp_path / "b.tar.zst").path)
    (problem,) = report.problems
    assert (problem.member, problem.kind) == (sbom.digest, ProblemKind.REFERRER_MISMATCH)
    assert problem.images == ["quay.io/calico/node:v3.26.4"]

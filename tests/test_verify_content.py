"""verify by the sidecar's content digest (spec/bundle-format.md section 10): what that path catches on its own,
what only ``--file-checksum`` catches, and that a sidecar without the line still takes the thorough path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bundler.bundle import read_sidecar
from bundler.bundle.layout import OCI_INDEX_NAME
from bundler.progress import NULL_PROGRESS
from bundler.verify import ProblemKind, SidecarState, verify_bundle
from bundler.verify.content import check_by_content
from bundler.verify.report import CHECKSUM

from support.bundles import (
    ImageSet,
    blob_frame_offset,
    craft,
    flip,
    make_image_set,
    member_bytes,
    rebuild,
    split_members,
)
from support.cli import run_main

CONTENT_PREFIX = "# imgbundle content sha256:"


@pytest.fixture(scope="module")
def images() -> ImageSet:
    return make_image_set()


@pytest.fixture
def bundle(images: ImageSet, tmp_path: Path) -> Path:
    return images.write(tmp_path / "b.tar.zst").path


def sidecar_lines(bundle: Path) -> list[str]:
    return bundle.with_name(bundle.name + ".sha256").read_text().splitlines()


def content_line(bundle: Path) -> str:
    return sidecar_lines(bundle)[1].removeprefix(CONTENT_PREFIX)


def by_content(bundle: Path) -> tuple[bool, str | None]:
    """What the content path alone concluded: whether it vouched for the bundle, and the digest it computed."""
    found = check_by_content(bundle, content_line(bundle), NULL_PROGRESS, file_checksum=False)
    return found.checked is not None, found.content


def test_a_damaged_blob_is_caught_by_the_content_path_and_named_by_the_thorough_one(images: ImageSet,
                                                                                    bundle: Path) -> None:
    largest = max(images.blobs, key=lambda digest: len(images.blobs[digest][0]))
    data = bundle.read_bytes()
    bundle.write_bytes(flip(data, blob_frame_offset(data, largest) + 600))
    assert by_content(bundle) == (False, None)  # a frame failed its checksum: no digest for the stream
    report = verify_bundle(bundle)
    assert {p.member: p.kind for p in report.problems} == {largest: ProblemKind.DAMAGED,
                                                           CHECKSUM: ProblemKind.CHECKSUM_MISMATCH}


def test_a_changed_index_json_fails_the_content_digest(bundle: Path) -> None:
    """index.json still parses and still names every image: only the content digest can tell."""
    expected = content_line(bundle)
    sidecar = bundle.with_name(bundle.name + ".sha256").read_text()

    def respaced(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [(name, json.dumps(json.loads(data)).encode() if name == OCI_INDEX_NAME else data)
                for name, data in members]

    bundle.write_bytes(rebuild(bundle.read_bytes(), respaced))
    bundle.with_name(bundle.name + ".sha256").write_text(sidecar)
    vouched, computed = by_content(bundle)
    assert not vouched and computed not in (None, expected)
    report = verify_bundle(bundle)
    assert not report.ok and report.sidecar.state is SidecarState.MISMATCH
    assert {p.member: p.kind for p in report.problems} == {CHECKSUM: ProblemKind.CHECKSUM_MISMATCH}


def test_a_wrong_content_line_fails_with_the_checksum_exit_code(bundle: Path, capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    sidecar = bundle.with_name(bundle.name + ".sha256")
    lines = sidecar_lines(bundle)
    sidecar.write_text(f"{lines[0]}\n{CONTENT_PREFIX}{'0' * 64}\n")
    report = verify_bundle(bundle)
    assert report.sidecar.state is SidecarState.MISMATCH and "content digest" in report.sidecar.detail
    assert [p.kind for p in report.problems] == [ProblemKind.CHECKSUM_MISMATCH]
    code, out, _ = run_main(capsys, "verify", str(bundle))
    assert code == 23 and "MISMATCH" in out  # CorruptBundleError's code, as for a damaged file


def test_only_the_file_checksum_sees_a_recompressed_bundle(bundle: Path) -> None:
    """The same tar stream compressed at another level: other file bytes, the same content digest."""
    original = bundle.read_bytes()
    recompressed = craft([member_bytes(name, data) for name, data in split_members(original)], level=19)
    assert recompressed != original
    bundle.write_bytes(recompressed)
    assert verify_bundle(bundle).sidecar.state is SidecarState.CONTENT_OK
    checked = verify_bundle(bundle, file_checksum=True)
    assert checked.sidecar.state is SidecarState.MISMATCH
    assert [p.kind for p in checked.problems] == [ProblemKind.CHECKSUM_MISMATCH]


def test_a_sidecar_without_the_content_line_takes_the_thorough_path(bundle: Path) -> None:
    sidecar = bundle.with_name(bundle.name + ".sha256")
    sidecar.write_text(sidecar_lines(bundle)[0] + "\n")
    assert read_sidecar(bundle) is not None
    report = verify_bundle(bundle)
    assert report.ok and report.sidecar.state is SidecarState.OK
    assert str(report.sidecar) == "ok (sha256 matches sidecar)"

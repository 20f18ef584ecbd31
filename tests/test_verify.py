"""verify's report as data: the kind of each problem, the sidecar state, and the images each breaks.

The text and JSON these render to are pinned through the command (test_cli_e2e, test_hostile_cli,
test_volumes, test_delta); here the decisions are checked on the types they are made on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.bundle import file_sha256
from bundler.oci import OCI_INDEX
from bundler.verify import ProblemKind, SidecarCheck, SidecarState, VerifyReport, verify_bundle
from bundler.verify.report import CHECKSUM, SEEK_TABLE, STREAM
from support.bundles import ImageSet, blob_frame_offset, flip, make_image_set, pipe_from, seek_entries


@pytest.fixture(scope="module")
def images() -> ImageSet:
    return make_image_set()


@pytest.fixture
def bundle(images: ImageSet, tmp_path: Path) -> Path:
    return images.write(tmp_path / "b.tar.zst").path


def verify_piped(path: Path) -> VerifyReport:
    """``verify -`` as the command runs it: from a real pipe."""
    process = pipe_from(path)
    assert process.stdout is not None
    try:
        return verify_bundle(Path("<stdin>"), stream=process.stdout)
    finally:
        process.stdout.close()
        process.wait()


def kinds(report: VerifyReport) -> dict[str, ProblemKind]:
    return {problem.member: problem.kind for problem in report.problems}


def broken(report: VerifyReport) -> set[str]:
    return {image for problem in report.problems for image in problem.images}


def everything(images: ImageSet) -> set[str]:
    return {image.reference for image in images.images}


@pytest.mark.parametrize(("check", "line"), [
    (SidecarCheck(SidecarState.OK), "ok (sha256 matches sidecar)"),
    (SidecarCheck(SidecarState.OK, volumes=3), "ok (sha256 of all 3 volumes match sidecar)"),
    (SidecarCheck(SidecarState.MISMATCH, "file ab, sidecar cd"), "MISMATCH: file ab, sidecar cd"),
    (SidecarCheck(SidecarState.ABSENT), "no sidecar (skipped)"),
    (SidecarCheck(SidecarState.UNCHECKED), "not checked (stream damaged)"),
    (SidecarCheck(SidecarState.PIPED, "ab"), "no sidecar for a pipe; compare by hand: sha256 ab"),
])
def test_each_sidecar_state_reads_as_the_line_the_user_sees(check: SidecarCheck, line: str) -> None:
    assert str(check) == line


def test_a_whole_bundle_matches_its_sidecar_and_a_pipe_shows_its_sha256(bundle: Path) -> None:
    report = verify_bundle(bundle)
    assert report.ok and report.sidecar == SidecarCheck(SidecarState.CONTENT_OK)
    assert report.as_dict()["checksum"] == "ok (content digest matches sidecar; the compressed file was not hashed)"
    assert verify_bundle(bundle, file_checksum=True).sidecar == SidecarCheck(SidecarState.CONTENT_AND_FILE_OK)
    piped = verify_piped(bundle)
    assert piped.ok and piped.sidecar == SidecarCheck(SidecarState.PIPED, file_sha256(bundle))
    bundle.with_name("b.tar.zst.sha256").unlink()
    assert verify_bundle(bundle).sidecar.state is SidecarState.ABSENT


def test_a_flipped_byte_damages_one_blob_and_only_its_images(images: ImageSet, bundle: Path) -> None:
    shared = max(images.blobs, key=lambda digest: len(images.blobs[digest][0]))
    data = bundle.read_bytes()
    bundle.write_bytes(flip(data, blob_frame_offset(data, shared) + 600))
    report = verify_bundle(bundle)
    assert report.sidecar.state is SidecarState.MISMATCH
    assert kinds(report) == {shared: ProblemKind.DAMAGED, CHECKSUM: ProblemKind.CHECKSUM_MISMATCH}
    users = {image.reference for image in images.images if image.media_type == OCI_INDEX}  # both platforms share it
    assert broken(report) == users
    assert not any(problem.kind.breaks_every_image for problem in report.problems)


def test_a_truncated_bundle_has_no_usable_seek_table_so_every_image_is_broken(images: ImageSet, bundle: Path
                                                                              ) -> None:
    data = bundle.read_bytes()
    bundle.write_bytes(data[: len(data) // 2])
    report = verify_bundle(bundle)
    found = kinds(report)
    assert found.pop(SEEK_TABLE) is ProblemKind.SEEK_TABLE_UNUSABLE
    assert ProblemKind.NOT_CHECKED in found.values()
    assert broken(report) == everything(images)
    piped = verify_piped(bundle)
    assert piped.sidecar.state is SidecarState.UNCHECKED
    assert SEEK_TABLE not in kinds(piped) and ProblemKind.NOT_CHECKED in kinds(piped).values()


def test_a_damaged_end_of_archive_breaks_every_image(images: ImageSet, bundle: Path) -> None:
    data = bundle.read_bytes()
    end_frame = sum(compressed for compressed, _ in seek_entries(data)[:-1])
    bundle.write_bytes(flip(data, end_frame + 6, 0x01))
    for report in (verify_bundle(bundle), verify_piped(bundle)):
        assert kinds(report)[STREAM] is ProblemKind.ARCHIVE_END_DAMAGED
        assert broken(report) == everything(images)


def test_a_pipe_broken_in_the_last_member_names_at_least_the_images_a_file_check_names(tmp_path: Path) -> None:
    """The last frame's checksum fails only as the reader moves past the last member's data: from a
    pipe, the end of the archive and the seek table are never reached, so every image counts as broken."""
    images = make_image_set()
    for orphan in [digest for digest in images.blobs if digest.startswith("sha512:")]:
        del images.blobs[orphan]  # so that the last member is a blob an image needs
    path = images.write(tmp_path / "b.tar.zst").path
    data = path.read_bytes()
    last_frame_end = sum(compressed for compressed, _ in seek_entries(data)[:-1])  # the end-of-archive frame follows
    path.write_bytes(flip(data, last_frame_end - 2, 0x01))
    from_file = verify_bundle(path)
    last_blob = max(images.blobs)
    assert kinds(from_file) == {last_blob: ProblemKind.DAMAGED, CHECKSUM: ProblemKind.CHECKSUM_MISMATCH}
    assert broken(from_file)
    piped = verify_piped(path)
    assert kinds(piped) == {STREAM: ProblemKind.ARCHIVE_END_DAMAGED}
    assert broken(from_file) <= broken(piped) == everything(images)

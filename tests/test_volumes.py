"""Split bundles (``pack --split``): volumes on disk, reading them as one bundle, and every way a set breaks.

The expectations come from the one-file bundle written from the same images (a split is a plain byte
split of it), from ``sha256sum``, ``cat``, ``zstd`` and ``tar``, and from a real registry after an unpack.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bundler.bundle import BundleReader, read_index
from bundler.bundle.seektable import parse_seek_table
from bundler.bundle.volumes import BundleFiles, bundle_from_paths, find_bundle, volume_path
from bundler.errors import IncompleteVolumeSetError, InputError, LocalIOError
from bundler.verify import SidecarState, verify_bundle
from support.bundles import ImageSet, make_image_set
from support.cli import run_cli
from support.registry import RunningRegistry
from support.sources import assert_registry_holds, expected_state, read_source

SPLIT = 1024 * 1024
"""Volumes below 1 MiB: the 9.5 MB test bundle makes ten of them."""


@pytest.fixture(scope="module")
def images() -> ImageSet:
    return make_image_set(big=True)


@pytest.fixture(scope="module")
def written(images: ImageSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same bundle twice: one file, and split into volumes below SPLIT bytes."""
    directory = tmp_path_factory.mktemp("volumes")
    images.write(directory / "one.tar.zst")
    result = images.write(directory / "b.tar.zst", split=SPLIT)
    assert not (directory / "b.tar.zst").exists()
    assert result.volumes == tuple(volume_path(directory / "b.tar.zst", n) for n in range(len(result.volumes)))
    return directory / "one.tar.zst", directory / "b.tar.zst"


@pytest.fixture
def copy(written: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the split set (NAME, volumes, sidecar) to damage."""
    for path in written[1].parent.glob("b.tar.zst.*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "b.tar.zst"


def volumes_of(name: Path) -> list[Path]:
    return sorted(name.parent.glob(name.name + ".[0-9][0-9][0-9]"))


def test_volumes_are_a_byte_split_below_the_size_with_one_sha256sum_sidecar(written: tuple[Path, Path]) -> None:
    single, name = written
    volumes = volumes_of(name)
    assert len(volumes) == 10
    assert all(v.stat().st_size == SPLIT - 1 for v in volumes[:-1]) and 0 < volumes[-1].stat().st_size < SPLIT
    assert b"".join(v.read_bytes() for v in volumes) == single.read_bytes()
    lines = (name.parent / "b.tar.zst.sha256").read_text().splitlines()
    content = (single.parent / "one.tar.zst.sha256").read_text().splitlines()[1]  # the same tar stream
    assert lines == [*(f"{hashlib.sha256(v.read_bytes()).hexdigest()}  {v.name}" for v in volumes), content]
    done = subprocess.run(["sha256sum", "--strict", "-c", "b.tar.zst.sha256"], cwd=name.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cat_zstd_tar_of_the_volumes_gives_the_oci_layout(written: tuple[Path, Path], images: ImageSet,
                                                         tmp_path: Path) -> None:
    name = written[1]
    shell = f"cat {name}.* | zstd -dq | tar -x -C {tmp_path}"
    assert subprocess.run(["bash", "-c", shell.replace(f"{name}.*", f"{name}.[0-9]*")]).returncode == 0
    assert (tmp_path / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    for digest in [*images.manifests, *images.blobs]:
        algorithm, hex_digits = digest.split(":")
        data = (tmp_path / "blobs" / algorithm / hex_digits).read_bytes()
        assert hashlib.new(algorithm, data).hexdigest() == hex_digits


@pytest.mark.parametrize("how", ["bare name", "first volume", "a middle volume", "every volume, two directories"])
def test_the_set_is_found_from_any_name_and_read_at_random(written: tuple[Path, Path], images: ImageSet,
                                                          tmp_path: Path, how: str) -> None:
    name = written[1]
    volumes = volumes_of(name)
    if how == "bare name":
        source: Path | BundleFiles = name
    elif how == "first volume":
        source = volumes[0]
    elif how == "a middle volume":
        source = volumes[4]
    else:  # one volume per "USB stick": the odd ones elsewhere, given in shuffled order
        for volume in volumes[1::2]:
            shutil.copy(volume, tmp_path / volume.name)
        source = bundle_from_paths([tmp_path / v.name for v in volumes[1::2]][::-1] + volumes[0::2])
    assert read_index(source) == read_index(written[0])
    with BundleReader.open(source) as reader:
        assert reader.seekable
        for digest in reversed([*images.blobs, *images.manifests]):  # every member, back to front
            assert b"".join(reader.blob_chunks(digest)) == images.content(digest)
        assert {m.name for m in reader.members()} >= {"imgbundle.json", "oci-layout", "index.json"}


def test_a_split_bundle_can_be_the_base_of_a_delta(written: tuple[Path, Path]) -> None:
    from bundler.bundle.index import bundle_id
    from bundler.bundle.delta import load_base

    base = load_base(written[1])
    assert base.id == bundle_id(read_index(written[0]))
    assert base.blobs == {entry.digest for entry in read_index(written[0]).blobs}


def test_verify_checks_every_volume_against_its_sidecar_line(written: tuple[Path, Path]) -> None:
    report = verify_bundle(written[1])
    assert report.ok, report.problems
    assert str(report.sidecar) == "ok (sha256 of all 10 volumes match sidecar)"


def test_a_flipped_byte_names_the_damaged_volume(copy: Path) -> None:
    volume = volume_path(copy, 6)
    data = bytearray(volume.read_bytes())
    data[5000] ^= 0xFF
    volume.write_bytes(bytes(data))
    report = verify_bundle(copy)
    assert not report.ok
    assert report.sidecar.state is SidecarState.MISMATCH
    assert str(report.sidecar).startswith("MISMATCH: volume b.tar.zst.006: sha256 is ")


def _frame_volumes(name: Path) -> list[int]:
    """Middle volumes inside which a zstd frame starts (where the cheap check can look)."""
    sizes = [v.stat().st_size for v in volumes_of(name)]
    whole = b"".join(v.read_bytes() for v in volumes_of(name))
    table = parse_seek_table(lambda o, n: whole[o : o + n], len(whole), max_compressed=1 << 30,
                             max_decompressed=1 << 30)
    starts = [sum(sizes[:n]) for n in range(len(sizes))]
    return [n for n in range(1, len(sizes) - 1)
            if any(starts[n] <= offset < starts[n] + sizes[n] for offset in table.compressed_offsets[1:])]


def _swap(a: Path, b: Path) -> None:
    temporary = a.with_name("swap")
    a.rename(temporary)
    b.rename(a)
    temporary.rename(b)


def _damage(name: Path, damage: str, frames: list[int]) -> str:
    """Break the set in one way; return what the error must say. ``frames``: volumes holding a frame
    start, so that a misplaced one shows even without the sidecar (real volumes of GBs all do)."""
    a, b = frames[0], frames[-1]
    if damage == "missing middle":
        volume_path(name, 4).unlink()
        return "volume b.tar.zst.004 is missing"
    if damage == "missing last":
        volume_path(name, 9).unlink()
        return "volume b.tar.zst.009 is missing (10 volumes listed in b.tar.zst.sha256)"
    if damage == "truncated middle":
        os.truncate(volume_path(name, 2), 1000)
        return "volume b.tar.zst.002 is truncated: 1000 bytes"
    if damage == "truncated last":
        os.truncate(volume_path(name, 9), 100)
        return "volume b.tar.zst.009 does not end the bundle"
    if damage == "left-over extra":
        shutil.copy(volume_path(name, 3), volume_path(name, 10))
        return "volume b.tar.zst.010 is not listed in b.tar.zst.sha256"
    if damage == "duplicated":
        shutil.copy(volume_path(name, a), volume_path(name, b))
        return f"volume b.tar.zst.{b:03d} holds the bytes of b.tar.zst.{a:03d} (duplicated)"
    assert damage == "out of order"
    _swap(volume_path(name, a), volume_path(name, b))
    return f"volume b.tar.zst.{a:03d} holds the bytes of b.tar.zst.{b:03d} (out of order)"


DAMAGE = ["missing middle", "missing last", "truncated middle", "truncated last", "left-over extra", "duplicated",
          "out of order"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_broken_set_is_refused_naming_the_volume(copy: Path, damage: str) -> None:
    message = _damage(copy, damage, _frame_volumes(copy))
    for attempt in (lambda: read_index(copy), lambda: verify_bundle(volume_path(copy, 0)),
                    lambda: BundleReader.open(copy)):
        with pytest.raises(IncompleteVolumeSetError) as caught:
            attempt()
        assert message in str(caught.value)
    done = run_cli("list", str(copy), expect=IncompleteVolumeSetError.exit_code)
    assert message in done.stderr


@pytest.mark.parametrize("damage", ["missing last", "truncated middle", "out of order", "duplicated"])
def test_without_a_sidecar_a_broken_set_is_still_named(copy: Path, damage: str) -> None:
    frames = _frame_volumes(copy)
    a, b = frames[0], frames[-1]
    (copy.parent / "b.tar.zst.sha256").unlink()
    _damage(copy, damage, frames)
    message = {
        "missing last": "volume b.tar.zst.008 does not end the bundle",
        "truncated middle": "volume b.tar.zst.002 is truncated",
        "out of order": f"volume b.tar.zst.{a:03d} does not hold the bytes that belong at its place",
        "duplicated": f"volume b.tar.zst.{b:03d} does not hold the bytes that belong at its place",
    }[damage]
    with pytest.raises(IncompleteVolumeSetError, match=message):
        read_index(copy)
    with pytest.raises(IncompleteVolumeSetError, match=message):
        verify_bundle(copy)


def test_a_volume_inside_one_frame_is_caught_by_verify_when_misplaced(copy: Path) -> None:
    """A volume smaller than a frame holds no frame start for the cheap check; the sidecar catches it."""
    inside = sorted(set(range(1, 9)) - set(_frame_volumes(copy)))
    assert inside, "the test bundle should have volumes inside its 4 MiB frames"
    shutil.copy(volume_path(copy, inside[0] - 1), volume_path(copy, inside[0]))
    with pytest.raises(IncompleteVolumeSetError, match=f"volume b.tar.zst.{inside[0]:03d} holds the bytes of"):
        verify_bundle(copy)


def test_a_gap_and_a_volume_given_twice_are_named(copy: Path) -> None:
    volumes = volumes_of(copy)
    with pytest.raises(IncompleteVolumeSetError, match=r"volume b.tar.zst.001 is given twice"):
        bundle_from_paths([volumes[0], volumes[1], volumes[1]])
    (copy.parent / "b.tar.zst.sha256").unlink()
    volume_path(copy, 5).unlink()
    with pytest.raises(IncompleteVolumeSetError, match=r"volume b.tar.zst.005 is missing \(10 volumes\)"):
        find_bundle(volumes[0])
    with pytest.raises(InputError, match="volumes of different bundles"):
        bundle_from_paths([volumes[0], copy.parent / "other.tar.zst.001"])
    with pytest.raises(LocalIOError, match="no such file"):
        find_bundle(copy.parent / "nothing.tar.zst")


def test_writing_volumes_is_crash_safe_and_replaces_only_with_overwrite(images: ImageSet, tmp_path: Path) -> None:
    def failing(spec):  # noqa: ANN001
        yield images.content(spec.digest)[:100]
        raise LocalIOError("disk gone")

    with pytest.raises(LocalIOError, match="disk gone"):
        images.write(tmp_path / "b.tar.zst", split=SPLIT, open_blob=failing)
    assert list(tmp_path.iterdir()) == []  # no volume, no temp file, no sidecar

    images.write(tmp_path / "b.tar.zst")  # a one-file bundle of that name exists: a split may not replace it
    with pytest.raises(LocalIOError, match="already exists"):
        images.write(tmp_path / "b.tar.zst", split=SPLIT)
    result = images.write(tmp_path / "b.tar.zst", split=SPLIT, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in result.volumes] + ["b.tar.zst.sha256"])
    # a smaller set over a larger one leaves no stale volume behind
    images.write(tmp_path / "b.tar.zst", split=4 * SPLIT, overwrite=True)
    assert len(volumes_of(tmp_path / "b.tar.zst")) == 3
    assert verify_bundle(tmp_path / "b.tar.zst").ok
    with pytest.raises(InputError, match="too small"):
        images.write(tmp_path / "c.tar.zst", split=100)
    with pytest.raises(InputError, match="more than 1000 volumes"):
        images.write(tmp_path / "c.tar.zst", split=5000)


def test_pack_split_list_verify_unpack_through_the_command(seeded_registry: tuple[RunningRegistry, object],
                                                          fresh_registry: RunningRegistry, tmp_path: Path) -> None:
    source, image_set = seeded_registry
    image_list = tmp_path / "images.list"
    image_list.write_text(image_set.image_list(source.host))  # type: ignore[attr-defined]
    output = tmp_path / "site.tar.zst"
    run_cli("pack", "-f", str(image_list), "-o", str(output), "--split", "1M", "-q", "--no-cache",
            "--created", "2026-01-02T03:04:05Z")
    volumes = volumes_of(output)
    assert len(volumes) >= 4 and all(v.stat().st_size < 1024 * 1024 for v in volumes)
    assert "imgbundle" in run_cli("list", str(output)).stdout
    assert "ok (sha256 of all" in run_cli("verify", *map(str, volumes)).stdout
    run_cli("unpack", str(volumes[0]), "--to", f"{fresh_registry.host}/usb", "-q")
    walked = read_source(image_set, source.host)
    assert_registry_holds(fresh_registry, expected_state(walked, lambda image: f"usb/{image.path}"))
    volumes[-1].unlink()
    assert "is missing" in run_cli("unpack", str(output), "--to", f"{fresh_registry.host}/usb", "-q",
                                   expect=24).stderr
    assert "does not exist" in run_cli("verify", str(tmp_path / "none.tar.zst"), expect=2).stderr  # a usage error

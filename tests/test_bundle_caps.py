"""Caps on what a bundle may list, checked alike by every command that reads a bundle, before the work they
bound; and the peak memory of ``list``, ``verify`` and ``unpack --dry-run`` at and just past each cap.

Each bundle is crafted in this process (past a cap, by editing a bundle at the cap or with
``ImageSet.crafted``: the writer refuses to make one) and read by the real command as a subprocess, whose
own peak memory is measured. The bound is the one spec/bundle-format.md states (section 7.5).
"""

from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path

import pytest

from bundler.bundle import ImageEntry, SkippedEntry
from bundler.bundle.index import MAX_IMAGES
from bundler.bundle.links import MAX_INDEX_CHILDREN, MAX_MANIFEST_BLOBS
from bundler.bundle.seektable import SEEKABLE_MAGIC
from bundler.oci import MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST, RawManifest
from support.bundles import ImageSet, craft, make_image_set, member_bytes, rewrite_index, split_members
from support.cli import CliRun, run_cli

MEMORY_BOUND_MIB = 256
"""What spec/bundle-format.md promises for a bundle within every cap, whatever it holds."""
DAMAGED = 23
COMMANDS = {
    "list": ["list"],
    "verify": ["verify"],
    "unpack --dry-run": ["unpack", "--dry-run", "-q", "--to", "127.0.0.1:9/caps"],
}


def imgbundle(scratch: Path, command: str, bundle: Path) -> CliRun:
    """One command on ``bundle``, its peak memory measured; never a traceback, at most one error line."""
    run = run_cli(*COMMANDS[command], str(bundle), expect=None, measure=scratch / f"rss-{uuid.uuid4().hex}")
    assert len(run.error_lines) <= 1, run.stderr
    assert run.peak_mib < MEMORY_BOUND_MIB, f"{command}: {run.peak_mib:.0f} MiB"
    return run


def refused_by_all(scratch: Path, bundle: Path, message: str) -> None:
    """Every command refuses the whole bundle as damaged, naming the cap, before any work (so quickly)."""
    for command in COMMANDS:
        run = imgbundle(scratch, command, bundle)
        assert run.code == DAMAGED, f"{command}: exit {run.code}\n{run.stderr}"
        shown = run.error_lines[0] + run.stdout  # verify lists each problem it found on stdout
        assert message in shown, f"{command}: {run.stdout[-2000:]}\n{run.stderr}"
        assert run.seconds < 20, f"{command} took {run.seconds:.1f} s to refuse"


def write(images: ImageSet, path: Path) -> Path:
    images.write(path)
    return path


def crafted(images: ImageSet, path: Path) -> Path:
    """``images`` as a tool that checks nothing might write them (imgbundle's writer refuses what readers refuse)."""
    path.write_bytes(images.crafted())
    return path


def edited(bundle: Path, path: Path, edit) -> Path:
    """``bundle`` with its ``imgbundle.json`` edited (a past-the-cap bundle no writer makes)."""
    members = rewrite_index(split_members(bundle.read_bytes()), edit)
    path.write_bytes(craft([member_bytes(name, data) for name, data in members]))
    return path


# --- images and skipped lines ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("caps")


@pytest.fixture(scope="module")
def most_images(scratch: Path) -> Path:
    """MAX_IMAGES references to one small image: an ``index.json`` of 13 MiB, an index of 19 MiB."""
    images = make_image_set()
    top = images.images[3]
    images.images = [ImageEntry(source=f"r/{n}", reference=f"localhost:5000/r/i{n}:1", digest=top.digest,
                                media_type=top.media_type, platforms=top.platforms, size=top.size)
                     for n in range(MAX_IMAGES)]
    images.skipped = [SkippedEntry(source=f"gone/{n}", reason="manifest unknown") for n in range(MAX_IMAGES)]
    return write(images, scratch / "most-images.tar.zst")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_at_the_image_and_skipped_caps_every_command_works_within_the_bound(
        scratch: Path, most_images: Path, command: str) -> None:
    run = imgbundle(scratch, command, most_images)
    assert run.code == 0, run.stderr
    if command == "list":
        assert run.stdout.count("\n") > 2 * MAX_IMAGES


@pytest.mark.parametrize("field", ["images", "skipped"])
def test_one_image_or_skipped_line_past_the_cap_is_refused_by_every_command(
        scratch: Path, most_images: Path, field: str) -> None:
    def one_more(document: dict) -> None:
        document[field].append(document[field][-1])
        document["totals"]["images"] = len(document["images"])

    refused_by_all(scratch, edited(most_images, scratch / f"past-{field}.tar.zst", one_more),
                   f"length <= {MAX_IMAGES}")


def test_an_index_json_past_its_cap_is_refused_before_it_is_read(scratch: Path) -> None:
    """``imgbundle.json`` says where the first member starts, so how long ``index.json`` is: a bundle whose
    ``index.json`` would exceed 16 MiB is refused at once by every command (was: by verify after reading it,
    and not at all by list and unpack --dry-run)."""
    small = write(make_image_set(), scratch / "small.tar.zst")

    def shifted(document: dict) -> None:
        for entry in [*document["manifests"], *document["blobs"]]:
            entry["offset"] += 17 * 1024 * 1024

    refused_by_all(scratch, edited(small, scratch / "big-index-json.tar.zst", shifted), "index.json: imgbundle.json")


def test_a_seek_table_claiming_more_frames_than_the_index_allows_is_refused_before_it_is_read(
        scratch: Path) -> None:
    """A footer claiming 8 million frames at the end of a sparse 80 MiB file: refused from the count,
    without reading 64 MiB of table (was: 1.4 GiB of memory before the refusal)."""
    good = write(make_image_set(), scratch / "for-table.tar.zst").read_bytes()
    frames = 8_000_000
    path = scratch / "claims-frames.tar.zst"
    with open(path, "wb") as file:
        file.write(good[:-9])
        file.truncate(80 * 1024 * 1024)
        file.seek(0, 2)
        file.write(struct.pack("<IBI", frames, 0, SEEKABLE_MAGIC))
    refused_by_all(scratch, path, f"claims {frames} frames, more than the")


# --- manifests: bytes, blobs per manifest, children per index ----------------------------------------


def padded_manifest(images: ImageSet, config: dict, size: int, number: int) -> RawManifest:
    """A valid image manifest padded with spaces to exactly ``size`` bytes (compresses to almost nothing)."""
    text = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
                       "annotations": {"n": str(number)}})
    raw = RawManifest.from_bytes(text[:-1].encode() + b" " * (size - len(text)) + b"}", OCI_MANIFEST)
    images.manifests[raw.digest] = raw
    return raw


def add_image(images: ImageSet, name: str, raw: RawManifest) -> None:
    images.images.append(ImageEntry(source=name, reference=f"localhost:5000/caps/{name}:1", digest=raw.digest,
                                    media_type=raw.media_type, platforms=[], size=len(raw.data)))


@pytest.fixture(scope="module")
def padded(scratch: Path) -> Path:
    """40 images, each a manifest padded to the 4 MiB cap: 160 MiB of manifests in a file of a few KB."""
    images = make_image_set()
    config = images.add_blob(b"{}", "application/vnd.oci.image.config.v1+json")
    for number in range(40):
        add_image(images, f"padded{number}", padded_manifest(images, config, MAX_MANIFEST_BYTES, number))
    return write(images, scratch / "padded.tar.zst")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_manifests_at_the_byte_cap_are_not_all_held(scratch: Path, padded: Path, command: str) -> None:
    """Was: unpack (even --dry-run) held every manifest's bytes, 4 MiB each (440 MiB for 100)."""
    run = imgbundle(scratch, command, padded)
    assert run.code == 0, run.stderr


def test_a_manifest_one_byte_past_the_cap_is_refused_by_every_command(scratch: Path) -> None:
    images = make_image_set()
    config = images.add_blob(b"{}", "application/vnd.oci.image.config.v1+json")
    add_image(images, "toobig", padded_manifest(images, config, MAX_MANIFEST_BYTES + 1, 0))
    path = crafted(images, scratch / "manifest-past-cap.tar.zst")
    refused_by_all(scratch, path, "larger than 4 MiB")


@pytest.fixture(scope="module")
def wide(scratch: Path) -> tuple[Path, dict[str, bool]]:
    """Four more images: a manifest listing MAX_MANIFEST_BLOBS blobs and one more, an index listing
    MAX_INDEX_CHILDREN children and one more (the same digest repeated: valid, and the bundle stays small)."""
    images = make_image_set()
    plain = images.manifests[images.images[3].digest]
    config, layer = json.loads(plain.data)["config"], json.loads(plain.data)["layers"][0]
    child = {"mediaType": plain.media_type, "digest": plain.digest, "size": len(plain.data)}
    ok: dict[str, bool] = {}
    for name, count, cap in (("blobs", MAX_MANIFEST_BLOBS, True), ("children", MAX_INDEX_CHILDREN, False)):
        for extra in (0, 1):
            if cap:
                document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                            "layers": [layer] * (count + extra - 1)}
            else:
                document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child] * (count + extra)}
            raw = images.add_manifest(document, document["mediaType"])
            add_image(images, f"{name}{count + extra}", raw)
            ok[f"localhost:5000/caps/{name}{count + extra}:1"] = extra == 0
    return crafted(images, scratch / "wide.tar.zst"), ok


def test_blobs_and_children_at_their_caps_pass_and_one_past_fails_that_image_in_verify_and_unpack(
        scratch: Path, wide: tuple[Path, dict[str, bool]]) -> None:
    path, ok = wide
    verify = imgbundle(scratch, "verify", path)
    assert verify.code == DAMAGED
    broken = {reference for reference in ok if reference in verify.error_lines[0]}
    assert broken == {reference for reference, fine in ok.items() if not fine}, verify.stderr
    plan = run_cli("unpack", "--dry-run", "--json", str(path), "--to", "127.0.0.1:9/caps", expect=None)
    failed = {image["source"]: image for image in json.loads(plan.stdout)["images"] if not image["ok"]}
    assert failed.keys() == {reference for reference, fine in ok.items() if not fine}, plan.stdout
    assert all("more than the 4096 allowed" in json.dumps(image) for image in failed.values()), plan.stdout

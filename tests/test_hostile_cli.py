"""Hostile and damaged bundles through the real ``imgbundle`` command: verify, list and unpack.

Each case is a valid bundle after surgery (tests/support/bundles.py). The command runs as a
subprocess under a 1 GiB address-space limit (the decompression bombs inflate to 2 GiB, so one that
got decompressed would kill it), in an empty working directory with its own HOME and cache, and
must end with the documented exit code, exactly one line on stderr and no traceback. verify must
name exactly the images the damage breaks; unpack must fail exactly those (exit 30) and push the
others, or refuse the whole bundle when it cannot be read at all. All commands of all cases run
concurrently in one fixture, so the module takes seconds.
"""

from __future__ import annotations

import json
import random
import re
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import zstandard

from bundler.bundle import INDEX_NAME, ImageEntry, blob_path
from bundler.bundle.seektable import encode_seek_table
from bundler.bundle.tar import header_bytes
from bundler.oci import OCI_INDEX, OCI_MANIFEST
from support.bundles import (
    ImageSet,
    blob_frame_offset,
    flip,
    craft,
    make_image_set,
    member_bytes,
    rebuild,
    replace_member,
    retype,
    rewrite_index,
    seek_entries,
    split_members,
)
from support.cli import CliRun, run_cli
from support.registry import RunningRegistry, registry_has_manifest

MEMORY_LIMIT = 1024**3
BOMB_SIZE = 2 * 1024**3
EVERY = "every image"


# --- running the command -----------------------------------------------------------------------


def imgbundle(args: list[str], home: Path, *, stdin: Path | None = None) -> CliRun:
    """The command in an empty directory, with its own HOME and cache, that must stay empty."""
    home.mkdir(parents=True)
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
           "IMGBUNDLE_CACHE_DIR": str(home / "imgbundle-cache")}
    return run_cli(*args, expect=None, stdin_file=stdin, env=env, cwd=home, limits={"RLIMIT_AS": MEMORY_LIMIT})


# --- surgery -------------------------------------------------------------------------------------


@dataclass
class Inputs:
    good: bytes
    images: ImageSet
    bomb: bytes
    bomb_without_size: bytes
    index_bomb: bytes
    """Starts with a valid ``imgbundle.json`` tar header, so that it passes for a bundle at first."""

    @property
    def references(self) -> list[str]:
        return [image.reference for image in self.images.images]

    def users(self, digest: str) -> frozenset[str]:
        """References whose manifests (followed down) need ``digest``: an oracle from the JSON alone."""

        def needs(top: str) -> set[str]:
            found, stack = set(), [top]
            while stack:
                current = stack.pop()
                found.add(current)
                if current in self.images.manifests:
                    document = json.loads(self.images.manifests[current].data)
                    children = document.get("manifests") or [document["config"], *document["layers"]]
                    stack.extend(child["digest"] for child in children)
            return found

        return frozenset(image.reference for image in self.images.images if digest in needs(image.digest))

    @property
    def shared_blob(self) -> str:
        """The largest blob: a layer of the amd64 manifest, so of both references to the index."""
        return max(self.images.blobs, key=lambda d: len(self.images.blobs[d][0]))

    @property
    def own_blob(self) -> str:
        """A blob only one image needs, with room in its tar padding (so a size lie keeps the offsets)."""
        return next(d for d, (data, _) in sorted(self.images.blobs.items())
                    if len(self.users(d)) == 1 and 8 <= -len(data) % 512)

    def blob_data(self, digest: str) -> bytes:
        return self.images.blobs[digest][0]


def _frame_number(bundle: bytes, digest: str) -> int:
    offset, position = blob_frame_offset(bundle, digest), 0
    for number, (compressed, _) in enumerate(seek_entries(bundle)):
        if position == offset:
            return number
        position += compressed
    raise AssertionError(f"no frame starts {digest}")


def replace_frame(bundle: bytes, number: int, frame: bytes) -> bytes:
    """Frame ``number`` swapped for ``frame``; the seek table keeps the old frame's decompressed size."""
    frames = seek_entries(bundle)
    start = sum(c for c, _ in frames[:number])
    body_end = sum(c for c, _ in frames)
    end = start + frames[number][0]
    frames[number] = (len(frame), frames[number][1])
    return bundle[:start] + frame + bundle[end:body_end] + encode_seek_table(frames)


def zero_bomb(size: int, *, content_size: bool = True, start: bytes = b"") -> bytes:
    """A zstd frame of ``start`` and zeros, ``size`` bytes in all, made in 1 MiB steps (never all in memory)."""
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=content_size)
    stream = compressor.compressobj(size=size if content_size else -1)
    chunk = bytes(1 << 20)
    parts = [stream.compress(start + chunk[len(start) :]), *(stream.compress(chunk) for _ in range((size >> 20) - 1))]
    return b"".join([*parts, stream.flush()])


def lying_header(frame: bytes, content_size: int) -> bytes:
    """``frame`` with the content size in its header replaced (the field keeps its width)."""
    descriptor = frame[4]
    single_segment = descriptor >> 5 & 1
    width = {0: single_segment, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    start = 5 + (0 if single_segment else 1)
    assert width == 4, "a 2 GiB frame declares its size in 4 bytes"
    return frame[:start] + struct.pack("<I", content_size) + frame[start + width :]


def member_swapped(inputs: Inputs, digest: str, raw: bytes) -> bytes:
    names = [name for name, _ in split_members(inputs.good)]
    return replace_member(inputs.good, names.index(blob_path(digest)), raw)


def own_member(inputs: Inputs, name: str | None = None) -> bytes:
    digest = inputs.own_blob
    return member_bytes(name or blob_path(digest), inputs.blob_data(digest))


def header_flipped(inputs: Inputs) -> bytes:
    raw = own_member(inputs)
    return member_swapped(inputs, inputs.own_blob, flip(raw, 10, 0x01))


def size_lie(inputs: Inputs) -> bytes:
    digest = inputs.own_blob
    return rebuild(inputs.good, lambda m: [(n, d + b"lies" if n == blob_path(digest) else d) for n, d in m])


def wrong_digest(inputs: Inputs) -> bytes:
    digest = inputs.own_blob
    return rebuild(inputs.good, lambda m: [(n, bytes(len(d)) if n == blob_path(digest) else d) for n, d in m])


def duplicate_member(inputs: Inputs) -> bytes:
    members = [member_bytes(n, d) for n, d in split_members(inputs.good)]
    members.insert(4, members[3])
    return craft(members)


def sizes_swapped(inputs: Inputs) -> bytes:
    """Two frames' compressed sizes swapped in the seek table: it still adds up, but lies."""
    good, number = inputs.good, _frame_number(inputs.good, inputs.shared_blob)
    frames = seek_entries(good)
    frames[number], frames[number + 1] = (frames[number + 1][0], frames[number][1]), (frames[number][0],
                                                                                       frames[number + 1][1])
    return good[: sum(c for c, _ in seek_entries(good))] + encode_seek_table(frames)


def evil_reference(name: str) -> str:
    return f"docker.io/evil/{name}:1"


def with_evil_image(name: str, data: bytes, media_type: str = OCI_MANIFEST) -> Callable[[Inputs], bytes]:
    """A fifth image whose manifest (digest intact) is hostile; the other four stay whole."""

    def make(inputs: Inputs) -> bytes:
        images = make_image_set()
        raw = images.add_manifest_bytes(data, media_type)
        images.images.append(ImageEntry(source=f"evil/{name}", reference=evil_reference(name), digest=raw.digest,
                                        media_type=media_type, platforms=[], size=1))
        return images.crafted()  # imgbundle's writer refuses such a manifest

    return make


def _manifest(config_digest: str, size: int = 10) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": size}}).encode()


def deep(levels: int) -> bytes:
    """A JSON value nested ``levels`` deep: valid, but past any decoder's recursion limit."""
    return b"[" * levels + b"]" * levels


def deep_index(inputs: Inputs) -> bytes:
    """``imgbundle.json`` with an extra field nested 1,000 deep (readers ignore unknown fields)."""
    return rebuild(inputs.good, lambda m: [(m[0][0], m[0][1][:-1] + b',"x":' + deep(1000) + b"}"), *m[1:]])


def deep_oci_index(inputs: Inputs) -> bytes:
    """``index.json`` with an extra field nested 100,000 deep; ``imgbundle.json`` offsets moved to match."""
    members = split_members(inputs.good)
    grown = members[2][1][:-1] + b',"x":' + deep(100_000) + b"}"
    shift = len(member_bytes("index.json", grown)) - len(member_bytes("index.json", members[2][1]))

    def move(document: dict) -> None:
        for entry in [*document["manifests"], *document["blobs"]]:
            entry["offset"] += shift

    members = rewrite_index([*members[:2], ("index.json", grown), *members[3:]], move)
    return craft([member_bytes(name, data) for name, data in members])


def config_as_child(inputs: Inputs) -> bytes:
    """An image index whose child descriptor points at a config blob the bundle carries."""
    config = next(d for d, (_, media_type) in sorted(inputs.images.blobs.items()) if media_type.endswith("config.v1+json"))
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": config, "size": len(inputs.blob_data(config))}]}).encode()
    return with_evil_image("configchild", index, OCI_INDEX)(inputs)


MISSING = "sha256:" + "ab" * 32
MISSING_CHILD_INDEX = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
    {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "cd" * 32, "size": 100}]}).encode()


# --- the cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input and what each command must do with it.

    ``broken``: the images verify must name: ``EVERY``; ``shared``/``own`` for the users of that blob;
    ``swapped`` for the users of the shared blob and of the blob after it; ``evil:NAME`` for the added image.
    ``unpack``: its exit code; 30 means exactly the broken images fail and the others are pushed.
    """

    name: str
    make: Callable[[Inputs], bytes]
    code: int
    message: str
    broken: str = ""
    list_code: int = 0
    unpack: int = 30
    pipe: bool = False
    """Also run ``verify -`` (not where a pipe is read exactly as a file is: each run costs a Python start)."""
    push: bool = False
    """Also run unpack (not for variants of a case that already runs it)."""

    @property
    def lists(self) -> bool:
        """``list`` only refuses what its index or seek table show; one member-damage case is the control."""
        return self.list_code != 0 or self.name == "flipped-blob-data"


WHOLE = dict(broken=EVERY, unpack=23, list_code=23)
EVERY_BROKEN = r"4 images broken"
BROKEN = r"\d images? broken: "
CASES = [
    Case("empty", lambda i: b"", 21, "not a bundle: the file is empty", list_code=21, unpack=21, pipe=True, push=True),
    Case("random-bytes", lambda i: random.Random(5).randbytes(50_000), 21, "not zstd", list_code=21, unpack=21),
    Case("zstd-magic-then-random", lambda i: b"\x28\xb5\x2f\xfd" + random.Random(6).randbytes(50_000), 23,
         "imgbundle.json", list_code=23, unpack=23),
    Case("truncated-half", lambda i: i.good[: len(i.good) // 2], 23, EVERY_BROKEN, **WHOLE, pipe=True, push=True),
    Case("truncated-in-seek-table", lambda i: i.good[:-5], 23, EVERY_BROKEN, **WHOLE, pipe=True),
    Case("trailing-junk", lambda i: i.good + b"junk" * 100, 23, EVERY_BROKEN, **WHOLE),
    Case("flipped-blob-data", lambda i: flip(i.good, blob_frame_offset(i.good, i.shared_blob) + 600), 23,
         BROKEN, "shared", pipe=True, push=True),
    Case("flipped-zstd-magic", lambda i: flip(i.good, blob_frame_offset(i.good, i.shared_blob) + 1, 0x01), 23,
         BROKEN, "shared"),
    Case("flipped-zstd-frame-header", lambda i: flip(i.good, blob_frame_offset(i.good, i.shared_blob) + 4, 0x40),
         23, BROKEN, "shared"),
    Case("flipped-tar-header", header_flipped, 23, BROKEN, "own", pipe=True, push=True),
    Case("unknown-format-version", lambda i: rebuild(i.good, lambda m: rewrite_index(
        m, lambda d: d.update(version="2.0"))), 22, "version 2.0 is not supported", list_code=22, unpack=22,
        push=True),
    Case("index-member-named-dotdot", lambda i: replace_member(
        i.good, 1, member_bytes("../x", b'{"imageLayoutVersion":"1.0.0"}')), 23, "damaged: index.json", unpack=0,
        push=True),
    Case("blob-member-named-dotdot", lambda i: member_swapped(i, i.own_blob, own_member(i, "../../x")), 23,
         BROKEN, "own", push=True),
    Case("blob-member-absolute-path", lambda i: member_swapped(i, i.own_blob, own_member(i, "/etc/passwd")), 23,
         BROKEN, "own"),
    *[Case(f"blob-member-{kind}", lambda i, t=flag: member_swapped(
        i, i.own_blob, retype(own_member(i), t, b"/etc/shadow")), 23, BROKEN, "own", pipe=run, push=run)
      for kind, flag, run in [("hardlink", b"1", False), ("symlink", b"2", True), ("char-device", b"3", False)]],
    Case("duplicate-member", duplicate_member, 23, EVERY_BROKEN, **WHOLE, pipe=True, push=True),
    Case("declared-size-lies", size_lie, 23, BROKEN, "own", pipe=True, push=True),
    Case("blob-digest-mismatch", wrong_digest, 23, BROKEN, "own", push=True),
    Case("seek-table-sizes-swapped", sizes_swapped, 23, BROKEN, "swapped", pipe=True, push=True),
    Case("zstd-bomb", lambda i: replace_frame(i.good, _frame_number(i.good, i.shared_blob), i.bomb), 23,
         BROKEN, "shared", pipe=True, push=True),
    Case("zstd-bomb-lying-header", lambda i: replace_frame(
        i.good, _frame_number(i.good, i.shared_blob),
        lying_header(i.bomb, seek_entries(i.good)[_frame_number(i.good, i.shared_blob)][1])), 23, BROKEN, "shared",
        pipe=True),
    Case("zstd-bomb-without-content-size", lambda i: replace_frame(
        i.good, _frame_number(i.good, i.shared_blob), i.bomb_without_size), 23, BROKEN, "shared",
        pipe=True),
    Case("zstd-bomb-as-first-frame", lambda i: replace_frame(i.good, 0, i.bomb), 21, "end-of-archive block",
         list_code=21, unpack=21),
    Case("zstd-bomb-as-index", lambda i: replace_frame(i.good, 0, i.index_bomb), 23,
         "imgbundle.json: frame at byte 0 declares 2147483648 bytes", list_code=23, unpack=23, pipe=True, push=True),
    Case("manifest-refers-to-missing-blob", with_evil_image("missingblob", _manifest(MISSING)), 23, BROKEN,
         "evil:missingblob", push=True),
    Case("index-refers-to-missing-manifest", with_evil_image("missingchild", MISSING_CHILD_INDEX, OCI_INDEX), 23,
         BROKEN, "evil:missingchild", push=True),
    Case("manifest-not-json", with_evil_image("notjson", b"this is not json {"), 23, BROKEN, "evil:notjson",
         pipe=True, push=True),
    Case("manifest-json-array", with_evil_image("jsonarray", b"[" * 5000 + b"]" * 5000), 23, BROKEN,
         "evil:jsonarray"),
    Case("manifest-nested-100000-deep", with_evil_image("deep", b'{"schemaVersion":2,"x":' + deep(100_000) + b"}"),
         23, BROKEN, "evil:deep", pipe=True, push=True),
    Case("bundle-index-nested-1000-deep", deep_index, 23, "imgbundle.json: JSON nested too deeply", list_code=23,
         unpack=23, pipe=True, push=True),
    Case("index-json-nested-100000-deep", deep_oci_index, 23, "damaged: index.json", unpack=0, push=True),
    Case("index-child-is-a-config-blob", config_as_child, 23, BROKEN, "evil:configchild", pipe=True, push=True),
    Case("manifest-with-path-as-digest", with_evil_image("pathdigest", _manifest("../../etc/passwd")), 23, BROKEN,
         "evil:pathdigest", push=True),
]


# --- running every case once -------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    bundle: Path
    expected_broken: frozenset[str]
    references: list[str]
    runs: dict[str, CliRun] = field(default_factory=dict)
    """By command: ``verify``, ``verify-pipe``, ``list``, ``list-pipe``, ``unpack``."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    images = make_image_set()
    good = images.write(tmp_path_factory.mktemp("hostile-good") / "good.tar.zst").path.read_bytes()
    bomb = zero_bomb(BOMB_SIZE)
    assert len(bomb) < 200_000
    index_bomb = zero_bomb(BOMB_SIZE, start=header_bytes(INDEX_NAME, 60 * 1024 * 1024))
    return Inputs(good, images, bomb, zero_bomb(BOMB_SIZE, content_size=False), index_bomb)


def _expected_broken(case: Case, inputs: Inputs) -> frozenset[str]:
    if case.broken == EVERY:
        return frozenset(inputs.references)
    if case.broken == "shared":
        return inputs.users(inputs.shared_blob)
    if case.broken == "own":
        return inputs.users(inputs.own_blob)
    if case.broken == "swapped":  # members are in digest order, one frame each
        blobs = sorted(inputs.images.blobs)
        following = blobs[blobs.index(inputs.shared_blob) + 1]
        return inputs.users(inputs.shared_blob) | inputs.users(following)
    if case.broken.startswith("evil:"):
        return frozenset({evil_reference(case.broken[5:])})
    return frozenset()


@pytest.fixture(scope="module")
def outcomes(inputs: Inputs, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("hostile-cli")
    prepared = []
    for case in CASES:
        directory = root / case.name / "bundles"
        directory.mkdir(parents=True)
        bundle = directory / "b.tar.zst"
        bundle.write_bytes(case.make(inputs))
        references = inputs.references + ([evil_reference(case.broken[5:])] if case.broken.startswith("evil:") else [])
        prepared.append((case, bundle, references))

    def commands(case: Case, bundle: Path) -> dict[str, tuple[list[str], Path | None]]:
        wanted = {"verify": (["verify", "-q", "--json", str(bundle)], None)}
        if case.pipe:
            wanted["verify-pipe"] = (["verify", "-q", "-"], bundle)
        if case.lists:
            wanted["list"] = (["list", str(bundle)], None)
        if case.lists and case.pipe:
            wanted["list-pipe"] = (["list", "-"], bundle)
        if case.push:
            target = f"{registry.host}/h{uuid.uuid4().hex[:8]}"
            wanted["unpack"] = (["unpack", "-q", "--json", str(bundle), "--to", target], None)
        return wanted

    outcomes = {case.name: Outcome(case, bundle, _expected_broken(case, inputs), references)
                for case, bundle, references in prepared}
    jobs = [(outcome, name, args, stdin) for outcome in outcomes.values()
            for name, (args, stdin) in commands(outcome.case, outcome.bundle).items()]

    def run(job: tuple[Outcome, str, list[str], Path | None]) -> None:
        outcome, name, args, stdin = job
        outcome.runs[name] = imgbundle(args, outcome.bundle.parent.parent / name, stdin=stdin)

    with ThreadPoolExecutor(max_workers=4) as executor:
        list(executor.map(run, jobs))
    return outcomes


def _assert_clean(run: CliRun, code: int) -> None:
    assert run.code == code, f"exit {run.code}, expected {code}\n{run.stdout[-2000:]}\n{run.stderr}"
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run.stderr
    if code:
        assert len(run.stderr_lines) == 1, run.stderr
        assert run.stderr_lines[0].startswith("imgbundle: error: "), run.stderr
    else:
        assert run.stderr_lines == [], run.stderr


def _named_in_summary(run: CliRun) -> frozenset[str]:
    """The images the one-line verify error says are broken."""
    match = re.search(r"\d+ images? broken: (.*)$", run.stderr_lines[0])
    return frozenset(match.group(1).split(", ")) if match else frozenset()


# --- the checks ----------------------------------------------------------------------------------


def _cases(selected: list[Case]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", selected, ids=[case.name for case in selected])


@_cases(CASES)
def test_verify_refuses_with_its_code_and_names_the_broken_images(outcomes: dict[str, Outcome], case: Case) -> None:
    outcome = outcomes[case.name]
    run = outcome.runs["verify"]
    _assert_clean(run, case.code)
    assert re.search(case.message, run.stderr_lines[0]), run.stderr
    if case.broken:
        assert _named_in_summary(run) == outcome.expected_broken, run.stderr
        report = json.loads(run.stdout)
        named = {image for problem in report["problems"] for image in problem["images"]}
        assert named == outcome.expected_broken
        assert not report["ok"]


@_cases([case for case in CASES if case.pipe])
def test_verify_from_a_pipe_refuses_the_same_way(outcomes: dict[str, Outcome], case: Case) -> None:
    run = outcomes[case.name].runs["verify-pipe"]
    _assert_clean(run, case.code)
    if case.broken:  # a pipe cannot seek past the damage: at least the broken images, maybe more
        assert outcomes[case.name].expected_broken <= _named_in_summary(run), run.stderr
    assert run.stderr_lines[0].startswith("imgbundle: error: <stdin>: "), run.stderr


@_cases([case for case in CASES if case.lists])
def test_list_reads_the_index_and_seek_table(outcomes: dict[str, Outcome], case: Case) -> None:
    outcome = outcomes[case.name]
    _assert_clean(outcome.runs["list"], case.list_code)
    if case.list_code == 0:
        assert all(reference in outcome.runs["list"].stdout for reference in outcome.references)
    if case.pipe:  # a pipe has no seek table: only what the start of the stream shows can be refused
        _assert_clean(outcome.runs["list-pipe"], case.list_code if case.list_code in (21, 22) or case.name.startswith(
            ("zstd-magic", "zstd-bomb-as", "bundle-index")) else 0)


@_cases([case for case in CASES if case.push])
def test_unpack_fails_only_the_broken_images(outcomes: dict[str, Outcome], case: Case,
                                             registry: RunningRegistry) -> None:
    outcome = outcomes[case.name]
    run = outcome.runs["unpack"]
    _assert_clean(run, case.unpack)
    if case.unpack not in (0, 30):
        assert run.stdout == ""  # refused before anything was pushed
        return
    report = json.loads(run.stdout)
    failed = {image["source"] for image in report["images"] if not image["ok"]}
    assert failed == outcome.expected_broken
    for image in report["images"]:
        repository = image["target"].split("/", 1)[1].split("@")[0].rsplit(":", 1)[0]
        assert registry_has_manifest(registry, repository, image["digest"]) == image["ok"], image


def test_nothing_is_written_anywhere(outcomes: dict[str, Outcome]) -> None:
    """Not in the working directory (also HOME and the cache), not beside the bundle, not above it."""
    for outcome in outcomes.values():
        assert sorted(p.name for p in outcome.bundle.parent.iterdir()) == ["b.tar.zst"], outcome.case.name
        assert sorted(p.name for p in outcome.bundle.parent.parent.iterdir()) == sorted(["bundles", *outcome.runs])
        for name in outcome.runs:
            home = outcome.bundle.parent.parent / name
            assert list(home.iterdir()) == [], (outcome.case.name, home, list(home.rglob("*")))


def test_the_good_bundle_passes_everything(inputs: Inputs, tmp_path: Path, registry: RunningRegistry) -> None:
    """The control: the same commands on the undamaged bundle succeed, so each refusal above is the damage's."""
    bundle = tmp_path / "bundles" / "good.tar.zst"
    bundle.parent.mkdir()
    bundle.write_bytes(inputs.good)
    for args, stdin in ((["verify", "-q", str(bundle)], None), (["verify", "-q", "-"], bundle),
                        (["list", str(bundle)], None), (["list", "-"], bundle),
                        (["unpack", "-q", str(bundle), "--to", f"{registry.host}/good{uuid.uuid4().hex[:6]}"], None)):
        run = imgbundle(args, tmp_path / uuid.uuid4().hex, stdin=stdin)
        _assert_clean(run, 0)

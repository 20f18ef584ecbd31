"""The push executor against a strict in-memory registry: order, concurrency, failure isolation.

The in-memory registry refuses what Distribution refuses (a manifest before its blobs or children)
and more (a tag before its manifest exists by digest, two uploads of one digest into one repository
at once), so a scheduling mistake fails loudly here even when a real registry would let it pass.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from bundler.stores.bundle import BundleStore
from bundler.errors import (
    CorruptBundleError,
    Interrupted,
    PushRefusedError,
    ReferenceUnknownError,
    UnreachableError,
)
from bundler.oci import RawManifest
from bundler.registry import RegistryOptions
from bundler.stores import Placement
from bundler.unpack import UnpackOptions, unpack_bundle
from bundler.unpack import push as push_module
from bundler.unpack.steps import MANIFEST_PUT_TRIES
from support.memory import HOST, MemoryRegistry
from support.sources import RecordingProgress, SourceSet, build_bundle, expected_state

OPTIONS = RegistryOptions()


def run(bundle: Path, memory: MemoryRegistry, *, to: str = f"{HOST}/m", jobs: int = 8,
        progress: RecordingProgress | None = None, **settings: object):
    with BundleStore.open(bundle) as store:
        return unpack_bundle(store, UnpackOptions(to=to, jobs=jobs, **settings), OPTIONS,  # type: ignore[arg-type]
                             progress=progress, client=memory)


def state(memory: MemoryRegistry) -> tuple[dict, set, dict]:
    return dict(memory.tags), set(memory.manifests), {r: set(b) for r, b in memory.blobs.items()}


def test_order_and_single_upload_under_parallelism(bundle_file: Path, source_set: SourceSet) -> None:
    memory = MemoryRegistry()
    result = run(bundle_file, memory, jobs=8)
    expected = expected_state(source_set, lambda image: f"m/{image.path}")
    assert memory.violations == []
    assert not result.failed
    assert memory.max_parallel > 1, "uploads never overlapped: the test did not exercise parallelism"
    assert set(memory.uploads) == set(expected.blobs) and set(memory.uploads.values()) == {1}
    assert memory.tags == expected.tags
    assert {(r, d) for r, d in memory.manifests} == expected.manifests
    assert memory.blobs == {repo: {d for d, repos in expected.blobs.items() if repo in repos}
                            for repo in expected.repositories}
    # within each repository: every tag comes after all of its image's manifests below the top; the top
    # manifest is PUT by its first tag (one request stores both), never by digest as well
    position = {entry: n for n, entry in enumerate(memory.log)}
    for image in source_set.images:
        if image.tag:
            tag_at = position[("manifest", f"m/{image.path}", image.tag)]
            below = [d for d in image.manifests if d != image.digest]
            assert all(position[("manifest", f"m/{image.path}", d)] < tag_at for d in below)
            assert ("manifest", f"m/{image.path}", image.digest) not in position


class MeetingRegistry(MemoryRegistry):
    """The first ``meet`` blob uploads wait for one another: they pass only if that many run at once."""

    def __init__(self, meet: int) -> None:
        super().__init__()
        self.meeting = threading.Barrier(meet, timeout=30)
        self.waiting = meet
        self.count_lock = threading.Lock()

    def blob_upload(self, repository: str, digest: str, size: int, chunks: Callable[[], Iterable[bytes]], *,
                    mount_from: str | None = None) -> Placement:
        with self.count_lock:
            meets, self.waiting = self.waiting > 0, self.waiting - 1
        if meets:
            self.meeting.wait()  # breaks, and fails the upload, unless enough uploads run together
        return super().blob_upload(repository, digest, size, chunks, mount_from=mount_from)


def test_small_blob_uploads_run_more_at_once_than_jobs(bundle_file: Path) -> None:
    """Small bodies are bound by round trips, not bytes: ``jobs`` does not hold them back."""
    memory = MeetingRegistry(meet=4)
    result = run(bundle_file, memory, jobs=1)
    assert not result.failed and memory.violations == []


def test_large_blob_uploads_run_at_most_jobs_at_once(bundle_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_module, "LARGE_BLOB", 0)  # every blob of the set counts as large
    memory = MemoryRegistry(upload_delay=0.01)
    result = run(bundle_file, memory, jobs=2)
    assert not result.failed and memory.violations == []
    assert memory.max_parallel <= 2


def test_each_phase_has_a_name_of_its_own(bundle_file: Path) -> None:
    progress = RecordingProgress()
    run(bundle_file, MemoryRegistry(), progress=progress)
    assert [name for name, _, _ in progress.phases] == ["check images", "check tags", "push"]


def test_rerun_is_idempotent_and_touches_nothing(bundle_file: Path) -> None:
    memory = MemoryRegistry()
    run(bundle_file, memory)
    before, log_length = state(memory), len(memory.log)
    again = run(bundle_file, memory)
    assert state(memory) == before and len(memory.log) == log_length
    assert (again.blobs_uploaded, again.blobs_mounted, again.manifests_pushed, again.tags_set) == (0, 0, 0, 0)


def test_refused_repository_fails_only_its_images_and_others_still_get_shared_blobs(
        bundle_file: Path, source_set: SourceSet) -> None:
    memory = MemoryRegistry()
    memory.refuse_blob_repos = {"m/calico/node"}
    result = run(bundle_file, memory)
    failed = {o.target.repository for o in result.failed}
    assert failed == {"m/calico/node"}
    assert all(isinstance(o.error, PushRefusedError) for o in result.failed)
    assert memory.violations == []
    # calico/cni shares layers with calico/node; it got them although node was first in line
    cni = next(i for i in source_set.images if i.path == "calico/cni")
    assert set(cni.blobs) <= memory.blobs["m/calico/cni"]
    assert ("m/calico/cni", cni.tag) in memory.tags and not any(r == "m/calico/node" for r, _ in memory.tags)


def test_immutable_tag_fails_that_image_naming_the_tag(bundle_file: Path) -> None:
    memory = MemoryRegistry()
    memory.refuse_tags = {("m/calico/node", "v3.26.4")}
    result = run(bundle_file, memory)
    [failed] = result.failed
    assert isinstance(failed.error, PushRefusedError) and "calico/node:v3.26.4" in failed.reason
    assert len(result.pushed) == len(result.images) - 1


def test_immutable_tag_pointing_elsewhere_still_gets_the_manifest_by_digest(bundle_file: Path,
                                                                           source_set: SourceSet) -> None:
    """An upgrade meets Harbor's tag immutability: the tag stays, but ``image@sha256:`` pins must resolve."""
    node, cni = (next(i for i in source_set.images if i.path == p) for p in ("calico/node", "calico/cni"))
    memory = MemoryRegistry()
    run(bundle_file, memory, to=f"{HOST}/old")  # cni's manifest somewhere, so the old tag can point at it
    memory.manifests[("m/calico/node", cni.digest)] = memory.manifests[("old/calico/cni", cni.digest)]
    memory.tags[("m/calico/node", node.tag)] = cni.digest
    memory.refuse_tags = {("m/calico/node", node.tag)}
    result = run(bundle_file, memory)
    [failed] = result.failed
    assert isinstance(failed.error, PushRefusedError) and failed.target.repository == "m/calico/node"
    assert memory.tags[("m/calico/node", node.tag)] == cni.digest
    assert ("m/calico/node", node.digest) in memory.manifests


def test_moved_tag_is_reported(bundle_file: Path, source_set: SourceSet) -> None:
    memory = MemoryRegistry()
    run(bundle_file, memory)
    node, cni = (next(i for i in source_set.images if i.path == p) for p in ("calico/node", "calico/cni"))
    memory.tags[("m/calico/node", node.tag)] = cni.digest  # someone re-tagged it in the meantime
    memory.manifests[("m/calico/node", cni.digest)] = memory.manifests[("m/calico/cni", cni.digest)]
    progress = RecordingProgress()
    result = run(bundle_file, memory, progress=progress)
    assert result.tags_set == 1 and result.tags_moved == [f"m/calico/node:{node.tag}"]
    assert memory.tags[("m/calico/node", node.tag)] == node.digest
    assert any("moved from" in w and cni.digest in w for w in progress.warnings)


def test_a_target_lost_mid_push_fails_the_images_left_and_names_them(bundle_file: Path) -> None:
    """Uploads stop connecting after 5: every image that needed one fails with that error (the real client
    fails them at once once it gave up on the host) and is named; none is reported pushed."""
    memory = MemoryRegistry()
    memory.unreachable_after = 5
    result = run(bundle_file, memory)
    assert result.failed and all(isinstance(o.error, UnreachableError) for o in result.failed)
    assert not result.pushed and isinstance(result.failure_error(), UnreachableError)
    assert all(o.target.display in result.failure_summary() for o in result.failed[:10])


def test_interrupt_from_progress_becomes_interrupted_and_leaves_no_tag_on_partial_images(
        bundle_file: Path, source_set: SourceSet) -> None:
    memory = MemoryRegistry()
    with pytest.raises(Interrupted):
        run(bundle_file, memory, jobs=4, progress=RecordingProgress(stop_after=100_000))
    for (repo, tag), digest in memory.tags.items():
        image = next(i for i in source_set.images if f"m/{i.path}" == repo and i.tag == tag)
        assert all((repo, d) in memory.manifests for d in image.manifests)
        assert set(image.blobs) <= memory.blobs[repo]
    assert len(memory.tags) < len([i for i in source_set.images if i.tag])


def test_bundle_lacking_a_blob_fails_only_when_the_target_lacks_it_too(
        source_set: SourceSet, tmp_path: Path) -> None:
    image = next(i for i in source_set.images if i.path == "mirantis/k8s-netchecker-server")
    layer = max(image.blobs, key=image.blobs.get)
    thin = SourceSet(source_set.layout, [
        i if i is not image else type(i)(i.line, i.reference, i.digest, i.media_type, dict(i.manifests),
                                         {d: s for d, s in i.blobs.items() if d != layer})
        for i in source_set.images
    ])
    bundle = build_bundle(thin, tmp_path / "thin.tar.zst")
    memory = MemoryRegistry()
    result = run(bundle, memory)
    [failed] = result.failed
    assert failed.target.repository == f"m/{image.path}"
    assert isinstance(failed.error, CorruptBundleError) and layer in failed.reason

    data = (source_set.layout / "blobs" / "sha256" / layer.split(":")[1]).read_bytes()
    memory.blob_upload(f"m/{image.path}", layer, len(data), lambda: [data])
    again = run(bundle, memory)
    assert not again.failed
    assert (f"m/{image.path}", image.tag) in memory.tags


def test_a_bug_below_becomes_one_imgbundle_error(bundle_file: Path) -> None:
    from bundler.errors import ImgbundleError

    class Broken(MemoryRegistry):
        def blob_upload(self, *args: object, **kwargs: object) -> str:
            raise RuntimeError("boom")

    with pytest.raises(ImgbundleError, match="unexpectedly: RuntimeError: boom") as caught:
        run(bundle_file, Broken())
    assert type(caught.value) is ImgbundleError


def test_result_summary_and_json(bundle_file: Path) -> None:
    memory = MemoryRegistry()
    memory.refuse_blob_repos = {"m/calico/node", "m/calico/cni"}
    result = run(bundle_file, memory)
    summary = result.failure_summary()
    assert summary.startswith(f"2 of {len(result.images)} images failed: ") and "quota exceeded" in summary
    document = result.as_dict()
    assert [i["ok"] for i in document["images"]].count(False) == 2
    assert document["blobs"]["uploaded"] == result.blobs_uploaded and document["dryRun"] is False
    assert all(i["pinned"].endswith(i["digest"]) for i in document["images"])


class _LinkRaceRegistry(MemoryRegistry):
    """Refuses each manifest PUT once for a reference it holds, as Distribution 2.8 does while another
    writer re-links the same digests (``ReferenceUnknownError``); ``always`` refuses these references for good."""

    def __init__(self, always: frozenset[tuple[str, str]] = frozenset()) -> None:
        super().__init__()
        self.always = always
        self.puts: list[tuple[str, str]] = []

    def manifest_put(self, repository: str, reference: str, manifest: RawManifest) -> None:
        with self._lock:
            first = (repository, reference) not in self.puts
            self.puts.append((repository, reference))
        if first or (repository, reference) in self.always:
            raise ReferenceUnknownError(f"{HOST}/{repository}@{reference}: MANIFEST_BLOB_UNKNOWN")
        super().manifest_put(repository, reference, manifest)


class _LosingRegistry(MemoryRegistry):
    """Loses the first layer of the first image manifest PUT from its repository just before that PUT."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: str | None = None

    def manifest_put(self, repository: str, reference: str, manifest: RawManifest) -> None:
        with self._lock:
            if self.lost is None and not manifest.is_index:
                self.lost = manifest.manifest().blobs[-1].digest
                self.blobs[repository].discard(self.lost)
        super().manifest_put(repository, reference, manifest)


def test_a_manifest_refused_for_a_reference_the_registry_holds_is_tried_again(bundle_file: Path,
                                                                              source_set: SourceSet) -> None:
    memory = _LinkRaceRegistry()
    result = run(bundle_file, memory)
    expected = expected_state(source_set, lambda image: f"m/{image.path}")
    assert not result.failed and memory.violations == []
    assert memory.tags == expected.tags and set(memory.manifests) == expected.manifests
    assert set(memory.uploads.values()) == {1}, "a blob the registry held was sent again"
    assert set(Counter(memory.puts).values()) == {2}, "each manifest PUT: refused once, then stored"


def test_a_blob_the_repository_really_lost_is_sent_again_before_the_manifest(bundle_file: Path,
                                                                             source_set: SourceSet) -> None:
    memory = _LosingRegistry()
    result = run(bundle_file, memory)
    expected = expected_state(source_set, lambda image: f"m/{image.path}")
    assert not result.failed
    assert memory.tags == expected.tags and set(memory.manifests) == expected.manifests
    assert memory.lost is not None and memory.uploads[memory.lost] == 2


def test_a_manifest_refused_for_good_fails_its_image_after_bounded_tries(bundle_file: Path,
                                                                          source_set: SourceSet) -> None:
    node = next(image for image in source_set.images if image.path == "calico/node")
    memory = _LinkRaceRegistry(always=frozenset({("m/calico/node", node.tag)}))
    result = run(bundle_file, memory)
    [failed] = result.failed
    assert failed.target.repository == "m/calico/node" and isinstance(failed.error, ReferenceUnknownError)
    assert memory.puts.count(("m/calico/node", node.tag)) == MANIFEST_PUT_TRIES
    expected = expected_state(source_set, lambda image: f"m/{image.path}")
    assert memory.tags == {tag: digest for tag, digest in expected.tags.items() if tag != ("m/calico/node", node.tag)}


def test_bundle_lacking_a_child_manifest_fails_that_image_in_the_plan(source_set: SourceSet,
                                                                      tmp_path: Path) -> None:
    image = next(i for i in source_set.images if i.path == "calico/cni")
    child = [d for d in image.manifests if d != image.digest][0]
    thin = SourceSet(source_set.layout, [
        i if i is not image else type(i)(i.line, i.reference, i.digest, i.media_type,
                                         {d: b for d, b in i.manifests.items() if d != child}, dict(i.blobs))
        for i in source_set.images
    ])
    bundle = build_bundle(thin, tmp_path / "thin.tar.zst")
    dry = run(bundle, MemoryRegistry(), dry_run=True)
    [failed] = dry.failed
    assert failed.target.repository == "m/calico/cni" and child in failed.reason
    assert isinstance(failed.error, CorruptBundleError)
    memory = MemoryRegistry()
    result = run(bundle, memory)
    assert [o.target.repository for o in result.failed] == ["m/calico/cni"]
    assert not any(repo == "m/calico/cni" for repo, _ in memory.manifests)
    assert len(result.pushed) == len(source_set.images) - 1

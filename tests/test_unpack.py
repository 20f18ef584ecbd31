"""unpack against real Docker Distribution registries: naming, order, skips, mounts, resume, failures.

Expectations come from the generated source layout (``support.sources``), and registry state is
read back with plain httpx and skopeo, never with imgbundle's own client.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pytest

import imageset
from bundler.errors import (
    CorruptBundleError,
    InputError,
    Interrupted,
    PartialFailureError,
    UnreachableError,
)
from bundler.registry import Backoff, RegistryOptions
from bundler.unpack import UnpackOptions, unpack, write_report
from support.options import offline_options, registry_options
from support.registry import RunningRegistry, TokenRegistry, registry_catalog, registry_tags
from support.sources import (
    RecordingProgress,
    SourceSet,
    assert_registry_holds,
    build_bundle,
    expected_state,
    read_source,
    registry_tags_state,
    skopeo_raw,
    stored_blob_digests,
)


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


def test_fresh_push_is_complete_byte_exact_and_counted(fresh_registry: RunningRegistry, bundle_file: Path,
                                                       source_set: SourceSet, tmp_path: Path) -> None:
    progress = RecordingProgress()
    result = unpack(bundle_file, UnpackOptions(to=f"{fresh_registry.host}/mirror", jobs=4),
                    registry_options(fresh_registry), progress=progress)
    expected = expected_state(source_set, lambda image: f"mirror/{image.path}")

    assert not result.failed and result.failure_error() is None
    assert_registry_holds(fresh_registry, expected)
    # every digest uploaded exactly once, then mounted into the other repositories needing it
    assert result.blobs_uploaded == len(expected.blobs)
    assert result.bytes_uploaded == expected.unique_bytes
    assert result.blobs_mounted == expected.mounts > 0
    assert result.blobs_present == 0
    assert result.manifests_pushed == len(expected.manifests)
    assert result.tags_set == len(expected.tags)
    assert progress.bytes == expected.unique_bytes
    assert ("push", expected.unique_bytes, len(source_set.images)) in progress.phases
    assert sorted(name for name, ok in progress.items if ok and "/mirror/" in name) == sorted(
        t.display for t in result.targets)
    # the digest-only source stays digest-only: its repository has no tag
    pause = next(i for i in source_set.images if i.tag is None)
    assert registry_tags(fresh_registry, f"mirror/{pause.path}") == []
    # pins resolve with skopeo and hash to the source digest, the odd-whitespace index included
    for image in source_set.images[:3] + [pause]:
        raw = skopeo_raw(f"docker://{fresh_registry.host}/mirror/{image.path}@{image.digest}", "--tls-verify=false")
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.digest

    # a second unpack of the same bundle finds everything and uploads nothing
    again = unpack(bundle_file, UnpackOptions(to=f"{fresh_registry.host}/mirror"), registry_options(fresh_registry))
    assert not again.failed
    assert (again.blobs_uploaded, again.blobs_mounted, again.bytes_uploaded) == (0, 0, 0)
    assert (again.manifests_pushed, again.tags_set) == (0, 0)
    assert again.tags_present == len(expected.tags)
    assert again.blobs_present == sum(len(r) for r in expected.blobs.values())

    # --report: JSON list and CSV with header, one row per image
    write_report(tmp_path / "r.json", again.report_rows())
    rows = json.loads((tmp_path / "r.json").read_text())
    assert len(rows) == len(source_set.images)
    assert rows[0] == {"source": source_set.images[0].reference,
                       "target": f"{fresh_registry.host}/mirror/{source_set.images[0].path}:"
                                 f"{source_set.images[0].tag}",
                       "digest": source_set.images[0].digest}
    write_report(tmp_path / "r.csv", again.report_rows())
    with (tmp_path / "r.csv").open() as handle:
        assert list(csv.DictReader(handle)) == rows
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == "source,target,digest"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(InputError):
        write_report(tmp_path / "r.txt", rows)


def test_token_auth_mounts_across_repositories(token_registry: TokenRegistry, bundle_file: Path,
                                               source_set: SourceSet) -> None:
    prefix = unique_prefix()
    before = len(token_registry.token_requests)
    result = unpack(bundle_file, UnpackOptions(to=f"{token_registry.host}/{prefix}"), registry_options(token_registry))
    expected = expected_state(source_set, lambda image: f"{prefix}/{image.path}")
    assert not result.failed
    assert_registry_holds(token_registry, expected)
    assert result.blobs_mounted == expected.mounts > 0
    assert result.blobs_uploaded == len(expected.blobs)
    requests = token_registry.token_requests[before:]
    assert all(r.user == "pusher" for r in requests if r.auth_sent)
    mount_requests = [
        r for r in requests
        if any(s.endswith(":pull,push") for s in r.scopes)
        and any(s.endswith(":pull") and not s.endswith(",push") and s.startswith(f"repository:{prefix}/")
                for s in r.scopes)
    ]
    assert mount_requests, "no token was asked for a mount (push on the target and pull on the source)"
    granted = {a["name"]: a["actions"] for r in mount_requests for a in r.granted}
    assert any("push" in actions for actions in granted.values())


def test_token_auth_reader_cannot_push(token_registry: TokenRegistry, small_bundle: Path) -> None:
    prefix = unique_prefix()
    options = offline_options(credentials={token_registry.host: ("reader", token_registry.users["reader"])},
                              retries=0)
    result = unpack(small_bundle, UnpackOptions(to=f"{token_registry.host}/{prefix}"), options)
    assert len(result.failed) == len(result.images)
    error = result.failure_error()
    assert error is not None and error.exit_code in (11, 15), error
    assert registry_tags(token_registry, f"{prefix}/calico/node") == []


def test_basic_auth_and_tls(basic_registry: RunningRegistry, tls_registry: RunningRegistry, small_bundle: Path,
                            small_source: SourceSet) -> None:
    for reg in (basic_registry, tls_registry):
        prefix = unique_prefix()
        result = unpack(small_bundle, UnpackOptions(to=f"{reg.host}/{prefix}"), registry_options(reg))
        assert not result.failed, result.failure_summary()
        assert result.blobs_mounted > 0
        assert_registry_holds(reg, expected_state(small_source, lambda image, p=prefix: f"{p}/{image.path}"))
    image = small_source.images[0]
    raw = skopeo_raw(f"docker://{tls_registry.host}/{prefix}/{image.path}@{image.digest}", "--tls-verify=false")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.digest


def test_wrong_password_fails_every_image_with_auth_error(basic_registry: RunningRegistry, small_bundle: Path) -> None:
    options = offline_options(credentials={basic_registry.host: ("alice", "wrong")}, retries=0)
    result = unpack(small_bundle, UnpackOptions(to=f"{basic_registry.host}/{unique_prefix()}"), options)
    error = result.failure_error()
    assert len(result.failed) == len(result.images)
    assert error is not None and error.exit_code == 11


def test_target_holding_part_of_the_set_skips_it(registry: RunningRegistry, source_set: SourceSet,
                                                 tmp_path: Path) -> None:
    prefix = unique_prefix()
    first_names = ["calico/node", "cilium/cilium", "pause"]
    part = source_set.select(first_names)
    build_bundle(part, tmp_path / "part.tar.zst")
    build_bundle(source_set, tmp_path / "all.tar.zst")
    options = UnpackOptions(to=f"{registry.host}/{prefix}")
    first = unpack(tmp_path / "part.tar.zst", options, registry_options(registry))
    assert not first.failed and first.bytes_uploaded == sum(part.blob_sizes().values())

    second = unpack(tmp_path / "all.tar.zst", options, registry_options(registry))
    expected = expected_state(source_set, lambda image: f"{prefix}/{image.path}")
    assert not second.failed
    assert_registry_holds(registry, expected)
    already = part.blob_sizes()
    assert second.bytes_uploaded == sum(s for d, s in source_set.blob_sizes().items() if d not in already)
    assert second.blobs_uploaded == len(set(source_set.blob_sizes()) - set(already))
    assert second.blobs_present == sum(len(part_image.blobs) for part_image in
                                       {i.path: i for i in part.images}.values())
    assert second.manifests_present == len({(i.path, d) for i in part.images for d in i.manifests})
    assert second.tags_present == len([i for i in part.images if i.tag])


def test_interrupted_unpack_resumes_and_ends_identical(registry_factory, bundle_file: Path,
                                                       source_set: SourceSet) -> None:
    interrupted, clean = registry_factory(), registry_factory()
    expected = expected_state(source_set, lambda image: f"m/{image.path}")
    stopper = RecordingProgress(stop_after=expected.unique_bytes // 2)
    with pytest.raises(Interrupted) as caught:
        unpack(bundle_file, UnpackOptions(to=f"{interrupted.host}/m", jobs=3), registry_options(interrupted),
               progress=stopper)
    assert caught.value.exit_code == 130
    stored = stored_blob_digests(interrupted)
    assert 0 < len(stored) < len(expected.blobs)

    resumed = unpack(bundle_file, UnpackOptions(to=f"{interrupted.host}/m"), registry_options(interrupted))
    assert not resumed.failed
    sizes = source_set.blob_sizes()
    assert resumed.bytes_uploaded == sum(sizes[d] for d in expected.blobs if d not in stored)
    assert resumed.bytes_uploaded < expected.unique_bytes
    assert resumed.blobs_present > 0
    assert_registry_holds(interrupted, expected)

    fresh = unpack(bundle_file, UnpackOptions(to=f"{clean.host}/m"), registry_options(clean))
    assert not fresh.failed
    assert registry_tags_state(interrupted, expected.repositories) == registry_tags_state(clean, expected.repositories)
    assert sorted(registry_catalog(interrupted)) == sorted(registry_catalog(clean))
    assert stored_blob_digests(interrupted) == stored_blob_digests(clean)


def test_corrupt_blob_fails_only_the_images_that_need_it(fresh_registry: RunningRegistry, bundle_file: Path,
                                                         source_set: SourceSet, tmp_path: Path) -> None:
    users: dict[str, list[str]] = {}
    for image in source_set.images:
        for digest in image.blobs:
            users.setdefault(digest, []).append(image.reference)
    sizes = source_set.blob_sizes()
    victim = max((d for d, refs in users.items() if len(refs) == 1), key=lambda d: sizes[d])
    broken = tmp_path / "broken.tar.zst"
    shutil.copyfile(bundle_file, broken)
    _flip_byte_inside(broken, (source_set.layout / "blobs" / "sha256" / victim.split(":")[1]).read_bytes())

    result = unpack(broken, UnpackOptions(to=f"{fresh_registry.host}/c"), registry_options(fresh_registry))
    [failed] = result.failed
    assert failed.target.source_ref == users[victim][0]
    assert isinstance(failed.error, CorruptBundleError), failed.error
    assert len(result.pushed) == len(source_set.images) - 1
    error = result.failure_error()
    assert isinstance(error, PartialFailureError) and error.exit_code == 30
    assert failed.target.display in str(error)
    bad = next(i for i in source_set.images if i.reference == users[victim][0])
    assert registry_tags(fresh_registry, f"c/{bad.path}") == []
    good = source_set.select([i.path for i in source_set.images if i.reference != bad.reference
                              and i.path != bad.path])
    assert_registry_holds(fresh_registry, expected_state(good, lambda image: f"c/{image.path}"))


def _flip_byte_inside(bundle: Path, blob: bytes) -> None:
    """Flip one byte in the middle of the blob's stored bytes (random layers are stored raw by zstd)."""
    data = bytearray(bundle.read_bytes())
    middle = len(blob) // 2
    window = blob[middle : middle + 48]
    position = data.find(window)
    assert position >= 0 and data.find(window, position + 1) < 0, "blob bytes not found once in the bundle"
    data[position + 10] ^= 0xFF
    bundle.write_bytes(bytes(data))


def test_keep_host_flatten_and_maps_name_the_repositories(registry: RunningRegistry, bundle_file: Path,
                                                          source_set: SourceSet) -> None:
    prefix = unique_prefix()
    options = UnpackOptions(to=f"{registry.host}/{prefix}", keep_host=True, flatten=True,
                            maps=[("quay.io/calico", "net/calico")])
    result = unpack(bundle_file, options, registry_options(registry))
    assert not result.failed

    def repo_of(image) -> str:
        if image.path.startswith("calico/"):
            return f"{prefix}/" + ("net/" + image.path).replace("/", "-")
        return f"{prefix}/" + f"quay.io/{image.path}".replace("/", "-")

    expected = expected_state(source_set, repo_of)
    assert_registry_holds(registry, expected)
    mine = {repo for repo in registry_catalog(registry) if repo.startswith(prefix + "/")}
    assert mine == expected.repositories
    assert f"{prefix}/net-calico-node" in mine and f"{prefix}/quay.io-library-nginx" in mine


def test_dry_run_plans_without_touching_the_registry(bundle_file: Path, source_set: SourceSet) -> None:
    progress = RecordingProgress()
    result = unpack(bundle_file, UnpackOptions(to="127.0.0.1:1/dry", dry_run=True),
                    RegistryOptions(retries=0), progress=progress)
    assert result.dry_run and not result.failed
    assert [t.source_ref for t in result.targets] == [i.reference for i in source_set.images]
    assert [t.digest for t in result.targets] == [i.digest for i in source_set.images]
    assert result.targets[0].display == f"127.0.0.1:1/dry/{source_set.images[0].path}:{source_set.images[0].tag}"
    blobs = result.plan.blobs()
    assert {b.digest for b in blobs} == set(source_set.blob_sizes())
    assert result.plan.total_blob_bytes == sum(source_set.blob_sizes().values())
    assert sum(len(b.repositories) for b in blobs) == sum(
        len(r) for r in expected_state(source_set, lambda i: i.path).blobs.values())
    assert result.blobs_uploaded == result.bytes_uploaded == 0
    assert len(result.report_rows()) == len(source_set.images)
    assert progress.phases == []


def test_unreachable_registry_is_one_error(bundle_file: Path) -> None:
    options = RegistryOptions(retries=0, retry_timeout=0, connect_timeout=2, backoff=Backoff(initial=0.01))
    with pytest.raises(UnreachableError, match="127.0.0.1:1"):
        unpack(bundle_file, UnpackOptions(to="127.0.0.1:1/x"), options)


def test_naming_collision_is_refused_before_pushing(bundle_file: Path, registry: RunningRegistry) -> None:
    # both nginx tags into one repository is fine; two source repositories onto one tag is not
    maps = [("quay.io/calico/node", "same"), ("quay.io/calico/cni", "same")]
    with pytest.raises(InputError, match="quay.io/calico/node:v3.26.4 and quay.io/calico/cni:v3.26.4"):
        unpack(bundle_file, UnpackOptions(to=f"{registry.host}/{unique_prefix()}", maps=maps),
               registry_options(registry))


BIG = 60 * 1024 * 1024
"""One layer this size (under the 64 MiB monolithic limit) makes buffering it whole impossible to miss."""


@pytest.fixture(scope="module")
def big_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    image_set = imageset.generate(tmp_path_factory.mktemp("big-set"), images=12, total_size=1024 * 1024, seed=5,
                                  big_layer=BIG)
    source = read_source(image_set).select(["cilium/cilium"])
    return build_bundle(source, tmp_path_factory.mktemp("big-bundle") / "big.tar.zst"), sum(source.blob_sizes().values())


def _peak_during_unpack(reg: RunningRegistry, bundle: Path, prefix: str, **options: object) -> tuple[int, object]:
    import tracemalloc

    tracemalloc.start()
    try:
        result = unpack(bundle, UnpackOptions(to=f"{reg.host}/{prefix}", jobs=2), registry_options(reg, **options))
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_big_blob_streams_with_bounded_memory(registry: RunningRegistry, big_bundle: tuple[Path, int]) -> None:
    bundle, total = big_bundle
    peak, result = _peak_during_unpack(registry, bundle, unique_prefix())
    assert not result.failed and result.bytes_uploaded == total  # type: ignore[attr-defined]
    assert peak < BIG * 0.4, f"peak {peak / 2**20:.1f} MiB while pushing a {BIG / 2**20:.0f} MiB layer"


def test_big_blob_in_patch_chunks_with_bounded_memory(registry: RunningRegistry,
                                                      big_bundle: tuple[Path, int]) -> None:
    bundle, total = big_bundle
    peak, result = _peak_during_unpack(registry, bundle, unique_prefix(), chunk_size=2 * 1024 * 1024)
    assert not result.failed and result.bytes_uploaded == total  # type: ignore[attr-defined]
    assert peak < BIG * 0.4, f"peak {peak / 2**20:.1f} MiB while pushing a {BIG / 2**20:.0f} MiB layer in 2 MiB PATCHes"

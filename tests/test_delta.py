"""Delta bundles (``pack --since``): month 1 is the 12-image test set, month 2 the same set a month later
(``imageset.generate(upgrade=True)``: calico v3.26.4 -> v3.26.5 over shared base and family layers,
cilium rebuilt under its tag). Expectations come from walking the two generated layouts with json and
hashlib, and from real registries read back with plain httpx.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import msgspec
import pytest

import imageset
from bundler.bundle import BundleReader, read_index
from bundler.bundle.index import bundle_id, decode_index
from bundler.cli.output import format_bytes
from bundler.errors import CorruptBundleError, InputError, NotFoundError, Remedy
from bundler.pack import pack, read_requests
from bundler.unpack import UnpackOptions, unpack
from bundler.verify import verify_bundle
from support.cli import run_cli
from support.images import seed_into
from support.options import registry_options
from support.registry import RunningRegistry, registry_catalog, start_registry
from support.servers import starts_server
from support.sources import (
    SourceSet,
    assert_registry_holds,
    expected_state,
    read_source,
    stored_blob_digests,
)

CREATED = "2026-02-01T00:00:00Z"


@dataclass
class Months:
    """The source registry after month 2 was pushed, both walked sets and the bundles packed from them."""

    source: RunningRegistry
    first: SourceSet
    second: SourceSet
    month1: Path
    month2: Path
    delta: Path
    base_json: Path
    workdir: Path


def pack_list(source: RunningRegistry, image_set, output: Path, **options) -> Path:  # noqa: ANN001
    requests = read_requests(image_set.image_list(source.host).splitlines(), "list")
    pack(requests, output, registry_options(source), created=CREATED, jobs=4, **options)
    return output


@pytest.fixture(scope="module")
@starts_server
def months(small_imageset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Months]:  # noqa: ANN001
    from bundler.bundle.delta import Since, load_base

    workdir = tmp_path_factory.mktemp("delta")
    upgrade = imageset.generate(workdir / "month2", images=small_imageset.images.__len__(),
                                total_size=small_imageset.total_size, seed=small_imageset.seed, upgrade=True)
    with start_registry(workdir / "source") as source:
        seed_into(source, small_imageset)
        month1 = pack_list(source, small_imageset, workdir / "month1.tar.zst")
        base_json = workdir / "month1.json"
        base_json.write_text(run_cli("list", "--json", str(month1)).stdout)
        seed_into(source, upgrade)  # calico's new tags, cilium's tag moves
        month2 = pack_list(source, upgrade, workdir / "month2.tar.zst")
        delta = pack_list(source, upgrade, workdir / "month2-delta.tar.zst", since=Since.of([load_base(base_json)]))
        yield Months(source, read_source(small_imageset, source.host), read_source(upgrade, source.host),
                     month1, month2, delta, base_json, workdir)


def test_the_upgrade_set_shares_most_layers_and_changes_calico_and_cilium(months: Months) -> None:
    old, new = months.first.blob_sizes(), months.second.blob_sizes()
    changed = {image.path for image in months.second.images
               if image.digest not in {i.digest for i in months.first.images}}
    assert changed == {"calico/node", "calico/cni", "cilium/cilium"}
    assert sum(size for digest, size in new.items() if digest in old) > 0.7 * sum(new.values())
    assert [i.line.rsplit(":", 1)[1] for i in months.second.images[:2]] == ["v3.26.5", "v3.26.5"]


def test_a_delta_carries_every_manifest_and_only_the_new_blobs(months: Months) -> None:
    old, new = months.first.blob_sizes(), months.second.blob_sizes()
    full, delta = read_index(months.month2), read_index(months.delta)
    assert (full.version, delta.version) == ("1.0", "1.1")
    assert delta.base == bundle_id(read_index(months.month1))
    assert {e.digest for e in delta.manifests} == {e.digest for e in full.manifests}
    assert {e.digest: e.size for e in delta.blobs} == {d: s for d, s in new.items() if d not in old}
    assert {e.digest: e.size for e in delta.external} == {d: s for d, s in new.items() if d in old}
    assert delta.images == full.images
    # the file is about the new bytes: a fifth of the full bundle here
    carried = sum(e.size for e in delta.blobs) + sum(e.size for e in delta.manifests)
    size = months.delta.stat().st_size
    assert 0.9 * carried < size < carried * 1.02 + 64 * 1024  # JSON members compress, layers do not
    assert size < 0.3 * months.month2.stat().st_size


def test_the_base_may_be_the_bundle_or_the_json_that_list_exports(months: Months) -> None:
    from bundler.bundle.delta import load_base

    from_bundle, from_json = load_base(months.month1), load_base(months.base_json)
    assert (from_bundle.id, from_bundle.blobs) == (from_json.id, from_json.blobs)
    assert from_bundle.blobs == set(months.first.blob_sizes())


def test_the_bundle_id_is_sha256_of_the_sorted_member_digests(months: Months) -> None:
    document = json.loads(months.base_json.read_text())
    digests = sorted(entry["digest"] for entry in document["manifests"] + document["blobs"])
    expected = "sha256:" + hashlib.sha256("".join(d + "\n" for d in digests).encode()).hexdigest()
    assert json.loads(run_cli("list", "--json", str(months.delta)).stdout)["base"] == expected
    assert f"bundle id {expected}" in run_cli("list", str(months.month1)).stdout
    assert f"delta of base {expected}" in run_cli("list", str(months.delta)).stdout


def test_verify_checks_what_a_delta_carries_and_lists_what_it_expects(months: Months) -> None:
    report = verify_bundle(months.delta)
    assert report.ok, report.problems
    old, new = months.first.blob_sizes(), months.second.blob_sizes()
    assert {e.digest for e in report.expected} == {d for d in new if d in old}
    size = format_bytes(sum(entry.size for entry in report.expected))
    summary = f"delta of base {report.base}: expects {len(report.expected)} blobs ({size}) on the target"
    output = run_cli("verify", str(months.delta), "-q").stdout
    assert f"{summary} (-v lists them)" in output.splitlines() and "expects sha256:" not in output
    output = run_cli("verify", str(months.delta), "-q", "-v").stdout
    assert summary in output.splitlines()
    expects = [line for line in output.splitlines() if line.startswith("expects sha256:")]
    assert len(expects) == len(report.expected)
    document = json.loads(run_cli("verify", str(months.delta), "--json").stdout)
    assert document["base"] == read_index(months.delta).base and len(document["expected"]) == len(expects)


def test_unpacking_a_delta_first_names_the_missing_blobs_and_pushes_nothing(months: Months,
                                                                         fresh_registry: RunningRegistry) -> None:
    done = run_cli("unpack", str(months.delta), "--to", f"{fresh_registry.host}/site", "-q",
                   expect=NotFoundError.exit_code)
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "the target lacks" in message and read_index(months.delta).base in message
    assert read_index(months.delta).external[0].digest in message or "more" in message
    assert stored_blob_digests(fresh_registry) == set() and registry_catalog(fresh_registry) == []


def test_base_then_delta_gives_the_new_set_uploading_only_new_bytes(months: Months,
                                                                  fresh_registry: RunningRegistry) -> None:
    settings = UnpackOptions(to=f"{fresh_registry.host}/site", jobs=4)
    options = registry_options(fresh_registry)
    assert not unpack(months.month1, settings, options).failed
    result = unpack(months.delta, settings, options)
    assert not result.failed, result.failure_summary()
    assert_registry_holds(fresh_registry, expected_state(months.second, lambda image: f"site/{image.path}"))
    assert result.bytes_uploaded == sum(e.size for e in read_index(months.delta).blobs)
    assert "site/cilium/cilium:v1.13.4" in result.tags_moved


def test_an_expected_blob_in_another_repository_is_mounted(months: Months, fresh_registry: RunningRegistry) -> None:
    """Month 2 puts calico/node under a new name: its shared layers are only in the other calico repositories."""
    options = registry_options(fresh_registry)
    assert not unpack(months.month1, UnpackOptions(to=f"{fresh_registry.host}/site"), options).failed
    renamed = UnpackOptions(to=f"{fresh_registry.host}/site",
                            maps=[(months.source.ref("calico/node"), "calico/node-next")])
    result = unpack(months.delta, renamed, options)
    assert not result.failed, result.failure_summary()
    assert result.blobs_mounted > 0
    rename = {"calico/node": "calico/node-next"}
    assert_registry_holds(fresh_registry, expected_state(months.second,
                                                         lambda image: f"site/{rename.get(image.path, image.path)}"))


def test_a_delta_of_a_delta_leaves_out_what_both_brought(months: Months, tmp_path: Path) -> None:
    from bundler.bundle.delta import Since, load_base

    images = imageset.ImageSet.load(months.workdir / "month2")
    again = pack_list(months.source, images, tmp_path / "again.tar.zst", since=Since.of([load_base(months.delta)]))
    index = read_index(again)
    assert index.blobs == [] and {e.digest for e in index.external} == set(months.second.blob_sizes())
    assert index.base == bundle_id(read_index(months.delta))
    with BundleReader.open(again) as reader:
        assert len(list(reader.members())) == 3 + len(index.manifests)


def test_since_must_name_a_bundle_or_its_index(months: Months, tmp_path: Path) -> None:
    from bundler.bundle.delta import load_base

    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    with pytest.raises(InputError, match="not a bundle or a bundle index") as raised:
        load_base(junk)
    assert "--since" not in str(raised.value) and raised.value.remedy is Remedy.NAME_BASE  # the CLI names the flag
    done = run_cli("pack", months.source.ref("pause:3.9"), "-o", str(tmp_path / "x.tar.zst"), "--since", str(junk),
                   expect=InputError.exit_code)
    assert f"--since {junk}: not a bundle or a bundle index" in done.stderr
    assert "what 'imgbundle list --json' printed" in done.stderr


def test_index_rules_for_the_delta_fields() -> None:
    digest = "sha256:" + "a" * 64
    base = {"format": "imgbundle", "version": "1.1", "created": CREATED, "tool": "t", "images": [], "skipped": [],
            "manifests": [], "blobs": [],
            "totals": {"images": 0, "manifests": 0, "blobs": 0, "manifestBytes": 0, "blobBytes": 0}}
    external = [{"digest": digest, "size": 1, "mediaType": "x"}]
    assert decode_index(msgspec.json.encode({**base, "base": digest, "external": external})).external[0].size == 1
    with pytest.raises(CorruptBundleError, match="without a base"):
        decode_index(msgspec.json.encode({**base, "external": external}))
    with pytest.raises(CorruptBundleError, match="not sorted"):
        decode_index(msgspec.json.encode({**base, "base": digest, "external": external * 2}))
    # a 1.0 reader's index, and a later minor version with fields we do not know, are read alike
    assert decode_index(msgspec.json.encode({**base, "version": "1.0"})).base is None
    assert decode_index(msgspec.json.encode({**base, "version": "1.9", "future": [1]})).external == []

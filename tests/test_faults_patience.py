"""Retries that follow progress: a request keeps trying while its host moves bytes, gives up after
``retry_timeout`` seconds without any, says how every try failed, and costs only what depends on it.
Slow and stalled bodies are told apart per chunk, and a stalled one resumes with ``Range``.

Every test asserts that its faults fired (``proxy.fired``): one in which none did would prove nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bundler.bundle import read_index
from bundler.errors import NotFoundError, RegistryError
from bundler.pack import pack, read_requests
from bundler.stores.cache import BlobCache
from bundler.unpack import UnpackOptions, unpack

import imageset
from support.cli import files_in, run_cli
from support.faults import Answer, FaultProxy, Rule
from support.images import seed_into
from support.options import fast_options
from support.registry import RunningRegistry
from support.sources import SourceSet

pytestmark = pytest.mark.registry

SEED = 2020
MiB = 1024 * 1024
Proxies = Callable[..., FaultProxy]
MIXED = ("500", "429", "reset", "truncate", "500", "503")
"""Six faults in a row for one request: more than its ``retries``, fewer than its patience allows."""


def _first_image(image_set: object, host: str) -> tuple[str, str]:
    """(list line, manifest path regex) of the set's first tagged image."""
    lines = image_set.image_list(host).splitlines()  # type: ignore[attr-defined]
    line = next(text for text in lines if text.startswith(host))
    repository, _, tag = line.split("/", 1)[1].partition(":")
    return line, f"/v2/{repository}/manifests/{tag}$"


def _mixed_faults_on_one_manifest(seeded: tuple[RunningRegistry, object], fault_proxy: Proxies,
                                  ) -> tuple[FaultProxy, str, str]:
    """A proxy failing the first six GETs of the first image's manifest (``MIXED``): (proxy, line, path regex)."""
    reg, image_set = seeded
    proxy = fault_proxy(reg)
    line, manifest = _first_image(image_set, proxy.host)
    proxy.rules += [Rule("GET", manifest, nth=n, fault=kind) for n, kind in enumerate(MIXED, start=1)]
    return proxy, line, manifest


def test_a_request_keeps_trying_while_the_host_makes_progress(
        seeded_registry: tuple[RunningRegistry, object], fault_proxy: Proxies, tmp_path: Path) -> None:
    """Six faults in a row on one manifest, ``retries=1``: within its patience the request tries a seventh time."""
    proxy, line, manifest = _mixed_faults_on_one_manifest(seeded_registry, fault_proxy)
    pack(read_requests([line], "test"), tmp_path / "b.tar.zst", fast_options(retries=1, retry_timeout=30))
    assert sum(proxy.fired.values()) == len(MIXED) and len(proxy.requests("GET", manifest)) == 7, proxy.summary()


def test_the_final_error_names_request_host_and_the_mix(
        seeded_registry: tuple[RunningRegistry, object], fault_proxy: Proxies, tmp_path: Path) -> None:
    proxy, line, _ = _mixed_faults_on_one_manifest(seeded_registry, fault_proxy)
    with pytest.raises(RegistryError) as caught:
        pack(read_requests([line], "test"), tmp_path / "b.tar.zst", fast_options(retries=5, retry_timeout=0))
    message = str(caught.value)
    assert f"GET manifest on {proxy.host} failed 6 tries" in message, message
    assert "2× HTTP 500" in message and "1× HTTP 429" in message and "last:" in message, message
    assert caught.value.remedy is None, "a mix of faults is not a rate limit"
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("command", ["pack", "unpack"])
def test_at_100_percent_faults_the_run_ends_within_the_retry_timeout(
        command: str, seeded_registry: tuple[RunningRegistry, object], fresh_registry: RunningRegistry,
        small_bundle: Path, fault_proxy: Proxies, tmp_path: Path) -> None:
    """Every request fails (500, 429, reset): the run tries past ``--retries`` for ``--retry-timeout`` seconds,
    then ends with one line naming the host and the mix; never much later."""
    patience = 3.0
    reg, image_set = seeded_registry
    proxy = fault_proxy(reg if command == "pack" else fresh_registry, rate=1.0, kinds=("500", "429", "reset"),
                        retry_after="1")
    budget = ("--retries", "1", "--timeout", "1", "--retry-timeout", str(patience))
    if command == "pack":
        line = _first_image(image_set, proxy.host)[0]
        run = run_cli("pack", "-q", line, "-o", str(tmp_path / "b.tar.zst"), *budget, expect=None)
    else:
        run = run_cli("unpack", "-q", str(small_bundle), "--to", f"{proxy.host}/mirror", *budget, expect=None)
    assert run.code in (10, 13), run.stderr
    assert len(run.error_lines) == 1 and run.stderr.strip().splitlines() == run.error_lines, run.stderr
    line = run.error_lines[0]
    assert proxy.host in line and " tries in " in line and "×" in line, line
    assert patience <= run.seconds < patience + 6, f"took {run.seconds:.1f}s: {line}"
    assert len(proxy.seen) > 2 and proxy.fired.total() == len(proxy.seen), proxy.summary()
    assert files_in(tmp_path) == []


def _blob_only(source: SourceSet, path: str) -> str:
    """A blob that only the image at ``path`` needs."""
    others = {digest for image in source.images if image.path != path for digest in image.blobs}
    mine = next(image for image in source.images if image.path == path)
    return next(digest for digest in mine.blobs if digest not in others)


@pytest.mark.parametrize(("kind", "uploads_left"), [("503", 1), ("reset", 0)])
def test_a_blob_that_fails_for_good_fails_only_its_image(kind: str, uploads_left: int, fresh_registry: RunningRegistry,
                                                          fault_proxy: Proxies, small_bundle: Path,
                                                          small_source: SourceSet) -> None:
    """One blob's upload answers 503 forever, or is reset after the registry stored it: it retries while the
    others push, then fails only its image (no "not tried" for the others), and the re-run finishes."""
    blob = _blob_only(small_source, "pause")
    proxy = fault_proxy(fresh_registry)
    proxy.rules.append(Rule("PUT", f"/blobs/uploads/.*{blob.split(':')[1]}", fault=kind))
    settings = UnpackOptions(to=f"{proxy.host}/mirror")
    first = unpack(small_bundle, settings, fast_options(retries=1, retry_timeout=2.0))
    assert [o.target.repository for o in first.failed] == ["mirror/pause"], first.failure_summary()
    assert "not tried" not in first.failure_summary() and "1 of 3 images failed" in first.failure_summary()
    assert len(first.pushed) == 2 and proxy.fired[kind] > 2, proxy.summary()
    proxy.rules.clear()
    second = unpack(small_bundle, settings, fast_options())
    assert not second.failed, second.failure_summary()
    assert second.blobs_uploaded == uploads_left and second.tags_set + second.manifests_pushed >= 1


def test_a_reset_after_any_write_was_sent_is_retried(fresh_registry: RunningRegistry, fault_proxy: Proxies,
                                                      small_bundle: Path) -> None:
    """The registry did the work and the answer was lost: every write unpack makes is safe to repeat."""
    proxy = fault_proxy(fresh_registry)
    proxy.rules += [Rule("PUT", "/manifests/sha256:", nth=1, fault="reset"),
                    Rule("PUT", "/manifests/v", nth=1, fault="reset"),
                    Rule("POST", "/blobs/uploads/", nth=2, fault="reset"),
                    Rule("PUT", "/blobs/uploads/", nth=1, fault="reset")]
    result = unpack(small_bundle, UnpackOptions(to=f"{proxy.host}/mirror"), fast_options(retries=1))
    assert not result.failed, result.failure_summary()
    assert proxy.fired == {"reset": 4}, proxy.summary()


@pytest.fixture(scope="module")
def big_image(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``faults-slow/cilium/cilium:v1.13.4`` with one 3 MiB layer: (reference path, layer digest)."""
    image_set = imageset.generate(tmp_path_factory.mktemp("slow-set"), images=imageset.MIN_IMAGES,
                                  total_size=MiB, seed=SEED, big_layer=3 * MiB + 777)
    seed_into(registry, image_set, repo_prefix="faults-slow")
    return "faults-slow/cilium/cilium:v1.13.4", image_set.big_layer_digest


def test_a_trickling_body_is_cut_per_chunk_and_resumed_with_range(
        registry: RunningRegistry, fault_proxy: Proxies, big_image: tuple[str, str], tmp_path: Path) -> None:
    """After 1 MiB the server sends 1 KiB/s: each recv gets bytes, yet the next MiB cannot arrive within the
    1 s read timeout, so the download resumes at byte 1 MiB instead of waiting forever."""
    path, layer = big_image
    proxy = fault_proxy(registry, trickle=1024)
    proxy.rules.append(Rule("GET", f"/blobs/{layer}", nth=1, fault="trickle", cut_after=MiB + 1000))
    started = time.monotonic()
    pack(read_requests([proxy.ref(path)], "test"), tmp_path / "b.tar.zst", fast_options(read_timeout=1.0))
    gets = proxy.requests("GET", f"/blobs/{layer}")
    assert proxy.fired == {"trickle": 1} and [s.headers.get("range") for s in gets] == [None, f"bytes={MiB}-"]
    assert time.monotonic() - started < 15
    assert any(blob.digest == layer for blob in read_index(tmp_path / "b.tar.zst").blobs)


def test_a_slow_but_steady_body_is_never_cut_for_taking_long(
        registry: RunningRegistry, fault_proxy: Proxies, big_image: tuple[str, str], tmp_path: Path) -> None:
    """2 MiB/s for a 3 MiB layer: the whole GET takes longer than the 1 s read timeout, every MiB well within it."""
    path, layer = big_image
    proxy = fault_proxy(registry, trickle=2 * MiB)
    proxy.rules.append(Rule("GET", f"/blobs/{layer}", nth=1, fault="trickle", cut_after=0))
    started = time.monotonic()
    pack(read_requests([proxy.ref(path)], "test"), tmp_path / "b.tar.zst", fast_options(read_timeout=1.0))
    assert proxy.fired == {"trickle": 1} and len(proxy.requests("GET", f"/blobs/{layer}")) == 1, proxy.summary()
    assert time.monotonic() - started > 1.0


@pytest.mark.parametrize("verbose", [True, False])
def test_each_retry_is_a_line_under_v_and_a_count_in_the_progress(
        verbose: bool, seeded_registry: tuple[RunningRegistry, object], fault_proxy: Proxies,
        tmp_path: Path) -> None:
    reg, image_set = seeded_registry
    proxy = fault_proxy(reg)
    line, manifest = _first_image(image_set, proxy.host)
    proxy.rules += [Rule("GET", manifest, nth=1, fault="500"), Rule("GET", manifest, nth=2, fault="reset")]
    run = run_cli("pack", line, "-o", str(tmp_path / "b.tar.zst"), *(["-v"] if verbose else []))
    retried = [text for text in run.stderr_lines if "GET manifest" in text and "retry" in text]
    assert proxy.fired == {"500": 1, "reset": 1}, proxy.summary()
    assert len(retried) == (2 if verbose else 0), run.stderr
    assert not verbose or "answered 500" in " ".join(retried), run.stderr
    assert any(text.endswith("(2 retries)") for text in run.stderr_lines), run.stderr


def test_a_blob_missing_for_good_fails_the_pack_naming_its_images_and_the_rerun_fetches_only_it(
        registry: RunningRegistry, fault_proxy: Proxies, big_image: tuple[str, str], tmp_path: Path) -> None:
    """A 404 on a blob is final (one GET): the error says which images it fails; every other blob still goes
    into the cache, so that the re-run downloads only the one that failed."""
    path, layer = big_image
    proxy = fault_proxy(registry)
    proxy.rules.append(Rule("GET", f"/blobs/{layer}", answer=lambda seen, forward: Answer(404)))
    requests = read_requests([proxy.ref(path), proxy.ref("faults-slow/calico/node:v3.26.4")], "test")
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(NotFoundError) as caught:
        pack(requests, tmp_path / "b.tar.zst", fast_options(retry_timeout=30), cache=cache)
    message = str(caught.value)
    assert f"(breaks: {requests[0].line})" in message and "calico/node" not in message, message
    assert len(proxy.requests("GET", f"/blobs/{layer}")) == 1
    assert [name for name in files_in(tmp_path) if not name.startswith("cache/")] == []
    proxy.rules.clear()
    proxy.seen.clear()
    pack(requests, tmp_path / "b.tar.zst", fast_options(), cache=cache)
    assert [seen.path.rsplit("/", 1)[1] for seen in proxy.requests("GET", "/blobs/")] == [layer]

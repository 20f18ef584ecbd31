"""Registry faults that go away: pack and unpack finish with the right digests through a faulting proxy.

Every test asserts that its faults fired (``proxy.fired``): one in which none did would prove nothing.
The oracle is the registry itself read with plain httpx (``support.registry``) and a clean run of the
same command: a faulted pack must write the byte-identical bundle.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

import imageset
from bundler.bundle import read_index
from bundler.digest import Digest
from bundler.errors import UnreachableError
from bundler.pack import pack, read_requests
from bundler.registry import RegistryClient
from bundler.unpack import UnpackOptions, unpack
from bundler.verify import verify_bundle
from support.cli import files_in, run_cli
from support.faults import KINDS, Answer, FaultProxy, Rule
from support.images import seed_into
from support.options import fast_options
from support.registry import RunningRegistry, registry_client, registry_get_manifest
from support.sources import assert_registry_holds, expected_state

SEED = int(os.environ.get("FAULTS_SEED", "5005"))
"""Seeds the proxies' fault schedules; shown in every assertion message (``proxy.summary()``)."""
CREATED = "2024-01-01T00:00:00Z"
MiB = 1024 * 1024
Proxies = Callable[..., FaultProxy]


def assert_matches_source(bundle: Path, reg: RunningRegistry) -> None:
    """The bundle verifies, and every image's digest is what the registry says for its reference."""
    assert verify_bundle(bundle).ok
    for image in read_index(bundle).images:
        repository, _, tag = image.reference.split("/", 1)[1].partition(":")
        if "@" not in image.reference:
            assert registry_get_manifest(reg, repository, tag)[2] == image.digest, image.reference


def test_pack_survives_a_few_percent_of_faults(seeded_registry: tuple[RunningRegistry, object],
                                               fault_proxy: Proxies, tmp_path: Path) -> None:
    reg, image_set = seeded_registry
    proxy = fault_proxy(reg, seed=SEED, rate=0.0, stall=1.5)
    requests = read_requests(image_set.image_list(proxy.host).splitlines(), "images.list")  # type: ignore[attr-defined]
    clean = pack(requests, tmp_path / "clean.tar.zst", fast_options(), created=CREATED)
    proxy.rate = 0.06
    faulted = pack(requests, tmp_path / "faulted.tar.zst", fast_options(), created=CREATED)
    assert set(proxy.fired) == set(KINDS), proxy.summary()
    assert faulted.write.sha256 == clean.write.sha256, proxy.summary()
    assert_matches_source(tmp_path / "faulted.tar.zst", reg)


def test_cli_pack_survives_faults(seeded_registry: tuple[RunningRegistry, object], fault_proxy: Proxies,
                                  tmp_path: Path) -> None:
    """The real command with ``--retries``/``--timeout`` (its default backoff, 0.5 s doubling, applies)."""
    reg, image_set = seeded_registry
    proxy = fault_proxy(reg, seed=SEED + 1, rate=0.08, kinds=("502", "503", "reset", "truncate", "stall"),
                        stall=1.5)
    lines = image_set.image_list(proxy.host).splitlines()  # type: ignore[attr-defined]
    image_list = tmp_path / "images.list"
    image_list.write_text("\n".join(lines[:5]) + "\n")  # two multi-arch images: ~50 requests
    out = tmp_path / "b.tar.zst"
    run = run_cli("pack", "-q", "-f", str(image_list), "-o", str(out), "--retries", "8", "--timeout", "1")
    assert run.code == 0, run.stderr
    assert sum(proxy.fired.values()) >= 3, proxy.summary()
    assert run_cli("verify", "-q", str(out)).code == 0
    assert_matches_source(out, reg)


def test_unpack_survives_a_few_percent_of_faults(fresh_registry: RunningRegistry, fault_proxy: Proxies,
                                                 small_bundle: Path, small_source) -> None:
    """Faults hit HEADs, mounts, PATCHed chunks and final PUTs, often after the registry did the work."""
    kinds = tuple(kind for kind in KINDS if kind != "truncate")  # unpack's answers have no bodies to truncate
    proxy = fault_proxy(fresh_registry, seed=SEED + 2, rate=0.06, stall=1.0, kinds=kinds)
    # which requests the schedule hits depends on thread timing (a run missed every POST once in 30), so one
    # request of each method is cut by script after the registry answered
    proxy.rules += [Rule("HEAD", "/blobs/", nth=2, fault="reset"),
                    Rule("POST", "/blobs/uploads/", nth=4, fault="reset"),
                    Rule("PATCH", "/blobs/uploads/", nth=3, fault="reset"),
                    Rule("PUT", "/blobs/uploads/", nth=5, fault="reset")]
    result = unpack(small_bundle, UnpackOptions(to=f"{proxy.host}/mirror"), fast_options(chunk_size=64 * 1024))
    assert not result.failed, result.failure_summary()
    assert set(proxy.fired) == set(kinds), proxy.summary()
    assert {seen.method for seen, _ in proxy.faulted} >= {"HEAD", "POST", "PATCH", "PUT"}, proxy.summary()
    assert proxy.rewritten > 0 and not proxy.requests(path=fresh_registry.host)
    assert_registry_holds(fresh_registry, expected_state(small_source, lambda image: f"mirror/{image.path}"))


@pytest.fixture(scope="module")
def big_image(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, int]:
    """``faults-big/cilium/cilium:v1.13.4`` with one 3 MiB layer: (reference path, layer digest, layer size)."""
    size = 3 * MiB + 12345
    image_set = imageset.generate(tmp_path_factory.mktemp("big-set"), images=imageset.MIN_IMAGES,
                                  total_size=MiB, seed=SEED, big_layer=size)
    seed_into(registry, image_set, repo_prefix="faults-big")
    return "faults-big/cilium/cilium:v1.13.4", image_set.big_layer_digest, size


def test_scripted_cuts_of_one_blob_resume_where_they_stopped(registry: RunningRegistry, fault_proxy: Proxies,
                                                             big_image: tuple[str, str, int],
                                                             tmp_path: Path) -> None:
    """Reset after 1 MiB + 1000 bytes, then a truncated resume, then the 3rd GET cut after 1000 bytes."""
    path, layer, size = big_image
    proxy = fault_proxy(registry)
    proxy.rules += [Rule("GET", f"/blobs/{layer}", nth=1, fault="reset", cut_after=MiB + 1000),
                    Rule("GET", f"/blobs/{layer}", nth=2, fault="truncate", cut_after=MiB + 1000),
                    Rule("GET", f"/blobs/{layer}", nth=3, fault="reset", cut_after=1000)]
    out = tmp_path / "big.tar.zst"
    pack(read_requests([proxy.ref(path)], "test"), out, fast_options())
    gets = proxy.requests("GET", f"/blobs/{layer}")
    assert proxy.fired == {"reset": 2, "truncate": 1} and len(gets) == 4, proxy.summary()
    # whole MiB chunks that arrived are kept: the retries ask only for the rest, and Distribution honours Range
    assert [seen.headers.get("range") for seen in gets] == [None, f"bytes={MiB}-", f"bytes={2 * MiB}-",
                                                            f"bytes={2 * MiB}-"]
    assert_matches_source(out, registry)
    assert any(blob.digest == layer and blob.size == size for blob in read_index(out).blobs)


def test_chunked_upload_resumes_where_the_registry_stands(fresh_registry: RunningRegistry,
                                                           fault_proxy: Proxies) -> None:
    """A PATCH lost on the way resumes the session at the registry's offset; one whose answer was lost (the
    registry applied it, our Location is stale, and Distribution then cancels the session) starts over."""
    data = random.Random(SEED).randbytes(3 * MiB + 17)
    digest, piece = Digest.of(data), 256 * 1024
    proxy = fault_proxy(fresh_registry)
    proxy.rules += [Rule("PATCH", nth=4, fault="reset", answer=lambda seen, forward: Answer(502)),
                    Rule("PATCH", nth=8, fault="reset")]
    with RegistryClient(proxy.host, fast_options(chunk_size=piece)) as client:
        client.blob_upload("faults/resume", digest, len(data),
                           lambda: (data[i:i + 99999] for i in range(0, len(data), 99999)))
    steps = [(s.method, s.headers.get("content-range", "")) for s in proxy.seen if "/uploads/" in s.path]
    resumed = steps.index(("GET", ""))
    assert steps[resumed + 1] == ("PATCH", f"{3 * piece}-{4 * piece - 1}"), steps
    assert [method for method, _ in steps].count("POST") == 2 and proxy.fired == {"reset": 2}, steps
    with registry_client(fresh_registry) as oracle:
        assert Digest.of(oracle.get(f"/v2/faults/resume/blobs/{digest}").content) == digest


@pytest.mark.parametrize("kind", ["503", "429", "reset", "truncate", "stall"])
def test_a_fault_on_the_first_plain_http_probe_is_retried(registry: RunningRegistry, fault_proxy: Proxies,
                                                          kind: str) -> None:
    """Loopback and insecure hosts are probed over https, then http; a fault on the http probe used to
    pass for a broken TLS handshake (``UnreachableError``, not retried)."""
    proxy = fault_proxy(registry, stall=1.0)
    proxy.rules.append(Rule("GET", "^/v2/$", nth=1, fault=kind))
    with RegistryClient(proxy.host, fast_options()) as client:
        client.ping()
    assert proxy.fired == {kind: 1} and len(proxy.requests("GET", "^/v2/$")) >= 2


def test_a_blob_that_keeps_failing_leaves_no_files(seeded_registry: tuple[RunningRegistry, object],
                                                   fault_proxy: Proxies,
                                        tmp_path: Path) -> None:
    """A blob that keeps failing ends the pack: no bundle, no temp file, the retry budget respected."""
    reg, image_set = seeded_registry
    proxy = fault_proxy(reg)
    proxy.rules.append(Rule("GET", "/blobs/", fault="reset", cut_after=10))
    with pytest.raises(UnreachableError) as caught:
        pack(read_requests(image_set.image_list(proxy.host).splitlines()[3:5], "list"),  # type: ignore[attr-defined]
             tmp_path / "b.tar.zst", fast_options(retries=2))
    assert "dropped" in str(caught.value) and "/blobs/" not in str(caught.value)
    assert files_in(tmp_path) == [] and proxy.fired["reset"] >= 3

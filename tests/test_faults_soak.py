"""The fault soak: seeded pack and unpack runs through one request in five failing, of mixed kinds.

Each run goes through its own ``FaultProxy`` at 20 % faults (8 % HTTP 500, 4 % 429, 4 % reset, 4 % body
cut short) with its own seed, and must end as a clean run does: the pack writes a byte-identical bundle,
the unpack leaves every target digest equal to the source's. The suite runs ``IMGBUNDLE_SOAK_RUNS`` runs
of each (1 by default, to stay fast); the full soak is ``scripts/soak.sh`` (20 of each). With
``IMGBUNDLE_SOAK_REPORT`` set to a file, each run appends one JSON line of figures to it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bundler.pack import pack, read_requests
from bundler.registry import RegistryOptions
from bundler.unpack import UnpackOptions, unpack

from support.faults import FaultProxy
from support.options import fast_options
from support.registry import RunningRegistry
from support.sources import SourceSet, assert_registry_holds, expected_state

pytestmark = pytest.mark.registry

RUNS = int(os.environ.get("IMGBUNDLE_SOAK_RUNS", "1"))
SEED = int(os.environ.get("IMGBUNDLE_SOAK_SEED", "7000"))
RATE = 0.20
MIX = ("500", "500", "429", "reset", "truncate")
"""Drawn evenly at ``RATE``: 8 % 500, 4 % 429, 4 % reset, 4 % truncate (a body cut short)."""
CREATED = "2024-01-01T00:00:00Z"
Proxies = Callable[..., FaultProxy]


def soak_options() -> RegistryOptions:
    """The shipped retry policy (5 retries, then patience) with backoff and patience cut to test size."""
    return fast_options(retries=5, retry_timeout=10.0, chunk_size=256 * 1024)


def _record(kind: str, seed: int, seconds: float, proxy: FaultProxy) -> None:
    report = os.environ.get("IMGBUNDLE_SOAK_REPORT")
    if report:
        figures = {"run": kind, "seed": seed, "seconds": round(seconds, 2), "requests": len(proxy.seen),
                   "faults": dict(proxy.fired)}
        with open(report, "a") as handle:
            handle.write(json.dumps(figures) + "\n")


@pytest.mark.parametrize("run", range(RUNS))
def test_pack_at_20_percent_faults_writes_the_clean_bundle(
        run: int, seeded_registry: tuple[RunningRegistry, object], fault_proxy: Proxies, tmp_path: Path) -> None:
    reg, image_set = seeded_registry
    seed = SEED + run
    proxy = fault_proxy(reg, seed=seed, rate=0.0, kinds=MIX)
    requests = read_requests(image_set.image_list(proxy.host).splitlines(), "images.list")  # type: ignore[attr-defined]
    clean = pack(requests, tmp_path / "clean.tar.zst", soak_options(), created=CREATED)
    proxy.seen.clear()
    proxy.rate = RATE
    started = time.monotonic()
    faulted = pack(requests, tmp_path / "faulted.tar.zst", soak_options(), created=CREATED)
    _record("pack", seed, time.monotonic() - started, proxy)
    assert proxy.fired.total() >= RATE * len(proxy.seen) - 1 and set(proxy.fired) == set(MIX), proxy.summary()
    assert (tmp_path / "faulted.tar.zst").read_bytes() == (tmp_path / "clean.tar.zst").read_bytes(), proxy.summary()
    assert faulted.write.sha256 == clean.write.sha256


@pytest.mark.parametrize("run", range(RUNS))
def test_unpack_at_20_percent_faults_leaves_equal_digests(
        run: int, fresh_registry: RunningRegistry, fault_proxy: Proxies, bundle_file: Path,
        source_set: SourceSet) -> None:
    seed = SEED + 100 + run
    proxy = fault_proxy(fresh_registry, seed=seed, rate=RATE, kinds=MIX)
    started = time.monotonic()
    result = unpack(bundle_file, UnpackOptions(to=f"{proxy.host}/mirror"), soak_options())
    _record("unpack", seed, time.monotonic() - started, proxy)
    assert not result.failed, f"{result.failure_summary()} ({proxy.summary()})"
    # a body can only be cut short where there is one: unpack's GETs are few, so truncate may not fire
    assert proxy.fired.total() >= RATE * len(proxy.seen) - 1 and set(proxy.fired) >= {"500", "429", "reset"}, (
        proxy.summary())
    assert_registry_holds(fresh_registry, expected_state(source_set, lambda image: f"mirror/{image.path}"))

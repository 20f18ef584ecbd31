"""SIGKILL at any point of ``pack`` and ``unpack``, then the same command again.

Nothing runs on a kill: no cleanup, no signal handler. So what must hold is what the files on disk and the
registry say afterwards. Each command is killed at 10 points, chosen by the bytes that went through a proxy
in front of the registry (fractions of an uninterrupted run's bytes, so the same points every time), and
run again at full speed: the re-run's result must equal an uninterrupted run's (the same bundle bytes; the
same tags, manifests and blobs), it must fetch or push only what the killed run had not completed (read
from the blob GETs and PUTs that went through the proxy), no cache entry may hold bytes that do not hash to
its name, and the killed run's temp files must be gone once they count as abandoned (unlocked, not written
for ``ABANDONED_AFTER`` seconds: the test ages them rather than waiting).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from bundler.bundle import read_index
from bundler.bundle.atomic import ABANDONED_AFTER

from support.cli import files_in, run_cli, start_cli
from support.registry import RunningRegistry, start_registry
from support.servers import starts_server
from support.slowproxy import SlowProxy, proxied_list
from support.sources import SourceSet, assert_registry_holds, expected_state, stored_blob_digests

CREATED = "2026-02-03T04:05:06Z"
RATE = 1024 * 1024
"""Bytes per second and connection while a command is to be killed: a few MB take a second or two."""
KILL_POINTS = [pytest.param((2 * n + 1) / 20, id=f"at-{5 * (2 * n + 1)}pct") for n in range(10)]


def kill_when(process: subprocess.Popen[str], moved: Callable[[], int], point: int) -> None:
    """SIGKILL ``process`` once ``moved()`` bytes reached ``point``; it must not have ended before."""
    deadline = time.monotonic() + 120
    while moved() < point:
        assert process.poll() is None, f"ended before {point} bytes moved: {process.communicate()}"
        assert time.monotonic() < deadline, f"stuck at {moved()} of {point} bytes"
        time.sleep(0.005)
    process.kill()
    process.communicate()


def age(paths: list[Path]) -> None:
    """Make the killed run's temp files look abandoned, as they would a minute later."""
    past = time.time() - ABANDONED_AFTER - 60
    for path in paths:
        os.utime(path, (past, past))


def cache_entries(cache: Path) -> dict[str, Path]:
    """Complete cache entries by digest; each must hash to its name (a torn entry would not)."""
    entries = {f"sha256:{path.name}": path for path in (cache / "blobs" / "sha256").glob("*")}
    for digest, path in entries.items():
        assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"torn cache entry {path}"
    return entries


# --- pack --------------------------------------------------------------------------------------------


@dataclass
class PackSite:
    proxy: SlowProxy
    image_list: Path
    reference: bytes
    moved: int
    """Bytes the registry sent for an uninterrupted pack with an empty cache."""
    blobs: set[str]


@pytest.fixture(scope="module")
def pack_site(seeded_registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackSite]:
    registry, image_set = seeded_registry
    directory = tmp_path_factory.mktemp("kill-pack")
    proxy, image_list = proxied_list(registry, image_set, directory)
    reference = directory / "reference.tar.zst"
    run_cli(*_pack_args(image_list, reference), env={"IMGBUNDLE_CACHE_DIR": str(directory / "cache")})
    blobs = {entry.digest for entry in read_index(reference).blobs}
    yield PackSite(proxy, image_list, reference.read_bytes(), proxy.from_backend, blobs)
    proxy.stop()


def _pack_args(image_list: Path, output: Path) -> list[str]:
    return ["pack", "-q", "-f", str(image_list), "-o", str(output), "--created", CREATED]


@pytest.mark.parametrize("fraction", KILL_POINTS)
def test_killed_pack_reruns_to_the_same_bundle_fetching_only_what_was_not_cached(
        pack_site: PackSite, tmp_path: Path, fraction: float) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    env = {"IMGBUNDLE_CACHE_DIR": str(cache)}
    args = _pack_args(pack_site.image_list, out / "b.tar.zst")
    proxy = pack_site.proxy
    proxy.reset()
    proxy.rate = RATE
    kill_when(start_cli(*args, env=env), lambda: proxy.from_backend, int(pack_site.moved * fraction))
    cached = cache_entries(cache).keys()
    left = [out / name for name in files_in(out)] + [cache / "tmp" / name for name in files_in(cache / "tmp")]
    assert all(".part" in path.name for path in left), left  # never a bundle or sidecar that looks complete
    age(left)

    proxy.reset()
    run_cli(*args, env=env)
    assert files_in(out) == ["b.tar.zst", "b.tar.zst.sha256"], "the killed run's temp file was not swept"
    assert files_in(cache / "tmp") == [], "the killed run's cache temp files were not swept"
    assert (out / "b.tar.zst").read_bytes() == pack_site.reference
    fetched = proxy.blob_gets
    assert not set(fetched) & cached, "the re-run fetched blobs the killed run had cached whole"
    assert len(fetched) == len(set(fetched)), "the re-run fetched a blob twice"
    assert set(fetched) | cached >= pack_site.blobs
    assert cache_entries(cache).keys() >= pack_site.blobs - cached


# --- unpack ------------------------------------------------------------------------------------------


def _unpack_args(bundle: Path, host: str) -> list[str]:
    return ["unpack", "-q", str(bundle), "--to", f"{host}/k"]


@pytest.fixture(scope="module")
@starts_server
def unpack_bytes(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    """Bytes an uninterrupted unpack sends to a fresh registry."""
    with start_registry(tmp_path_factory.mktemp("kill-unpack") / "registry") as fresh:
        proxy = SlowProxy(fresh.host)
        try:
            run_cli(*_unpack_args(small_bundle, proxy.host))
            return proxy.to_backend
        finally:
            proxy.stop()


@pytest.mark.parametrize("fraction", KILL_POINTS)
def test_killed_unpack_reruns_to_a_complete_target_pushing_only_what_is_missing(
        registry_factory, small_bundle: Path, small_source: SourceSet, unpack_bytes: int, fraction: float) -> None:
    target: RunningRegistry = registry_factory()
    proxy = SlowProxy(target.host)
    try:
        proxy.rate = RATE
        kill_when(start_cli(*_unpack_args(small_bundle, proxy.host)), lambda: proxy.to_backend,
                  int(unpack_bytes * fraction))
        proxy.reset()
        stored = stored_blob_digests(target)  # an upload the kill cut may still complete: then it is not pushed again
        run_cli(*_unpack_args(small_bundle, proxy.host))
        pushed = proxy.blob_puts
    finally:
        proxy.stop()
    expected = expected_state(small_source, lambda image: f"k/{image.path}")
    assert_registry_holds(target, expected)
    assert not set(pushed) & stored, "the re-run uploaded blobs the registry held already"
    assert len(pushed) == len(set(pushed)), "the re-run uploaded a blob twice"
    assert set(pushed) <= set(expected.sizes)

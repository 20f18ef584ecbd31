"""Ctrl-C and SIGTERM during ``imgbundle pack`` and ``unpack``, sent to the real command once bytes flow.

A pacing TCP proxy in front of a real registry makes the transfer last long enough to be interrupted
(and can stall it outright). Each interruption must end with exit 130 (SIGINT) or 143 (SIGTERM), one
line on stderr, no temporary file and no bundle or sidecar left; the same command run again must
complete, and its result must equal an uninterrupted run's: the same bundle bytes for pack, the same
tags, manifests and blobs for unpack. A registry that stops answering must not hold the exit up for
more than the cancel grace (bundler/threads.py): the command must not wait out its read timeouts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from bundler.threads import CANCEL_GRACE

from support.cli import CliRun, files_in, run_cli, start_cli
from support.registry import RunningRegistry, registry_catalog, start_registry
from support.servers import starts_server
from support.slowproxy import SlowProxy, proxied_list
from support.sources import SourceSet, assert_registry_holds, expected_state, registry_tags_state, stored_blob_digests

CREATED = "2026-02-03T04:05:06Z"
RATE = 256 * 1024
"""Bytes per second and connection while a transfer is to be interrupted: a few MB take seconds."""
STARTED = 300_000
"""Bytes through the proxy after which the transfer is under way (the first 100 KB or so are manifests)."""
EXIT_BOUND = CANCEL_GRACE + 8
"""Seconds from the signal to the exit, with room for a loaded machine; a read timeout is 60."""
SIGNALS = [pytest.param(signal.SIGINT, 130, "interrupted", id="SIGINT"),
           pytest.param(signal.SIGTERM, 143, "terminated", id="SIGTERM")]


@pytest.fixture
def slow_proxy() -> Iterator[Callable[[RunningRegistry], SlowProxy]]:
    proxies: list[SlowProxy] = []

    def start(registry: RunningRegistry) -> SlowProxy:
        proxies.append(SlowProxy(registry.host))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.stop()


# --- running the command -------------------------------------------------------------------------


def start(args: list[str], cache: Path) -> subprocess.Popen[str]:
    return start_cli(*args, env={"IMGBUNDLE_CACHE_DIR": str(cache)})


def run(args: list[str], cache: Path) -> CliRun:
    return run_cli(*args, env={"IMGBUNDLE_CACHE_DIR": str(cache)})


def interrupt_when(process: subprocess.Popen[str], ready: Callable[[], bool], signum: int) -> CliRun:
    """Send ``signum`` as soon as ``ready()`` holds (the transfer is under way) and wait for the exit;
    the run's ``seconds`` count from the signal."""
    deadline = time.monotonic() + 60
    while not ready():
        assert process.poll() is None, f"finished before it could be interrupted: {process.communicate()}"
        assert time.monotonic() < deadline, "the transfer never started"
        time.sleep(0.01)
    process.send_signal(signum)
    sent = time.monotonic()
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"still running 60 s after signal {signum}") from None
    return CliRun(process.returncode, stdout, stderr, time.monotonic() - sent)


def assert_interrupted(ended: CliRun, code: int, word: str) -> None:
    assert ended.code == code, ended.stderr
    assert "Traceback" not in ended.stderr
    assert len(ended.stderr_lines) == 1 and ended.stderr_lines[0].startswith("imgbundle: error: "), ended.stderr
    assert word in ended.stderr_lines[0] and "again" in ended.stderr_lines[0]
    assert ended.seconds < EXIT_BOUND, ended


# --- pack ------------------------------------------------------------------------------------------


@dataclass
class PackSite:
    proxy: SlowProxy
    image_list: Path
    reference: bytes
    """The bundle an uninterrupted pack of the list writes."""


@pytest.fixture(scope="module")
def pack_site(seeded_registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackSite]:
    """The small image set behind a proxy, and the bundle an uninterrupted pack makes of it."""
    registry, image_set = seeded_registry
    directory = tmp_path_factory.mktemp("pack-site")
    proxy, image_list = proxied_list(registry, image_set, directory)
    reference = directory / "reference.tar.zst"
    run(["pack", "-q", "-f", str(image_list), "-o", str(reference), "--created", CREATED], directory / "cache")
    yield PackSite(proxy, image_list, reference.read_bytes())
    proxy.stop()


def _pack_args(site: PackSite, output: Path) -> list[str]:
    return ["pack", "-q", "-f", str(site.image_list), "-o", str(output), "--created", CREATED]


@pytest.mark.parametrize("signum, code, word", SIGNALS)
def test_interrupted_pack_leaves_nothing_and_reruns_to_the_same_bundle(pack_site: PackSite, tmp_path: Path,
                                                                       signum: int, code: int, word: str) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    pack_site.proxy.reset()
    pack_site.proxy.rate = RATE

    def downloading() -> bool:  # the bundle's temp file exists and blob bytes are flowing into it
        return any(".part-" in name for name in os.listdir(out)) and pack_site.proxy.from_backend > STARTED

    ended = interrupt_when(start(_pack_args(pack_site, out / "b.tar.zst"), cache), downloading, signum)
    assert_interrupted(ended, code, word)
    assert files_in(out) == [], "a temporary file, a bundle or a sidecar was left"
    assert not (cache / "tmp").exists() or files_in(cache / "tmp") == [], "the blob cache kept a temporary file"

    pack_site.proxy.rate = None
    run(_pack_args(pack_site, out / "b.tar.zst"), cache)
    assert files_in(out) == ["b.tar.zst", "b.tar.zst.sha256"]
    assert (out / "b.tar.zst").read_bytes() == pack_site.reference
    run(["verify", "-q", str(out / "b.tar.zst")], cache)


def test_pack_stuck_on_a_silent_registry_stops_at_once(pack_site: PackSite, tmp_path: Path) -> None:
    """Every connection goes silent mid-download: SIGTERM must not wait for the read timeouts (60 s)."""
    out = tmp_path / "out"
    out.mkdir()
    pack_site.proxy.reset()
    pack_site.proxy.stall_after = 1_000_000

    def stuck() -> bool:
        return any(".part-" in name for name in os.listdir(out)) and pack_site.proxy.stalled

    ended = interrupt_when(start(_pack_args(pack_site, out / "b.tar.zst"), tmp_path / "cache"), stuck,
                           signal.SIGTERM)
    assert_interrupted(ended, 143, "terminated")
    assert files_in(out) == []


def test_pack_stuck_while_resolving_stops_at_once(pack_site: PackSite, tmp_path: Path) -> None:
    """Silent from the first manifests on: Ctrl-C must not wait for every reference of the list to resolve."""
    out = tmp_path / "out"
    out.mkdir()
    pack_site.proxy.reset()
    pack_site.proxy.stall_after = 5_000
    ended = interrupt_when(start(_pack_args(pack_site, out / "b.tar.zst"), tmp_path / "cache"),
                           lambda: pack_site.proxy.stalled, signal.SIGINT)
    assert_interrupted(ended, 130, "interrupted")
    assert files_in(out) == []


# --- unpack ----------------------------------------------------------------------------------------


def _unpack_args(bundle: Path, host: str) -> list[str]:
    return ["unpack", "-q", str(bundle), "--to", f"{host}/m"]


@dataclass(frozen=True)
class RegistryState:
    tags: dict[tuple[str, str], str]
    repositories: list[str]
    blobs: set[str]

    @classmethod
    def of(cls, registry: RunningRegistry, repositories: set[str]) -> "RegistryState":
        return cls(registry_tags_state(registry, repositories), sorted(registry_catalog(registry)),
                   stored_blob_digests(registry))


@pytest.fixture(scope="module")
@starts_server
def uninterrupted(small_bundle: Path, small_source: SourceSet, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[RegistryState]:
    """What a fresh registry holds after one uninterrupted unpack of the small bundle."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    with start_registry(directory / "registry") as clean:
        run(_unpack_args(small_bundle, clean.host), directory / "cache")
        yield RegistryState.of(clean, expected_state(small_source, lambda image: f"m/{image.path}").repositories)


@pytest.mark.parametrize("signum, code, word", SIGNALS)
def test_interrupted_unpack_reruns_to_the_state_of_an_uninterrupted_one(
        registry_factory, slow_proxy, small_bundle: Path, small_source: SourceSet, uninterrupted: RegistryState,
        tmp_path: Path, signum: int, code: int, word: str) -> None:
    interrupted = registry_factory()
    proxy = slow_proxy(interrupted)
    proxy.rate = RATE
    expected = expected_state(small_source, lambda image: f"m/{image.path}")

    ended = interrupt_when(start(_unpack_args(small_bundle, proxy.host), tmp_path / "cache"),
                           lambda: proxy.to_backend > STARTED, signum)
    assert_interrupted(ended, code, word)
    stored = stored_blob_digests(interrupted)
    assert len(stored) < len(expected.blobs), "the push was not interrupted"
    tags = registry_tags_state(interrupted, expected.repositories)
    assert len(tags) < len(expected.tags), "every tag was set: the push was not interrupted"

    proxy.rate = None
    run(_unpack_args(small_bundle, proxy.host), tmp_path / "cache")
    assert_registry_holds(interrupted, expected)
    assert RegistryState.of(interrupted, expected.repositories) == uninterrupted


def test_unpack_stuck_on_a_silent_registry_stops_at_once(registry_factory, slow_proxy, small_bundle: Path,
                                                         tmp_path: Path) -> None:
    target = registry_factory()
    proxy = slow_proxy(target)
    proxy.stall_after = 20_000  # registry answers stop after the first few checks and uploads
    ended = interrupt_when(start(_unpack_args(small_bundle, proxy.host), tmp_path / "cache"),
                           lambda: proxy.stalled and proxy.to_backend > 0, signal.SIGINT)
    assert_interrupted(ended, 130, "interrupted")


def test_a_second_signal_forces_the_exit(pack_site: PackSite, tmp_path: Path) -> None:
    """Whoever will not wait out the cleanup (a stuck worker's grace) can still stop the command at once."""
    out = tmp_path / "out"
    out.mkdir()
    pack_site.proxy.reset()
    pack_site.proxy.stall_after = 1_000_000
    process = start(_pack_args(pack_site, out / "b.tar.zst"), tmp_path / "cache")
    while not (any(".part-" in name for name in os.listdir(out)) and pack_site.proxy.stalled):
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # inside the grace the stuck download workers get
    ended = interrupt_when(process, lambda: True, signal.SIGINT)
    assert ended.code == 130, ended.stderr
    assert "forced exit" in ended.stderr and "Traceback" not in ended.stderr

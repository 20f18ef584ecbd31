"""A large blob fetched as parallel byte ranges: in order, bounded, and one stream where Range is ignored."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from bundler.digest import Digest
from bundler.registry import RegistryClient, ranged
from bundler.registry.ranged import RangeNotHonoured, ranged_chunks
from bundler.stores import Placement

from support.faults import Answer, FaultProxy, Rule
from support.options import fast_options, offline_options
from support.registry import RunningRegistry

MiB = 1024 * 1024


def test_parts_come_in_order_with_at_most_streams_fetched_at_once() -> None:
    data = random.Random(1).randbytes(10 * 1000 + 7)
    running, most, lock = [0], [0], threading.Lock()
    gate = threading.Barrier(3, timeout=5)  # the first three parts are fetched together, or this times out

    def fetch(start: int, stop: int) -> Iterator[bytes]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if start < 3000:
            gate.wait()
        try:
            yield data[start : (start + stop) // 2]
            yield data[(start + stop) // 2 : stop]
        finally:
            with lock:
                running[0] -= 1

    assert b"".join(ranged_chunks(fetch, len(data), part_size=1000, streams=3)) == data
    assert most[0] == 3


def test_a_range_not_honoured_comes_before_any_byte() -> None:
    def fetch(start: int, stop: int) -> Iterator[bytes]:
        if start == 0:
            raise RangeNotHonoured()
        yield b"x" * (stop - start)

    chunks = ranged_chunks(fetch, 5000, part_size=1000, streams=2)
    with pytest.raises(RangeNotHonoured):
        next(chunks)


def test_a_part_receives_at_most_ahead_bytes_before_the_consumer_takes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranged, "AHEAD_BYTES", 4 * 100)
    data = random.Random(2).randbytes(2 * 3000)
    asked = {0: 0, 3000: 0}
    too_far = threading.Event()
    closed: list[int] = []

    def fetch(start: int, stop: int) -> Iterator[bytes]:
        try:
            for offset in range(start, stop, 100):
                asked[start] += 1
                if start and asked[start] > 4 + 1:  # the second part held more than AHEAD_BYTES and one piece
                    too_far.set()
                yield data[offset : offset + 100]
        finally:
            closed.append(start)

    chunks = ranged_chunks(fetch, len(data), part_size=3000, streams=2)
    assert next(chunks) == data[:100]
    assert not too_far.wait(timeout=0.5)  # the second part waits too, though the consumer never reached it
    chunks.close()
    assert sorted(closed) == [0, 3000]  # both parts' requests were let go


@pytest.fixture(scope="module")
def big_blob(registry: RunningRegistry) -> tuple[str, Digest, bytes]:
    """A blob of a little over three parts of 1 MiB, in a fresh repository."""
    data = random.Random(7).randbytes(3 * MiB + 4321)
    repository, digest = f"ranged/{uuid.uuid4().hex[:12]}", Digest.of(data)
    with RegistryClient(registry.host, offline_options()) as client:
        assert client.blob_upload(repository, digest, len(data), lambda: [data]) is Placement.UPLOADED
    return repository, digest, data


@pytest.fixture()
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranged, "PART_SIZE", MiB)
    monkeypatch.setattr(ranged, "RANGED_MIN_SIZE", 2 * MiB)


def _fetch_through(proxy: FaultProxy, repository: str, digest: Digest, size: int) -> bytes:
    with RegistryClient(proxy.host, fast_options(jobs=4)) as client:
        return b"".join(client.blob_chunks(repository, digest, size))


@pytest.mark.registry
@pytest.mark.usefixtures("small_parts")
def test_a_large_blob_is_fetched_as_ranges(big_blob: tuple[str, Digest, bytes], registry: RunningRegistry,
                                           fault_proxy) -> None:
    repository, digest, data = big_blob
    proxy = fault_proxy(registry)
    proxy.rules.append(Rule("GET", f"/blobs/{digest}", nth=3, fault="reset", cut_after=1000))
    assert _fetch_through(proxy, repository, digest, len(data)) == data
    ranges = sorted(seen.headers.get("range") for seen in proxy.requests("GET", f"/blobs/{digest}"))
    parts = [f"bytes={start}-{min(start + MiB, len(data)) - 1}" for start in range(0, len(data), MiB)]
    assert proxy.fired == {"reset": 1}
    assert len(ranges) == len(parts) + 1 and sorted(set(ranges)) == sorted(parts)  # the cut part asked again


@pytest.mark.registry
@pytest.mark.usefixtures("small_parts")
def test_a_registry_that_ignores_range_gives_one_stream(big_blob: tuple[str, Digest, bytes],
                                                        registry: RunningRegistry, fault_proxy) -> None:
    repository, digest, data = big_blob

    def whole_body(seen, forward) -> Answer:
        plain = httpx.get(f"{registry.url}{seen.path}")
        return Answer(200, [("Content-Type", "application/octet-stream")], plain.content)

    proxy = fault_proxy(registry)
    proxy.rules.append(Rule("GET", f"/blobs/{digest}", answer=whole_body))
    assert _fetch_through(proxy, repository, digest, len(data)) == data
    gets = proxy.requests("GET", f"/blobs/{digest}")
    assert gets[-1].headers.get("range") is None
    assert all(seen.headers.get("range", "").startswith("bytes=") for seen in gets[:-1])

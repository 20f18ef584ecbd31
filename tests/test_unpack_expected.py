"""The delta pre-check against the strict in-memory registry: present, mounted, missing, refused, interrupted.

A delta's plan is the full bundle's plan with some of its blobs declared as left to the base, so no
delta bundle has to be built; ``test_delta`` covers the same rules end to end on a real registry.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import bundler.threads
from bundler.errors import AuthError, NotFoundError
from bundler.stores.bundle import BundleStore
from bundler.unpack import PushPlan, build_plan, plan_targets
from bundler.unpack.expected import check_expected
from bundler.unpack.plan import BlobPlan
from support.memory import HOST, MemoryRegistry
from support.sources import RecordingProgress

WAIT = 30.0
"""A bound on the stuck HEAD, so that a check that waits for it fails instead of hanging."""


class CountingRegistry(MemoryRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.heads: list[tuple[str, str]] = []
        self.refuse_heads: set[str] = set()

    def blob_exists(self, repository: str, digest: str) -> bool:
        self.heads.append((repository, digest))
        if repository in self.refuse_heads:
            raise AuthError(f"{HOST}/{repository}: denied")
        return super().blob_exists(repository, digest)


@pytest.fixture
def plan(bundle_file: Path) -> PushPlan:  # noqa: F811 (the fixture)
    with BundleStore.open(bundle_file) as store:
        return build_plan(store, plan_targets(list(store.index.images), f"{HOST}/m", False, False, []))


def _shared(plan: PushPlan) -> BlobPlan:
    return next(blob for blob in plan.blobs() if len(blob.repositories) > 1)


def _single(plan: PushPlan, count: int) -> list[BlobPlan]:
    return [blob for blob in plan.blobs() if len(blob.repositories) == 1][:count]


def test_blobs_already_there_count_as_present_and_others_are_mounted_from_a_repository_holding_them(
        plan: PushPlan) -> None:
    shared, [alone, elsewhere] = _shared(plan), _single(plan, 2)
    holder, *needers = shared.repositories
    memory = CountingRegistry()
    memory.blobs.setdefault(holder, set()).add(shared.digest)
    memory.blobs.setdefault(alone.repositories[0], set()).add(alone.digest)
    other = next(r for r in sorted({i.target.repository for i in plan.images}) if r != elsewhere.repositories[0])
    memory.blobs.setdefault(other, set()).add(elsewhere.digest)  # only in a repository that does not need it

    progress = RecordingProgress()
    check = check_expected(plan, [shared.digest, alone.digest, elsewhere.digest], memory, base="b", jobs=3,
                           progress=progress)
    assert (check.present, check.mounted) == (2, len(needers) + 1)
    assert all(shared.digest in memory.blobs[r] for r in needers)
    assert elsewhere.digest in memory.blobs[elsewhere.repositories[0]]
    assert progress.phases == [("expected", 0, len(needers) + 3)]
    assert sorted(ok for _, ok in progress.items) == [False] * (len(needers) + 1) + [True, True]


def test_a_blob_nowhere_in_the_push_is_named_and_nothing_is_mounted(plan: PushPlan) -> None:
    shared, [missing] = _shared(plan), _single(plan, 1)
    memory = CountingRegistry()
    memory.blobs[shared.repositories[0]] = {shared.digest}
    with pytest.raises(NotFoundError, match=rf"lacks 1 of the 2 blobs .* base b: {missing.digest} "
                                            rf"\(for {missing.repositories[0]}\);"):
        check_expected(plan, [shared.digest, missing.digest], memory, base="b")
    assert not any(entry[0] == "mounted" for entry in memory.log)


def test_a_refused_head_stops_the_check_with_that_error(plan: PushPlan) -> None:
    blobs = _single(plan, 3)
    memory = CountingRegistry()
    memory.refuse_heads = {blobs[1].repositories[0]}
    with pytest.raises(AuthError, match="denied"):
        check_expected(plan, [blob.digest for blob in blobs], memory, base="b", jobs=1)


def test_ctrl_c_stops_the_check_without_waiting_for_a_stuck_head_or_starting_queued_ones(
        plan: PushPlan, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first HEAD hangs (a silent registry); Ctrl-C arrives as the second one ends."""
    monkeypatch.setattr(bundler.threads, "CANCEL_GRACE", 0.1)
    blobs = [blob for blob in plan.blobs() if len(blob.repositories) == 1]
    stuck = (blobs[0].repositories[0], blobs[0].digest)
    release, returned = threading.Event(), threading.Event()

    class Silent(CountingRegistry):
        def blob_exists(self, repository: str, digest: str) -> bool:
            there = super().blob_exists(repository, digest)
            if (repository, digest) == stuck:
                release.wait(WAIT)
                returned.set()
            return there

    class Interrupting(RecordingProgress):
        def item_done(self, name: str, ok: bool = True) -> None:
            raise KeyboardInterrupt

    memory = Silent()
    try:
        with pytest.raises(KeyboardInterrupt):
            check_expected(plan, [blob.digest for blob in blobs], memory, base="b", jobs=2, progress=Interrupting())
        assert not returned.is_set(), "the check waited for the stuck HEAD"
        assert len(memory.heads) == 2 and stuck in memory.heads
    finally:
        release.set()

"""Before a delta bundle is pushed: the target must already hold every blob the delta left to its base.

A delta carries only what its base did not; the rest must be in the target registry, in each
repository whose images need it, or at least in another repository of this push (then it is
mounted there, which Distribution and Harbor do within one registry). Anything else is named, all
of it in one error, before a single byte is pushed: pushing half a delta would leave manifests
that cannot be completed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Collection, Iterator

from bundler.digest import Digest
from bundler.errors import NotFoundError
from bundler.progress import NullProgress, Progress
from bundler.stores import WriteStore
from bundler.unpack.plan import PushPlan

__all__ = ["ExpectedCheck", "check_expected"]

_NAMED = 5
"""Missing blobs named in the error; the rest are counted."""


@dataclass
class ExpectedCheck:
    """What the check found: pairs already there, and pairs mounted from another repository."""

    present: int = 0
    mounted: int = 0


def check_expected(plan: PushPlan, expected: Collection[str], client: WriteStore, *, base: str | None,
                   jobs: int = 4, progress: Progress | None = None) -> ExpectedCheck:
    """HEAD every expected blob in every repository needing it; mount what another repository of
    the push holds; ``NotFoundError`` naming the missing ones (nothing is mounted then)."""
    progress = progress or NullProgress()
    needs = _needs(plan, set(expected))
    if not needs:
        return ExpectedCheck()
    repositories = sorted({repository for repository, _ in needs} | {i.target.repository for i in _ok(plan)})
    progress.phase("expected", total_items=len(needs))
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="expected") as pool:
        found = dict(zip(needs, pool.map(lambda pair: _exists(client, pair, progress), needs)))
        lacking = sorted({digest for (_, digest), there in found.items() if not there})
        holders = dict(zip(lacking, pool.map(lambda d: _holder(client, d, repositories, found), lacking)))
    missing = [(repository, digest) for (repository, digest), there in found.items()
               if not there and holders[digest] is None]
    if missing:
        raise NotFoundError(_missing_message(missing, base, len({digest for _, digest in needs})))
    mounts = [(repository, digest) for (repository, digest), there in found.items() if not there]
    for repository, digest in mounts:
        _mount(client, repository, digest, holders[digest])  # type: ignore[arg-type]
    return ExpectedCheck(present=len(needs) - len(mounts), mounted=len(mounts))


def _ok(plan: PushPlan) -> Iterator:
    return (image for image in plan.images if image.error is None)


def _needs(plan: PushPlan, expected: set[str]) -> list[tuple[str, str]]:
    """``(repository, digest)`` of every expected blob an image to be pushed needs, each once."""
    pairs: dict[tuple[str, str], None] = {}
    for image in _ok(plan):
        for digest in image.blobs:
            if digest in expected:
                pairs[(image.target.repository, digest)] = None
    return list(pairs)


def _exists(client: WriteStore, pair: tuple[str, str], progress: Progress) -> bool:
    there = client.blob_exists(*pair)
    progress.item_done(f"{pair[0]}@{pair[1]}", there)
    return there


def _holder(client: WriteStore, digest: str, repositories: list[str], found: dict[tuple[str, str], bool]) -> str | None:
    """A repository of this push that holds ``digest``: one already seen with it, else the first a HEAD finds."""
    for repository in repositories:
        if found.get((repository, digest)):
            return repository
    for repository in repositories:
        if (repository, digest) not in found and client.blob_exists(repository, digest):
            return repository
    return None


def _mount(client: WriteStore, repository: str, digest: str, source: str) -> None:
    if not client.blob_mount(repository, Digest(digest), source):
        raise NotFoundError(f"{repository}: cannot mount {digest} from {source}, and this delta does not carry it")


def _missing_message(missing: list[tuple[str, str]], base: str | None, expected: int) -> str:
    """One line: how many blobs are missing, the first few with the repositories that need them."""
    where: dict[str, list[str]] = {}
    for repository, digest in missing:
        where.setdefault(digest, []).append(repository)
    named = ", ".join(f"{digest} (for {', '.join(repos)})" for digest, repos in list(where.items())[:_NAMED])
    more = f" and {len(where) - _NAMED} more" if len(where) > _NAMED else ""
    return (
        f"the target lacks {len(where)} of the {expected} blob(s) this delta bundle leaves to its base "
        f"{base or '(unknown)'}: {named}{more}; unpack the base bundle (or a full bundle) first"
    )

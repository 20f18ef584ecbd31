"""Before a delta bundle is pushed: the target must already hold every blob the delta left to its base.

A delta carries only what its base did not; the rest must be in the target registry, in each
repository whose images need it, or at least in another repository of this push, or in the
repository a site inventory recorded it in (then it is mounted there, which Distribution and Harbor
do within one registry). Anything else is named, all of it in one error, before a single byte is
pushed: pushing half a delta would leave manifests that cannot be completed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

from bundler.digest import Digest
from bundler.errors import ImgbundleError, NotFoundError, PushRefusedError
from bundler.jobs import Job
from bundler.progress import NullProgress, Progress
from bundler.stores import WriteStore
from bundler.unpack.facts import BlobFact, Fact, Outcome, PushJob, PushRunner, Settled, check_job, head_blob
from bundler.unpack.plan import ImagePlan, PushPlan
from bundler.words import counted

__all__ = ["ExpectedCheck", "check_expected"]

_NAMED = 5
"""Missing blobs named in the error; the rest are counted."""


@dataclass
class ExpectedCheck:
    """What the check found: pairs already there, and pairs mounted from another repository."""

    present: int = 0
    mounted: int = 0


def check_expected(plan: PushPlan, expected: Collection[Digest], client: WriteStore, *, base: str | None,
                   recorded: Mapping[Digest, str] | None = None, jobs: int = 4,
                   progress: Progress | None = None) -> ExpectedCheck:
    """HEAD every expected blob in every repository needing it; mount what another repository of
    the push, or the one ``recorded`` for it, holds; ``NotFoundError`` naming the missing ones
    (nothing is mounted then), ``PushRefusedError`` when the target refuses a mount."""
    progress = progress or NullProgress()
    needs = _needs(plan, set(expected))
    if not needs:
        return ExpectedCheck()
    repositories = sorted({fact.repository for fact in needs} | {i.target.repository for i in _ok(plan)})
    progress.phase("expected", total_items=len(needs))
    with PushRunner(jobs, name="expected") as runner:
        runner.run(check_job(fact, partial(head_blob, client, fact), progress, required=True) for fact in needs)
        _raise_first_failure(runner.settled, needs)
        absent = [fact for fact in needs if fact not in runner.settled]
        holders = _find_holders(runner, client, needs, absent, repositories, recorded or {})
    missing = [fact for fact in absent if fact.digest not in holders]
    if missing:
        raise NotFoundError(_missing_message(missing, base, len({fact.digest for fact in needs})))
    for fact in absent:
        _mount(client, fact, holders[fact.digest])
    return ExpectedCheck(present=len(needs) - len(absent), mounted=len(absent))


def _ok(plan: PushPlan) -> Iterator[ImagePlan]:
    return (image for image in plan.images if image.error is None)


def _needs(plan: PushPlan, expected: set[Digest]) -> list[BlobFact]:
    """Every expected blob an image to be pushed needs, in its repository, each once."""
    facts: dict[BlobFact, None] = {}
    for image in _ok(plan):
        for digest in image.blobs:
            if digest in expected:
                facts[BlobFact(image.target.repository, digest)] = None
    return list(facts)


def _raise_first_failure(settled: Mapping[Fact, Settled], facts: list[BlobFact]) -> None:
    """A HEAD the target refused, rather than a blob it lacks: nothing can be concluded, the unpack stops."""
    for fact in facts:
        result = settled.get(fact)
        if isinstance(result, ImgbundleError):
            raise result


def _find_holders(runner: PushRunner, client: WriteStore, needs: list[BlobFact], absent: list[BlobFact],
                  repositories: list[str], recorded: Mapping[Digest, str]) -> dict[Digest, str]:
    """A mount source per digest that some repository lacks: a repository of the push seen with it, else
    the first that a HEAD finds holding it (the push's, then the recorded one); digests none holds are left out."""
    lacking = sorted({fact.digest for fact in absent})
    unseen = [digest for digest in lacking if _holder(runner.settled, digest, repositories) is None]
    needed = set(needs)
    runner.run(_search_job(client, digest, [r for r in _sources(digest, repositories, recorded)
                                            if BlobFact(r, digest) not in needed])
               for digest in unseen)
    return {digest: holder for digest in lacking
            if (holder := _holder(runner.settled, digest, _sources(digest, repositories, recorded))) is not None}


def _sources(digest: Digest, repositories: list[str], recorded: Mapping[Digest, str]) -> list[str]:
    """Where to look for ``digest``: the push's repositories, then the one an inventory saw it in."""
    extra = recorded.get(digest)
    return [*repositories, extra] if extra and extra not in repositories else repositories


def _holder(settled: Mapping[Fact, Settled], digest: Digest, repositories: list[str]) -> str | None:
    """The first repository of the push known to hold ``digest``: a mount source."""
    return next((r for r in repositories if settled.get(BlobFact(r, digest)) is Outcome.PRESENT), None)


def _search_job(client: WriteStore, digest: Digest, repositories: list[str]) -> PushJob:
    """HEAD ``repositories`` (of the push, not needing ``digest``) in turn until one holds it."""

    def work() -> Mapping[Fact, Settled]:
        for repository in repositories:
            fact = BlobFact(repository, digest)
            if head_blob(client, fact) is not None:
                return {fact: Outcome.PRESENT}
        return {}

    return Job(f"find {digest}", work, produces=tuple(BlobFact(r, digest) for r in repositories))


def _mount(client: WriteStore, fact: BlobFact, source: str) -> None:
    if not client.blob_mount(fact.repository, fact.digest, source):
        raise PushRefusedError(
            f"{fact.repository}: the target refused to mount {fact.digest} from {source}, which holds it, and this "
            "delta does not carry it; allow cross-repository mounts there (pull access to the source), or pack "
            "a bundle that carries it")


def _missing_message(missing: list[BlobFact], base: str | None, expected: int) -> str:
    """One line: how many blobs are missing, the first few with the repositories that need them."""
    where: dict[Digest, list[str]] = {}
    for fact in missing:
        where.setdefault(fact.digest, []).append(fact.repository)
    named = ", ".join(f"{digest} (for {', '.join(repos)})" for digest, repos in list(where.items())[:_NAMED])
    more = f" and {len(where) - _NAMED} more" if len(where) > _NAMED else ""
    return (
        f"the target lacks {len(where)} of the {counted(expected, 'blob')} this delta bundle leaves to its base "
        f"{base or '(unknown)'}: {named}{more}; unpack the base bundle (or a full bundle) first"
    )

"""Running a push plan against one registry: check what is there, then push the rest in order.

Two phases, both batches of the job runner (``bundler.jobs``); the writes themselves are
``bundler.unpack.steps``. Requests with small bodies (HEADs, manifests, small blobs) run up to
``SMALL_REQUESTS`` at once, being bound by round trips; uploads of blobs from ``LARGE_BLOB`` bytes up
are bound by bytes and run at most ``jobs`` at once.

``check``  HEAD each image's top manifest; one that is there implies everything below it (a
           registry refuses a manifest whose blobs or children are missing). HEAD the tags (to
           tell a moved tag) and the blobs the bundle does not carry (a delta's base).
``push``   a dependency graph: a blob job per digest (HEAD the first repository that may lack it
           and upload unless it is there, then mount into the others: a mount answers for a blob
           that is already there too), a manifest job per (repository, digest) after its blobs or
           children (a PUT of a manifest that is there is harmless, so it is not HEADed first), a
           tag job after its top manifest (the first new tag of a top manifest that is not there
           PUTs it by tag instead: one request stores it and sets the tag, as docker push does).
           A tag therefore never points at something incomplete, and a failure only stops what
           depends on it.

Why HEADs only where they can save an upload: on an empty target every request that only
confirms an absence is wasted, and requests, not bytes, are what costs a registry its CPU.

Fatal for the whole run: an unreachable target while checking, and interruption (Ctrl-C, or an
exception from the progress callback); running uploads stop at their next chunk. Everything else,
a push that finally fails for want of a connection included, fails the items that depend on it and
is reported per image: a request gives up only after its host moved nothing for the retry timeout,
and the client then fails the requests after it at once (``bundler.registry.client``). The plan is idempotent: a re-run after any
interruption finds what is there and pushes only the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from bundler.digest import Digest
from bundler.errors import CorruptBundleError, ImgbundleError, Interrupted
from bundler.jobs import Job
from bundler.progress import NullProgress, Progress
from bundler.stores import WriteStore
from bundler.stores.bundle import BundleStore
from bundler.unpack.facts import (
    BlobFact,
    Fact,
    ManifestFact,
    Outcome,
    PushJob,
    PushRunner,
    Settled,
    TagFact,
    check_job,
    head_blob,
)
from bundler.unpack.plan import BlobPlan, ImagePlan, PushPlan
from bundler.unpack.result import ImageOutcome, UnpackResult
from bundler.unpack.steps import PushSteps

__all__ = ["push_plan"]

log = logging.getLogger("bundler.unpack")

LARGE_BLOB = 1024 * 1024
"""From this size up a blob's upload is a heavy job: at most ``jobs`` of them run at once."""


def push_plan(plan: PushPlan, bundle: BundleStore, client: WriteStore, registry: str, *, jobs: int = 4,
              progress: Progress | None = None) -> UnpackResult:
    """Push every image of ``plan`` that the bundle can supply; see the module docstring."""
    return _Push(plan, bundle, client, registry, jobs, progress or NullProgress()).run()


def _final_fact(image: ImagePlan) -> Fact:
    """The fact that makes an image done: its tag, or its top manifest for digest-only images."""
    target = image.target
    return TagFact(target.repository, target.tag) if target.tag else ManifestFact(target.repository, target.digest)


class _Push:
    def __init__(self, plan: PushPlan, bundle: BundleStore, client: WriteStore, registry: str, jobs: int,
                 progress: Progress) -> None:
        self.plan = plan
        self.client = client
        self.progress = progress
        self.result = UnpackResult(registry=registry, dry_run=False, plan=plan, images=[])
        from bundler.registry.options import SMALL_REQUESTS  # the HTTP stack loads when a push runs

        self.runner = PushRunner(max(jobs, SMALL_REQUESTS), heavy_workers=jobs, name="unpack",
                                 on_settle=self._settled)
        self.known = self.runner.settled
        self.tag_digests: dict[TagFact, str | None] = {}
        """What each tag pointed at before this run (``None``: it did not exist)."""
        self.steps = PushSteps(client, bundle, plan, progress, self.result, self.tag_digests,
                               self.runner.check_cancelled)
        self.watchers: dict[Fact, list[ImagePlan]] = {}
        self.reported: set[int] = set()
        self.images = [image for image in plan.images if image.error is None]

    # ---- orchestration

    def run(self) -> UnpackResult:
        try:
            with self.runner:
                self._check_tops()
                self._check_rest()
                self._push()
        except KeyboardInterrupt:
            raise Interrupted("unpack interrupted; run it again to push the rest") from None
        except ImgbundleError:
            raise
        except Exception as error:  # a bug below us; still one line for the user, never a traceback
            raise ImgbundleError(f"unpack failed unexpectedly: {type(error).__name__}: {error}") from error
        self.result.images = [self._outcome(image) for image in self.plan.images]
        return self.result

    def _outcome(self, image: ImagePlan) -> ImageOutcome:
        if image.error is not None:
            return ImageOutcome(image.target, False, image.error)
        outcome = self.known.get(_final_fact(image))
        if isinstance(outcome, ImgbundleError):
            return ImageOutcome(image.target, False, outcome)
        if outcome is None:  # cannot happen: every needed fact is produced or settled; never claim success
            return ImageOutcome(image.target, False, ImgbundleError("not pushed", subject=image.target.display))
        return ImageOutcome(image.target, True)

    # ---- phase 1: what is there already

    def _check_tops(self) -> None:
        """HEAD each top manifest; one that is there vouches for everything below it in that repository."""
        tops = {ManifestFact(i.target.repository, i.target.digest): i for i in self.images}
        self.progress.phase("check images", total_items=len(tops))
        self.runner.run(check_job(fact, partial(self._head_manifest, fact), self.progress) for fact in tops)
        for fact, image in tops.items():
            if self.known.get(fact) is Outcome.PRESENT:
                self._imply_present(image)

    def _imply_present(self, image: ImagePlan) -> None:
        repository = image.target.repository
        for digest in image.manifests:
            self.known.setdefault(ManifestFact(repository, digest), Outcome.PRESENT)
        for digest in image.blobs:
            self.known.setdefault(BlobFact(repository, digest), Outcome.PRESENT)

    def _check_rest(self) -> None:
        """HEAD the tags and the blobs outside the bundle not yet known, each (repository, digest) once."""
        checks: dict[Fact, Callable[[], Settled | None]] = {}
        for image in self.images:
            repository = image.target.repository
            for digest in image.blobs:
                if digest not in self.plan.bundle_blobs:
                    blob = BlobFact(repository, digest)
                    checks.setdefault(blob, partial(self._head_outside_blob, blob))
            if image.target.tag:
                tag = TagFact(repository, image.target.tag)
                checks.setdefault(tag, partial(self._head_tag, tag, image.target.digest))
        todo = [check_job(fact, head, self.progress, required=isinstance(fact, BlobFact))
                for fact, head in checks.items() if fact not in self.known]
        if todo:
            self.progress.phase("check tags", total_items=len(todo))
            self.runner.run(todo)

    def _head_manifest(self, fact: ManifestFact) -> Outcome | None:
        found = self.client.manifest_head(fact.repository, fact.digest)
        return Outcome.PRESENT if found is not None and found.digest == fact.digest else None

    def _head_outside_blob(self, fact: BlobFact) -> Settled:
        """A blob the bundle does not carry: the target has it, or nothing that needs it can be pushed."""
        return head_blob(self.client, fact) or CorruptBundleError(
            f"the bundle lacks blob {fact.digest} and {fact.repository} does not have it")

    def _head_tag(self, fact: TagFact, digest: Digest) -> Outcome | None:
        found = self.client.manifest_head(fact.repository, fact.tag)
        self.tag_digests[fact] = found.digest if found is not None else None
        return Outcome.PRESENT if found is not None and found.digest == digest else None

    # ---- phase 2: push what is missing

    def _push(self) -> None:
        self._count_present()
        rank = self._image_rank()
        carried = self._carried_tops()
        jobs = self._blob_jobs(rank) + self._manifest_jobs(rank, carried) + self._tag_jobs(carried)
        upload_bytes = sum(blob.size or 0 for blob in self._blobs_to_upload())
        self.progress.phase("push", total_bytes=upload_bytes, total_items=len(self.plan.images))
        for image in self.plan.images:
            if image.error is None:
                self.watchers.setdefault(_final_fact(image), []).append(image)
            if image.error is not None or _final_fact(image) in self.known:
                self._report_image(image)
        self.runner.run(jobs)

    def _count_present(self) -> None:
        for fact, outcome in self.known.items():
            if outcome is Outcome.PRESENT:
                if isinstance(fact, BlobFact):
                    self.result.blobs_present += 1
                elif isinstance(fact, ManifestFact):
                    self.result.manifests_present += 1
                else:
                    self.result.tags_present += 1

    def _missing_blobs(self) -> list[tuple[BlobPlan, list[str], str | None]]:
        """Per digest: the repositories still lacking it, and one that has it (a mount source)."""
        out = []
        for blob in self.plan.blobs():
            facts = [BlobFact(repository, blob.digest) for repository in blob.repositories]
            missing = [fact.repository for fact in facts if fact not in self.known]
            holders = [fact.repository for fact in facts if self.known.get(fact) is Outcome.PRESENT]
            if missing:
                out.append((blob, missing, holders[0] if holders else None))
        return out

    def _blobs_to_upload(self) -> list[BlobPlan]:
        return [blob for blob, _, source in self._missing_blobs() if source is None]

    def _image_rank(self) -> dict[Fact, int]:
        """The first image needing each fact: work is ordered so that images finish in bundle order."""
        rank: dict[Fact, int] = {}
        for number, image in enumerate(self.images):
            repository = image.target.repository
            for digest in image.blobs:
                rank.setdefault(BlobFact(repository, digest), number)
            for digest in image.manifests:
                rank.setdefault(ManifestFact(repository, digest), number)
        return rank

    def _blob_jobs(self, rank: dict[Fact, int]) -> list[PushJob]:
        jobs: list[PushJob] = []
        for blob, missing, source in self._missing_blobs():
            facts = tuple(BlobFact(repository, blob.digest) for repository in missing)
            first = min(rank.get(fact, 0) for fact in facts)
            jobs.append(Job(f"blob {blob.digest}", partial(self.steps.place_blob, blob, missing, source),
                            produces=facts, rank=(2, first), heavy=(blob.size or 0) >= LARGE_BLOB))
        return jobs

    def _carried_tops(self) -> dict[ManifestFact, TagFact]:
        """Top manifests still to push that a tag will carry: ``PUT …/manifests/TAG`` stores the manifest
        and sets the tag in one request (as docker push does), so the PUT by digest would be a second,
        fully validated copy of the same bytes. Maps the top manifest's fact to its first new tag.

        Only a tag the target does not have yet carries: one that points elsewhere may be immutable
        (Harbor answers 412), and the manifest must still land by digest for ``@sha256:`` pins."""
        carried: dict[ManifestFact, TagFact] = {}
        for image in self.images:
            target = image.target
            if not target.tag:
                continue
            top, tag = ManifestFact(target.repository, target.digest), TagFact(target.repository, target.tag)
            new_tag = tag in self.tag_digests and self.tag_digests[tag] is None
            if new_tag and top not in self.known and tag not in carried.values():
                carried.setdefault(top, tag)
        return carried

    def _needs(self, repository: str, digest: Digest) -> tuple[Fact, ...]:
        """What must be in ``repository`` before the manifest ``digest``: its blobs, or its children."""
        node = self.plan.manifests[digest]
        blobs = tuple(BlobFact(repository, blob) for blob in node.blobs)
        return blobs + tuple(ManifestFact(repository, child) for child in node.children)

    def _manifest_jobs(self, rank: dict[Fact, int], carried: dict[ManifestFact, TagFact]) -> list[PushJob]:
        jobs: dict[ManifestFact, PushJob] = {}
        for image in self.images:
            repository = image.target.repository
            for digest in image.manifests:
                fact = ManifestFact(repository, digest)
                if fact in self.known or fact in jobs or fact in carried:
                    continue
                jobs[fact] = Job(f"manifest {fact.label}", partial(self.steps.put_manifest, fact),
                                 needs=self._needs(repository, digest), produces=(fact,), rank=(1, rank[fact]))
        return list(jobs.values())

    def _tag_jobs(self, carried: dict[ManifestFact, TagFact]) -> list[PushJob]:
        carriers = set(carried.values())
        jobs: dict[TagFact, PushJob] = {}
        for number, image in enumerate(self.images):
            target = image.target
            if not target.tag:
                continue
            fact = TagFact(target.repository, target.tag)
            if fact in self.known or fact in jobs:
                continue
            top = ManifestFact(target.repository, target.digest)
            needs: tuple[Fact, ...]
            produces: tuple[Fact, ...]
            if fact in carriers:
                needs, produces = self._needs(target.repository, target.digest), (fact, top)
            else:
                needs, produces = (top,), (fact,)
            jobs[fact] = Job(f"tag {target.display}", partial(self.steps.put_tag, fact, target.digest, produces),
                             needs=needs, produces=produces, rank=(0, number))
        return list(jobs.values())

    # ---- bookkeeping (calling thread)

    def _settled(self, fact: Fact, outcome: Settled) -> None:
        if isinstance(outcome, ImgbundleError):
            log.debug("%s failed: %s", fact.label, outcome)
        for image in self.watchers.get(fact, ()):
            self._report_image(image)

    def _report_image(self, image: ImagePlan) -> None:
        if id(image) in self.reported:
            return
        self.reported.add(id(image))
        ok = image.error is None and not isinstance(self.known.get(_final_fact(image)), ImgbundleError)
        self.progress.item_done(image.target.display, ok)

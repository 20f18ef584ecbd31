"""Running a push plan against one registry: check what is there, then push the rest in order.

Two phases, both on ``jobs`` threads:

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

Fatal for the whole run: ``UnreachableError`` and interruption (Ctrl-C, or an exception from the
progress callback); running uploads stop at their next chunk. Everything else fails the items
that depend on it and is reported per image. The plan is idempotent: a re-run after any
interruption finds what is there and pushes only the rest.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterator

from bundler.digest import Digest
from bundler.errors import CorruptBundleError, ImgbundleError, Interrupted, UnreachableError
from bundler.oci import RawManifest
from bundler.progress import NullProgress, Progress
from bundler.threads import stop_workers
from bundler.stores import Placement, WriteStore
from bundler.stores.bundle import BundleStore
from bundler.unpack.plan import BlobPlan, ImagePlan, PushPlan
from bundler.unpack.result import ImageOutcome, UnpackResult

__all__ = ["push_plan"]

log = logging.getLogger("bundler.unpack")

Fact = tuple[str, str, str]
"""``(kind, repository, digest or tag)``; kind is ``blob``, ``manifest`` or ``tag``."""

_PRESENT = "present"


class _Cancelled(BaseException):
    """Raised inside an upload's chunk stream once the run is being stopped.

    A ``BaseException`` so that no ``except Exception`` below us takes it for a network error.
    """


def _blob(repository: str, digest: str) -> Fact:
    return ("blob", repository, digest)


def _manifest(repository: str, digest: str) -> Fact:
    return ("manifest", repository, digest)


def _tag(repository: str, tag: str) -> Fact:
    return ("tag", repository, tag)


def _final_fact(image: ImagePlan) -> Fact:
    """The fact that makes an image done: its tag, or its top manifest for digest-only images."""
    target = image.target
    return _tag(target.repository, target.tag) if target.tag else _manifest(target.repository, target.digest)


@dataclass(eq=False)
class _Job:
    """A unit of work: runs when every fact in ``needs`` is settled; settles every fact in ``produces``."""

    name: str
    rank: tuple[int, int]
    needs: tuple[Fact, ...]
    produces: tuple[Fact, ...]
    work: Callable[[], dict[Fact, object]]
    waiting: set["_Job"] = field(default_factory=set)
    dependents: list["_Job"] = field(default_factory=list)


def push_plan(plan: PushPlan, bundle: BundleStore, client: WriteStore, registry: str, *, jobs: int = 4,
              progress: Progress | None = None) -> UnpackResult:
    """Push every image of ``plan`` that the bundle can supply; see the module docstring."""
    return _Push(plan, bundle, client, registry, max(1, jobs), progress or NullProgress()).run()


class _Push:
    def __init__(self, plan: PushPlan, bundle: BundleStore, client: WriteStore, registry: str, jobs: int,
                 progress: Progress) -> None:
        self.plan = plan
        self.bundle = bundle
        self.client = client
        self.jobs = jobs
        self.progress = progress
        self.result = UnpackResult(registry=registry, dry_run=False, plan=plan, images=[])
        self.known: dict[Fact, object] = {}
        self.tag_digests: dict[Fact, str | None] = {}
        self.watchers: dict[Fact, list[ImagePlan]] = {}
        self.reported: set[int] = set()
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.images = [image for image in plan.images if image.error is None]
        self.executor: ThreadPoolExecutor | None = None

    # ---- orchestration

    def run(self) -> UnpackResult:
        self.executor = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="unpack")
        try:
            self._check_tops()
            self._check_rest()
            self._push()
        except KeyboardInterrupt:
            raise Interrupted("unpack interrupted; run it again to push the rest") from None
        except ImgbundleError:
            raise
        except Exception as error:  # a bug below us; still one line for the user, never a traceback
            raise ImgbundleError(f"unpack failed unexpectedly: {type(error).__name__}: {error}") from error
        finally:
            self.executor.shutdown(wait=False)  # _run_jobs waited for its jobs (on an error, for a bounded time)
        self.result.images = [self._outcome(image) for image in self.plan.images]
        return self.result

    def _outcome(self, image: ImagePlan) -> ImageOutcome:
        if image.error is not None:
            return ImageOutcome(image.target, False, image.error)
        outcome = self.known.get(_final_fact(image))
        if isinstance(outcome, ImgbundleError):
            return ImageOutcome(image.target, False, outcome)
        if outcome is None:  # cannot happen: every needed fact is produced or settled; never claim success
            return ImageOutcome(image.target, False, ImgbundleError(f"{image.target.display}: not pushed"))
        return ImageOutcome(image.target, True)

    # ---- phase 1: what is there already

    def _check_tops(self) -> None:
        """HEAD each top manifest; one that is there vouches for everything below it in that repository."""
        tops = {_manifest(i.target.repository, i.target.digest): i for i in self.images}
        checks = [self._check_job(fact, lambda f=fact: self._head_manifest(f)) for fact in tops]
        self.progress.phase("check", total_items=len(tops))
        self._run_jobs(checks)
        for fact, image in tops.items():
            if self.known.get(fact) == _PRESENT:
                self._imply_present(image)

    def _imply_present(self, image: ImagePlan) -> None:
        repository = image.target.repository
        for digest in image.manifests:
            self.known.setdefault(_manifest(repository, digest), _PRESENT)
        for digest in image.blobs:
            self.known.setdefault(_blob(repository, digest), _PRESENT)

    def _check_rest(self) -> None:
        """HEAD the tags and the blobs outside the bundle not yet known, each (repository, digest) once."""
        checks: dict[Fact, Callable[[], object]] = {}
        for image in self.images:
            repository = image.target.repository
            for digest in image.blobs:
                if digest not in self.plan.bundle_blobs:
                    fact = _blob(repository, digest)
                    checks.setdefault(fact, lambda f=fact: self._head_blob(f))
            if image.target.tag:
                fact = _tag(repository, image.target.tag)
                checks.setdefault(fact, lambda f=fact, i=image: self._head_tag(f, i.target.digest))
        todo = [self._check_job(fact, work) for fact, work in checks.items() if fact not in self.known]
        if todo:
            self.progress.phase("check", total_items=len(todo))
            self._run_jobs(todo)

    def _check_job(self, fact: Fact, head: Callable[[], object]) -> _Job:
        """A HEAD whose answer settles ``fact`` when it is there; absent facts stay open for the push."""

        def work() -> dict[Fact, object]:
            try:
                answer = head()
            except UnreachableError:
                raise
            except ImgbundleError as error:
                answer = error
            name = f"{fact[1]}:{fact[2]}" if fact[0] == "tag" else f"{fact[1]}@{fact[2]}"
            self.progress.item_done(name, not isinstance(answer, ImgbundleError))
            return {fact: answer} if answer is not None else {}

        return _Job(f"check {fact}", (0, 0), (), (fact,), work)

    def _head_manifest(self, fact: Fact) -> str | None:
        found = self.client.manifest_head(fact[1], fact[2])
        return _PRESENT if found is not None and found.digest == fact[2] else None

    def _head_blob(self, fact: Fact) -> object:
        """A blob the bundle does not carry: the target has it, or nothing that needs it can be pushed."""
        if self.client.blob_exists(fact[1], fact[2]):
            return _PRESENT
        return CorruptBundleError(f"the bundle lacks blob {fact[2]} and {fact[1]} does not have it")

    def _head_tag(self, fact: Fact, digest: str) -> str | None:
        found = self.client.manifest_head(fact[1], fact[2])
        self.tag_digests[fact] = found.digest if found is not None else None
        return _PRESENT if found is not None and found.digest == digest else None

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
        self._run_jobs(jobs)

    def _count_present(self) -> None:
        for fact, outcome in self.known.items():
            if outcome == _PRESENT:
                if fact[0] == "blob":
                    self.result.blobs_present += 1
                elif fact[0] == "manifest":
                    self.result.manifests_present += 1
                else:
                    self.result.tags_present += 1

    def _missing_blobs(self) -> list[tuple[BlobPlan, list[str], str | None]]:
        """Per digest: the repositories still lacking it, and one that has it (a mount source)."""
        out = []
        for blob in self.plan.blobs():
            missing = [r for r in blob.repositories if _blob(r, blob.digest) not in self.known]
            holders = [r for r in blob.repositories if self.known.get(_blob(r, blob.digest)) == _PRESENT]
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
                rank.setdefault(_blob(repository, digest), number)
            for digest in image.manifests:
                rank.setdefault(_manifest(repository, digest), number)
        return rank

    def _blob_jobs(self, rank: dict[Fact, int]) -> list[_Job]:
        jobs = []
        for blob, missing, source in self._missing_blobs():
            facts = tuple(_blob(r, blob.digest) for r in missing)
            first = min(rank.get(f, 0) for f in facts)
            jobs.append(_Job(f"blob {blob.digest}", (2, first), (), facts,
                             lambda b=blob, m=missing, s=source: self._place_blob(b, m, s)))
        return jobs

    def _carried_tops(self) -> dict[Fact, Fact]:
        """Top manifests still to push that a tag will carry: ``PUT …/manifests/TAG`` stores the manifest
        and sets the tag in one request (as docker push does), so the PUT by digest would be a second,
        fully validated copy of the same bytes. Maps the top manifest's fact to its first new tag.

        Only a tag the target does not have yet carries: one that points elsewhere may be immutable
        (Harbor answers 412), and the manifest must still land by digest for ``@sha256:`` pins."""
        carried: dict[Fact, Fact] = {}
        for image in self.images:
            target = image.target
            top, tag = _manifest(target.repository, target.digest), _tag(target.repository, target.tag or "")
            new_tag = tag in self.tag_digests and self.tag_digests[tag] is None
            if target.tag and new_tag and top not in self.known and tag not in carried.values():
                carried.setdefault(top, tag)
        return carried

    def _needs(self, repository: str, digest: str) -> tuple[Fact, ...]:
        """What must be in ``repository`` before the manifest ``digest``: its blobs, or its children."""
        node = self.plan.manifests[digest]
        return tuple(_blob(repository, b) for b in node.blobs) + tuple(_manifest(repository, c) for c in node.children)

    def _manifest_jobs(self, rank: dict[Fact, int], carried: dict[Fact, Fact]) -> list[_Job]:
        jobs: dict[Fact, _Job] = {}
        for image in self.images:
            repository = image.target.repository
            for digest in image.manifests:
                fact = _manifest(repository, digest)
                if fact in self.known or fact in jobs or fact in carried:
                    continue
                raw = self.plan.manifests[digest].raw
                jobs[fact] = _Job(f"manifest {repository}@{digest}", (1, rank[fact]), self._needs(repository, digest),
                                  (fact,), lambda f=fact, r=raw: self._put_manifest(f, f[2], r))
        return list(jobs.values())

    def _tag_jobs(self, carried: dict[Fact, Fact]) -> list[_Job]:
        carriers = set(carried.values())
        jobs: dict[Fact, _Job] = {}
        for number, image in enumerate(self.images):
            target = image.target
            if not target.tag:
                continue
            fact = _tag(target.repository, target.tag)
            if fact in self.known or fact in jobs:
                continue
            raw = self.plan.manifests[target.digest].raw
            top = _manifest(target.repository, target.digest)
            if fact in carriers:
                needs, produces = self._needs(target.repository, target.digest), (fact, top)
            else:
                needs, produces = (top,), (fact,)
            jobs[fact] = _Job(f"tag {target.display}", (0, number), needs, produces,
                              lambda f=fact, r=raw, p=produces: self._put_manifest(f, f[2], r, p))
        return list(jobs.values())

    # ---- the work itself (worker threads)

    def _place_blob(self, blob: BlobPlan, repositories: list[str], source: str | None) -> dict[Fact, object]:
        """Upload once into the first repository that lacks it, then mount into the others."""
        results: dict[Fact, object] = {}
        chunks = self._chunk_source(blob)
        for position, repository in enumerate(repositories):
            fact = _blob(repository, blob.digest)
            try:
                if source is None and self._already_there(repository, blob):
                    results[fact], source = _PRESENT, repository
                    continue
                how = self.client.blob_upload(repository, blob.digest, blob.size or 0, chunks, mount_from=source)
            except CorruptBundleError as error:  # the bundle's bytes are bad: every repository would get them
                return {**results, **{_blob(r, blob.digest): error for r in repositories[position:]}}
            except UnreachableError:
                raise
            except ImgbundleError as error:
                results[fact] = error
                continue
            results[fact] = how
            source = source or repository
            self._count_blob(how, blob.size or 0)
        return results

    def _already_there(self, repository: str, blob: BlobPlan) -> bool:
        """HEAD before an upload (an earlier run may have sent it); a blob found counts as sent for progress.

        Why a HEAD and not a mount from the repository itself (one request fewer per new blob): Harbor's
        HEAD marks a blob that garbage collection has picked as in use again, and a mount does not, so a
        blob found by a mount could be swept before the manifest that needs it lands.
        """
        if not self.client.blob_exists(repository, blob.digest):
            return False
        with self.lock:
            self.result.blobs_present += 1
        self.progress.advance(blob.size or 0)
        return True

    def _count_blob(self, how: Placement, size: int) -> None:
        with self.lock:
            if how is Placement.MOUNTED:
                self.result.blobs_mounted += 1
            else:
                self.result.blobs_uploaded += 1
                self.result.bytes_uploaded += size

    def _chunk_source(self, blob: BlobPlan) -> Callable[[], Iterator[bytes]]:
        """A restartable chunk stream from the bundle that reports progress once per byte of the blob
        (a retried upload re-reads, but does not re-count) and stops when the run is cancelled."""
        reported = [0]

        def chunks() -> Iterator[bytes]:
            sent = 0
            for chunk in self.bundle.blob_chunks(blob.origin, blob.digest, blob.size or 0):
                if self.cancel.is_set():
                    raise _Cancelled()
                sent += len(chunk)
                if sent > reported[0]:
                    self.progress.advance(sent - reported[0])
                    reported[0] = sent
                yield chunk

        return chunks

    def _put_manifest(self, fact: Fact, reference: str, raw: RawManifest,
                      produces: tuple[Fact, ...] = ()) -> dict[Fact, object]:
        """PUT ``raw`` under ``reference``; settles ``produces`` (a tag that carries its manifest: both)."""
        produces = produces or (fact,)
        try:
            self.client.manifest_put(fact[1], reference, raw)
        except UnreachableError:
            raise
        except ImgbundleError as error:
            return {settled: error for settled in produces}
        previous = self.tag_digests.get(fact) if fact[0] == "tag" else None
        moved = previous is not None and previous != raw.digest
        with self.lock:
            for settled in produces:
                if settled[0] == "tag":
                    self.result.tags_set += 1
                else:
                    self.result.manifests_pushed += 1
            if moved:
                self.result.tags_moved.append(f"{fact[1]}:{fact[2]}")
        if moved:
            self.progress.warn(f"{self.result.registry}/{fact[1]}:{fact[2]} moved from {previous} to {raw.digest}")
        return {settled: "pushed" for settled in produces}

    # ---- the scheduler (main thread only)

    def _run_jobs(self, jobs: list[_Job]) -> None:
        """Run ``jobs`` respecting ``needs``, at most ``self.jobs`` at a time, cheapest-to-finish first."""
        producer = {fact: job for job in jobs for fact in job.produces}
        ready: list[tuple[tuple[int, int], int, _Job]] = []
        order = itertools.count()
        for job in jobs:
            job.waiting = {producer[f] for f in job.needs if f not in self.known and f in producer}
            for dependency in job.waiting:
                dependency.dependents.append(job)
        for job in jobs:
            if not job.waiting:
                self._release(job, ready, order)
        inflight: dict[Future[dict[Fact, object]], _Job] = {}
        try:
            while ready or inflight:
                while ready and len(inflight) < self.jobs:
                    job = heapq.heappop(ready)[2]
                    assert self.executor is not None
                    inflight[self.executor.submit(self._start, job)] = job
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    job = inflight.pop(future)
                    self._finish(job, future.result(), ready, order)
        except BaseException:
            self.cancel.set()
            assert self.executor is not None
            stop_workers(self.executor, inflight)
            raise

    def _start(self, job: _Job) -> dict[Fact, object]:
        """In a worker: a job that had to wait for a thread while the run was being stopped does nothing."""
        if self.cancel.is_set():
            raise _Cancelled()
        return job.work()

    def _release(self, job: _Job, ready: list, order: Iterator[int]) -> None:
        """All dependencies settled: queue the job, or fail it at once when something it needs failed."""
        failed = next((self.known[f] for f in job.needs if isinstance(self.known.get(f), ImgbundleError)), None)
        unknown = [f for f in job.needs if f not in self.known]
        if failed is None and unknown:
            failed = ImgbundleError(f"internal: {job.name} needs {unknown[0]}, which nothing provides")
        if failed is None:
            heapq.heappush(ready, (job.rank, next(order), job))
            return
        self._finish(job, {fact: failed for fact in job.produces}, ready, order)

    def _finish(self, job: _Job, outcomes: dict[Fact, object], ready: list, order: Iterator[int]) -> None:
        for fact, outcome in outcomes.items():
            self._settle(fact, outcome)
        for dependent in job.dependents:
            dependent.waiting.discard(job)
            if not dependent.waiting:
                self._release(dependent, ready, order)

    def _settle(self, fact: Fact, outcome: object) -> None:
        self.known[fact] = outcome
        if isinstance(outcome, ImgbundleError):
            log.debug("%s failed: %s", fact, outcome)
        for image in self.watchers.get(fact, ()):
            self._report_image(image)

    def _report_image(self, image: ImagePlan) -> None:
        if id(image) in self.reported:
            return
        self.reported.add(id(image))
        ok = image.error is None and not isinstance(self.known.get(_final_fact(image)), ImgbundleError)
        self.progress.item_done(image.target.display, ok)

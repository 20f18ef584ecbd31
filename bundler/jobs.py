"""One dependency-graph job runner for the plans: jobs that need facts and settle facts, on a thread pool.

A job runs once every fact in its ``needs`` is settled; its ``work`` returns the results of the
facts it settles, which it declares in ``produces`` (jobs needing them wait for it). A result that
is an ``Exception`` is a failure: a job needing it fails with that same error at once, without
running, so a failure stops only what depends on it. Ready jobs start lowest ``rank`` first, at
most ``workers`` at a time, of which at most ``heavy_workers`` are ``heavy`` (jobs moving large bodies):
many small requests in flight hide round trips, while large bodies stay few. Rank jobs so that what
completes something starts first.

Stopping: any exception out of ``run`` (Ctrl-C in the main thread, an exception a job raised rather
than returned, or one from ``on_settle``) sets ``cancelled``. Queued jobs never start; running ones
notice through ``check_cancelled`` and get ``CANCEL_GRACE`` to end; then the exception is re-raised.

The runner knows nothing of what the facts mean; the plans do.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from bundler.threads import Cancelled, stop_workers

__all__ = ["Job", "JobRunner"]

F = TypeVar("F", bound=Hashable)
"""A fact: something a job makes true (a blob is in a repository), its key in ``JobRunner.settled``."""
R = TypeVar("R")
"""A fact's result; an ``Exception`` is a failure."""


@dataclass(frozen=True, eq=False)
class Job(Generic[F, R]):
    """A unit of work: runs when every fact in ``needs`` is settled, returns results for ``produces``."""

    name: str
    work: Callable[[], Mapping[F, R]]
    needs: tuple[F, ...] = ()
    produces: tuple[F, ...] = ()
    rank: tuple[int, ...] = ()
    heavy: bool = False
    """Moves a large body: counts against the runner's ``heavy_workers``."""


class JobRunner(Generic[F, R]):
    """Runs batches of jobs on one pool of ``workers`` threads; ``settled`` carries facts from one batch to the next.

    A context manager; ``on_settle`` is called in the calling thread for every fact as it settles;
    ``heavy_workers`` (default: ``workers``) bounds the heavy jobs running at once.
    """

    def __init__(self, workers: int, *, heavy_workers: int | None = None, name: str = "jobs",
                 on_settle: Callable[[F, R], None] | None = None) -> None:
        self.workers = max(1, workers)
        self.heavy_workers = max(1, min(self.workers, heavy_workers or self.workers))
        self.settled: dict[F, R] = {}
        self.cancelled = threading.Event()
        self._on_settle = on_settle
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=name)

    def __enter__(self) -> JobRunner[F, R]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the pool without waiting: ``run`` waited for its jobs (when stopping, for a bounded time)."""
        self._executor.shutdown(wait=False)

    def check_cancelled(self) -> None:
        """For long work, between its steps: raise ``Cancelled`` once the run is being stopped."""
        if self.cancelled.is_set():
            raise Cancelled()

    def run(self, jobs: Iterable[Job[F, R]]) -> None:
        """Run ``jobs`` to the end, in the order their needs allow; see the module docstring."""
        batch = _Batch(list(jobs), self.settled)
        inflight: dict[Future[Mapping[F, R]], Job[F, R]] = {}
        heavy = 0
        try:
            for job in batch.unblocked():
                self._release(batch, job)
            while batch.has_ready() or inflight:
                while len(inflight) < self.workers and (ready := batch.pop(heavy < self.heavy_workers)) is not None:
                    heavy += ready.heavy
                    inflight[self._executor.submit(self._start, ready)] = ready
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    ended = inflight.pop(future)
                    heavy -= ended.heavy
                    self._finish(batch, ended, future.result())
        except BaseException:
            self.cancelled.set()
            stop_workers(self._executor, inflight)
            raise

    def _start(self, job: Job[F, R]) -> Mapping[F, R]:
        """In a worker: a job that waited for a thread while the run was being stopped does nothing."""
        self.check_cancelled()
        return job.work()

    def _release(self, batch: _Batch[F, R], job: Job[F, R]) -> None:
        """Every job it waited for is done: queue it, or fail it at once when a fact it needs failed."""
        results = [self.settled[fact] for fact in job.needs if fact in self.settled]
        failure = next((result for result in results if isinstance(result, Exception)), None)
        if failure is not None:
            self._finish(batch, job, dict.fromkeys(job.produces, failure))
            return
        unsettled = [fact for fact in job.needs if fact not in self.settled]
        if unsettled:
            raise LookupError(f"{job.name} needs {unsettled[0]!r}, which no job settled")
        batch.queue(job)

    def _finish(self, batch: _Batch[F, R], job: Job[F, R], results: Mapping[F, R]) -> None:
        for fact, result in results.items():
            self.settled[fact] = result
            if self._on_settle is not None:
                self._on_settle(fact, result)
        for dependent in batch.done(job):
            self._release(batch, dependent)


class _Batch(Generic[F, R]):
    """One ``run``'s bookkeeping (calling thread only): which jobs wait for which, and the ready ones by rank."""

    def __init__(self, jobs: list[Job[F, R]], settled: Mapping[F, R]) -> None:
        producer = {fact: job for job in jobs for fact in job.produces}
        self.waiting = {job: {producer[f] for f in job.needs if f not in settled and f in producer} for job in jobs}
        self.dependents: dict[Job[F, R], list[Job[F, R]]] = {job: [] for job in jobs}
        for job, producers in self.waiting.items():
            for each in producers:
                self.dependents[each].append(job)
        self.ready: list[tuple[tuple[int, ...], int, Job[F, R]]] = []
        self.ready_heavy: list[tuple[tuple[int, ...], int, Job[F, R]]] = []
        self._order = itertools.count()

    def unblocked(self) -> list[Job[F, R]]:
        return [job for job, producers in self.waiting.items() if not producers]

    def queue(self, job: Job[F, R]) -> None:
        heapq.heappush(self.ready_heavy if job.heavy else self.ready, (job.rank, next(self._order), job))

    def has_ready(self) -> bool:
        return bool(self.ready or self.ready_heavy)

    def pop(self, heavy_allowed: bool) -> Job[F, R] | None:
        """The ready job of lowest rank (a light one when no heavy may start); None when there is none."""
        heaps = [self.ready, self.ready_heavy] if heavy_allowed else [self.ready]
        heap = min((heap for heap in heaps if heap), key=lambda heap: heap[0][:2], default=None)
        return heapq.heappop(heap)[2] if heap is not None else None

    def done(self, job: Job[F, R]) -> list[Job[F, R]]:
        """The jobs that waited for ``job`` and for nothing else still running."""
        released = []
        for dependent in self.dependents[job]:
            self.waiting[dependent].discard(job)
            if not self.waiting[dependent]:
                released.append(dependent)
        return released

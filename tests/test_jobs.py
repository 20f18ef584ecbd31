"""The dependency-graph job runner: order by needs and rank, bounded parallelism, failures, cancellation.

Jobs coordinate through events and barriers, never sleeps: each test fails the same way every time
when the runner breaks the rule it holds, and passes without depending on how fast threads start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import pytest

from bundler.jobs import Job, JobRunner
from bundler.threads import Cancelled

WAIT = 30.0
"""A bound on every wait, so that a broken runner fails a test instead of hanging it."""

Result = object


class Recorder:
    """Jobs that log when they start and end, thread-safely."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def job(self, name: str, *, needs: tuple[str, ...] = (), rank: tuple[int, ...] = (),
            body: Callable[[], None] = lambda: None, result: Result = "ok", heavy: bool = False) -> Job[str, Result]:
        def work() -> Mapping[str, Result]:
            self._note("start", name)
            body()
            self._note("end", name)
            return {name: result}

        return Job(name, work, needs=needs, produces=(name,), rank=rank, heavy=heavy)

    def _note(self, event: str, name: str) -> None:
        with self.lock:
            self.log.append((event, name))

    def started(self) -> list[str]:
        return [name for event, name in self.log if event == "start"]

    def position(self, event: str, name: str) -> int:
        return self.log.index((event, name))


def test_a_job_starts_only_after_every_job_it_needs_has_ended() -> None:
    jobs = Recorder()
    graph = [
        jobs.job("index", needs=("arm", "amd")),
        jobs.job("tag", needs=("index",)),
        jobs.job("arm", needs=("layer",)),
        jobs.job("amd", needs=("layer",)),
        jobs.job("layer"),
        jobs.job("other"),
    ]
    with JobRunner[str, Result](4) as runner:
        runner.run(graph)
    assert sorted(jobs.started()) == sorted(job.name for job in graph)
    for job in graph:
        for need in job.needs:
            assert jobs.position("end", need) < jobs.position("start", job.name), f"{job.name} before {need}"
    assert set(runner.settled) == {job.name for job in graph}


def test_ready_jobs_start_lowest_rank_first() -> None:
    jobs = Recorder()
    graph = [jobs.job(f"r{rank}", rank=(rank, 0)) for rank in (3, 1, 2, 0)]
    with JobRunner[str, Result](1) as runner:
        runner.run(graph)
    assert jobs.started() == ["r0", "r1", "r2", "r3"]


def test_at_most_workers_jobs_run_at_once() -> None:
    workers = 2
    together = threading.Barrier(workers, timeout=WAIT)
    lock = threading.Lock()
    running = [0]
    most = [0]

    def body() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        together.wait()  # breaks (and fails the test) unless ``workers`` jobs run together
        with lock:
            running[0] -= 1

    jobs = Recorder()
    with JobRunner[str, Result](workers) as runner:
        runner.run([jobs.job(f"j{n}", body=body) for n in range(3 * workers)])
    assert most[0] == workers


def test_heavy_jobs_run_at_most_heavy_workers_at_once_and_light_ones_pass_them() -> None:
    """The heavy jobs rank first and wait until every light job has ended: with more heavy jobs than
    workers, the light ones run only if the runner holds heavy jobs to ``heavy_workers`` and gives the
    other threads to light ones."""
    workers, heavy_workers = 4, 2
    lights_done = threading.Event()
    lock = threading.Lock()
    running, most, lights_left = [0], [0], [2]

    def heavy() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        assert lights_done.wait(WAIT), "light jobs were kept behind heavy ones"
        with lock:
            running[0] -= 1

    def light() -> None:
        with lock:
            lights_left[0] -= 1
            if not lights_left[0]:
                lights_done.set()

    jobs = Recorder()
    graph = [jobs.job(f"heavy{n}", rank=(0,), body=heavy, heavy=True) for n in range(2 * workers)]
    graph += [jobs.job(f"light{n}", rank=(1,), body=light) for n in range(2)]
    with JobRunner[str, Result](workers, heavy_workers=heavy_workers) as runner:
        runner.run(graph)
    assert most[0] == heavy_workers
    assert set(runner.settled) == {job.name for job in graph}


def test_a_failure_fails_what_needs_it_without_running_it_and_nothing_else() -> None:
    refused = ValueError("refused")
    jobs = Recorder()
    graph = [
        jobs.job("layer", result=refused),
        jobs.job("manifest", needs=("layer",)),
        jobs.job("tag", needs=("manifest",)),
        jobs.job("unrelated"),
        jobs.job("unrelated-tag", needs=("unrelated",)),
    ]
    settled: list[tuple[str, Result]] = []
    with JobRunner[str, Result](2, on_settle=lambda fact, result: settled.append((fact, result))) as runner:
        runner.run(graph)
    assert sorted(jobs.started()) == ["layer", "unrelated", "unrelated-tag"]
    assert runner.settled["manifest"] is refused and runner.settled["tag"] is refused
    assert runner.settled["unrelated-tag"] == "ok"
    assert sorted(fact for fact, _ in settled) == sorted(job.name for job in graph)


def test_facts_settled_by_one_batch_are_known_to_the_next() -> None:
    jobs = Recorder()
    with JobRunner[str, Result](2) as runner:
        runner.run([jobs.job("layer")])
        runner.run([jobs.job("manifest", needs=("layer",))])
        runner.settled["broken"] = ValueError("no")
        runner.run([jobs.job("tag", needs=("broken",))])
    assert jobs.started() == ["layer", "manifest"]
    assert isinstance(runner.settled["tag"], ValueError)


def test_a_need_nothing_settles_is_a_bug_that_stops_the_run() -> None:
    jobs = Recorder()
    with JobRunner[str, Result](2) as runner, pytest.raises(LookupError, match="manifest needs 'layer'"):
        runner.run([jobs.job("manifest", needs=("layer",))])
    assert jobs.started() == []


class Interruptible:
    """A run of ``first``, then a ``blocker`` that stays until the run is cancelled, with more queued behind.

    With two workers, ``first`` and ``blocker`` run together and the rest wait for a thread; ``first``
    ends only once ``blocker`` has started, so both are certainly running when the run is stopped.
    """

    def __init__(self) -> None:
        self.jobs = Recorder()
        self.blocker_started = threading.Event()
        self.blocker_saw_cancel = threading.Event()
        self.runner: JobRunner[str, Result] | None = None

    def graph(self, first: Callable[[], None] = lambda: None) -> list[Job[str, Result]]:
        def wait_for_blocker() -> None:
            assert self.blocker_started.wait(WAIT)
            first()

        return [
            self.jobs.job("first", rank=(0,), body=wait_for_blocker),
            self.jobs.job("blocker", rank=(1,), body=self._block),
            *(self.jobs.job(f"queued{n}", rank=(2,)) for n in range(4)),
        ]

    def _block(self) -> None:
        assert self.runner is not None
        self.blocker_started.set()
        self.runner.cancelled.wait(WAIT)
        try:
            self.runner.check_cancelled()
        except Cancelled:
            self.blocker_saw_cancel.set()
            raise


def _interrupt_when_first_settles(fact: str, result: Result) -> None:
    if fact == "first":
        raise KeyboardInterrupt


def test_ctrl_c_cancels_the_run_stops_running_jobs_and_starts_no_queued_one() -> None:
    run = Interruptible()
    with JobRunner[str, Result](2, on_settle=_interrupt_when_first_settles) as runner:
        run.runner = runner
        with pytest.raises(KeyboardInterrupt):
            runner.run(run.graph())
    assert runner.cancelled.is_set()
    assert run.blocker_saw_cancel.is_set()
    assert sorted(run.jobs.started()) == ["blocker", "first"]


def test_an_exception_raised_by_a_job_cancels_the_run_and_is_re_raised() -> None:
    def crash() -> None:
        raise RuntimeError("bug")

    run = Interruptible()
    with JobRunner[str, Result](2) as runner:
        run.runner = runner
        with pytest.raises(RuntimeError, match="bug"):
            runner.run(run.graph(first=crash))
    assert run.blocker_saw_cancel.is_set()
    assert sorted(run.jobs.started()) == ["blocker", "first"]


def test_cancelled_is_not_an_exception() -> None:
    """So that no ``except Exception`` on a worker's way (a retry, an error mapping) swallows it."""
    assert not issubclass(Cancelled, Exception) and issubclass(Cancelled, BaseException)

"""The real ``imgbundle`` command, run as a user runs it.

    run_cli(*args)     a subprocess (``python -m bundler``) to its end; exit 0 expected unless ``expect`` says
    start_cli(*args)   the same subprocess, left running (to be signalled)
    run_main(capsys)   ``bundler.cli.main`` in this process, for tests that patch the library under it

No run may see this machine's docker credentials (``DOCKER_CONFIG`` points nowhere unless ``env`` says
otherwise) or end in a traceback: whatever goes wrong, the command must end with one clean line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bundler.cli import main

__all__ = ["CliRun", "bundle_index", "cli_environment", "files_in", "limited", "run_cli", "run_main", "start_cli"]

NO_DOCKER_CONFIG = "/nonexistent-docker-config"
TIMEOUT_S = 300.0
"""A guard against a hung command, not a speed check: tests that care about time measure ``seconds``."""


@dataclass(frozen=True)
class CliRun:
    """How one run ended."""

    code: int
    stdout: str
    stderr: str
    seconds: float
    peak_mib: float = 0.0
    """The command's peak resident memory, when ``run_cli`` was asked to measure it."""

    @property
    def error_lines(self) -> list[str]:
        """The ``imgbundle: error: ...`` lines of stderr."""
        return [line for line in self.stderr.splitlines() if line.startswith("imgbundle: error:")]

    @property
    def stderr_lines(self) -> list[str]:
        """Every stderr line that is not blank: a refusal prints exactly one, a success none."""
        return [line for line in self.stderr.splitlines() if line.strip()]


_SET_LIMITS = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so that a write past RLIMIT_FSIZE fails with EFBIG
end = sys.argv.index("--")
for limit in sys.argv[1:end]:
    name, value = limit.split("=")
    resource.setrlimit(getattr(resource, name), (int(value), int(value)))
os.execv(sys.argv[end + 1], sys.argv[end + 1 :])
"""


_MEASURE = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as report:
    report.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def limited(argv: list[str], **limits: int) -> list[str]:
    """``argv`` under resource limits (``RLIMIT_AS=…``), set by a small Python that then execs it:
    ``preexec_fn`` is not safe in a process with threads, and these tests start commands from several."""
    return [sys.executable, "-c", _SET_LIMITS, *(f"{name}={value}" for name, value in limits.items()), "--", *argv]


def _argv(args: tuple[str, ...], limits: dict[str, int] | None) -> list[str]:
    argv = [sys.executable, "-m", "bundler", *args]
    return limited(argv, **limits) if limits else argv


def cli_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``env``, without this machine's docker credentials."""
    return {**os.environ, "DOCKER_CONFIG": NO_DOCKER_CONFIG, **(env or {})}


def run_cli(*args: str, expect: int | None = 0, stdin: str | None = None, stdin_file: Path | None = None,
            env: dict[str, str] | None = None, cwd: Path | None = None, limits: dict[str, int] | None = None,
            timeout: float = TIMEOUT_S, measure: Path | None = None) -> CliRun:
    """``imgbundle ARGS`` to its end. ``expect``: the exit code the test requires (None: the test checks it).

    ``stdin`` is text to feed, ``stdin_file`` a file to read from; without either, stdin is empty.
    ``env`` adds to this process's environment; ``limits`` are resource limits (see ``limited``).
    ``measure`` is a scratch file through which a small parent process reports the command's peak
    memory (``CliRun.peak_mib``): the command's own, not the test's.
    """
    started = time.monotonic()
    argv = _argv(args, limits)
    if measure is not None:
        argv = [sys.executable, "-c", _MEASURE, str(measure), *argv]
    with open(stdin_file or os.devnull, "rb") as source:
        feed: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": source}
        proc = subprocess.run(argv, **feed, capture_output=True, text=True, env=cli_environment(env),
                              cwd=cwd, timeout=timeout, check=False)
    peak = int(measure.read_text()) / 1024 if measure is not None else 0.0
    run = CliRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started, peak)
    if expect is not None:
        assert run.code == expect, f"exit {run.code}, expected {expect}\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    return run


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``imgbundle ARGS`` started and left running, stdout and stderr piped, stdin empty."""
    return subprocess.Popen(_argv(args, None), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_environment(env))


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``imgbundle ARGS`` in this process: (exit code, stdout, stderr); never a traceback."""
    with pytest.raises(SystemExit) as stopped:
        main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return stopped.value.code or 0, captured.out, captured.err


def bundle_index(capsys: pytest.CaptureFixture[str], bundle: Path) -> dict:
    """The bundle's index as ``imgbundle list --json`` prints it."""
    code, stdout, stderr = run_main(capsys, "list", str(bundle), "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def files_in(directory: Path) -> list[str]:
    """Every file name under ``directory`` (temporary ``.part-*`` files included), sorted: what a command left."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())

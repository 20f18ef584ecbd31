"""``imgbundle serve`` and containerd started for tests, and the clients that talk to them.

    start_serve(*bundles, *options)   the real command on 127.0.0.1 and a free port; stopped by SIGTERM, which
                                      must end it with exit 0; its log (access lines, damage) kept for assertions
    start_containerd(directory)       a containerd of its own (root, state dir, socket) for ``ctr``; the reason
                                      instead when this machine cannot run one
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from localcontainerd import Containerd, ContainerdStartError, local_containerd
from support.cli import start_cli
from support.servers import refuse_unless_marked

__all__ = ["Containerd", "Served", "start_containerd", "start_serve"]

START_TIMEOUT_S = 60.0


@dataclass
class Served:
    """A running ``imgbundle serve``: ``host`` is ``127.0.0.1:PORT``; ``log`` fills as it writes stderr, and is
    whole once the server stopped."""

    process: subprocess.Popen[str]
    url: str
    banner: str
    log: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def ref(self, path: str) -> str:
        return f"{self.host}/{path}"

    def log_line(self, containing: str, timeout: float = 10.0) -> str:
        """The first log line holding ``containing``, waited for (the log is read on another thread)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in list(self.log) if containing in line), None)
            if found is not None:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no log line with {containing!r} in {timeout:g} s: {self.log[-5:]}")


@contextlib.contextmanager
def start_serve(*args: str) -> Iterator[Served]:
    """``imgbundle serve ARGS --listen 127.0.0.1:0`` until the block ends; then SIGTERM, which must exit 0."""
    refuse_unless_marked("imgbundle serve")
    process = start_cli("serve", *args, "--listen", "127.0.0.1:0")
    log: list[str] = []
    reader = threading.Thread(target=_collect, args=(process, log), daemon=True)
    reader.start()
    try:
        banner = _banner(process, log)
        yield Served(process, banner.rsplit(" at ", 1)[1], banner, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError("imgbundle serve did not stop on SIGTERM") from None
        reader.join(timeout=5)
    assert code == 0, f"imgbundle serve ended with {code}: {log[-5:]}"


def _collect(process: subprocess.Popen[str], log: list[str]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        log.append(line.rstrip("\n"))


def _banner(process: subprocess.Popen[str], log: list[str]) -> str:
    """The first stdout line, ``serving N images ... at URL``: printed once the socket listens."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("serving "):
        process.wait(timeout=START_TIMEOUT_S)
        time.sleep(0.2)
        raise AssertionError(f"imgbundle serve did not start (exit {process.returncode}): {line} {log}")
    return line.strip()


@contextlib.contextmanager
def start_containerd(directory: Path) -> Iterator[Containerd | str]:
    """A containerd of its own under ``directory`` (scripts/localcontainerd.py); yields the reason instead when
    containerd is missing or cannot run here (e.g. not root)."""
    refuse_unless_marked("containerd")
    with contextlib.ExitStack() as stack:
        try:
            daemon: Containerd | str = stack.enter_context(local_containerd(directory))
        except ContainerdStartError as error:
            daemon = str(error)
        yield daemon

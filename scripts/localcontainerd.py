"""Start and stop a throw-away containerd with its own root, state dir and socket: the one launcher for the
tests (tests/support/serve.py) and the benchmark (scripts/bench.py).

Why its own: ``ctr`` against the machine's containerd would mix the run's content with whatever the host
holds; a private one (the CRI plugin off, no metrics or debug listener) starts empty and leaves nothing.

    with local_containerd(Path("/tmp/ctd")) as daemon:      # the socket path must stay short
        daemon.ctr("content", "fetch", "--plain-http", ref)

No pytest here: when containerd is missing or cannot run here (e.g. not root), ``ContainerdStartError``
says why; the test fixtures turn it into a skip.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Containerd", "ContainerdStartError", "local_containerd"]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class ContainerdStartError(RuntimeError):
    """containerd or ctr is missing, or the daemon did not answer in time (message: why, with the log tail)."""


@dataclass
class Containerd:
    """A private containerd; ``ctr(*args)`` runs ``ctr`` against its socket."""

    process: subprocess.Popen[bytes]
    socket: Path

    def ctr(self, *args: str, stdin: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.socket), *args], stdin=stdin, capture_output=True,
                              text=True, timeout=timeout, check=False)


_CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""


@contextlib.contextmanager
def local_containerd(directory: Path) -> Iterator[Containerd]:
    """A containerd with its root, state dir, socket and log under ``directory`` until the block ends."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        raise ContainerdStartError("containerd is not installed (Debian package containerd; .ci/install-deps "
                                   "installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    socket = directory / "c.sock"
    config = directory / "config.toml"
    config.write_text(_CONFIG.format(root=directory / "root", state=directory / "state", socket=socket))
    with (directory / "containerd.log").open("wb") as log:
        process = subprocess.Popen(["containerd", "--config", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            daemon = Containerd(process, socket)
            _wait_ready(daemon, directory / "containerd.log")
            yield daemon
        finally:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(daemon: Containerd, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise ContainerdStartError(f"containerd cannot run here: {log.read_text(errors='replace')[-300:]}")
        if daemon.socket.exists() and daemon.ctr("version", timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    raise ContainerdStartError(f"containerd did not answer within {START_TIMEOUT_S:g} s")

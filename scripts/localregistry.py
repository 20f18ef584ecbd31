"""Start and stop a throw-away Docker Distribution registry on 127.0.0.1: the one launcher for the
tests (tests/support/registry.py), the demo (scripts/demo.py) and the benchmark (scripts/bench.py).

Why one: the details that make a local registry reliable (a free port that may be stolen before the
registry binds it, waiting for ``/v2/``, keeping the log for the error message, a child environment
without ``REGISTRY_*`` variables, which Distribution reads as configuration) are learnt once.

    with local_registry(Path("/tmp/reg")) as reg:      # plain HTTP, no auth, storage in /tmp/reg/storage
        print(reg.host)                                 # 127.0.0.1:PORT

No pytest here: a failure raises ``RegistryStartError`` with the log tail; the test fixtures turn it
into ``pytest.fail``. The config file is written as JSON, which is valid YAML.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "REGISTRY_BINARY",
    "RegistryStartError",
    "RegistryProcess",
    "free_port",
    "registry_config",
    "child_environment",
    "launch",
    "local_registry",
    "main",
]

REGISTRY_BINARY = "/usr/bin/docker-registry"
START_TIMEOUT_S = 20.0
START_ATTEMPTS = 3
"""A free port found by bind-and-close can be taken by someone else before the registry binds it."""
STOP_TIMEOUT_S = 10.0


class RegistryStartError(RuntimeError):
    """The registry binary is missing, or the process did not answer ``/v2/`` in time (message: log tail)."""


@dataclass
class RegistryProcess:
    """One live registry started in ``directory`` (config, logs and ``storage/`` live there)."""

    url: str
    directory: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as image references name it."""
        return self.url.split("://", 1)[1]

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def storage_dir(self) -> Path:
        """The filesystem root holding ``docker/registry/v2``."""
        return self.directory / "storage"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


def free_port() -> int:
    """A port that was free a moment ago (bind to :0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def registry_config(storage_dir: Path, port: int, *, tls: tuple[Path, Path] | None = None,
                    auth: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Distribution config: filesystem storage, deletes on, quiet logs, ``tls`` = (cert, key), ``auth`` as is."""
    http_cfg: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)}
    if tls is not None:
        http_cfg["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage_dir)}, "delete": {"enabled": True}},
        "http": http_cfg,
        "health": {"storagedriver": {"enabled": False}},
    }
    if auth is not None:
        config["auth"] = auth
    return _deep_merge(config, extra or {})


def child_environment() -> dict[str, str]:
    """Our environment without ``REGISTRY_*``: Distribution would read those as config overrides."""
    return {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}


def _log_tail(log_path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(proc: subprocess.Popen[bytes], url: str, ca_file: Path | None, deadline: float) -> bool:
    """Poll GET /v2/ until it answers 200 or 401; False if the process died first."""
    verify = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    with httpx.Client(verify=verify, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{url}/v2/").status_code in (200, 401):
                    return True
            time.sleep(0.05)
    return False


def _spawn(directory: Path, config: dict[str, Any], attempt: int) -> tuple[subprocess.Popen[bytes], Path, Path]:
    config_path = directory / "config.yml"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = directory / f"registry-{attempt}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=child_environment())
    return proc, config_path, log_path


def launch(directory: Path, *, tls: tuple[Path, Path] | None = None, ca_file: Path | None = None,
           auth: dict[str, Any] | None = None, extra_config: dict[str, Any] | None = None,
           pick_port: Callable[[], int] = free_port) -> RegistryProcess:
    """Start a registry with its config, log and ``storage/`` in ``directory``; the caller must ``stop()`` it.

    ``ca_file`` is what the readiness probe trusts when ``tls`` is set; ``pick_port`` lets tests hand out a
    taken port first. Raises ``RegistryStartError``.
    """
    if not Path(REGISTRY_BINARY).exists():
        raise RegistryStartError(f"{REGISTRY_BINARY} is missing (Debian package docker-registry; .ci/install-deps "
                                 "installs it)")
    directory = Path(directory)
    storage_dir = directory / "storage"
    storage_dir.mkdir(parents=True, exist_ok=True)
    scheme = "https" if tls else "http"
    for attempt in range(1, START_ATTEMPTS + 1):
        port = pick_port()
        config = registry_config(storage_dir, port, tls=tls, auth=auth, extra=extra_config)
        proc, config_path, log_path = _spawn(directory, config, attempt)
        url = f"{scheme}://127.0.0.1:{port}"
        started = RegistryProcess(url, directory, config_path, log_path, proc)
        if _wait_ready(proc, url, ca_file, time.monotonic() + START_TIMEOUT_S):
            return started
        started.stop()
        if "address already in use" not in log_path.read_text(errors="replace") or attempt == START_ATTEMPTS:
            raise RegistryStartError(f"docker-registry did not start on {url} (config {config_path}); "
                                     f"log tail:\n{_log_tail(log_path)}")
    raise AssertionError("unreachable")  # the loop returns or raises


@contextlib.contextmanager
def local_registry(directory: Path, **kwargs: Any) -> Iterator[RegistryProcess]:
    """``launch`` for the duration of a block; the process is stopped however the block ends."""
    reg = launch(directory, **kwargs)
    try:
        yield reg
    finally:
        reg.stop()


def main(argv: list[str] | None = None) -> int:
    """Run one registry in the foreground until Ctrl-C, for trying imgbundle by hand."""
    parser = argparse.ArgumentParser(
        prog="localregistry.py", description="Run a throw-away Docker Distribution on 127.0.0.1 until Ctrl-C.")
    parser.add_argument("directory", type=Path, help="where its config, log and storage/ go")
    args = parser.parse_args(argv)
    try:
        with local_registry(args.directory) as reg:
            print(f"registry {reg.url} (storage {reg.storage_dir}); Ctrl-C stops it", flush=True)
            reg.process.wait()
    except RegistryStartError as error:
        print(f"localregistry: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A registry that is down for good: one clear line, the right exit code, within a bounded time.

Run through the real ``imgbundle`` command with ``--retries 1 --timeout 1``: with the default backoff
one request gives up after about 0.5 s of waiting, and once one operation has given up on a host the
others fail at once instead of each spending its own budget.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bundler.registry import RegistryOptions
from bundler.registry.options import SMALL_REQUESTS
from support.cli import CliRun, files_in, run_cli
from support.faults import FaultProxy, Rule
from support.registry import RunningRegistry, free_port

BUDGET = ("--retries", "1", "--timeout", "1", "--retry-timeout", "0")
BOUND_S = 10.0
"""Generous: one budget is ~0.5 s of backoff plus the requests; without the outage latch the 503 cases
took one budget per image and per blob."""


def pack_args(host: str, out: Path, images: list[str]) -> list[str]:
    return ["pack", "-q", *[f"{host}/{name}" for name in images], "-o", str(out), *BUDGET]


def assert_one_clear_line(run: CliRun, code: int, host: str) -> str:
    assert run.code == code, f"exit {run.code}, expected {code}\n{run.stderr}"
    assert run.stderr.strip().splitlines() == run.error_lines and len(run.error_lines) == 1, run.stderr
    line = run.error_lines[0]
    assert host in line, line
    assert run.seconds < BOUND_S, f"took {run.seconds:.1f}s: {line}"
    return line


IMAGES = ["lib/a:1", "lib/b:1", "lib/c:1", "lib/d:1", "lib/e:1", "lib/f:1"]


def test_pack_from_a_closed_port(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    run = run_cli(*pack_args(host, tmp_path / "out.tar.zst", IMAGES), expect=None)
    line = assert_one_clear_line(run, 13, host)
    assert "cannot connect" in line
    assert files_in(tmp_path) == []


def test_unpack_to_a_closed_port(small_bundle: Path, tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    run = run_cli("unpack", "-q", str(small_bundle), "--to", f"{host}/mirror", *BUDGET, expect=None)
    assert "cannot connect" in assert_one_clear_line(run, 13, host)


def test_pack_from_a_registry_answering_503_forever(seeded_registry: tuple[RunningRegistry, object],
                                                    fault_proxy, tmp_path: Path) -> None:
    reg, image_set = seeded_registry
    proxy: FaultProxy = fault_proxy(reg, rate=1.0, kinds=("503",))
    image_list = tmp_path / "images.list"
    image_list.write_text(image_set.image_list(proxy.host))  # type: ignore[attr-defined]
    run = run_cli("pack", "-q", "-f", str(image_list), "-o", str(tmp_path / "out.tar.zst"), *BUDGET, expect=None)
    line = assert_one_clear_line(run, 10, proxy.host)
    assert "503" in line and "12 of 12 references failed" in line
    assert files_in(tmp_path) == ["images.list"]
    # the references under way spend their budget (2 tries; resolving runs SMALL_REQUESTS at once), the rest are
    # not tried at all
    manifest_gets = proxy.requests("GET", "/manifests/")
    assert proxy.fired["503"] == len(proxy.seen) and len(manifest_gets) <= min(12, SMALL_REQUESTS) * 2, proxy.summary()


def test_unpack_to_a_registry_answering_503_forever(fresh_registry: RunningRegistry, fault_proxy,
                                                    small_bundle: Path) -> None:
    proxy: FaultProxy = fault_proxy(fresh_registry, rate=1.0, kinds=("503",))
    run = run_cli("unpack", "-q", str(small_bundle), "--to", f"{proxy.host}/mirror", *BUDGET, expect=None)
    line = assert_one_clear_line(run, 10, proxy.host)
    assert "503" in line and "3 of 3 images failed" in line
    assert len(proxy.requests("HEAD")) <= 3 * 2, proxy.summary()


def test_stalled_registry_honours_retries_and_timeout(registry: RunningRegistry, fault_proxy,
                                                      tmp_path: Path) -> None:
    """Every answer stalls past ``--timeout 1``: exactly 1 + ``--retries`` tries, each cut after about a second."""
    proxy: FaultProxy = fault_proxy(registry, stall=30.0)
    proxy.rules.append(Rule(path="^/v2/", fault="stall"))
    run = run_cli(*pack_args(proxy.host, tmp_path / "out.tar.zst", IMAGES[:1]), expect=None)
    line = assert_one_clear_line(run, 13, proxy.host)
    assert "did not answer in time" in line
    assert proxy.fired["stall"] == 2, proxy.summary()
    assert run.seconds > 2 * 1.0 + 0.4, "each try should wait out the 1 s read timeout"
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("command", ["pack", "unpack"])
def test_retries_and_timeout_are_documented_flags(command: str) -> None:
    """The flags exist, say what they do, and default to what ``RegistryOptions`` documents."""
    help_text = " ".join(run_cli(command, "--help").stdout.split())
    defaults = RegistryOptions()
    retries = re.search(r"--retries INTEGER RANGE (.*?)\[default: (\d+)", help_text)
    timeout = re.search(r"--timeout FLOAT RANGE (.*?)\[default: ([\d.]+)", help_text)
    assert retries and timeout, help_text
    assert "Retries per request" in retries.group(1) and int(retries.group(2)) == defaults.retries
    assert "Seconds" in timeout.group(1) and float(timeout.group(2)) == defaults.read_timeout
    docs = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text()
    assert "--retries" in docs and "--timeout" in docs and "Retry-After" in docs

"""Two runs at once: two ``pack`` writing one output, two ``pack`` sharing one blob cache, two ``unpack`` into
the same target repositories. Both start together through a pacing proxy, so that their transfers overlap.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from bundler.bundle import read_index

from support.cli import CliRun, files_in, run_cli, start_cli
from support.slowproxy import SlowProxy, proxied_list
from support.sources import SourceSet, assert_registry_holds, expected_state

CREATED = "2026-02-03T04:05:06Z"
RATE = 1024 * 1024


def both(*commands: tuple[list[str], dict[str, str]]) -> list[CliRun]:
    """Start every command at once and wait for all of them."""
    processes: list[subprocess.Popen[str]] = [start_cli(*args, env=env) for args, env in commands]
    return [finished(process) for process in processes]


def finished(process: subprocess.Popen[str]) -> CliRun:
    stdout, stderr = process.communicate(timeout=300)
    assert "Traceback" not in stderr, stderr
    return CliRun(process.returncode, stdout, stderr, 0.0)


@pytest.fixture(scope="module")
def site(seeded_registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SlowProxy, Path, bytes]]:
    """The small set behind a pacing proxy, its image list, and the bundle one pack alone makes."""
    registry, image_set = seeded_registry
    directory = tmp_path_factory.mktemp("concurrent")
    proxy, image_list = proxied_list(registry, image_set, directory)
    reference = directory / "reference.tar.zst"
    run_cli(*_pack_args(image_list, reference), env={"IMGBUNDLE_CACHE_DIR": str(directory / "cache")})
    yield proxy, image_list, reference.read_bytes()
    proxy.stop()


def _pack_args(image_list: Path, output: Path) -> list[str]:
    return ["pack", "-q", "-f", str(image_list), "-o", str(output), "--created", CREATED]


def test_two_packs_writing_one_output_never_interleave(site, tmp_path: Path) -> None:
    """The first to claim the output writes it; the other refuses at once, naming the first's process id
    (exit 40), and leaves nothing; the bundle is whole."""
    proxy, image_list, reference = site
    proxy.reset()
    proxy.rate = RATE
    output = tmp_path / "b.tar.zst"
    processes = [start_cli(*_pack_args(image_list, output), env={"IMGBUNDLE_CACHE_DIR": str(tmp_path / f"c{n}")})
                 for n in range(2)]
    runs = [finished(process) for process in processes]
    assert sorted(run.code for run in runs) == [0, 40], [run.stderr for run in runs]
    winner, loser = (processes[0], runs[1]) if runs[0].code == 0 else (processes[1], runs[0])
    assert len(loser.stderr_lines) == 1, loser.stderr
    assert f"is being written by another imgbundle (process {winner.pid})" in loser.stderr_lines[0], loser.stderr
    assert output.read_bytes() == reference
    assert files_in(tmp_path).count("b.tar.zst") == 1
    assert not [name for name in files_in(tmp_path) if ".part" in name]


def test_two_packs_sharing_a_cache_are_both_correct_and_fetch_each_blob_at_most_twice(site, tmp_path: Path) -> None:
    proxy, image_list, reference = site
    proxy.reset()
    proxy.rate = RATE
    cache = tmp_path / "cache"
    env = {"IMGBUNDLE_CACHE_DIR": str(cache)}
    runs = both(*[(_pack_args(image_list, tmp_path / f"b{n}.tar.zst"), env) for n in range(2)])
    assert [run.code for run in runs] == [0, 0], [run.stderr for run in runs]
    for n in range(2):
        assert (tmp_path / f"b{n}.tar.zst").read_bytes() == reference
    entries = list((cache / "blobs" / "sha256").iterdir())
    assert {f"sha256:{path.name}" for path in entries} >= {e.digest for e in read_index(tmp_path / "b0.tar.zst").blobs}
    for path in entries:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"torn cache entry {path}"
    assert files_in(cache / "tmp") == []
    assert max(proxy.blob_gets.count(digest) for digest in set(proxy.blob_gets)) <= 2


def test_two_unpacks_into_the_same_repositories_both_finish(registry_factory, small_bundle: Path,
                                                            small_source: SourceSet) -> None:
    """Distribution 2.8 rewrites a link file in place, so while one run re-links a digest the other's manifest
    PUT may be told that a reference it holds is unknown: the PUT is checked and tried again (``bundler.unpack.steps``)."""
    target = registry_factory()
    proxy = SlowProxy(target.host)
    try:
        proxy.rate = RATE
        args = ["unpack", "-q", str(small_bundle), "--to", f"{proxy.host}/twice"]
        runs = both((args, {}), (args, {}))
    finally:
        proxy.stop()
    assert [run.code for run in runs] == [0, 0], [run.stderr for run in runs]
    assert_registry_holds(target, expected_state(small_source, lambda image: f"twice/{image.path}"))

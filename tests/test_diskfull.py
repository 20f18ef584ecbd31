"""The disk fills up while ``imgbundle pack`` writes: a clear one-line error, exit 40, nothing left behind.

Two ways to fill it: ``RLIMIT_FSIZE`` on the command (with ``SIGXFSZ`` ignored, a write past the limit
fails with EFBIG), which works anywhere; and, when running as root where mounting is allowed, a real
2 MiB tmpfs, which fails with ENOSPC. Either way the bundle's temporary file must be gone, no bundle
and no sidecar may appear, and a bundle that was there before (``--force``) must be left untouched.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from support.cli import CliRun, run_cli
from support.registry import RunningRegistry

CREATED = "2026-03-04T05:06:07Z"
LIMIT = 1024 * 1024
"""Bytes a file may grow to: the small image set's bundle is about 5 MB."""


def pack(image_list: Path, output: Path, cache: Path, *extra: str, file_size: int | None = None) -> CliRun:
    """The real command; with ``file_size``, no file it writes may grow past that (SIGXFSZ ignored)."""
    return run_cli("pack", "-q", "-f", str(image_list), "-o", str(output), "--created", CREATED, *extra,
                   expect=None, env={"IMGBUNDLE_CACHE_DIR": str(cache)},
                   limits=None if file_size is None else {"RLIMIT_FSIZE": file_size})


def assert_disk_full(done: CliRun, output: Path, reason: str) -> None:
    lines = done.stderr_lines
    assert done.code == 41, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"imgbundle: error: cannot write {output}: {reason}"), lines
    assert re.search(r"\(\d+ bytes written, up to \d+ more needed\)$", lines[0]), lines


@pytest.fixture(scope="module")
def image_list(seeded_registry: tuple[RunningRegistry, object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    registry, image_set = seeded_registry
    path = tmp_path_factory.mktemp("diskfull") / "images.list"
    path.write_text(image_set.image_list(registry.host))  # type: ignore[attr-defined]
    return path


def test_file_size_limit_fails_cleanly(image_list: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    done = pack(image_list, out / "b.tar.zst", tmp_path / "cache", file_size=LIMIT)
    assert_disk_full(done, out / "b.tar.zst", "File too large")
    assert os.listdir(out) == [], "a temporary file, a bundle or a sidecar was left"


def test_a_failed_overwrite_keeps_the_previous_bundle(image_list: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    bundle = out / "b.tar.zst"
    assert pack(image_list, bundle, tmp_path / "cache").code == 0
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    assert sorted(before) == ["b.tar.zst", "b.tar.zst.sha256"]

    done = pack(image_list, bundle, tmp_path / "cache", "--force", "--no-cache", file_size=LIMIT)
    assert_disk_full(done, bundle, "File too large")
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs; only root may mount one, so elsewhere this case is skipped (and says why)."""
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the RLIMIT_FSIZE cases cover disk-full without it")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_no_space_left_on_a_small_filesystem(image_list: Path, small_filesystem: Path, tmp_path: Path) -> None:
    done = pack(image_list, small_filesystem / "b.tar.zst", tmp_path / "cache")
    assert_disk_full(done, small_filesystem / "b.tar.zst", "No space left on device")
    assert os.listdir(small_filesystem) == []
    assert os.statvfs(small_filesystem).f_bfree == os.statvfs(small_filesystem).f_blocks, "space still in use"


def test_a_full_cache_costs_only_the_cache(image_list: Path, small_filesystem: Path, tmp_path: Path) -> None:
    """The blob cache on a full filesystem: the pack goes on without it (the cache is an optimisation), its
    bundle is whole, and the cache holds no entry whose bytes do not hash to its name, nor a temp file."""
    out = tmp_path / "out"
    out.mkdir()
    done = pack(image_list, out / "b.tar.zst", small_filesystem / "cache")
    assert done.code == 0, done.stderr
    assert run_cli("verify", "-q", str(out / "b.tar.zst"), expect=None).code == 0
    cache = small_filesystem / "cache"
    for path in (cache / "blobs" / "sha256").glob("*"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"torn cache entry {path}"
    assert list((cache / "tmp").glob("*")) == []

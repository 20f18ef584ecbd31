"""``tune_malloc``: writing a bundle makes and drops 1 to 4 MiB buffers by the thousand; served from the
heap they are reused, served by ``mmap`` every one of them costs a page fault per 4 KiB.

The CLI tunes itself, and the same bundle write must then fault clearly less than with glibc's defaults;
a ``MALLOC_*`` variable the user set wins over the tuning.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

WRITE_128_MIB = """
import hashlib, os, resource, sys, tempfile
from pathlib import Path
from bundler.cli.malloc import tune_malloc
if sys.argv[1] == "tuned":
    tune_malloc()
from bundler.bundle import BlobSpec, write_bundle
from bundler.digest import Digest
data = {}
for _ in range(16):
    blob = os.urandom(8 * 1024 * 1024)
    data["sha256:" + hashlib.sha256(blob).hexdigest()] = blob
specs = [BlobSpec(digest=Digest(d), size=len(b), media_type="application/octet-stream") for d, b in data.items()]
def open_blob(spec):
    blob = data[spec.digest]
    for start in range(0, len(blob), 1024 * 1024):
        yield blob[start:start + 1024 * 1024]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with tempfile.TemporaryDirectory() as directory:
    write_bundle(Path(directory) / "b.tar.zst", images=[], skipped=[], manifests=[], blobs=specs,
                 open_blob=open_blob, created="2024-01-01T00:00:00Z", jobs=4)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 128 * 1024 * 1024 // 4096


def _faults(mode: str, **env: str) -> int:
    done = subprocess.run([sys.executable, "-c", WRITE_128_MIB, mode], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt and MALLOC_* are glibc's")
def test_tuned_bundle_write_faults_less_than_glibcs_defaults() -> None:
    tuned, default = _faults("tuned"), _faults("default")
    assert tuned < 0.75 * default, (tuned, default)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt and MALLOC_* are glibc's")
def test_the_users_malloc_variables_win() -> None:
    user = _faults("tuned", MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    assert user > PAGES  # as asked: every buffer fresh from mmap, at least a fault per page written

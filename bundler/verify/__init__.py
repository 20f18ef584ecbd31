"""verify: prove a bundle whole, and say which images each problem breaks.

One sequential pass reads the file once: the raw bytes feed the sidecar checksum while the
decompressed members are checked against their digests. If the stream itself breaks (damaged
framing), the remaining members are checked one by one through the seek table, so that a single
bad frame costs only the images that need it. A pipe is read once: there is no sidecar beside it
and no second pass, so what comes after a break in its stream is reported as not checked.

``scan`` reads the bundle, ``checksum`` hashes the compressed file for the sidecar, ``judge``
turns what they found into the ``report``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

from bundler.bundle import BundleReader, read_sidecar
from bundler.bundle.volumes import BundleFiles, VolumeFile, find_bundle, open_bundle
from bundler.progress import NULL_PROGRESS, Progress
from bundler.verify.checksum import HashingReader, sidecar_state, volumes_state
from bundler.verify.judge import judge
from bundler.verify.report import Problem, VerifyReport
from bundler.verify.scan import Scan, scan_by_seeking, scan_stream

__all__ = ["Problem", "VerifyReport", "verify_bundle"]


def verify_bundle(
    path: Path | BundleFiles, progress: Progress = NULL_PROGRESS, *, stream: BinaryIO | None = None
) -> VerifyReport:
    """Check the sidecar checksum, every member, and that every reference resolves inside the bundle.

    With ``stream`` (e.g. a pipe), the bundle is read from it in one pass and ``path`` only names it.
    """
    started = time.monotonic()
    files = find_bundle(path) if stream is None else None
    expected_sha = read_sidecar(files.name) if files is not None and not files.volumes else None
    with open_bundle(files) if files is not None else nullcontext(stream) as raw:
        volumes = raw.track_digests() if isinstance(raw, VolumeFile) else None
        hashing = HashingReader(raw)
        with BundleReader.open(hashing) as reader:
            index = reader.index
            progress.phase("verify", total_bytes=index.totals.blob_bytes + index.totals.manifest_bytes,
                           total_items=index.totals.manifests + index.totals.blobs)
            scan = Scan()
            broken_at = scan_stream(reader, scan, progress)
        hashed = broken_at is None or stream is None  # a broken pipe may never end: do not drain it
        if hashed:
            hashing.drain()
    if broken_at is not None and stream is not None:
        scan.unchecked = "not checked: the stream broke before it"
    elif broken_at is not None and scan_by_seeking(path, index, scan, progress):
        scan.problems.pop("stream", None)  # the member-by-member check says exactly what is wrong
    sidecar = sidecar_state(expected_sha, hashing.sha256.hexdigest() if hashed else None, piped=stream is not None)
    if files is not None and volumes is not None:
        sidecar = volumes_state(files, volumes)
    report = VerifyReport(path, sidecar)
    judge(index, scan, report)
    report.seconds = time.monotonic() - started
    return report

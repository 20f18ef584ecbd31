"""Tables and report lines for ``list`` and ``verify``."""

from __future__ import annotations

from collections.abc import Iterator

from bundler.bundle import BundleIndex
from bundler.cli.output import format_bytes
from bundler.verify import VerifyReport

__all__ = ["image_lines", "verify_lines"]


_COLUMNS = ("REFERENCE", "DIGEST", "PLATFORMS", "SIZE")


def image_lines(index: BundleIndex) -> Iterator[str]:
    """The ``list`` table, one line at a time: column widths come from a first pass over the rows, so
    printing holds one row, not the table (an index may list tens of thousands of images)."""
    totals = index.totals
    yield f"{index.format} {index.version} created {index.created} by {index.tool}"
    widths = [len(column) for column in _COLUMNS]
    for row in _image_rows(index):
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    yield _line(_COLUMNS, widths)
    for row in _image_rows(index):
        yield _line(row, widths)
    yield (f"{totals.images} images, {totals.manifests} manifests, {totals.blobs} blobs, "
           f"{format_bytes(totals.blob_bytes + totals.manifest_bytes)}")


def _image_rows(index: BundleIndex) -> Iterator[tuple[str, str, str, str]]:
    for image in index.images:
        digest = image.digest if not image.original_digest else f"{image.digest} (was {image.original_digest})"
        yield image.reference, digest, ", ".join(image.platforms) or "-", format_bytes(image.size)
    for skipped in index.skipped:
        yield skipped.source, "skipped", skipped.reason, ""


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    """Cells two spaces apart, the size right-aligned."""
    *left, size = row
    return "  ".join([*(cell.ljust(width) for cell, width in zip(left, widths)), size.rjust(widths[-1])])


def verify_lines(report: VerifyReport) -> list[str]:
    lines = [f"checksum: {report.sidecar}"]
    for problem in report.problems:
        broken = f" (breaks: {', '.join(problem.images)})" if problem.images else ""
        lines.append(f"BAD {problem.member}: {problem.message}{broken}")
    if report.ok:
        lines.append(
            f"OK {report.images} images, {report.manifests} manifests, {report.blobs} blobs, "
            f"{format_bytes(report.bytes_checked)} checked in {report.seconds:.1f}s"
        )
    return lines

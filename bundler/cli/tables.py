"""Tables and report lines for ``list`` and ``verify``."""

from __future__ import annotations

from rich.table import Table

from bundler.bundle import BundleIndex
from bundler.cli.output import format_bytes
from bundler.verify import VerifyReport

__all__ = ["image_table", "verify_lines"]


def image_table(index: BundleIndex) -> Table:
    totals = index.totals
    table = Table(
        title=f"{index.format} {index.version} created {index.created} by {index.tool}",
        caption=(
            f"{totals.images} images, {totals.manifests} manifests, {totals.blobs} blobs, "
            f"{format_bytes(totals.blob_bytes + totals.manifest_bytes)}"
        ),
        box=None,
        pad_edge=False,
    )
    for column in ("REFERENCE", "DIGEST", "PLATFORMS", "SIZE"):
        table.add_column(column, justify="right" if column == "SIZE" else "left", no_wrap=column != "PLATFORMS")
    for image in index.images:
        digest = image.digest if not image.original_digest else f"{image.digest} (was {image.original_digest})"
        table.add_row(image.reference, digest, ", ".join(image.platforms) or "-", format_bytes(image.size))
    for skipped in index.skipped:
        table.add_row(skipped.source, "skipped", skipped.reason, "")
    return table


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

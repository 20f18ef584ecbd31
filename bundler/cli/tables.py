"""Tables and report lines for ``list`` and ``verify``."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from bundler.bundle import BundleIndex, ImageEntry
from bundler.cli.output import format_bytes
from bundler.verify import VerifyReport

__all__ = ["attached_summary", "image_table", "verify_lines"]

_SIGNATURE_TYPES = frozenset({
    "application/vnd.dev.cosign.simplesigning.v1+json", "application/vnd.dev.cosign.artifact.sig.v1+json",
    "application/vnd.dev.sigstore.bundle.v0.3+json", "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.cncf.notary.signature",
})
_ATTESTATION_TYPES = frozenset({"application/vnd.dsse.envelope.v1+json", "application/vnd.in-toto+json"})
_SBOM_FORMATS = {
    "application/spdx+json": "spdx", "text/spdx+json": "spdx", "text/spdx": "spdx",
    "application/vnd.cyclonedx+json": "cyclonedx", "application/vnd.cyclonedx+xml": "cyclonedx",
    "application/vnd.syft+json": "syft",
}


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
    attached = any(image.referrers or image.original_referrers for image in index.images)
    columns = ("REFERENCE", "DIGEST", "PLATFORMS", "SIZE", *(("ATTACHED",) if attached else ()))
    for column in columns:
        table.add_column(column, justify="right" if column == "SIZE" else "left",
                         no_wrap=column not in ("PLATFORMS", "ATTACHED"))
    for image in index.images:
        digest = image.digest if not image.original_digest else f"{image.digest} (was {image.original_digest})"
        what = ", ".join(image.platforms) or (f"artifact {image.artifact_type}" if image.artifact_type else "-")
        table.add_row(image.reference, digest, what, format_bytes(image.size),
                      *((attached_summary(image) or "-",) if attached else ()))
    for skipped in index.skipped:
        table.add_row(skipped.source, "skipped", skipped.reason, "", *(("",) if attached else ()))
    return table


def attached_summary(image: ImageEntry) -> str:
    """What is attached to an image, by kind: "2 signatures, 1 attestation, 1 SBOM (spdx)"."""
    kinds = Counter(_kind(referrer.artifact_type) for referrer in image.referrers)
    parts = [f"{count} {plural if count > 1 else singular}" for (_, singular, plural), count in sorted(kinds.items())]
    if image.original_referrers:
        parts.append(f"{image.original_referrers} of the upstream index left out")
    return ", ".join(parts)


def _kind(artifact_type: str) -> tuple[int, str, str]:
    """(order, singular, plural) of a referrer's kind, told by its artifact type."""
    if artifact_type in _SIGNATURE_TYPES:
        return 0, "signature", "signatures"
    if artifact_type in _ATTESTATION_TYPES:
        return 1, "attestation", "attestations"
    if artifact_type in _SBOM_FORMATS:
        label = f"SBOM ({_SBOM_FORMATS[artifact_type]})"
        return 2, label, label.replace("SBOM", "SBOMs", 1)
    label = f"artifact {artifact_type or '(untyped)'}"
    return 3, label, label


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

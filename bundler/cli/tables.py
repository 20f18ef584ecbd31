"""Tables and report lines for ``list`` and ``verify``."""

from __future__ import annotations

import re
from collections import Counter

from rich.table import Table

from bundler.bundle import BundleIndex, ImageEntry
from bundler.cli.output import format_bytes
from bundler.verify import VerifyReport
from bundler.words import counted

__all__ = ["SHORT_DIGEST", "attached_summary", "image_table", "skipped_lines", "verify_lines", "volumes_line"]

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


SHORT_DIGEST = 12
"""Hex characters of a digest a terminal shows, as ``docker images`` and ``crane`` do."""
_SIZE_WIDTH = 10
_REFERENCE_MIN = 30
_ATTACHED_WIDTH = 16
"""Columns a reference keeps before platforms are counted rather than listed (longer ones fold)."""


def image_table(index: BundleIndex, width: int | None = None) -> Table:
    """The images of ``index``: in full without ``width``, else fitted into ``width`` columns (short digests,
    platforms counted when their list does not fit, long references folded)."""
    totals = index.totals
    table = Table(
        title=f"{index.format} {index.version} created {index.created} by {index.tool}",
        caption=(
            f"{counted(totals.images, 'image')}, {counted(totals.manifests, 'manifest')}, "
            f"{counted(totals.blobs, 'blob')}, "
            f"{format_bytes(totals.blob_bytes + totals.manifest_bytes)}"
        ),
        box=None,
        pad_edge=False,
    )
    table.add_column("REFERENCE", overflow="fold")  # a reference is never cut: _folded breaks it
    table.add_column("DIGEST", no_wrap=width is None)
    table.add_column("PLATFORMS", no_wrap=True)
    table.add_column("SIZE", justify="right", no_wrap=True)
    attached = any(image.referrers or image.original_referrers for image in index.images)
    if attached:
        table.add_column("ATTACHED")
    digests = [_digest_cell(image, width) for image in index.images]
    platforms = _platform_cells(index.images, width)
    room = None if width is None else width - _widest(digests) - _widest(platforms) - _SIZE_WIDTH - 6
    if room is not None and attached:
        room -= _ATTACHED_WIDTH
    for image, digest, cell in zip(index.images, digests, platforms):
        table.add_row(_folded(_reference(image.reference, width), room), digest, _platforms_or_type(image, cell),
                      format_bytes(image.size), *((attached_summary(image) or "-",) if attached else ()))
    return table


def _platforms_or_type(image: ImageEntry, cell: str) -> str:
    """An OCI artifact (a Helm chart, say) has no platforms: its type says what it is."""
    return cell if image.platforms or not image.artifact_type else f"artifact {image.artifact_type}"


def _widest(cells: list[str]) -> int:
    return max((len(line) for cell in cells for line in cell.splitlines()), default=0)


def skipped_lines(index: BundleIndex) -> list[str]:
    """What ``--skip-missing`` left out, one line each (a reason is too long for a table cell)."""
    return [f"skipped {entry.source}: {entry.reason}" for entry in index.skipped]


def _short(digest: str) -> str:
    return digest.partition(":")[2][:SHORT_DIGEST]


def _reference(reference: str, width: int | None) -> str:
    """The reference, its pinned digest shortened on a terminal (the DIGEST column holds it)."""
    name, at, digest = reference.partition("@")
    return f"{name}@{digest.partition(':')[0]}:{_short(digest)}" if at and width is not None else reference


def _folded(reference: str, room: int | None) -> str:
    """``reference`` in lines of at most ``room`` characters, broken after a ``/``, ``:`` or ``@`` where it can."""
    if room is None or len(reference) <= room:
        return reference
    lines, line = [], ""
    for part in re.split(r"(?<=[/:@])", reference):
        if line and len(line) + len(part) > room:
            lines.append(line)
            line = ""
        line += part
        while len(line) > room:
            lines.append(line[:room])
            line = line[room:]
    return "\n".join([*lines, line] if line else lines)


def _digest_cell(image: ImageEntry, width: int | None) -> str:
    if width is None:
        return image.digest if not image.original_digest else f"{image.digest} (was {image.original_digest})"
    return _short(image.digest) + (f"\nwas {_short(image.original_digest)}" if image.original_digest else "")


def _platform_cells(images: list[ImageEntry], width: int | None) -> list[str]:
    """Every image's platforms listed, or, when the longest list does not fit beside the other columns,
    the first and a count of the rest (``linux/amd64 +3``)."""
    listed = [", ".join(image.platforms) or "-" for image in images]
    if width is None:
        return listed
    room = width - _REFERENCE_MIN - SHORT_DIGEST - _SIZE_WIDTH - 6
    if max(map(len, listed), default=0) <= room:
        return listed
    return [image.platforms[0] + (f" +{len(image.platforms) - 1}" if len(image.platforms) > 1 else "")
            if image.platforms else "-" for image in images]


def volumes_line(names: list[str]) -> str:
    """``1 volume: A``, ``2 volumes: A, B``, ``5 volumes: A … E``."""
    shown = ", ".join(names) if len(names) <= 2 else f"{names[0]} … {names[-1]}"
    return f"{counted(len(names), 'volume')}: {shown}"


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
            f"OK {counted(report.images, 'image')}, {counted(report.manifests, 'manifest')}, "
            f"{counted(report.blobs, 'blob')}, "
            f"{format_bytes(report.bytes_checked)} checked in {report.seconds:.1f}s"
        )
    return lines

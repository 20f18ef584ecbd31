"""Tables and report lines for ``list`` and ``verify``."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from bundler.bundle import BundleIndex, ImageEntry
from bundler.cli.output import format_bytes
from bundler.oci.artifacts import ArtifactKind, artifact_kind, sbom_format
from bundler.verify import VerifyReport
from bundler.words import counted

__all__ = ["SHORT_DIGEST", "attached_summary", "image_lines", "skipped_lines", "verify_lines", "volumes_line"]

SHORT_DIGEST = 12
"""Hex characters of a digest a terminal shows, as ``docker images`` and ``crane`` do."""
_SIZE_WIDTH = 10
_COLUMNS = ("REFERENCE", "DIGEST", "PLATFORMS", "SIZE")
_REFERENCE_MIN = 30
"""Columns a reference keeps before platforms are counted rather than listed (longer ones fold)."""
_ATTACHED_WIDTH = 16


def image_lines(index: BundleIndex, width: int | None = None) -> Iterator[str]:
    """The ``list`` table, one line at a time: in full without ``width``, else fitted into ``width`` columns
    (short digests, platforms counted when their list does not fit, long references folded). Column widths
    come from a first pass over the rows, so printing holds one row, not the table (an index may list tens
    of thousands of images)."""
    totals = index.totals
    attached = any(image.referrers or image.original_referrers for image in index.images)
    columns = (*_COLUMNS, *(("ATTACHED",) if attached else ()))
    yield f"{index.format} {index.version} created {index.created} by {index.tool}"
    widths = [len(column) for column in columns]
    for row in _image_rows(index, width, attached):
        widths = [max(size, _widest(cell.splitlines())) for size, cell in zip(widths, row)]
    yield _line(columns, widths)
    for row in _image_rows(index, width, attached):
        yield from _row_lines(row, widths)
    yield (f"{counted(totals.images, 'image')}, {counted(totals.manifests, 'manifest')}, "
           f"{counted(totals.blobs, 'blob')}, {format_bytes(totals.blob_bytes + totals.manifest_bytes)}")


def _image_rows(index: BundleIndex, width: int | None, attached: bool) -> Iterator[tuple[str, ...]]:
    listed = width is None or _platforms_fit(index.images, width)
    room = None
    if width is not None:
        digests = max((len(line) for image in index.images for line in _digest_cell(image, width).splitlines()),
                      default=0)
        platforms = max((len(_platform_cell(image, listed)) for image in index.images), default=0)
        room = width - digests - platforms - _SIZE_WIDTH - 6 - (_ATTACHED_WIDTH if attached else 0)
    for image in index.images:
        row = (_folded(_reference(image.reference, width), room), _digest_cell(image, width),
               _platform_cell(image, listed), format_bytes(image.size))
        yield (*row, attached_summary(image) or "-") if attached else row


def _row_lines(row: tuple[str, ...], widths: list[int]) -> Iterator[str]:
    """A row whose cells may hold several lines (a folded reference), as that many lines."""
    cells = [cell.splitlines() or [""] for cell in row]
    for number in range(max(map(len, cells))):
        yield _line(tuple(cell[number] if number < len(cell) else "" for cell in cells), widths)


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    """Cells two spaces apart, SIZE (the fourth) right-aligned."""
    cells = [cell.rjust(size) if column == 3 else cell.ljust(size)
             for column, (cell, size) in enumerate(zip(row, widths))]
    return "  ".join(cells).rstrip()


def _widest(lines: list[str]) -> int:
    return max(map(len, lines), default=0)


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


def _platforms_fit(images: list[ImageEntry], width: int) -> bool:
    """Whether the longest list of platforms fits beside the other columns (else each is counted)."""
    room = width - _REFERENCE_MIN - SHORT_DIGEST - _SIZE_WIDTH - 6
    return max((len(", ".join(image.platforms)) for image in images), default=0) <= room


def _platform_cell(image: ImageEntry, listed: bool) -> str:
    """The platforms listed, or the first and a count of the rest (``linux/amd64 +3``); an OCI artifact (a
    Helm chart, say) has none: its type says what it is."""
    if not image.platforms:
        return f"artifact {image.artifact_type}" if image.artifact_type else "-"
    if listed or len(image.platforms) == 1:
        return ", ".join(image.platforms)
    return f"{image.platforms[0]} +{len(image.platforms) - 1}"


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


def _kind(artifact_type: str) -> tuple[ArtifactKind, str, str]:
    """(kind, singular, plural) of a referrer, told by its artifact type."""
    kind = artifact_kind(artifact_type)
    if kind is ArtifactKind.SIGNATURE:
        return kind, "signature", "signatures"
    if kind is ArtifactKind.ATTESTATION:
        return kind, "attestation", "attestations"
    if kind is ArtifactKind.SBOM:
        label = f"SBOM ({sbom_format(artifact_type)})"
        return kind, label, label.replace("SBOM", "SBOMs", 1)
    label = f"artifact {artifact_type or '(untyped)'}"
    return kind, label, label


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

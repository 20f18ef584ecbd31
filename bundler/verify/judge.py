"""Turning what the scan found into problems, each naming the images it breaks."""

from __future__ import annotations

from bundler.bundle import BundleIndex
from bundler.verify.report import Problem, VerifyReport
from bundler.verify.scan import Scan

__all__ = ["judge"]


def judge(index: BundleIndex, scan: Scan, report: VerifyReport) -> None:
    """Turn the scan into problems, each naming the images it breaks."""
    present = {e.digest for e in index.manifests} | {e.digest for e in index.blobs}
    external = {e.digest for e in index.external}  # a delta's blobs that the target holds, not missing
    problems = dict(scan.problems)
    for entry in [*index.manifests, *index.blobs]:
        if entry.digest not in scan.seen and entry.digest not in problems:
            problems[entry.digest] = scan.unchecked
    for parent, children in scan.children.items():
        for child in children:
            if child not in present and child not in external:
                problems.setdefault(child, f"referenced by {parent} but not in the bundle")
    for image in index.images:
        if image.digest not in present:
            problems.setdefault(image.digest, f"top manifest of {image.reference} is not in the bundle")
    _check_layout_refs(index, scan, problems)
    if report.sidecar.startswith("MISMATCH"):
        problems.setdefault("checksum", f"file does not match its .sha256 sidecar ({report.sidecar})")
    closures = {image.reference: _closure(image.digest, scan.children) for image in index.images}
    for member, message in sorted(problems.items()):
        broken = sorted(ref for ref, digests in closures.items() if member in digests or _unusable(member, message))

        report.problems.append(Problem(member, message, broken))
    report.images = len(index.images)
    report.manifests = len(index.manifests)
    report.blobs = len(index.blobs)
    report.bytes_checked = scan.bytes_checked
    report.base, report.expected = index.base, list(index.external)


def _unusable(member: str, message: str) -> bool:
    """Damage to the seek table or the end of the archive: unpack, which reads through the seek
    table, cannot open the bundle at all, so every image is broken."""
    return member == "seek table" or (member == "stream" and message.startswith(("seek table", "end of archive")))


def _check_layout_refs(index: BundleIndex, scan: Scan, problems: dict[str, str]) -> None:
    expected = {image.reference: image.digest for image in index.images}
    if scan.layout_refs is None:
        problems.setdefault("index.json", "the OCI index.json member is missing")
    elif scan.layout_refs != expected:
        differing = sorted(set(expected.items()) ^ set(scan.layout_refs.items()))
        problems.setdefault("index.json", f"does not agree with the bundle index: {differing[:3]}")


def _closure(top: str, children: dict[str, list[str]]) -> set[str]:
    """Every digest an image needs, following manifests as far as they were readable."""
    needed, stack = set(), [top]
    while stack:
        digest = stack.pop()
        if digest not in needed:
            needed.add(digest)
            stack.extend(children.get(digest, []))
    return needed

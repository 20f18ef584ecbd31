"""Turning what the scan found into problems, each naming the images it breaks."""

from __future__ import annotations

from pathlib import Path

from bundler.bundle import BundleIndex, FoundBy
from bundler.bundle.layout import OCI_INDEX_NAME
from bundler.bundle.links import Links, check_links
from bundler.bundle.volumes import BundleFiles
from bundler.digest import Digest
from bundler.verify.report import CHECKSUM, Problem, ProblemKind, SidecarCheck, SidecarState, VerifyReport
from bundler.verify.scan import Finding, Scan

__all__ = ["judge"]


def judge(path: Path | BundleFiles, index: BundleIndex, scan: Scan, sidecar: SidecarCheck) -> VerifyReport:
    """The report: every finding, each naming the images it breaks."""
    findings = _findings(index, scan, sidecar)
    closures = {image.reference: _closure([image.digest, *(r.digest for r in image.referrers)], scan.children)
                for image in index.images}
    problems = [_problem(member, findings[member], closures) for member in sorted(findings)]
    return VerifyReport(path, sidecar, images=len(index.images), manifests=len(index.manifests),
                        blobs=len(index.blobs), bytes_checked=scan.bytes_checked, problems=problems,
                        base=index.base, expected=list(index.external))


def _problem(member: str, finding: Finding, closures: dict[str, set[str]]) -> Problem:
    broken = sorted(reference for reference, needed in closures.items()
                    if member in needed or finding.kind.breaks_every_image)
    return Problem(member, finding.message, broken, finding.kind)


def _findings(index: BundleIndex, scan: Scan, sidecar: SidecarCheck) -> dict[str, Finding]:
    """By member, what is wrong with it; the first thing found about a member is the one kept."""
    findings = dict(scan.problems)
    present = {e.digest for e in index.manifests} | {e.digest for e in index.blobs}
    for entry in [*index.manifests, *index.blobs]:
        if entry.digest not in scan.seen and entry.digest not in findings:
            findings[entry.digest] = scan.unchecked
    manifests = {e.digest for e in index.manifests}
    external = {e.digest for e in index.external}  # a delta's blobs that the target holds, not missing
    for parent, links in scan.children.items():
        for broken in check_links(Digest(parent), links, manifests, present, external):
            findings.setdefault(str(broken.digest), Finding(ProblemKind.DANGLING_REFERENCE, broken.message))
    for image in index.images:
        if image.digest not in present:
            findings.setdefault(image.digest, Finding(ProblemKind.IMAGE_MISSING,
                                                      f"top manifest of {image.reference} is not in the bundle"))
    _check_layout_refs(index, scan, findings)
    _check_referrers(index, scan, findings)
    if sidecar.state is SidecarState.MISMATCH:
        findings.setdefault(CHECKSUM, Finding(ProblemKind.CHECKSUM_MISMATCH,  # the "checksum:" line has the sums
                                              "file does not match its .sha256 sidecar"))
    return findings


def _check_layout_refs(index: BundleIndex, scan: Scan, findings: dict[str, Finding]) -> None:
    expected = {image.reference: image.digest for image in index.images}
    if scan.layout_refs is None:
        findings.setdefault(OCI_INDEX_NAME, Finding(ProblemKind.LAYOUT_INDEX_WRONG,
                                                    "the OCI index.json member is missing"))
    elif scan.layout_refs != expected:
        differing = sorted(set(expected.items()) ^ set(scan.layout_refs.items()))
        findings.setdefault(OCI_INDEX_NAME, Finding(ProblemKind.LAYOUT_INDEX_WRONG,
                                                    f"does not agree with the bundle index: {differing[:3]}"))


def _check_referrers(index: BundleIndex, scan: Scan, findings: dict[str, Finding]) -> None:
    """Each recorded referrer is attached to its image: its subject is the image, a child or another referrer,
    and an OCI referrer's own ``subject`` says the same. Not judged for an image with a damaged member: what
    its manifests refer to is then not known."""
    for image in index.images:
        attached = _closure([image.digest], scan.children) | {r.digest for r in image.referrers}
        if not attached.isdisjoint(findings):
            continue
        for referrer in image.referrers:
            links = scan.children.get(referrer.digest)
            named = links.subject if links is not None else None
            if referrer.subject not in attached:
                problem = f"recorded as attached to {referrer.subject}, which is not part of {image.reference}"
            elif referrer.found_by is not FoundBy.COSIGN_TAG and named != referrer.subject:
                problem = f"recorded as attached to {referrer.subject} of {image.reference}, but names {named}"
            else:
                continue
            findings.setdefault(referrer.digest, Finding(ProblemKind.REFERRER_MISMATCH, problem))


def _closure(tops: list[str], children: dict[str, Links]) -> set[str]:
    """Every digest an image needs, following manifests as far as they were readable."""
    needed, stack = set(), list(tops)
    while stack:
        digest = stack.pop()
        if digest not in needed:
            needed.add(digest)
            links = children.get(digest)
            if links is not None:
                stack.extend([*links.children, *links.blobs])
    return needed

"""What ``unpack`` shows: the dry-run plan, the summary, the JSON and the report file."""

from __future__ import annotations

import sys
from pathlib import Path

from bundler.cli.output import format_bytes, out, print_json
from bundler.cli.tables import attached_summary
from bundler.unpack import UnpackResult, write_report
from bundler.words import counted

__all__ = ["render_unpack"]


def render_unpack(result: UnpackResult, *, as_json: bool, report: Path | None) -> None:
    if report is not None:
        write_report(report, result.report_rows())
    if as_json:
        print_json(result.as_dict())
    elif result.dry_run:
        _print_plan(result)
    else:
        _print_summary(result)


def _print_plan(result: UnpackResult) -> None:
    """``source -> target@digest`` per image, with what is attached to it (list's ATTACHED words) that goes too."""
    referrers = 0
    for outcome in result.images:  # plain writes: one console render per line is slow for 10,000s of images
        target = outcome.target
        entry = result.entries.get(target.source_ref) if outcome.ok else None
        attached = attached_summary(entry) if entry is not None else ""
        referrers += len(entry.referrers) if entry is not None else 0
        sys.stdout.write(f"{target.source_ref} -> {target.exact}{f' (attached: {attached})' if attached else ''}\n")
    with_referrers = f" with {counted(referrers, 'attached artifact')}" if referrers else ""
    out.print(
        f"dry run: {counted(len(result.images), 'image')}{with_referrers}, {counted(len(result.plan.blobs()), 'blob')} "
        f"({format_bytes(result.plan.total_blob_bytes)}) would be pushed to {result.registry} if missing",
        markup=False,
    )


def _print_summary(result: UnpackResult) -> None:
    for outcome in result.failed:
        out.print(f"FAILED {outcome.target.display}: {outcome.reason}", markup=False)
    out.print(
        f"pushed {len(result.pushed)} of {counted(len(result.images), 'image')} to {result.registry}: "
        f"blobs {result.blobs_uploaded} uploaded ({format_bytes(result.bytes_uploaded)}), "
        f"{result.blobs_mounted} mounted, {result.blobs_present} already present; "
        f"manifests {result.manifests_pushed} pushed, {result.manifests_present} present; "
        f"tags {result.tags_set} set, {result.tags_present} present; in {result.seconds:.1f}s",
        markup=False,
    )
    referrers = result.referrers
    if referrers.pushed or referrers.present:
        out.print(f"referrers (signatures, attestations, SBOMs): {referrers.pushed} pushed, {referrers.present} "
                  f"present, {referrers.indexes_updated} fallback indexes written", markup=False)
    for created in result.projects_created:
        out.print(f"created Harbor project {created}", markup=False)

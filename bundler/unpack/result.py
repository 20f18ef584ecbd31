"""What an unpack did: per-image outcomes, counters, and the ``--report`` file."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from bundler.bundle import ImageEntry
from bundler.errors import ImgbundleError, InputError, LocalIOError, PartialFailureError
from bundler.mapping import Target
from bundler.unpack.plan import PushPlan
from bundler.words import counted

__all__ = ["REPORT_FIELDS", "ImageOutcome", "ReferrerCounts", "UnpackResult", "report_format", "write_report"]

REPORT_FIELDS = ("source", "target", "digest")
_SUMMARY_NAMES = 10
"""A failure message lists this many images and counts the rest: one readable line, even for 900 failures."""


@dataclass(frozen=True)
class ImageOutcome:
    """One image: pushed and tagged (``ok``), or not, with the error that stopped it."""

    target: Target
    ok: bool
    error: ImgbundleError | None = None

    @property
    def reason(self) -> str:
        """Why the image failed, for a line that names its target: the target is not named twice."""
        return self.error.about(self.target.display) if self.error is not None else ""


@dataclass
class ReferrerCounts:
    """Referrers (signatures, attestations, SBOMs) per target repository."""

    pushed: int = 0
    present: int = 0
    indexes_updated: int = 0
    """Fallback tags ``<alg>-<hex>`` written, on registries whose referrers API does not list them."""


@dataclass
class UnpackResult:
    """Counters are per (repository, digest) pair: a blob mounted into three repositories counts three.

    ``blobs_present`` / ``manifests_present`` count what the target already had, either answered by
    a HEAD or implied by a manifest above it that was there (a registry refuses a manifest whose
    blobs or children are missing, so it can only be there with them). In a dry run every image
    without a bundle problem is ``ok`` (it would be pushed) and all counters are zero.
    """

    registry: str
    dry_run: bool
    plan: PushPlan
    images: list[ImageOutcome]
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_uploaded: int = 0
    manifests_pushed: int = 0
    manifests_present: int = 0
    tags_set: int = 0
    tags_present: int = 0
    tags_moved: list[str] = field(default_factory=list)
    """``repo:tag`` that pointed at another digest before this run and were moved."""
    projects_created: list[str] = field(default_factory=list)
    referrers: ReferrerCounts = field(default_factory=ReferrerCounts)
    seconds: float = 0.0
    entries: dict[str, ImageEntry] = field(default_factory=dict)
    """The bundle's record of each image, by reference: what is attached to it (its referrers)."""

    @property
    def targets(self) -> list[Target]:
        return [outcome.target for outcome in self.images]

    @property
    def pushed(self) -> list[ImageOutcome]:
        return [outcome for outcome in self.images if outcome.ok]

    @property
    def failed(self) -> list[ImageOutcome]:
        return [outcome for outcome in self.images if not outcome.ok]

    def failure_summary(self) -> str:
        """One line naming the failed images and why (the first few, then a count)."""
        failed = self.failed
        shown = "; ".join(f"{o.target.display}: {o.reason}" for o in failed[:_SUMMARY_NAMES])
        more = f"; and {len(failed) - _SUMMARY_NAMES} more" if len(failed) > _SUMMARY_NAMES else ""
        return f"{len(failed)} of {counted(len(self.images), 'image')} failed: {shown}{more}"

    def failure_error(self) -> ImgbundleError | None:
        """The error to exit with: ``None`` when all went well; the common class when every image
        failed for the same kind of reason (e.g. ``AuthError``, exit 11); else ``PartialFailureError``."""
        failed = self.failed
        if not failed:
            return None
        kinds = {type(o.error) for o in failed if o.error is not None}
        remedies = {o.error.remedy for o in failed if o.error is not None}
        remedy = remedies.pop() if len(remedies) == 1 else None
        if len(failed) == len(self.images) and len(kinds) == 1:
            return kinds.pop()(self.failure_summary(), remedy=remedy)
        return PartialFailureError(self.failure_summary(), remedy=remedy)

    def report_rows(self) -> list[dict[str, str]]:
        """``{source, target, digest}`` for each image that is now in the target (would be, in a dry run)."""
        return [
            {"source": o.target.source_ref, "target": o.target.display, "digest": str(o.target.digest)}
            for o in self.pushed
        ]

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary (``--json``); reasons are one-line messages without credentials."""
        return {
            "registry": self.registry,
            "dryRun": self.dry_run,
            "images": [
                {"source": o.target.source_ref, "target": o.target.display, "pinned": o.target.pinned,
                 "digest": str(o.target.digest), "ok": o.ok, **({"reason": o.reason} if not o.ok else {})}
                for o in self.images
            ],
            "blobs": {"uploaded": self.blobs_uploaded, "mounted": self.blobs_mounted, "present": self.blobs_present,
                      "considered": len(self.plan.blobs()), "consideredBytes": self.plan.total_blob_bytes},
            "bytesUploaded": self.bytes_uploaded,
            "manifests": {"pushed": self.manifests_pushed, "present": self.manifests_present},
            "tags": {"set": self.tags_set, "present": self.tags_present, "moved": list(self.tags_moved)},
            "projectsCreated": list(self.projects_created),
            "referrers": {"pushed": self.referrers.pushed, "present": self.referrers.present,
                          "fallbackIndexesUpdated": self.referrers.indexes_updated},
            "seconds": round(self.seconds, 3),
        }


def write_report(path: Path, rows: list[dict[str, str]]) -> None:
    """Write ``rows`` as JSON (``.json``) or CSV with a header (``.csv``), atomically (temp file + rename)."""
    if report_format(path) == ".json":
        data = msgspec.json.format(msgspec.json.encode(rows), indent=2) + b"\n"
    else:
        data = _csv_bytes(rows)
    _write_atomic(path, data)


def report_format(path: Path) -> str:
    """``.json`` or ``.csv``, as the report's file name says; ``InputError`` for any other name."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise InputError(f"{path}: the file name must end in .json or .csv")
    return suffix


def _csv_bytes(rows: list[dict[str, str]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=REPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _write_atomic(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the report from the people it is for
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except OSError as error:
        raise LocalIOError(f"cannot write report {path}: {error.strerror or error}") from None


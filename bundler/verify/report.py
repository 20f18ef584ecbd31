"""What verify found: the sidecar check, and each problem with its kind and the images it breaks."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from bundler.bundle.index import ExternalEntry
from bundler.bundle.volumes import BundleFiles
from bundler.words import counted

__all__ = ["CHECKSUM", "SEEK_TABLE", "STREAM", "Problem", "ProblemKind", "SidecarCheck", "SidecarState", "VerifyReport"]

# What a problem names in place of a member when the damage is to the bundle as a whole.
STREAM = "stream"
SEEK_TABLE = "seek table"
CHECKSUM = "checksum"


class ProblemKind(enum.Enum):
    DAMAGED = "damaged"
    """A member's bytes are wrong (digest, size, framing) or a manifest does not parse."""
    MISSING = "missing"
    """Listed in the index, and the whole stream was read without meeting it."""
    NOT_CHECKED = "not checked"
    """Listed in the index, and the stream broke before it with no seek table to reach it."""
    DANGLING_REFERENCE = "dangling reference"
    """A manifest refers to it and it is neither in the bundle nor left to a delta's base."""
    IMAGE_MISSING = "image missing"
    """An image's top manifest is not in the bundle."""
    LAYOUT_INDEX_WRONG = "layout index wrong"
    """The OCI ``index.json`` is missing or disagrees with the bundle index."""
    STREAM_BROKEN = "stream broken"
    """The stream broke between members (framing, tar headers, order)."""
    ARCHIVE_END_DAMAGED = "archive end damaged"
    """The stream broke after its last member: the end of the archive or the seek table."""
    SEEK_TABLE_UNUSABLE = "seek table unusable"
    """The bundle cannot be opened through its seek table."""
    CHECKSUM_MISMATCH = "checksum mismatch"
    """The file does not match its ``.sha256`` sidecar."""
    REFERRER_MISMATCH = "referrer mismatch"
    """A recorded referrer (signature, SBOM) is not attached to its recorded subject, or that is not of its image."""

    @property
    def breaks_every_image(self) -> bool:
        """Whether unpack, which reads through the seek table, cannot open the bundle at all."""
        return self in (ProblemKind.ARCHIVE_END_DAMAGED, ProblemKind.SEEK_TABLE_UNUSABLE)


@dataclass(frozen=True)
class Problem:
    member: str
    """A digest, or what is damaged when it is no member: ``STREAM``, ``SEEK_TABLE``, ``CHECKSUM``, index.json."""
    message: str
    images: list[str]
    kind: ProblemKind


class SidecarState(enum.Enum):
    OK = "ok"
    """The file's sha256 matches the sidecar (the file was hashed)."""
    CONTENT_OK = "content ok"
    """The tar stream's content digest matches the sidecar's content line; the compressed file was not hashed."""
    CONTENT_AND_FILE_OK = "content and file ok"
    """Both: the content digest and the file's sha256 match the sidecar."""
    MISMATCH = "mismatch"
    ABSENT = "absent"
    UNCHECKED = "unchecked"
    """The stream broke, so the file was not hashed to its end."""
    PIPED = "piped"
    """A pipe has no sidecar beside it: its sha256 is shown to compare by hand."""


@dataclass(frozen=True)
class SidecarCheck:
    """How the bundle compared with its ``.sha256`` sidecar; ``str()`` is the line the user sees."""

    state: SidecarState
    detail: str = ""
    """What disagrees (``MISMATCH``), or a pipe's sha256 (``PIPED``)."""
    volumes: int = 0
    """How many volumes matched their sidecar lines (``OK`` of a split bundle)."""

    def __str__(self) -> str:
        if self.state is SidecarState.OK and self.volumes:
            return f"ok (sha256 of {'the one volume matches' if self.volumes == 1 else f'all {self.volumes} volumes match'} sidecar)"
        return _SIDECAR_TEXT[self.state].format(detail=self.detail)


_SIDECAR_TEXT = {
    SidecarState.OK: "ok (sha256 matches sidecar)",
    SidecarState.CONTENT_OK: "ok (content digest matches sidecar; the compressed file was not hashed)",
    SidecarState.CONTENT_AND_FILE_OK: "ok (content digest and sha256 match sidecar)",
    SidecarState.MISMATCH: "MISMATCH: {detail}",
    SidecarState.ABSENT: "no sidecar (skipped)",
    SidecarState.UNCHECKED: "not checked (stream damaged)",
    SidecarState.PIPED: "no sidecar for a pipe; compare by hand: sha256 {detail}",
}


@dataclass
class VerifyReport:
    path: Path | BundleFiles
    sidecar: SidecarCheck
    images: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    base: str | None = None
    """A delta bundle's base bundle id (its images also need ``expected``, which it does not carry)."""
    expected: list[ExternalEntry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def broken_summary(self) -> str:
        broken = sorted({image for problem in self.problems for image in problem.images})
        if broken:
            return f"{counted(len(broken), 'image')} broken: {', '.join(broken)}"
        return f"no image broken; damaged: {', '.join(sorted({p.member for p in self.problems}))}"

    def as_dict(self) -> dict:
        return {
            "bundle": str(self.path),
            "ok": self.ok,
            "checksum": str(self.sidecar),
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytesChecked": self.bytes_checked,
            "seconds": round(self.seconds, 3),
            "problems": [{"member": p.member, "message": p.message, "images": p.images} for p in self.problems],
            **({"base": self.base, "expected": self.expected} if self.base else {}),
        }

"""What verify found: the report, and each problem with the images it breaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bundler.bundle.index import ExternalEntry

__all__ = ["Problem", "VerifyReport"]


@dataclass(frozen=True)
class Problem:
    member: str
    message: str
    images: list[str]


@dataclass
class VerifyReport:
    path: Path
    sidecar: str
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
            return f"{len(broken)} image(s) broken: {', '.join(broken)}"
        return f"no image broken; damaged: {', '.join(sorted({p.member for p in self.problems}))}"

    def as_dict(self) -> dict:
        return {
            "bundle": str(self.path),
            "ok": self.ok,
            "checksum": self.sidecar,
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytesChecked": self.bytes_checked,
            "seconds": round(self.seconds, 3),
            "problems": [{"member": p.member, "message": p.message, "images": p.images} for p in self.problems],
            **({"base": self.base, "expected": self.expected} if self.base else {}),
        }

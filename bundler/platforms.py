"""Platform filters (``os/arch[/variant]``), and which index children they keep."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bundler.errors import InputError
from bundler.oci import Descriptor, Platform

__all__ = ["PlatformFilter", "is_attestation", "kept_children"]

_ATTESTATION_TYPE = "vnd.docker.reference.type"
_ATTESTATION_FOR = "vnd.docker.reference.digest"
_DEFAULT_VARIANTS = {"arm64": "v8"}
_PART_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
"""One element of a platform, as GOOS, GOARCH and variants are spelt."""


@dataclass(frozen=True)
class PlatformFilter:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> PlatformFilter:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(_PART_RE.fullmatch(part) for part in parts):
            raise InputError(f"{text!r}: expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64")
        return cls(*parts)

    @classmethod
    def parse_list(cls, texts: Iterable[str]) -> tuple[PlatformFilter, ...]:
        """Platforms given one per value or comma-separated, as buildx takes them (``linux/amd64,linux/arm64``)."""
        return tuple(cls.parse(text) for value in texts for text in value.split(","))

    def matches(self, platform: Platform) -> bool:
        if (platform.os, platform.architecture) != (self.os, self.architecture):
            return False
        if not self.variant:
            return True
        default = _DEFAULT_VARIANTS.get(platform.architecture, "")
        return (platform.variant or default) == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def is_attestation(descriptor: Descriptor) -> bool:
    """A buildx attestation manifest (platform unknown/unknown) that describes a sibling."""
    return descriptor.annotations.get(_ATTESTATION_TYPE) == "attestation-manifest"


def kept_children(children: list[Descriptor], filters: tuple[PlatformFilter, ...]) -> list[Descriptor]:
    """The children of an index that a platform subset keeps.

    No filters keep everything. Platform children are kept when a filter matches; children
    without a platform (artifacts) are kept; attestations stay when the image they describe stays.
    """
    if not filters:
        return list(children)
    kept_images = {
        child.digest
        for child in children
        if child.platform and not is_attestation(child) and any(f.matches(child.platform) for f in filters)
    }
    return [child for child in children if _keep(child, kept_images)]


def _keep(child: Descriptor, kept_images: set[str]) -> bool:
    if is_attestation(child):
        return child.annotations.get(_ATTESTATION_FOR) in kept_images
    return child.platform is None or child.digest in kept_images

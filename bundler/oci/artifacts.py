"""What an artifact attached to an image is, told by its ``artifactType``: a signature, an attestation,
an SBOM (and in which format), or something else."""

from __future__ import annotations

import enum

__all__ = ["ArtifactKind", "artifact_kind", "sbom_format"]


class ArtifactKind(enum.IntEnum):
    """In the order a summary lists them."""

    SIGNATURE = 0
    ATTESTATION = 1
    SBOM = 2
    OTHER = 3


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


def artifact_kind(artifact_type: str) -> ArtifactKind:
    if artifact_type in _SIGNATURE_TYPES:
        return ArtifactKind.SIGNATURE
    if artifact_type in _ATTESTATION_TYPES:
        return ArtifactKind.ATTESTATION
    if artifact_type in _SBOM_FORMATS:
        return ArtifactKind.SBOM
    return ArtifactKind.OTHER


def sbom_format(artifact_type: str) -> str:
    """``spdx``, ``cyclonedx`` or ``syft`` for an SBOM's artifact type; empty for anything else."""
    return _SBOM_FORMATS.get(artifact_type, "")

"""The imgbundle bundle format v1: one ``.tar.zst`` that is an OCI image layout plus an index.

Knows tar and zstd, nothing of HTTP. The format is specified in spec/bundle-format.md.
"""

from __future__ import annotations

from bundler.bundle.frames import CHUNK_SIZE, FRAME_SIZE
from bundler.bundle.index import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_NAME,
    BundleIndex,
    FoundBy,
    ImageEntry,
    MemberEntry,
    ReferrerEntry,
    SkippedEntry,
    Totals,
    blob_path,
)
from bundler.bundle.layout import BlobSpec
from bundler.bundle.reader import (
    BundleReader,
    Member,
    MemberKind,
    read_index,
)
from bundler.bundle.sidecar import check_sidecar, file_sha256, read_sidecar, sidecar_path
from bundler.bundle.writer import WriteResult, write_bundle

__all__ = [
    "CHUNK_SIZE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FRAME_SIZE",
    "INDEX_NAME",
    "BlobSpec",
    "BundleIndex",
    "BundleReader",
    "FoundBy",
    "ImageEntry",
    "Member",
    "MemberEntry",
    "MemberKind",
    "ReferrerEntry",
    "SkippedEntry",
    "Totals",
    "WriteResult",
    "blob_path",
    "check_sidecar",
    "file_sha256",
    "read_index",
    "read_sidecar",
    "sidecar_path",
    "write_bundle",
]

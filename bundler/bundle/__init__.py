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
    ImageEntry,
    MemberEntry,
    SkippedEntry,
    Totals,
    blob_path,
)
from bundler.bundle.layout import BlobSpec
from bundler.bundle.reader import (
    KIND_BLOB,
    KIND_INDEX,
    KIND_LAYOUT,
    KIND_MANIFEST,
    KIND_OCI_INDEX,
    BundleReader,
    Member,
    read_index,
)
from bundler.bundle.sidecar import check_sidecar, file_sha256, read_sidecar, sidecar_path
from bundler.bundle.writer import WriteResult, write_bundle

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FRAME_SIZE",
    "CHUNK_SIZE",
    "INDEX_NAME",
    "BundleIndex",
    "ImageEntry",
    "SkippedEntry",
    "MemberEntry",
    "Totals",
    "BlobSpec",
    "WriteResult",
    "write_bundle",
    "BundleReader",
    "Member",
    "KIND_INDEX",
    "KIND_LAYOUT",
    "KIND_OCI_INDEX",
    "KIND_MANIFEST",
    "KIND_BLOB",
    "read_index",
    "blob_path",
    "sidecar_path",
    "read_sidecar",
    "file_sha256",
    "check_sidecar",
]

"""The ``NAME.tar.zst.sha256`` sidecar: ``sha256sum`` format, so the check works without our tool."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from bundler.errors import CorruptBundleError, LocalIOError

__all__ = [
    "check_sidecar",
    "content_line",
    "file_sha256",
    "format_sidecar",
    "read_content_digest",
    "read_sidecar",
    "read_sidecar_lines",
    "sidecar_path",
]

_READ_SIZE = 1024 * 1024
_LINE_RE = re.compile(r"^([a-f0-9]{64}) [ *](.+)\n?$")
_CONTENT_PREFIX = "# imgbundle content sha256:"
_CONTENT_RE = re.compile(r"^# imgbundle content sha256:([a-f0-9]{64})$")
_MAX_LINES_BYTES = 1024 * 1024
"""A split bundle's sidecar: one line per volume, at most 1000 volumes."""


def sidecar_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def format_sidecar(sha256_hex: str, name: str) -> bytes:
    """One ``sha256sum`` line: hex, two spaces, file name."""
    return f"{sha256_hex}  {name}\n".encode()


def content_line(content_hex: str) -> bytes:
    """The sidecar's content digest line (spec/bundle-format.md section 10): a comment to ``sha256sum``."""
    return f"{_CONTENT_PREFIX}{content_hex}\n".encode()


def read_sidecar(path: Path) -> str | None:
    """The hex digest recorded in the sidecar of the bundle ``path``; ``None`` if there is none.

    ``CorruptBundleError`` if the sidecar is not one sha256sum line (plus comments), ``LocalIOError`` if unreadable.
    """
    parsed = _read(sidecar_path(path))
    if parsed is None:
        return None
    lines, _ = parsed
    if len(lines) != 1:
        raise CorruptBundleError(f"{sidecar_path(path).name}: not one sha256sum line")
    return lines[0][0]


def read_content_digest(path: Path) -> str | None:
    """The content digest in the sidecar of the bundle ``path``; ``None`` without a sidecar or without
    that line (a sidecar written before it existed)."""
    parsed = _read(sidecar_path(path))
    return None if parsed is None else parsed[1]


def read_sidecar_lines(path: Path) -> list[tuple[str, str]] | None:
    """``(hex digest, file name)`` of every line of the sidecar ``path`` (not of a bundle: the sidecar
    itself); ``None`` if there is none. A split bundle's sidecar has one line per volume."""
    parsed = _read(path)
    return None if parsed is None else parsed[0]


def _read(path: Path) -> tuple[list[tuple[str, str]], str | None] | None:
    """The sha256sum lines of the sidecar ``path`` and its content digest (``None`` without that line).
    Other lines starting with ``#`` are comments, skipped as ``sha256sum -c`` skips them."""
    try:
        with open(path, "rb") as file:
            text = file.read(_MAX_LINES_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise LocalIOError(f"cannot read {path}: {error.strerror or error}") from None
    lines, content = [], None
    for line in text.splitlines():
        if line.startswith(_CONTENT_PREFIX):
            match = _CONTENT_RE.match(line)
            if not match:
                raise CorruptBundleError(f"{Path(path).name}: not a content digest line: {line[:100]!r}")
            content = match.group(1)
        elif not line.startswith("#"):
            match = _LINE_RE.match(line)
            if not match:
                raise CorruptBundleError(f"{Path(path).name}: not a sha256sum line: {line[:100]!r}")
            lines.append((match.group(1), match.group(2)))
    if not lines:
        raise CorruptBundleError(f"{Path(path).name}: empty")
    return lines, content


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while block := file.read(_READ_SIZE):
                digest.update(block)
    except OSError as error:
        raise LocalIOError(f"cannot read {path}: {error.strerror or error}") from None
    return digest.hexdigest()


def check_sidecar(path: Path) -> str | None:
    """Check a bundle against its sidecar: the verified hex digest, or ``None`` without a sidecar.

    ``CorruptBundleError`` when the digests differ. Only the digest is compared, so a bundle
    renamed together with its sidecar still checks.
    """
    path = Path(path)
    expected = read_sidecar(path)
    if expected is None:
        return None
    actual = file_sha256(path)
    if actual != expected:
        raise CorruptBundleError(f"{path.name}: sha256 is {actual}, but {sidecar_path(path).name} says {expected}")
    return actual

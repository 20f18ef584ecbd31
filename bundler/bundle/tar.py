"""The small subset of POSIX tar a bundle uses, written byte-exact and parsed by hand.

Only ustar regular files, plus a pax ``x`` header when a name is longer than 100 bytes or a
size does not fit 11 octal digits. Every field is fixed (mode 0644, uid/gid 0, mtime 0), so
the same member always has the same header bytes. Parsing is ours, not ``tarfile``'s, so that
hostile archives (links, devices, odd pax keys, bad checksums) meet explicit refusals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BLOCK",
    "END_OF_ARCHIVE",
    "MAX_USTAR_SIZE",
    "PAX_HEADER_NAME",
    "TarFormatError",
    "TarHeader",
    "header_bytes",
    "header_length",
    "member_length",
    "padding",
    "read_header",
]

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
MAX_USTAR_SIZE = 8**11 - 1
"""Largest size the 11-digit octal field holds (8 GiB - 1); larger sizes go in a pax record."""
MAX_USTAR_NAME = 100
PAX_HEADER_NAME = "././@PaxHeader"
MAX_PAX_BYTES = 64 * 1024
"""Our pax data is two short records; anything larger is hostile."""

_REGULAR = b"0"
_PAX = b"x"
_MAGIC = b"ustar\x00"
_VERSION = b"00"


class TarFormatError(Exception):
    """A header that breaks our tar subset; the reader turns it into a bundle error."""


@dataclass(frozen=True)
class TarHeader:
    """One member's header(s): its name, data size and how many header bytes preceded the data."""

    name: str
    size: int
    header_length: int


def padding(size: int) -> int:
    """Zero bytes after ``size`` data bytes up to the next 512-byte block."""
    return -size % BLOCK


def _octal(value: int, width: int) -> bytes:
    """``width - 1`` zero-padded octal digits and a NUL, as ustar numeric fields are written."""
    return b"%0*o\x00" % (width - 1, value)


def _template(typeflag: bytes) -> bytes:
    """A ustar header with every fixed field set, an empty name, size 0 and the checksum field blank."""
    header = bytearray(BLOCK)
    header[100:108] = _octal(0o644, 8)
    header[108:116] = _octal(0, 8)
    header[116:124] = _octal(0, 8)
    header[124:136] = _octal(0, 12)
    header[136:148] = _octal(0, 12)
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[257:263] = _MAGIC
    header[263:265] = _VERSION
    header[329:337] = _octal(0, 8)
    header[337:345] = _octal(0, 8)
    return bytes(header)


_TEMPLATES = {typeflag: _template(typeflag) for typeflag in (_REGULAR, _PAX)}
_BASE_SUMS = {typeflag: sum(template) - sum(_octal(0, 12)) for typeflag, template in _TEMPLATES.items()}
"""Each template's checksum without its size field."""


def _ustar_block(name: bytes, size: int, typeflag: bytes) -> bytes:
    """The template with ``name`` and ``size`` put in, and the checksum of the result: a bundle writes and
    checks thousands of headers, so only the bytes that differ are summed."""
    template = _TEMPLATES[typeflag]
    size_field = _octal(size, 12)
    checksum = _BASE_SUMS[typeflag] + sum(name) + sum(size_field)
    return b"".join((name, template[len(name) : 124], size_field, template[136:148], b"%06o\x00 " % checksum,
                     template[156:]))


def _pax_record(key: str, value: str) -> bytes:
    """``"<len> key=value\\n"`` where ``len`` counts the whole record, its own digits included."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _pax_data(name: str, size: int) -> bytes:
    records = b""
    if len(name.encode()) > MAX_USTAR_NAME:
        records += _pax_record("path", name)
    if size > MAX_USTAR_SIZE:
        records += _pax_record("size", str(size))
    return records


def header_bytes(name: str, size: int) -> bytes:
    """All header bytes of a regular-file member: a pax header first when needed, then ustar."""
    encoded = name.encode()
    pax = _pax_data(name, size)
    ustar = _ustar_block(encoded[:MAX_USTAR_NAME], 0 if size > MAX_USTAR_SIZE else size, _REGULAR)
    if not pax:
        return ustar
    pax_header = _ustar_block(PAX_HEADER_NAME.encode(), len(pax), _PAX)
    return pax_header + pax + bytes(padding(len(pax))) + ustar


def header_length(name: str, size: int) -> int:
    """``len(header_bytes(name, size))``, without building them: a bundle lays out thousands of members."""
    pax = len(_pax_data(name, size))
    return BLOCK + (BLOCK + pax + padding(pax) if pax else 0)


def member_length(name: str, size: int) -> int:
    """Bytes a member takes in the tar stream: header(s), data and padding."""
    return header_length(name, size) + size + padding(size)


# --- parsing -------------------------------------------------------------------------------


def _parse_octal(field: bytes, what: str) -> int:
    digits = field.rstrip(b"\x00 ")
    if not digits or any(c not in b"01234567" for c in digits):
        raise TarFormatError(f"bad {what} field {field!r}")
    return int(digits, 8)


def _field_text(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def _parse_block(block: bytes) -> tuple[bytes, int, bytes]:
    """Check one 512-byte header and return (name field, size field, typeflag)."""
    expected = _parse_octal(block[148:156], "checksum")
    actual = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    if expected != actual:
        raise TarFormatError("header checksum mismatch")
    if block[257:263] != _MAGIC or block[263:265] != _VERSION:
        raise TarFormatError("not a ustar header")
    typeflag = block[156:157]
    if typeflag not in (_REGULAR, _PAX):
        raise TarFormatError(f"member type {typeflag!r} is not a regular file")
    if _field_text(block[345:500]):
        raise TarFormatError("ustar prefix field is not used by bundles")
    return _field_text(block[0:100]), _parse_octal(block[124:136], "size"), typeflag


def _parse_pax(data: bytes) -> dict[str, str]:
    """Strictly parse pax records; only ``path`` and ``size``, each at most once."""
    records: dict[str, str] = {}
    rest = data
    while rest:
        length_text, space, _ = rest.partition(b" ")
        if not space or not length_text.isdigit() or len(length_text) > 6:
            raise TarFormatError("malformed pax record")
        length = int(length_text)
        record, rest = rest[:length], rest[length:]
        if len(record) != length or not record.endswith(b"\n"):
            raise TarFormatError("malformed pax record")
        key, equals, value = record[len(length_text) + 1 : -1].partition(b"=")
        if not equals or key not in (b"path", b"size") or key.decode() in records:
            raise TarFormatError(f"pax record {key[:20]!r} is not allowed")
        try:
            records[key.decode()] = value.decode()
        except UnicodeDecodeError:
            raise TarFormatError("pax value is not UTF-8") from None
    return records


def _decode_name(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise TarFormatError(f"member name {raw[:40]!r} is not UTF-8") from None


def read_header(read_exact: Callable[[int], bytes]) -> TarHeader | None:
    """Read the header(s) of the next member; ``None`` at the first zero block (end of archive).

    ``read_exact(n)`` must return exactly ``n`` bytes or raise. At most one pax header, which
    must be followed by a regular-file header; the data is left unread.
    """
    block = read_exact(BLOCK)
    if block == bytes(BLOCK):
        return None
    name, size, typeflag = _parse_block(block)
    if typeflag == _REGULAR:
        return TarHeader(_decode_name(name), size, BLOCK)
    if name != PAX_HEADER_NAME.encode() or size > MAX_PAX_BYTES:
        raise TarFormatError("unexpected pax header")
    pax = _parse_pax(read_exact(size + padding(size))[:size])
    block = read_exact(BLOCK)
    if block == bytes(BLOCK):
        raise TarFormatError("pax header without a member")
    real_name, real_size, typeflag = _parse_block(block)
    if typeflag != _REGULAR:
        raise TarFormatError("pax header followed by another pax header")
    return _apply_pax(pax, real_name, real_size, BLOCK + size + padding(size) + BLOCK)


def _apply_pax(pax: dict[str, str], name: bytes, size: int, length: int) -> TarHeader:
    """Let pax records override the ustar fields, checking the ustar fields hold what we write."""
    full_name = _decode_name(name)
    if "path" in pax:
        if pax["path"].encode()[:MAX_USTAR_NAME] != name or len(pax["path"].encode()) <= MAX_USTAR_NAME:
            raise TarFormatError("pax path disagrees with the ustar name")
        full_name = pax["path"]
    if "size" in pax:
        text = pax["size"]
        if not (text.isascii() and text.isdigit() and len(text) <= 19) or size != 0 or int(text) <= MAX_USTAR_SIZE:
            raise TarFormatError("pax size disagrees with the ustar size")
        size = int(text)
    if not pax:
        raise TarFormatError("empty pax header")
    return TarHeader(full_name, size, length)

"""Basic auth against an htpasswd file of bcrypt entries, as ``htpasswd -B`` (and Distribution) writes them.

bcrypt is slow on purpose and clients send their credentials with every request, so a password that
passed once is remembered by its SHA-256 (never in clear) for the life of the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
from pathlib import Path

import bcrypt

from bundler.errors import InputError, LocalIOError

__all__ = ["Htpasswd"]

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")


class Htpasswd:
    """The users of an htpasswd file; ``allows`` checks an ``Authorization`` header. Thread-safe."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users
        self._passed: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> Htpasswd:
        """Read ``user:hash`` lines; ``InputError`` for a line that is not a bcrypt entry."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise LocalIOError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
        users = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            user, sep, hashed = line.strip().partition(":")
            if not sep or not user or not hashed.startswith(_BCRYPT_PREFIXES):
                raise InputError(f"{path} line {number}: not a bcrypt entry (write it with htpasswd -B)")
            users[user] = hashed.encode()
        if not users:
            raise InputError(f"{path}: no users")
        return cls(users)

    def allows(self, header: str | None) -> bool:
        """Whether ``Authorization: Basic ...`` names a user of the file with the right password."""
        credentials = _basic_credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        if hashed is None:
            return False
        fingerprint = hashlib.sha256(password).digest()
        with self._lock:
            known = self._passed.get(user)
        if known is not None and hmac.compare_digest(known, fingerprint):
            return True
        if not bcrypt.checkpw(password, hashed):
            return False
        with self._lock:
            self._passed[user] = fingerprint
        return True


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "replace"), password

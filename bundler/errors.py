"""The one exception tree of imgbundle; each class carries the process exit code.

    ImgbundleError                    1  unexpected failure (a bug if you see it)
    ├── InputError                    3  bad reference, image list line, flag value
    ├── RegistryError                10  a registry answered something we cannot use
    │   ├── AuthError                11  credentials missing or refused
    │   ├── NotFoundError            12  repository, manifest or blob does not exist
    │   ├── UnreachableError         13  connection, TLS or timeout, after retries
    │   ├── RegistryContentError     14  bytes served do not match the digest or size asked for,
    │   │                                schema1, nesting too deep, a manifest no bundle may carry
    │   ├── PushRefusedError         15  denied, quota, immutable tag, proxy project, missing project
    │   └── ReferenceUnknownError    10  a manifest PUT refused: the registry does not find a blob or
    │                                    child manifest it names (it may be there; see the class)
    ├── BundleError                  20  a bundle problem not covered below
    │   ├── NotABundleError          21  not a bundle at all (empty, random bytes, another format)
    │   ├── UnsupportedVersionError  22  a bundle of a format major version this reader does not know
    │   ├── CorruptBundleError       23  a bundle that is damaged: checksum, digest, framing, members
    │   └── IncompleteVolumeSetError 24  split volumes missing, truncated or out of order
    ├── PartialFailureError          30  some images done, others failed; the message names them
    ├── LocalIOError                 40  permission denied, output exists, another local I/O failure
    │   └── DiskFullError            41  no space left (or a file size or quota limit) where we write
    └── Interrupted                 130  Ctrl-C (143 for SIGTERM)

Lower layers raise these (``registry`` maps httpx exceptions and OCI error bodies, ``bundle``
maps zstd and tar problems); ``cli`` has the single ``except`` that prints one line and exits.
Library messages name no command-line option: where the user can do something about an error,
the raiser names a ``Remedy`` and the CLI words it with its own options.
``ContentMismatchError`` is raised by ``digest`` wherever bytes disagree with their digest; the
layer that knows where the bytes came from re-raises it as registry or bundle trouble.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "AuthError",
    "BundleError",
    "ContentMismatchError",
    "CorruptBundleError",
    "DiskFullError",
    "ImgbundleError",
    "IncompleteVolumeSetError",
    "InputError",
    "Interrupted",
    "LocalIOError",
    "NotABundleError",
    "NotFoundError",
    "PartialFailureError",
    "PushRefusedError",
    "ReferenceUnknownError",
    "RegistryContentError",
    "RegistryError",
    "Remedy",
    "UnreachableError",
    "UnsupportedVersionError",
]


E = TypeVar("E", bound="ImgbundleError")


class Remedy(enum.Enum):
    """What the user can do about an error, as the layer that knows the cause sees it."""

    LOG_IN = "log in"
    """Credentials are missing or refused."""
    TRUST_CA = "trust the CA"
    """The registry's TLS certificate is signed by a CA we do not trust."""
    CHECK_CA = "check the CA given"
    """As ``TRUST_CA``, though an extra CA was given: it is not the one that signed the certificate."""
    SMALLER_CHUNKS = "smaller upload chunks"
    """A proxy or the registry refuses requests this large."""
    FEWER_REQUESTS = "fewer requests at once"
    """The registry keeps rate-limiting us."""
    CREATE_PROJECTS = "create the projects"
    """Harbor projects a push needs do not exist."""
    NAME_PROJECT = "name a project"
    """The catalog is closed: a Harbor project must be named to list repositories."""
    LIST_IMAGES = "list the images"
    """The catalog is closed and no project API can replace it."""
    OVERWRITE = "overwrite"
    """The output exists."""
    TELL_APART = "tell the images apart"
    """Two images would land on one target reference."""
    NAME_BASE = "name a bundle or its index"
    """What was given as a delta's base is neither a bundle nor the JSON of its index."""
    ALLOW_INCOMPLETE = "allow an incomplete inventory"
    """A delta's base is an inventory in which some repositories could not be listed."""
    ALLOW_PLAIN_HTTP = "allow plain HTTP"
    """A registry answers plain HTTP where HTTPS was expected; ``remedy_target`` is its host."""


class ImgbundleError(Exception):
    """Base of every error the tool reports; ``str(err)`` is the one line shown to the user, to which
    the CLI adds how to apply ``remedy`` when there is one.

    An error about one thing (a reference, a host) names it as ``subject``: the line is then
    ``"{subject}: {message}"``, and a caller whose own line names that subject shows only ``detail``.
    """

    exit_code = 1

    def __init__(self, message: str = "", *, remedy: Remedy | None = None, subject: str = "",
                 remedy_target: str = "") -> None:
        super().__init__(f"{subject}: {message}" if subject else message)
        self.remedy = remedy
        self.remedy_target = remedy_target
        """What the remedy applies to, when it names something (a registry host)."""
        self.subject = subject
        self.detail = message
        """The message without its subject."""

    def retyped(self, kind: type[E]) -> E:
        """This error as another kind (its exit code), message, subject and remedy kept."""
        return kind(self.detail, remedy=self.remedy, subject=self.subject, remedy_target=self.remedy_target)

    def about(self, subject: str) -> str:
        """The message for a line that already names ``subject``: without it when the error is about it too."""
        return self.detail if subject and subject == self.subject else str(self)

    def reworded(self, message: str, remedy: Remedy | None = None) -> Self:
        """The same kind of error (its class, and its remedy unless another is given) with another message."""
        error = type(self)(message)
        error.remedy = remedy or self.remedy
        error.remedy_target = self.remedy_target if error.remedy is self.remedy else ""
        return error


class InputError(ImgbundleError):
    exit_code = 3


class RegistryError(ImgbundleError):
    exit_code = 10


class AuthError(RegistryError):
    exit_code = 11


class NotFoundError(RegistryError):
    exit_code = 12


class UnreachableError(RegistryError):
    exit_code = 13


class RegistryContentError(RegistryError):
    exit_code = 14


class PushRefusedError(RegistryError):
    exit_code = 15


class ReferenceUnknownError(RegistryError):
    """A manifest PUT refused because the registry does not find a blob or child manifest the manifest
    names (OCI ``MANIFEST_BLOB_UNKNOWN``). Not always true: Distribution 2.8 rewrites a repository's
    link file in place, so while another writer re-links the same digest a reader sees it empty for
    an instant. A writer re-checks what the manifest names and tries again (``bundler.unpack.steps``)."""


class BundleError(ImgbundleError):
    exit_code = 20


class NotABundleError(BundleError):
    exit_code = 21


class UnsupportedVersionError(BundleError):
    exit_code = 22


class CorruptBundleError(BundleError):
    exit_code = 23


class IncompleteVolumeSetError(BundleError):
    exit_code = 24


class PartialFailureError(ImgbundleError):
    exit_code = 30


class LocalIOError(ImgbundleError):
    exit_code = 40


class DiskFullError(LocalIOError):
    """Out of space: a disk, a quota or a file size limit. Its own code, since the remedy is room, not a fix."""

    exit_code = 41


class Interrupted(ImgbundleError):
    exit_code = 130

    def __init__(self, message: str = "interrupted", *, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def reworded(self, message: str, remedy: Remedy | None = None) -> Interrupted:
        return Interrupted(message, exit_code=self.exit_code)


class ContentMismatchError(ImgbundleError):
    """Bytes whose size or digest differ from what their descriptor promised.

    Not raised to the user as is: the registry layer re-raises it as ``RegistryContentError``,
    the bundle layer as ``CorruptBundleError``.
    """

    exit_code = 14

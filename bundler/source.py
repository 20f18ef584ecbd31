"""Where pack reads images from: one small read interface, several implementations.

``ImageSource`` is the read half of the distribution API, named object-first. A ``RegistryClient``
(``bundler.registry``) implements it over HTTP and a ``StorageTree`` (``bundler.storage``) over a
registry's storage directory; pack sees only this protocol, through a ``SourcePool`` that hands
out the source for a registry host. ``discover`` turns "everything a source holds" into references.

Rules every implementation keeps:

- ``manifest_get`` returns the bytes exactly as stored, checked against the digest asked for (or,
  for a tag, the digest the source says the tag points at); schema1 is refused.
- ``blob_chunks`` yields the blob verified against ``digest`` and ``size`` as it streams and raises
  ``RegistryContentError`` at the end when they disagree: a consumer must not keep bytes of a
  stream that did not finish.
- Missing things are ``NotFoundError``; a closed listing is ``AuthError`` (or ``NotFoundError``).
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

from bundler.digest import Digest
from bundler.errors import AuthError, InputError, NotFoundError
from bundler.oci import Descriptor, RawManifest
from bundler.reference import Reference, parse_reference
from bundler.registry import RegistryOptions, RegistryPool
from bundler.registry.harbor import HarborProjects, project_of

__all__ = [
    "ImageSource",
    "SourcePool",
    "SingleSourcePool",
    "discover",
    "discover_registry",
    "registry_target",
    "repository_matches",
]


@runtime_checkable
class ImageSource(Protocol):
    """The read side of one registry (or of something laid out like one)."""

    def manifest_get(self, repository: str, reference: str) -> RawManifest:
        """A manifest or index by tag or digest, byte-exact."""

    def manifest_head(self, repository: str, reference: str) -> Descriptor | None:
        """The manifest's descriptor, or ``None`` when it does not exist."""

    def blob_chunks(self, repository: str, digest: Digest, size: int) -> Iterator[bytes]:
        """The blob in chunks, verified against ``digest`` and ``size`` while it streams."""

    def tags_list(self, repository: str) -> list[str]:
        """Every tag of ``repository``."""

    def catalog(self) -> list[str]:
        """Every repository; ``AuthError``/``NotFoundError`` when the source will not list them."""


class SourcePool(Protocol):
    """Hands out the ``ImageSource`` for a registry host; thread-safe; closed once by its owner."""

    def get(self, host: str) -> ImageSource: ...

    def close(self) -> None: ...


class SingleSourcePool:
    """A pool serving one host from one source, e.g. a storage tree under a chosen host name."""

    def __init__(self, host: str, source: ImageSource) -> None:
        self.host = host
        self.source = source

    def get(self, host: str) -> ImageSource:
        if host != self.host:
            raise NotFoundError(f"{host}: this run reads only {self.host}")
        return self.source

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "SingleSourcePool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def repository_matches(repository: str, *, prefix: str = "", patterns: Sequence[str] = ()) -> bool:
    """True when ``repository`` lies under ``prefix`` (whole path elements) and matches any glob of ``patterns``.

    Globs follow ``fnmatch``: ``*`` also crosses ``/``, so ``calico/*`` matches ``calico/a/b``.
    """
    prefix = prefix.strip("/")
    if prefix and repository != prefix and not repository.startswith(prefix + "/"):
        return False
    return not patterns or any(fnmatch.fnmatchcase(repository, pattern) for pattern in patterns)


def discover(
    source: ImageSource,
    host: str,
    *,
    prefix: str = "",
    patterns: Sequence[str] = (),
    closed_catalog: Callable[[], Iterable[str]] | None = None,
) -> list[Reference]:
    """``host/repository:tag`` for every tag of every repository the source lists, filtered, sorted.

    When the catalog is closed (401/403/404, as Harbor's is for non-admins), ``closed_catalog`` is
    asked instead; without one the refusal is raised with a hint. A repository without tags
    contributes nothing (it holds no image a tag names).
    """
    try:
        repositories = source.catalog()
    except (AuthError, NotFoundError) as refusal:
        if closed_catalog is None:
            raise type(refusal)(f"{refusal}; the catalog is closed, list the images with -f instead") from None
        repositories = list(closed_catalog())
    chosen = sorted({r for r in repositories if repository_matches(r, prefix=prefix, patterns=patterns)})
    where = f"{host}/{prefix.strip('/')}" if prefix.strip("/") else host
    if not chosen:
        raise InputError(f"{where}: no repository matches" + (f" {', '.join(patterns)}" if patterns else ""))
    references = [Reference(host, repo, tag) for repo in chosen for tag in sorted(_tags(source, repo))]
    if not references:
        raise InputError(f"{where}: {len(chosen)} repositories, but not one tag in them")
    return references


def _tags(source: ImageSource, repository: str) -> list[str]:
    """The tags of a listed repository; Distribution answers 404 for one whose tags were all deleted."""
    try:
        return source.tags_list(repository)
    except NotFoundError:
        return []


def registry_target(text: str, flag: str = "--all-from") -> tuple[str, str]:
    """``HOST[/PREFIX]`` split and checked: the first element must be a registry host, as in a reference."""
    cleaned = text.strip().strip("/")
    host, _, prefix = cleaned.partition("/")
    try:
        probe = parse_reference(f"{host}/probe")
    except InputError as error:
        raise InputError(f"{flag} {text!r}: {error}") from None
    if not host or probe.repository != "probe":
        raise InputError(f"{flag} {text!r}: must start with a registry host (with a dot or a port, or localhost)")
    return probe.registry, prefix


def discover_registry(
    pool: RegistryPool, target: str, patterns: Sequence[str] = (), options: RegistryOptions | None = None
) -> list[Reference]:
    """Every tagged image under ``HOST[/PROJECT]``: from ``/v2/_catalog``, or from Harbor's project API
    when the catalog is closed (Harbor's is, for users without the admin role)."""
    host, prefix = registry_target(target)

    def harbor_repositories() -> list[str]:
        if not prefix:
            raise InputError(f"{host}: the catalog is closed; name a project: --all-from {host}/PROJECT")
        with HarborProjects(host, options or pool.options) as api:
            return api.list_repositories(project_of(prefix))

    return discover(pool.get(host), host, prefix=prefix, patterns=patterns, closed_catalog=harbor_repositories)

"""What to pack when the user names a whole registry or storage tree instead of a list of images.

``discover`` turns "everything a store holds" (its catalog, then each repository's tags) into
references; ``discover_registry`` falls back to Harbor's project API where the catalog is closed.
``list_repositories`` and ``registry_repositories`` are their first step, which ``inventory`` shares.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence

from bundler.errors import AuthError, InputError, NotFoundError, Remedy
from bundler.pack.referrers import is_referrer_tag
from bundler.reference import Reference, parse_reference
from bundler.registry import RegistryOptions
from bundler.registry.harbor import HarborProjects, project_of
from bundler.stores import ReadStore
from bundler.stores.registry import RegistryPool
from bundler.words import counted

__all__ = [
    "discover",
    "discover_registry",
    "list_repositories",
    "registry_repositories",
    "registry_target",
    "repository_matches",
    "tags_of",
]


def repository_matches(repository: str, *, prefix: str = "", patterns: Sequence[str] = ()) -> bool:
    """True when ``repository`` lies under ``prefix`` (whole path elements) and matches any glob of ``patterns``.

    Globs follow ``fnmatch``: ``*`` also crosses ``/``, so ``calico/*`` matches ``calico/a/b``.
    """
    prefix = prefix.strip("/")
    if prefix and repository != prefix and not repository.startswith(prefix + "/"):
        return False
    return not patterns or any(fnmatch.fnmatchcase(repository, pattern) for pattern in patterns)


def list_repositories(
    store: ReadStore,
    host: str,
    *,
    prefix: str = "",
    patterns: Sequence[str] = (),
    closed_catalog: Callable[[], Iterable[str]] | None = None,
) -> list[str]:
    """Every repository the store lists under ``prefix`` matching ``patterns``, sorted; never empty.

    When the catalog is closed (401/403/404, as Harbor's is for non-admins), ``closed_catalog`` is
    asked instead; without one the refusal is raised with a hint. A refusal for want of credentials
    is raised as it is: logging in is the fix, not another way to list.
    """
    try:
        repositories = store.catalog()
    except (AuthError, NotFoundError) as refusal:
        if refusal.remedy is Remedy.LOG_IN:
            raise
        if closed_catalog is None:
            raise refusal.reworded(f"{refusal}; the catalog is closed", Remedy.LIST_IMAGES) from None
        repositories = list(closed_catalog())
    chosen = sorted({r for r in repositories if repository_matches(r, prefix=prefix, patterns=patterns)})
    if not chosen:
        matching = f" {', '.join(patterns)}" if patterns else ""
        raise InputError(f"{_where(host, prefix)}: no repository matches{matching}")
    return chosen


def _where(host: str, prefix: str) -> str:
    return f"{host}/{prefix.strip('/')}" if prefix.strip("/") else host


def discover(
    store: ReadStore,
    host: str,
    *,
    prefix: str = "",
    patterns: Sequence[str] = (),
    closed_catalog: Callable[[], Iterable[str]] | None = None,
) -> list[Reference]:
    """``host/repository:tag`` for every tag of every repository ``list_repositories`` finds, sorted.

    A repository without tags contributes nothing (it holds no image a tag names). Referrer tags
    (``sha256-….sig``, the fallback ``sha256-…``) are no images: they come along with the image they are
    attached to.
    """
    chosen = list_repositories(store, host, prefix=prefix, patterns=patterns, closed_catalog=closed_catalog)
    return _tagged(store, host, chosen, _where(host, prefix))


def _tagged(store: ReadStore, host: str, repositories: list[str], where: str) -> list[Reference]:
    references = [Reference(host, repo, tag) for repo in repositories for tag in sorted(tags_of(store, repo))]
    if not references:
        raise InputError(f"{where}: {counted(len(repositories), 'repository', 'repositories')}, but not one tag in them")
    return references


def tags_of(store: ReadStore, repository: str) -> list[str]:
    """The image tags of a listed repository; Distribution answers 404 for one whose tags were all deleted."""
    try:
        return [tag for tag in store.tags_list(repository) if not is_referrer_tag(tag)]
    except NotFoundError:
        return []


def registry_target(text: str) -> tuple[str, str]:
    """``HOST[/PREFIX]`` split and checked: the first element must be a registry host, as in a reference."""
    cleaned = text.strip().strip("/")
    host, _, prefix = cleaned.partition("/")
    try:
        probe = parse_reference(f"{host}/probe")
    except InputError as error:
        raise error.reworded(f"{text!r}: {error}") from None
    if not host or probe.repository != "probe":
        raise InputError(f"{text!r}: must start with a registry host (with a dot or a port, or localhost)")
    return probe.registry, prefix


def registry_repositories(
    pool: RegistryPool, target: str, patterns: Sequence[str] = (), options: RegistryOptions | None = None
) -> tuple[str, list[str]]:
    """The host of ``HOST[/PROJECT]`` and its repositories: from ``/v2/_catalog``, or from Harbor's project
    API when the catalog is closed (Harbor's is, for users without the admin role)."""
    host, prefix = registry_target(target)

    def harbor_repositories() -> list[str]:
        if not prefix:
            raise InputError(f"{host}: the catalog is closed; name a project: {host}/PROJECT")
        with HarborProjects(host, options or pool.options) as api:
            return api.list_repositories(project_of(prefix))

    return host, list_repositories(pool.get(host), host, prefix=prefix, patterns=patterns,
                                   closed_catalog=harbor_repositories)


def discover_registry(
    pool: RegistryPool, target: str, patterns: Sequence[str] = (), options: RegistryOptions | None = None
) -> list[Reference]:
    """Every tagged image under ``HOST[/PROJECT]`` (see ``registry_repositories``)."""
    host, repositories = registry_repositories(pool, target, patterns, options)
    return _tagged(pool.get(host), host, repositories, _where(*registry_target(target)))

"""Target naming: where each image of a bundle lands in the target registry (unpack pushes there, serve
shows the same names). Pure, no I/O, outside both plans so that serve starts without unpack's modules.

The target ``HOST[/PREFIX]`` plus the source path without its registry host::

    quay.io/calico/node:v3.26.4        -> HOST/PREFIX/calico/node:v3.26.4
    docker.io/library/nginx:1.25       -> HOST/PREFIX/library/nginx:1.25
    keep_host                          -> HOST/PREFIX/quay.io/calico/node:v3.26.4
    flatten                            -> HOST/PREFIX/calico-node:v3.26.4
    maps [("quay.io/calico", "net")]   -> HOST/PREFIX/net/node:v3.26.4

Two different source repositories landing on one target tag would silently overwrite each
other, so that is refused with both names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bundler.digest import Digest
from bundler.errors import InputError, Remedy
from bundler.reference import Reference, mask_userinfo, parse_reference

__all__ = ["ImageLike", "Target", "TargetSpec", "normalise_map", "parse_to", "plan_targets", "unused_maps"]

_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io"}
_NOT_IN_COMPONENT = re.compile(r"[^a-z0-9._]+")
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
"""A repository path component, as distribution's reference grammar defines it."""


class ImageLike(Protocol):
    """What naming needs of a bundle's image entry (``bundler.bundle.ImageEntry`` fits)."""

    @property
    def reference(self) -> str: ...

    @property
    def digest(self) -> str: ...


@dataclass(frozen=True, order=True)
class Target:
    """One image's destination: ``target_ref`` has the target host, repository, tag (``None`` when
    the source was pinned by digest only) and the digest that gets pushed."""

    source_ref: str
    target_ref: Reference
    digest: Digest

    @property
    def repository(self) -> str:
        return self.target_ref.repository

    @property
    def source_name(self) -> str:
        """The image's repository in the bundle: its reference's name, registry host included."""
        return parse_reference(self.source_ref).name

    @property
    def tag(self) -> str | None:
        return self.target_ref.tag

    @property
    def display(self) -> str:
        """``host/repo:tag``, or ``host/repo@digest`` for digest-only images: what a user pulls."""
        if self.tag:
            return f"{self.target_ref.name}:{self.tag}"
        return f"{self.target_ref.name}@{self.digest}"

    @property
    def pinned(self) -> str:
        """``host/repo@digest``: the reference that names exactly the pushed bytes."""
        return f"{self.target_ref.name}@{self.digest}"

    @property
    def exact(self) -> str:
        """``host/repo:tag@digest``, or ``host/repo@digest`` for digest-only images: the tag and its bytes."""
        return f"{self.target_ref.name}:{self.tag}@{self.digest}" if self.tag else self.pinned


@dataclass(frozen=True)
class TargetSpec:
    """The target ``HOST[/PREFIX]`` split into the registry host and the path prefix (may be empty)."""

    host: str
    prefix: str


def parse_to(to: str) -> TargetSpec:
    """Split and check ``HOST[/PREFIX]``; the host needs a dot, a port or be ``localhost``."""
    text = to.strip().strip("/")
    if "://" in text or "@" in text:
        raise InputError(
            f"{mask_userinfo(to)!r}: give HOST[/PREFIX] without a scheme or credentials "
            "(e.g. harbor.example.com/mirror)",
            remedy=Remedy.LOG_IN,
        )
    host, _, prefix = text.partition("/")
    if not host or not _looks_like_host(host):
        raise InputError(f"{to!r}: must start with a registry host (with a dot or a port, or localhost)")
    try:
        probe = parse_reference(f"{host}/probe")
    except InputError as error:
        raise error.reworded(f"{to!r}: {error}") from None
    if prefix:
        _check_path(prefix, repr(to))
    return TargetSpec(probe.registry, prefix)


def normalise_map(source: str, destination: str) -> tuple[str, str]:
    """A ``(SRC_PREFIX, DST_PREFIX)`` pair as matched: slashes trimmed, lowercase, Hub aliases folded."""
    src = source.strip().strip("/").lower()
    first, sep, rest = src.partition("/")
    if first in _HUB_ALIASES:
        src = f"docker.io{sep}{rest}"
    if not src:
        raise InputError(f"map {source!r}={destination!r}: empty source prefix")
    dst = destination.strip().strip("/")
    if dst:
        _check_path(dst, f"map {source!r}={destination!r}")
    return src, dst


def plan_targets(
    images: Iterable[ImageLike],
    to: str,
    keep_host: bool = False,
    flatten: bool = False,
    maps: Sequence[tuple[str, str]] = (),
) -> list[Target]:
    """The target of every image, in bundle order; ``InputError`` on a bad name or a tag collision."""
    spec = parse_to(to)
    rules = sorted((normalise_map(s, d) for s, d in maps), key=lambda rule: len(rule[0]), reverse=True)
    targets = [_target(image, spec, keep_host, flatten, rules) for image in images]
    _check_collisions(targets)
    return targets


def unused_maps(images: Iterable[ImageLike], maps: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The maps whose source prefix matches no image: most likely a typo worth a warning."""
    names = [_source_name(parse_reference(image.reference)) for image in images]
    return [(s, d) for s, d in maps if not any(_matches(name, normalise_map(s, d)[0]) for name in names)]


def _target(image: ImageLike, spec: TargetSpec, keep_host: bool, flatten: bool,
            rules: list[tuple[str, str]]) -> Target:
    source = parse_reference(image.reference)
    digest = Digest(image.digest)
    path = _mapped_path(source, keep_host, rules)
    if flatten:
        path = path.replace("/", "-")
    repository = "/".join(part for part in (spec.prefix, path) if part)
    if not repository:
        raise InputError(f"{image.reference}: maps to an empty repository path")
    _check_path(repository, image.reference)
    if len(f"{spec.host}/{repository}") > 255:
        raise InputError(f"{image.reference}: target name {spec.host}/{repository} is longer than 255 characters")
    target_ref = Reference(spec.host, repository, None if _digest_only(source) else source.tag, digest)
    return Target(image.reference, target_ref, digest)


def _digest_only(source: Reference) -> bool:
    return source.digest is not None and not source.tag


def _mapped_path(source: Reference, keep_host: bool, rules: list[tuple[str, str]]) -> str:
    """The repository path under the prefix: the first (longest) matching map wins over keep_host."""
    name = _source_name(source)
    for src, dst in rules:
        if _matches(name, src):
            rest = name[len(src):].strip("/")
            return "/".join(part for part in (dst, rest) if part)
    if keep_host:
        return f"{host_component(source.registry)}/{source.repository}"
    return source.repository


def host_component(host: str) -> str:
    """A registry host as a path component: lowercase, ``:`` (port) and brackets become ``-``."""
    return _NOT_IN_COMPONENT.sub("-", host.lower()).strip("-._")


def _source_name(source: Reference) -> str:
    return f"{source.registry}/{source.repository}"


def _matches(name: str, prefix: str) -> bool:
    """Prefixes match whole path components: ``quay.io/cal`` does not match ``quay.io/calico``."""
    return name == prefix or name.startswith(prefix + "/")


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


def _check_path(path: str, context: str) -> None:
    """Raise ``InputError`` unless ``path`` is a valid repository path (the distribution grammar)."""
    for component in path.split("/"):
        if not _COMPONENT_RE.match(component):
            reason = "uppercase letters are not allowed in" if component.lower() != component else "invalid"
            raise InputError(
                f"{context}: {reason} path component {component!r} "
                "(lowercase letters and digits, separated by '.', '_', '__' or '-')"
            )


def _check_collisions(targets: list[Target]) -> None:
    """Refuse two source repositories (or two digests) that would share one target tag."""
    owners: dict[tuple[str, str], Target] = {}
    problems: list[str] = []
    for target in targets:
        if not target.tag:
            continue
        key = (target.repository, target.tag)
        first = owners.setdefault(key, target)
        if first is target:
            continue
        same_source = parse_reference(first.source_ref).name == parse_reference(target.source_ref).name
        if not same_source or first.digest != target.digest:
            problems.append(f"{first.source_ref} and {target.source_ref} both map to {target.display}")
    if problems:
        raise InputError("; ".join(problems), remedy=Remedy.TELL_APART)

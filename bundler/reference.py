"""Image references, parsed and normalised the way docker does; no I/O.

``nginx`` is ``docker.io/library/nginx:latest``; ``host:port/path:tag@sha256:…`` keeps both tag and
digest (the digest wins when resolving; the tag is checked against it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bundler.digest import Digest
from bundler.errors import InputError, Remedy

__all__ = ["DOCKER_HUB", "Reference", "mask_userinfo", "parse_image_list", "parse_reference", "registry_endpoint"]

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", DOCKER_HUB}
_HUB_ENDPOINT = "registry-1.docker.io"

_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_HOST_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$"
)
_MAX_NAME = 255
_URL_PREFIX = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)?(?P<userinfo>[^/@\s]+@)?")
_USERINFO = re.compile(r"^((?:[a-zA-Z][a-zA-Z0-9+.-]*://)?)[^/\s]*@")


@dataclass(frozen=True, order=True)
class Reference:
    """A fully qualified image reference: registry host, repository path, tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, self.digest)


def registry_endpoint(registry: str) -> str:
    """The host to talk to: docker.io is served by registry-1.docker.io."""
    return _HUB_ENDPOINT if registry == DOCKER_HUB else registry


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


def parse_reference(text: str) -> Reference:
    """Parse and normalise one image reference; raise ``InputError`` saying what is wrong."""
    text = text.strip()
    if not text:
        raise InputError("empty image reference")
    _refuse_url(text)
    rest, digest = _split_digest(text)
    rest, tag = _split_tag(rest)
    registry, repository = _split_registry(rest)
    if len(f"{registry}/{repository}") > _MAX_NAME:
        raise InputError(f"{text}: name longer than {_MAX_NAME} characters")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)


def _refuse_url(text: str) -> None:
    """A reference is not a URL: refuse a scheme or ``user:password@`` (masked, it may be a real password)."""
    prefix = _URL_PREFIX.match(text)
    assert prefix is not None  # both groups are optional
    userinfo = prefix["userinfo"] if "/" in text[prefix.end("userinfo") :] else None  # else ``name@digest``
    if prefix["scheme"] or userinfo:
        raise InputError(
            f"{mask_userinfo(text) if userinfo else text}: write HOST/REPOSITORY[:TAG][@DIGEST], "
            "without a scheme or credentials",
            remedy=Remedy.LOG_IN,
        )


def mask_userinfo(text: str) -> str:
    """``text`` with what precedes an ``@`` in its host part masked: ``https://u:pw@h/x`` -> ``https://***@h/x``."""
    return _USERINFO.sub(r"\1***@", text, count=1)


def _split_digest(text: str) -> tuple[str, Digest | None]:
    if "@" not in text:
        return text, None
    rest, _, digest_text = text.partition("@")
    try:
        return rest, Digest(digest_text)
    except InputError:
        raise InputError(f"{text}: invalid digest {digest_text!r}") from None


def _split_tag(text: str) -> tuple[str, str | None]:
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon <= last_slash:
        return text, None
    name, tag = text[:colon], text[colon + 1 :]
    if not _TAG_RE.match(tag):
        raise InputError(f"{text}: invalid tag {tag!r}")
    return name, tag


def _split_registry(name: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if sep and _looks_like_host(first):
        if not _HOST_RE.match(first):
            raise InputError(f"{name}: invalid registry host {first!r}")
        registry, path = first.lower(), remainder
    else:
        registry, path = DOCKER_HUB, name
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    for component in path.split("/"):
        if not _COMPONENT_RE.match(component):
            reason = "uppercase letters are not allowed" if component.lower() != component else "invalid path component"
            raise InputError(f"{name}: {reason} {component!r}")
    return registry, path


def parse_image_list(lines: Iterable[str], list_name: str = "-") -> list[tuple[str, Reference]]:
    """``(text, reference)`` pairs from an image list: one per line, blank lines and ``#`` comments ignored.

    Errors name ``LIST_NAME:LINE``. Every bad line is reported together, not just the first.
    """
    problems: list[str] = []
    references: list[tuple[str, Reference]] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            references.append((text, parse_reference(text)))
        except InputError as error:
            problems.append(f"{list_name}:{number}: {error}")
    if problems:
        raise InputError("; ".join(problems))
    return references

"""Harbor's project API: what a plain registry does not have, and a push into Harbor needs.

Every Harbor repository lives in a project (the first path element) that must exist before a
push; pushing into a missing one gets a bare ``401 project X not found``. So before pushing we
ask whether the target is Harbor (``GET /api/v2.0/systeminfo`` answers anonymously), whether
each project exists (``HEAD /api/v2.0/projects?project_name=X``) and, when asked to, create it
(``POST /api/v2.0/projects``). Basic auth with the registry credentials; no cookies are kept
(Harbor's ``sid`` would make the POST CSRF-checked). Create projects before any push so that no
registry token issued before the project existed is still cached.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import httpx
import msgspec

from bundler.errors import (
    AuthError,
    InputError,
    NotFoundError,
    PushRefusedError,
    RegistryError,
    Remedy,
    UnreachableError,
)
from bundler.registry.auth import find_credentials
from bundler.registry.errors import mapped, raise_for_answer, retry_notifier
from bundler.registry.options import RegistryOptions
from bundler.registry.retry import RetryPolicy, retry_call
from bundler.registry.transport import SchemeChooser, make_http_client, read_limited

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["PROJECT_NAME_RE", "HarborProjects", "ensure_projects", "project_of"]

log = logging.getLogger("bundler.registry")

API = "/api/v2.0"
PROJECT_NAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
"""Harbor's rule for project names (``src/common/utils``); stricter than a repository component."""
_MAX_BODY = 64 * 1024
_MAX_PAGE_BODY = 4 * 1024 * 1024
"""A page of repositories carries free-text descriptions; allow more than an error body."""
REPOSITORIES_PAGE_SIZE = 100
"""Harbor's maximum ``page_size``."""
_HARBOR_KEYS = ("auth_mode", "harbor_version", "primary_auth_mode", "registry_url")
"""Fields of Harbor's ``GeneralInfo``; an anonymous caller gets at least ``auth_mode``."""


def project_of(repository: str) -> str:
    """The Harbor project of a repository path: its first element."""
    return repository.split("/", 1)[0]


class HarborProjects:
    """Talks to one Harbor's ``/api/v2.0``; ``scheme`` may be given when the registry client knows it."""

    def __init__(self, host: str, options: RegistryOptions, *, scheme: str | None = None) -> None:
        self.host = host
        self._http = make_http_client(host, options)
        self._chooser = SchemeChooser(host, options)
        self._scheme = scheme
        self._retry = RetryPolicy.from_options(options, retry_notifier(host, options))
        credentials = find_credentials(host, options)
        self._auth = (
            httpx.BasicAuth(credentials.username, credentials.password)
            if credentials is not None and credentials.username
            else None
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _url(self, path: str, params: dict[str, str] | None = None) -> httpx.URL:
        """Called inside the retried attempt: a dropped probe is retried like any request."""
        if self._scheme is None:
            self._scheme = self._chooser.scheme(self._http)
        return httpx.URL(f"{self._scheme}://{self.host}{API}{path}", params=params)

    def _send(self, method: str, path: str, what: str, *, params: dict[str, str] | None = None,
              body: Mapping[str, object] | None = None, auth: bool = True,
              limit: int = _MAX_BODY) -> tuple[int, bytes]:
        """One API call with retries on 5xx/429/dropped connections; returns status and (capped) body."""
        content = msgspec.json.encode(body) if body is not None else None
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"

        def attempt() -> tuple[int, bytes]:
            request = self._http.build_request(method, self._url(path, params), content=content, headers=headers)
            try:
                response = self._http.send(request, auth=self._auth if auth else None, stream=True)
            except httpx.ConnectError as error:
                self._chooser.explain(self._http, error)
                raise
            try:
                data = read_limited(response, limit) if method != "HEAD" else b""
                if response.status_code >= 500 or response.status_code == 429:
                    raise_for_answer(response, what, body=data)
                return response.status_code, data
            finally:
                response.close()

        with mapped(self.host, what):
            return retry_call(self._retry, what, attempt)

    def is_harbor(self) -> bool:
        """True when ``/api/v2.0/systeminfo`` answers like Harbor (a plain Distribution says 404).

        The first request of an unpack: a failure to connect names the registry, not this API's URL."""
        try:
            status, data = self._send("GET", "/systeminfo", self.host, auth=False)
        except UnreachableError:
            raise
        except RegistryError:  # a busy or odd front end: not a Harbor we can talk to; the push will tell
            return False
        if status != 200:
            return False
        try:
            info = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return False
        return isinstance(info, dict) and any(key in info for key in _HARBOR_KEYS)

    def project_exists(self, name: str) -> bool | None:
        """True/False, or ``None`` when Harbor will not tell us (e.g. a robot without API rights)."""
        what = f"Harbor project {name} on {self.host}"
        status, _ = self._send("HEAD", "/projects", what, params={"project_name": name})
        if status == 200:
            return True
        if status == 404:
            return False
        log.debug("%s: HEAD answered %d; existence unknown", what, status)
        return None

    def create_project(self, name: str, *, public: bool = False) -> bool:
        """Create project ``name``; True when created, False when it already existed (409)."""
        check_project_name(name)
        what = f"creating Harbor project {name} on {self.host}"
        body = {"project_name": name, "metadata": {"public": "true" if public else "false"}}
        status, data = self._send("POST", "/projects", what, body=body)
        if status in (200, 201):
            return True
        if status == 409:
            return False
        reason = _api_message(data) or f"HTTP {status}"
        if status == 401:
            raise AuthError(f"{what}: credentials refused ({reason})")
        if status == 403:
            raise PushRefusedError(
                f"{what}: not allowed ({reason}); a project robot account cannot create projects, "
                f"use an administrator or a system robot with the project-create permission"
            )
        raise PushRefusedError(f"{what}: Harbor answered {status} ({reason})")

    def list_repositories(self, project: str) -> list[str]:
        """Every repository of ``project`` as ``project/name``, page by page (``/v2/_catalog`` is admin-only)."""
        check_project_name(project)
        what = f"repositories of Harbor project {project} on {self.host}"
        names: list[str] = []
        for page in range(1, 100_000):
            params = {"page": str(page), "page_size": str(REPOSITORIES_PAGE_SIZE)}
            status, data = self._send("GET", f"/projects/{project}/repositories", what, params=params,
                                      limit=_MAX_PAGE_BODY)
            batch = _repository_page(status, data, what)
            names.extend(batch)
            if len(batch) < REPOSITORIES_PAGE_SIZE:
                break
        return names


class _Repository(msgspec.Struct):
    name: str


def _repository_page(status: int, data: bytes, what: str) -> list[str]:
    """Names on one page of ``GET /projects/{p}/repositories``, or the error its status means."""
    reason = _api_message(data) or f"HTTP {status}"
    if status == 401:
        raise AuthError(f"{what}: credentials refused or missing ({reason})", remedy=Remedy.LOG_IN)
    if status == 403:
        raise AuthError(f"{what}: access denied ({reason})")
    if status == 404:
        raise NotFoundError(f"{what}: not found ({reason}); is the project name right, and is this a Harbor?")
    if status != 200:
        raise RegistryError(f"{what}: Harbor answered {status} ({reason})")
    try:
        return [repository.name for repository in msgspec.json.decode(data, type=list[_Repository])]
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise RegistryError(f"{what}: the answer is not a list of repositories") from None


def check_project_name(name: str) -> None:
    if not PROJECT_NAME_RE.match(name) or len(name) > 255:
        raise InputError(
            f"{name!r} is not a valid Harbor project name (lowercase letters, digits, and single . _ - between them)"
        )


class _ApiErrors(msgspec.Struct):
    errors: list[dict[str, object]] = []


def _api_message(data: bytes) -> str:
    try:
        errors = msgspec.json.decode(data, type=_ApiErrors).errors
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""
    return "; ".join(str(e.get("message") or e.get("code") or "") for e in errors[:3] if e)


def ensure_projects(api: HarborProjects, projects: Iterable[str], *, create: bool = False,
                    public: bool = False) -> list[str]:
    """Make sure every project exists; returns those created. Without ``create``, one
    ``PushRefusedError`` names every missing project and how to create it."""
    names = sorted(set(projects))
    for name in names:
        check_project_name(name)
    missing = [name for name in names if api.project_exists(name) is False]
    if missing and not create:
        listed = ", ".join(missing)
        raise PushRefusedError(
            f"Harbor project{'s' if len(missing) > 1 else ''} {listed} "
            f"{'do' if len(missing) > 1 else 'does'} not exist on {api.host}; create "
            f"{'them' if len(missing) > 1 else 'it'} in Harbor (Projects > New Project)",
            remedy=Remedy.CREATE_PROJECTS,
        )
    return [name for name in missing if api.create_project(name, public=public)]

"""Registry credentials and the 401-challenge flow (Basic, or Bearer tokens from the realm).

Credentials, first found wins: ``RegistryOptions.credentials`` > ``RegistryOptions.auth_file`` > docker's
``config.json`` (``credHelpers[host]``, then ``credsStore``, then ``auths``) > podman's ``auth.json``. A credential
helper that is missing or fails means "no credentials from it", logged at debug, never a crash.

``RegistryAuth`` is an ``httpx.Auth`` whose flow is: send (with a cached token when the host
challenged before); on 401 read the challenge, fetch a token for the request's scopes, send once
more. A 401 after that is the final answer, not a loop. Tokens are cached per scope set until
shortly before ``expires_in``.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec

from bundler.errors import AuthError, RegistryError
from bundler.registry.errors import raise_for_answer
from bundler.registry.options import RegistryOptions

__all__ = [
    "SCOPES_EXTENSION",
    "Challenge",
    "Credentials",
    "RegistryAuth",
    "find_credentials",
    "parse_challenges",
    "pull_scope",
    "push_scope",
]

log = logging.getLogger("bundler.registry")

SCOPES_EXTENSION = "imgbundle_scopes"
"""``request.extensions`` key: the token scopes a request needs, e.g. ``["repository:a/b:pull"]``."""

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DEFAULT_TOKEN_LIFETIME = 60.0
_TOKEN_MARGIN = 10.0


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


# --------------------------------------------------------------------------------------------------
# Credentials


@dataclass(frozen=True)
class Credentials:
    """A user and secret for one registry, and where they came from (for messages; never the secret)."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


class _AuthEntry(msgspec.Struct):
    auth: str = ""
    username: str = ""
    password: str = ""
    identitytoken: str = ""


class _ConfigFile(msgspec.Struct):
    auths: dict[str, _AuthEntry] = {}
    credHelpers: dict[str, str] = {}
    credsStore: str = ""


class _HelperAnswer(msgspec.Struct):
    Username: str = ""
    Secret: str = ""


def _host_key(key: str) -> str:
    """docker's normalisation of an ``auths`` key: no scheme, no path (``https://h/v1/`` -> ``h``)."""
    key = re.sub(r"^[a-z]+://", "", key.strip())
    return key.split("/", 1)[0].lower()


def _names_for(host: str) -> frozenset[str]:
    return _DOCKER_HUB_NAMES if host in _DOCKER_HUB_NAMES else frozenset({host.lower()})


def find_credentials(host: str, options: RegistryOptions) -> Credentials | None:
    """Credentials for ``host`` (a ``Reference.registry``), or ``None`` for anonymous access."""
    names = _names_for(host)
    for key, (user, password) in options.credentials.items():
        if _host_key(key) in names:
            return Credentials(user, password, source="explicit credentials")
    for path in _config_files(options):
        found = _from_config_file(path, host, names, options.credential_helper_timeout)
        if found is not None:
            return found
    log.debug("no credentials for %s", host)
    return None


def _config_files(options: RegistryOptions) -> list[Path]:
    """The file named in ``options.auth_file`` (skopeo's ``--authfile``) first; else docker's config.json, then
    podman's auth.json, where the environment says they are."""
    env = os.environ
    docker_dir = options.docker_config_dir or Path(env.get("DOCKER_CONFIG") or Path.home() / ".docker")
    files = [docker_dir / "config.json"]
    if options.auth_file is not None:
        files.insert(0, options.auth_file)
    elif env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    else:
        if env.get("XDG_RUNTIME_DIR"):
            files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
        files.append(Path.home() / ".config" / "containers" / "auth.json")
    return files


def _load_config(path: Path) -> _ConfigFile | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=_ConfigFile)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("ignoring unreadable credentials file %s: %s", path, exc)
        return None


def _from_config_file(path: Path, host: str, names: frozenset[str], timeout: float) -> Credentials | None:
    config = _load_config(path)
    if config is None:
        return None
    helpers = [helper for key, helper in config.credHelpers.items() if _host_key(key) in names]
    for helper in helpers + ([config.credsStore] if config.credsStore else []):
        found = _from_helper(helper, host, timeout)
        if found is not None:
            return found
    for key, entry in config.auths.items():
        if _host_key(key) in names:
            found = _from_entry(entry, f"{path} ({key})")
            if found is not None:
                return found
    return None


def _from_entry(entry: _AuthEntry, source: str) -> Credentials | None:
    user, password = entry.username, entry.password
    if entry.auth:
        try:
            user, _, password = base64.b64decode(entry.auth).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            log.debug("ignoring a malformed auth entry in %s", source)
            return None
    if not (user or entry.identitytoken):
        return None
    return Credentials(user, password, entry.identitytoken, source=source)


def _from_helper(helper: str, host: str, timeout: float) -> Credentials | None:
    """Ask ``docker-credential-HELPER get`` with the server on stdin; any failure means no credentials."""
    program = f"docker-credential-{helper}"
    server = DOCKER_HUB_KEY if host in _DOCKER_HUB_NAMES else host
    try:
        done = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("credential helper %s unusable: %s", program, type(exc).__name__)
        return None
    if done.returncode != 0:
        log.debug("credential helper %s has nothing for %s (exit %d)", program, host, done.returncode)
        return None
    try:
        answer = msgspec.json.decode(done.stdout, type=_HelperAnswer)
    except (msgspec.DecodeError, msgspec.ValidationError):
        log.debug("credential helper %s answered something that is not its JSON", program)
        return None
    if answer.Username == "<token>":
        return Credentials(identity_token=answer.Secret, source=f"credential helper {program}")
    return Credentials(answer.Username, answer.Secret, source=f"credential helper {program}")


# --------------------------------------------------------------------------------------------------
# Challenges


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic" or "bearer"
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def scopes(self) -> list[str]:
        return self.params.get("scope", "").split()


_CHALLENGE_START = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s+(?=[A-Za-z0-9_-]+\s*=)')
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """``WWW-Authenticate`` values -> challenges; quoted values may hold commas (``scope="r:a:pull,push"``)."""
    challenges: list[Challenge] = []
    for header in headers:
        position = 0
        while position < len(header):
            start = _CHALLENGE_START.match(header, position)
            if start is None:
                break
            params, position = _parse_params(header, start.end())
            challenges.append(Challenge(start.group(1).lower(), params))
    return challenges


def _parse_params(header: str, position: int) -> tuple[dict[str, str], int]:
    params: dict[str, str] = {}
    while True:
        if _CHALLENGE_START.match(header, position):
            return params, position
        match = _PARAM.match(header, position)
        if match is None or match.end() == position:
            return params, len(header)
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1).lower()] = value
        position = match.end()


# --------------------------------------------------------------------------------------------------
# The auth flow


class _TokenAnswer(msgspec.Struct):
    token: str = ""
    access_token: str = ""
    expires_in: float = 0


Flow = Generator[httpx.Request, httpx.Response, None]


class RegistryAuth(httpx.Auth):
    """Answers a registry's 401 challenges for one host; thread-safe, shared by all requests."""

    def __init__(self, host: str, lookup: Callable[[], Credentials | None]) -> None:
        self.host = host
        self._lookup = lookup
        self._lock = threading.Lock()
        self._looked_up = False
        self._credentials: Credentials | None = None
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}

    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._looked_up:
                self._credentials = self._lookup()
                self._looked_up = True
            return self._credentials

    def hint(self) -> str:
        """What to tell the user after a refusal: which credentials were used, or that there were none."""
        found = self.credentials()
        if found is None:
            return f"no credentials found for {self.host}"
        return f"credentials used: {found.source}"

    def auth_flow(self, request: httpx.Request) -> Flow:
        scopes = tuple(request.extensions.get(SCOPES_EXTENSION, ()))
        fresh = False
        challenge = self._remembered()
        if challenge is not None:
            fresh = yield from self._authorize(request, challenge, scopes)
        response = yield request
        if response.status_code != 401:
            return
        challenge = self._remember(response)
        if challenge is None or fresh or not _replayable(request):
            return  # a 401 right after a fresh token is the final answer
        sent = request.headers.get("Authorization")
        yield from self._authorize(request, challenge, scopes or tuple(challenge.scopes), refresh=True)
        if request.headers.get("Authorization") not in (None, sent):
            yield request

    def _authorize(
        self, request: httpx.Request, challenge: Challenge, scopes: tuple[str, ...], *, refresh: bool = False
    ) -> Generator[httpx.Request, httpx.Response, bool]:
        """Put Basic creds or a Bearer token on ``request``; True when the token was fetched just now."""
        if challenge.scheme == "basic":
            found = self.credentials()
            if found is not None and found.username:
                request.headers["Authorization"] = found.basic_header()
            return False
        if challenge.scheme != "bearer" or not challenge.realm:
            return False
        token = None if refresh else self._cached_token(scopes)
        fetched = token is None
        if token is None:
            token = yield from self._fetch_token(challenge, scopes, request.url)
        request.headers["Authorization"] = f"Bearer {token}"
        return fetched

    def _remembered(self) -> Challenge | None:
        with self._lock:
            return self._challenge

    def _remember(self, response: httpx.Response) -> Challenge | None:
        """Keep the first Bearer challenge (Harbor answers ``Basic realm="harbor"`` once a request is authorised)."""
        found = parse_challenges(response.headers.get_list("www-authenticate"))
        bearer = next((c for c in found if c.scheme == "bearer"), None)
        with self._lock:
            if bearer is not None and (self._challenge is None or self._challenge.scheme != "bearer"):
                self._challenge = Challenge("bearer", {k: v for k, v in bearer.params.items() if k != "scope"})
            elif self._challenge is None and found:
                self._challenge = Challenge(found[0].scheme, {})
            remembered = self._challenge
        if remembered is not None and remembered.scheme == "bearer" and bearer is not None:
            return Challenge("bearer", {**remembered.params, "scope": bearer.params.get("scope", "")})
        return remembered

    def _cached_token(self, scopes: tuple[str, ...]) -> str | None:
        key = tuple(sorted(scopes))
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def _fetch_token(
        self, challenge: Challenge, scopes: tuple[str, ...], origin: httpx.URL
    ) -> Generator[httpx.Request, httpx.Response, str]:
        found = self.credentials()
        response = yield self._token_request(challenge, scopes, origin, found)
        answer = self._token_answer(response)
        token = answer.token or answer.access_token
        lifetime = answer.expires_in if answer.expires_in > 0 else _DEFAULT_TOKEN_LIFETIME
        expires = time.monotonic() + lifetime - min(_TOKEN_MARGIN, lifetime / 4)
        with self._lock:
            self._tokens[tuple(sorted(scopes))] = (token, expires)
        log.debug("token for %s scopes %s, valid %.0fs", self.host, list(scopes) or "-", lifetime)
        return token

    def _token_request(
        self, challenge: Challenge, scopes: tuple[str, ...], origin: httpx.URL, found: Credentials | None
    ) -> httpx.Request:
        """GET realm?service=&scope=… (Basic auth when we have a user), or docker's OAuth POST for identity tokens."""
        realm = origin.join(challenge.realm)
        service = challenge.params.get("service", "")
        if found is not None and found.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": found.identity_token, "client_id": "imgbundle",
                    "service": service, "scope": " ".join(scopes)}
            return httpx.Request("POST", realm, data=form)
        params = ([("service", service)] if service else []) + [("scope", scope) for scope in scopes]
        url = realm
        for key, value in params:
            url = url.copy_add_param(key, value)
        headers = {"Authorization": found.basic_header()} if found is not None and found.username else {}
        return httpx.Request("GET", url, headers=headers)

    def _token_answer(self, response: httpx.Response) -> _TokenAnswer:
        """The token, or the error: 401/403 mean the credentials were refused; 429/5xx may be retried."""
        body = response.read()  # httpx reads every response of an auth flow anyway; token bodies are small
        what = f"token for {self.host}"
        if response.status_code in (401, 403):
            service = response.request.url.netloc.decode("ascii")
            raise AuthError(f"{self.host}: the token service at {service} refused the credentials ({self.hint()})")
        if response.status_code != 200:
            raise_for_answer(response, what, body=body)
        try:
            answer = msgspec.json.decode(body, type=_TokenAnswer)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise RegistryError(f"{what}: the token service answered something that is not a token") from None
        if not (answer.token or answer.access_token):
            raise AuthError(f"{what}: the token service gave no token ({self.hint()})")
        return answer


def _replayable(request: httpx.Request) -> bool:
    """Only a request whose body is in memory can be sent again after a 401."""
    try:
        _ = request.content  # raises while the body is a stream not yet read
    except httpx.RequestNotRead:
        return False
    return True

"""Real Docker Distribution registries for tests, started as subprocesses on 127.0.0.1.

Why real ones: a registry's answers (digests, error bodies, auth challenges) are the behaviour imgbundle must
meet; a fake would only echo our own assumptions. Four flavours, mirroring what sites run:

    registry        plain HTTP, no auth
    tls_registry    HTTPS with a per-session test CA (made with the ``openssl`` CLI)
    basic_registry  htpasswd basic auth (bcrypt via ``htpasswd -Bbn``) over plain HTTP
    token_registry  bearer tokens from an in-process token server shaped like Harbor's ``/service/token``

The ``registry_*`` helpers at the bottom read a registry with plain httpx so tests can check results with an
oracle that is not our own client code.

The process itself (free port, config, readiness, log tail, stop) is started by scripts/localregistry.py,
the one launcher the demo and the benchmark use too; a start failure becomes ``pytest.fail`` here.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import localregistry
from localregistry import REGISTRY_BINARY, free_port
from support.servers import refuse_unless_marked, starts_server

__all__ = [
    "MANIFEST_ACCEPT",
    "REGISTRY_BINARY",
    "CertAuthority",
    "RunningRegistry",
    "TokenRegistry",
    "TokenRequest",
    "TokenServer",
    "fetch_token",
    "free_port",
    "harbor_like_grants",
    "make_cert_authority",
    "registry_catalog",
    "registry_client",
    "registry_get_manifest",
    "registry_has_manifest",
    "registry_tags",
    "start_registry",
    "start_token_server",
]

TOKEN_TTL_S = 60

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
    ]
)


# --------------------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class CertAuthority:
    """A test CA plus one server certificate it signed for 127.0.0.1 and localhost."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class RunningRegistry:
    """One live registry process; ``storage_dir`` is the filesystem root holding ``docker/registry/v2``."""

    host: str
    url: str
    scheme: str
    storage_dir: Path
    config_path: Path
    log_path: Path
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None

    def ref(self, path: str) -> str:
        """An image reference on this registry, e.g. ``reg.ref("lib/app:1")``."""
        return f"{self.host}/{path}"


@dataclass(frozen=True)
class TokenRequest:
    """What the token server saw in one request. Passwords are never recorded."""

    method: str
    path: str
    query: dict[str, list[str]]
    scopes: list[str]
    service: str | None
    auth_sent: bool
    user: str | None
    status: int
    granted: list[dict[str, Any]]
    token: str | None = None
    """The bearer token issued, so tests can prove it never leaks into output or bundles."""


@dataclass(frozen=True, kw_only=True)
class TokenRegistry(RunningRegistry):
    """A bearer-token registry; ``username``/``password`` are the pusher's, who may pull and push anywhere."""

    token_url: str
    service: str
    issuer: str
    users: dict[str, str]
    token_requests: list[TokenRequest]


# --------------------------------------------------------------------------------------------------------------
# Small process helpers


def _run(args: list[str], *, input_bytes: bytes | None = None) -> bytes:
    """Run a CLI tool; a failure shows its stderr, because a silent openssl failure wastes an afternoon."""
    proc = subprocess.run(args, input=input_bytes, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _require_tools(*names: str) -> None:
    """Fail loudly, never skip: a missing tool in CI must turn the run red."""
    missing = [name for name in names if shutil.which(name) is None and not Path(name).exists()]
    if missing:
        pytest.fail(f"required test tools missing: {', '.join(missing)} (run .ci/run to install them)")


# --------------------------------------------------------------------------------------------------------------
# Certificates


def make_cert_authority(directory: Path) -> CertAuthority:
    """Make a CA and a server certificate (SAN IP:127.0.0.1, DNS:localhost) with the openssl CLI."""
    _require_tools("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertAuthority(
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
    )
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3",
          "-subj", "/CN=imgbundle test CA", "-keyout", str(ca.ca_key), "-out", str(ca.ca_cert),
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    csr = directory / "server.csr"
    _run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
          "-subj", "/CN=localhost", "-keyout", str(ca.server_key), "-out", str(csr)])
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.ca_cert), "-CAkey", str(ca.ca_key),
          "-CAcreateserial", "-days", "3", "-sha256", "-extfile", str(ext), "-out", str(ca.server_cert)])
    return ca


def _make_signing_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed RSA key and certificate for signing tokens; the cert is the registry's rootcertbundle."""
    key, cert = directory / "token-key.pem", directory / "token-cert.pem"
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3",
          "-subj", "/CN=imgbundle test token issuer", "-keyout", str(key), "-out", str(cert)])
    return key, cert


def _pem_to_der_b64(cert: Path) -> str:
    """Standard base64 of the DER certificate, the form JOSE's ``x5c`` wants."""
    der = _run(["openssl", "x509", "-in", str(cert), "-outform", "DER"])
    return base64.b64encode(der).decode()


# --------------------------------------------------------------------------------------------------------------
# Token server (Harbor-shaped)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """``repository:name:pull,push`` -> (type, name, actions); None when malformed."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


Grants = Callable[[str | None, str, str, list[str]], list[str]]


def harbor_like_grants(user: str | None, kind: str, name: str, requested: list[str]) -> list[str]:
    """pusher: pull,push anywhere (and the catalog); reader: pull; anonymous: pull under ``public/`` only."""
    if kind == "registry" and name == "catalog":
        allowed = {"*"} if user == "pusher" else set()
    elif kind != "repository":
        allowed = set()
    elif user == "pusher":
        allowed = {"pull", "push"}
    elif user == "reader":
        allowed = {"pull"}
    else:
        allowed = {"pull"} if name.startswith("public/") else set()
    return [action for action in requested if action in allowed]


class TokenServer:
    """A token service in a thread of the test process: GET /service/token, optional Basic auth, RS256 JWTs.

    Scopes the user lacks are dropped silently, as Harbor does; wrong credentials get 401.
    """

    def __init__(self, directory: Path, users: dict[str, str], *, grants: Grants = harbor_like_grants,
                 service: str = "imgbundle-test-registry", issuer: str = "imgbundle-test-issuer") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.grants = grants
        self.service = service
        self.issuer = issuer
        self.requests: list[TokenRequest] = []
        self.key_file, self.cert_file = _make_signing_cert(directory)
        self._x5c = _pem_to_der_b64(self.cert_file)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/service/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="token-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS: header carries the signing cert in ``x5c``, which Distribution checks against its roots."""
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = _run(["openssl", "dgst", "-sha256", "-sign", str(self.key_file)],
                         input_bytes=signing_input.encode())
        return f"{signing_input}.{_b64url(signature)}"

    def issue(self, user: str | None, scopes: list[str]) -> tuple[str, list[dict[str, Any]]]:
        """Token for ``user`` (None = anonymous) covering the granted part of ``scopes``."""
        access = []
        for scope in scopes:
            parsed = _parse_scope(scope)
            if parsed is None:
                continue
            kind, name, actions = parsed
            granted = self.grants(user, kind, name, actions)
            if granted:
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + TOKEN_TTL_S,
                  "nbf": now - 5, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        return self.sign(claims), access

    def _authenticate(self, header: str | None) -> tuple[bool, str | None]:
        """(ok, user). No header is anonymous and fine; a wrong password is not."""
        if header is None:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False, None
        if user in self.users and secrets.compare_digest(self.users[user], password):
            return True, user
        return False, user

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep pytest output clean; requests are recorded in server.requests instead

        return Handler

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(req.path)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        auth_header = req.headers.get("Authorization")
        ok, user = self._authenticate(auth_header)
        granted: list[dict[str, Any]] = []
        token: str | None = None
        if parsed.path != "/service/token":
            message = f"the token server has no {req.command} {parsed.path}, only GET /service/token"
            status, body = 404, {"errors": [{"code": "NOT_FOUND", "message": message}]}
        elif not ok:
            status, body = 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        else:
            token, granted = self.issue(user, scopes)
            status = 200
            body = {"token": token, "access_token": token, "expires_in": TOKEN_TTL_S,
                    "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.requests.append(TokenRequest(method=req.command, path=parsed.path, query=query, scopes=scopes,
                                          service=(query.get("service") or [None])[0],
                                          auth_sent=auth_header is not None, user=user, status=status,
                                          granted=granted, token=token))
        payload = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(payload)))
        if status == 401:
            req.send_header("WWW-Authenticate", 'Basic realm="token"')
        req.end_headers()
        req.wfile.write(payload)


@contextlib.contextmanager
def start_token_server(directory: Path, users: dict[str, str], **kwargs: Any) -> Iterator[TokenServer]:
    """Run a TokenServer for the duration of the block."""
    refuse_unless_marked("a token server")
    _require_tools("openssl")
    server = TokenServer(directory, users, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------------------
# Registry process (the launcher itself is scripts/localregistry.py, shared with the demo and the benchmark)


def _write_htpasswd(path: Path, users: dict[str, str]) -> None:
    _require_tools("htpasswd")
    lines = [_run(["htpasswd", "-Bbn", user, password]).decode().strip() for user, password in users.items()]
    path.write_text("\n".join(lines) + "\n")


def _auth_config(htpasswd_file: Path | None, token: TokenServer | None) -> dict[str, Any] | None:
    if htpasswd_file is not None:
        return {"htpasswd": {"realm": "imgbundle-test", "path": str(htpasswd_file)}}
    if token is not None:
        return {"token": {"realm": token.url, "service": token.service, "issuer": token.issuer,
                          "rootcertbundle": str(token.cert_file)}}
    return None


@contextlib.contextmanager
def start_registry(tmp_dir: Path, *, tls: CertAuthority | None = None, htpasswd: dict[str, str] | None = None,
                   token: TokenServer | None = None,
                   extra_config: dict[str, Any] | None = None) -> Iterator[RunningRegistry]:
    """Start a Distribution registry in ``tmp_dir``; yields a RunningRegistry (a TokenRegistry with ``token``).

    ``htpasswd`` maps user -> password; the first user's credentials go on the result. The log stays in
    ``tmp_dir`` (registry-N.log) for debugging.
    """
    if htpasswd and token:
        raise RuntimeError("a registry has one auth method: choose htpasswd or token")
    _require_tools(REGISTRY_BINARY)
    htpasswd_file = None
    if htpasswd:
        htpasswd_file = tmp_dir / "htpasswd"
        _write_htpasswd(htpasswd_file, htpasswd)
    ca_file = tls.ca_cert if tls else None
    try:
        # pick_port looks free_port up at call time, so a test can monkeypatch this module's free_port
        proc = localregistry.launch(tmp_dir, tls=(tls.server_cert, tls.server_key) if tls else None,
                                    ca_file=ca_file, auth=_auth_config(htpasswd_file, token),
                                    extra_config=extra_config, pick_port=lambda: free_port())
    except localregistry.RegistryStartError as error:
        pytest.fail(str(error))
    port = int(proc.host.rsplit(":", 1)[1])
    reg = _make_registry_record(tmp_dir, port, proc.scheme, proc.config_path, proc.log_path, ca_file, htpasswd,
                                token)
    try:
        yield reg
    finally:
        proc.stop()


def _make_registry_record(tmp_dir: Path, port: int, scheme: str, config_path: Path, log_path: Path,
                          ca_file: Path | None, htpasswd: dict[str, str] | None,
                          token: TokenServer | None) -> RunningRegistry:
    host = f"127.0.0.1:{port}"
    common: dict[str, Any] = dict(host=host, url=f"{scheme}://{host}", scheme=scheme,
                                  storage_dir=tmp_dir / "storage", config_path=config_path, log_path=log_path,
                                  ca_file=ca_file)
    if token is not None:
        return TokenRegistry(**common, username="pusher", password=token.users.get("pusher"),
                             token_url=token.url, service=token.service, issuer=token.issuer,
                             users=token.users, token_requests=token.requests)
    if htpasswd:
        user = next(iter(htpasswd))
        return RunningRegistry(**common, username=user, password=htpasswd[user])
    return RunningRegistry(**common)


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Trust exactly the test CA when there is one, else the system store."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _secret() -> str:
    return "pw-" + secrets.token_hex(8)


# --------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    """The session's test CA (ca_cert to trust) and a server cert for 127.0.0.1/localhost."""
    return make_cert_authority(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture(scope="session")
@starts_server
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """Shared plain-HTTP registry without auth; use unique repository names per test."""
    with start_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
@starts_server
def fresh_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A brand-new empty plain-HTTP registry for this test alone."""
    with start_registry(tmp_path_factory.mktemp("fresh-registry")) as reg:
        yield reg


@pytest.fixture
@starts_server
def registry_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RunningRegistry]]:
    """Call with start_registry's keyword arguments; every registry started is stopped after the test."""
    with contextlib.ExitStack() as stack:

        def factory(**kwargs: Any) -> RunningRegistry:
            return stack.enter_context(start_registry(tmp_path_factory.mktemp("registry-f"), **kwargs))

        yield factory


@pytest.fixture(scope="session")
@starts_server
def tls_registry(tmp_path_factory: pytest.TempPathFactory, test_ca: CertAuthority) -> Iterator[RunningRegistry]:
    """HTTPS registry whose certificate only ``test_ca`` vouches for (``ca_file`` is set)."""
    with start_registry(tmp_path_factory.mktemp("tls-registry"), tls=test_ca) as reg:
        yield reg


@pytest.fixture(scope="session")
@starts_server
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """Plain-HTTP registry with htpasswd basic auth: user ``alice``, a random per-session password."""
    with start_registry(tmp_path_factory.mktemp("basic-registry"), htpasswd={"alice": _secret()}) as reg:
        yield reg


@pytest.fixture(scope="session")
@starts_server
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    """Harbor-like token service with users ``pusher`` and ``reader`` (random per-session passwords)."""
    users = {"pusher": _secret(), "reader": _secret()}
    with start_token_server(tmp_path_factory.mktemp("token-server"), users) as server:
        yield server


@pytest.fixture(scope="session")
@starts_server
def token_registry(tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer) -> Iterator[TokenRegistry]:
    """Plain-HTTP registry with bearer-token auth from ``token_server``; ``token_requests`` records every request."""
    with start_registry(tmp_path_factory.mktemp("token-registry"), token=token_server) as reg:
        assert isinstance(reg, TokenRegistry)
        yield reg


# --------------------------------------------------------------------------------------------------------------
# Oracle helpers: plain httpx, independent of the bundler package


def fetch_token(reg: TokenRegistry, scopes: list[str], *, user: str | None = "pusher") -> str:
    """A bearer token from the registry's token service, as ``user`` (None = anonymous)."""
    auth = (user, reg.users[user]) if user else None
    params = [("service", reg.service)] + [("scope", s) for s in scopes]
    resp = httpx.get(reg.token_url, params=params, auth=auth, timeout=10, trust_env=False)
    resp.raise_for_status()
    return str(resp.json()["token"])


def registry_client(reg: RunningRegistry, scopes: list[str] | None = None) -> httpx.Client:
    """An httpx client for ``reg`` that trusts its CA and carries its credentials (a token for ``scopes``)."""
    verify = _ssl_context(reg.ca_file)
    headers: dict[str, str] = {}
    auth = None
    if isinstance(reg, TokenRegistry):
        headers["Authorization"] = f"Bearer {fetch_token(reg, scopes or [])}"
    elif reg.username is not None and reg.password is not None:
        auth = httpx.BasicAuth(reg.username, reg.password)
    return httpx.Client(base_url=reg.url, verify=verify, auth=auth, headers=headers, timeout=30,
                        trust_env=False)


def registry_has_manifest(reg: RunningRegistry, repo: str, ref: str) -> bool:
    """True when the registry has manifest ``ref`` (tag or digest) in ``repo``."""
    with registry_client(reg, [f"repository:{repo}:pull"]) as client:
        resp = client.head(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
    if resp.status_code == 404:
        return False
    resp.raise_for_status()
    return True


def registry_get_manifest(reg: RunningRegistry, repo: str, ref: str) -> tuple[bytes, str, str]:
    """(raw bytes, Content-Type, Docker-Content-Digest) of manifest ``ref`` in ``repo``."""
    with registry_client(reg, [f"repository:{repo}:pull"]) as client:
        resp = client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
    resp.raise_for_status()
    return resp.content, resp.headers.get("Content-Type", ""), resp.headers.get("Docker-Content-Digest", "")


def registry_catalog(reg: RunningRegistry) -> list[str]:
    """Every repository in the registry (follows ``Link`` pagination)."""
    repos: list[str] = []
    with registry_client(reg, ["registry:catalog:*"]) as client:
        url: str | None = "/v2/_catalog?n=1000"
        while url:
            resp = client.get(url)
            resp.raise_for_status()
            repos.extend(resp.json().get("repositories") or [])
            url = _next_link(resp)
    return repos


def registry_tags(reg: RunningRegistry, repo: str) -> list[str]:
    """Tags of ``repo``; empty when the repository does not exist."""
    with registry_client(reg, [f"repository:{repo}:pull"]) as client:
        resp = client.get(f"/v2/{repo}/tags/list")
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return list(resp.json().get("tags") or [])


def _next_link(resp: httpx.Response) -> str | None:
    """The ``rel="next"`` target of a Link header, as a path."""
    link = resp.headers.get("Link")
    if not link or 'rel="next"' not in link:
        return None
    return link.split(";", 1)[0].strip().strip("<>")


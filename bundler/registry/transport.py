"""HTTP plumbing for one registry host: TLS trust, proxies, pooling, and https-or-http like docker.

TLS trusts the system store (``ssl.create_default_context``), ``--ca-file`` and docker's
``/etc/docker/certs.d/HOST/*.crt`` (plus a ``client.cert``/``client.key`` pair found there).
A host in ``insecure`` or on loopback is tried with https first and falls back to plain http
when the server does not speak TLS; for ``insecure`` hosts https is not verified. Any other host
that answers plain HTTP fails saying so (``SchemeChooser.explain``), not with the TLS error.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import threading
import urllib.request
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpx

from bundler.errors import LocalIOError, Remedy, UnreachableError
from bundler.registry import urls
from bundler.registry.errors import install_log_redaction
from bundler.registry.options import MOST_SMALL_REQUESTS, RegistryOptions
from bundler.registry.retry import find_cause
from bundler.registry.wire import WireTransport

__all__ = ["SchemeChooser", "is_loopback", "make_http_client", "read_limited", "ssl_context"]

log = logging.getLogger("bundler.registry")


def _hostname(host: str) -> str:
    """``host`` without port and brackets: ``[::1]:5000`` -> ``::1``."""
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    name = _hostname(host).lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def ssl_context(host: str, options: RegistryOptions) -> ssl.SSLContext:
    """System trust plus our extra CAs; unverified for hosts the user declared insecure."""
    context = ssl.create_default_context()
    try:
        if options.ca_file is not None:
            context.load_verify_locations(cafile=str(options.ca_file))
        _load_docker_certs(context, options.certs_dir / host)
    except (OSError, ssl.SSLError) as exc:
        raise LocalIOError(f"cannot load TLS certificates for {host}: {exc}") from None
    if options.allows_insecure(host):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _load_docker_certs(context: ssl.SSLContext, directory: Path) -> None:
    """docker's per-registry directory: ``*.crt`` are CAs, ``NAME.cert`` + ``NAME.key`` a client pair."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.crt")):
        context.load_verify_locations(cafile=str(path))
    for cert in sorted(directory.glob("*.cert")):
        key = cert.with_suffix(".key")
        if key.is_file():
            context.load_cert_chain(str(cert), str(key))


class _NoCookies(httpx.Cookies):
    """Keeps nothing: Harbor's ``sid`` cookie would turn later API calls into CSRF-checked ones."""

    def __init__(self) -> None:
        super().__init__(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))

    def extract_cookies(self, response: httpx.Response) -> None:
        """Nothing to look for: httpx would copy every answer and its request into urllib's types to find
        ``Set-Cookie``, a large share of the client's CPU per small request."""


class _Client(httpx.Client):
    """httpx's client with ``_NoCookies`` for its cookies, whatever it is given."""

    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        """Ignored: no cookies are kept."""


def make_http_client(host: str, options: RegistryOptions, auth: httpx.Auth | None = None) -> httpx.Client:
    """One pooled HTTP/1.1 client for ``host``; environment proxies apply except on loopback."""
    install_log_redaction()
    context = ssl_context(host, options)
    return _Client(
        auth=auth,
        transport=WireTransport(context, keepalive=max(options.jobs, MOST_SMALL_REQUESTS)),
        mounts=_proxy_mounts(host, context, options),
        timeout=httpx.Timeout(
            connect=options.connect_timeout,
            read=options.read_timeout,
            write=options.read_timeout,
            pool=options.read_timeout,
        ),
        follow_redirects=False,
        trust_env=False,
    )


def _proxy_mounts(host: str, context: ssl.SSLContext, options: RegistryOptions) -> dict[str, httpx.BaseTransport]:
    """Per scheme, httpx's own transport through the proxy that ``*_PROXY`` names for ``host``.

    httpx reads these variables only when it makes the transport itself; ours is direct. Loopback
    and the hosts ``NO_PROXY`` lists are never proxied.
    """
    if is_loopback(host) or urllib.request.proxy_bypass(host):
        return {}
    proxies = urllib.request.getproxies_environment()
    limits = httpx.Limits(max_connections=options.jobs + 2, max_keepalive_connections=options.jobs)
    mounts: dict[str, httpx.BaseTransport] = {}
    for scheme in ("http", "https"):
        proxy = proxies.get(scheme) or proxies.get("all")
        if proxy:
            mounts[f"{scheme}://"] = httpx.HTTPTransport(proxy=proxy, verify=context, limits=limits)
    return mounts


class SchemeChooser:
    """Decides once per host whether it speaks https or (only when allowed) plain http."""

    def __init__(self, host: str, options: RegistryOptions) -> None:
        self.host = host
        self.may_fall_back = options.allows_insecure(host) or is_loopback(host)
        self._scheme: str | None = None if self.may_fall_back else "https"
        self._lock = threading.Lock()

    def scheme(self, client: httpx.Client) -> str:
        if self._scheme is None:
            with self._lock:
                if self._scheme is None:
                    self._scheme = self._probe(client)
        return self._scheme

    def _probe(self, client: httpx.Client) -> str:
        """Ask ``/v2/`` over https; on a TLS failure other than an untrusted certificate, try http."""
        try:
            client.get(urls.ping("https", self.host), auth=None).close()
            return "https"
        except httpx.ConnectError as error:
            if _untrusted_certificate(error):
                raise
            https_error = error
        # outside the ``except``: a fault on the plain probe must not carry the TLS error as its context
        if not _speaks_plain_http(client, self.host):
            raise https_error
        log.debug("%s does not speak TLS; using plain http", self.host)
        return "http"

    def explain(self, client: httpx.Client, error: httpx.ConnectError) -> None:
        """After a failed TLS handshake with a host that may not use plain http: when it answers plain
        HTTP, raise that as the cause (the user may allow it); else return, ``error`` stands."""
        if self.may_fall_back or not _tls_failed(error) or _untrusted_certificate(error):
            return
        try:
            plain = _speaks_plain_http(client, self.host)
        except httpx.TransportError:
            return
        if plain:
            raise UnreachableError(f"{self.host} answers plain HTTP, not HTTPS", remedy=Remedy.ALLOW_PLAIN_HTTP,
                                   remedy_target=self.host)


def _tls_failed(exc: BaseException) -> bool:
    """True when the connection was made and the TLS handshake on it failed."""
    return find_cause(exc, ssl.SSLError) is not None


def _untrusted_certificate(exc: BaseException) -> bool:
    """True when the server does speak TLS but its certificate is not trusted: never downgrade then."""
    return find_cause(exc, ssl.SSLCertVerificationError) is not None


def _speaks_plain_http(client: httpx.Client, host: str) -> bool:
    """Whether ``/v2/`` over http gets an HTTP answer; a TLS server's "400 plain HTTP sent to HTTPS" is not one.

    A busy registry's 5xx or 429 is still a plain-HTTP answer. A dropped connection or timeout is
    raised (retryable), so that one fault on this probe does not pass for a broken TLS handshake.
    """
    response = client.get(urls.ping("http", host), auth=None)
    response.close()
    return response.status_code != 400


def read_limited(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a (possibly streamed) body: error bodies from proxies can be anything."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[:limit]

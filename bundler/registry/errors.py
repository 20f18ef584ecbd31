"""The one place where HTTP trouble becomes imgbundle's error tree (``bundler.errors``).

    httpx.TransportError (after retries)  -> UnreachableError       host named, TLS cause explained
    httpx.DecodingError                   -> RegistryContentError
    other httpx errors                    -> RegistryError / ImgbundleError (a bug)
    ContentMismatchError                  -> RegistryContentError   reference named
    Transient (after retries)             -> the status error it carries
    GaveUp (retries over)                 -> its last failure's error, worded with the mix of all tries
    HTTP status + OCI error body          -> ``map_status``: 401 Auth, 403 Auth/PushRefused, 404 NotFound,
                                             412/413 PushRefused, MANIFEST_BLOB_UNKNOWN ReferenceUnknown,
                                             DIGEST_INVALID/SIZE_INVALID Content

Decisions follow the HTTP status; the OCI error code is a hint for the message (Harbor's codes are
its own). Messages are one line, name the reference or host, and never carry credentials: URLs
lose their userinfo and token-like query values, ``Bearer``/``Basic`` values are masked.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import httpx
import msgspec

from bundler.errors import (
    AuthError,
    ContentMismatchError,
    ImgbundleError,
    NotFoundError,
    PushRefusedError,
    ReferenceUnknownError,
    RegistryContentError,
    RegistryError,
    Remedy,
    UnreachableError,
)
from bundler.registry.options import RegistryOptions, RetryNotice
from bundler.registry.retry import (
    RETRYABLE_STATUSES,
    GaveUp,
    Notify,
    Transient,
    find_cause,
    is_unknown_host,
    parse_retry_after,
)
from bundler.registry.wire import BodyCutShort

__all__ = [
    "OciError",
    "install_log_redaction",
    "map_failure",
    "map_httpx_error",
    "map_status",
    "mapped",
    "parse_error_body",
    "raise_for_answer",
    "redact",
    "redact_url",
    "retry_notifier",
]

E = TypeVar("E", bound=ImgbundleError)

_MAX_MESSAGE = 400
_SECRET_PARAM = re.compile(
    r"(?i)([?&;][^=&#\s]*(?:token|signature|sig|credential|secret|password|passwd|key|auth|state)[^=&#\s]*=)[^&#\s]*"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_AUTH_VALUE = re.compile(r"(?i)\b(Bearer|Basic)\s+(?!realm)[A-Za-z0-9._~+/-]{8,}=*")
_SECRET_HEADER = re.compile(
    r"(?i)((?:set-cookie|cookie)['\"]?\s*[:,]\s*b?['\"]?)[^'\"\r\n]+"
)
_HTTP_LOGGERS = ("httpx", "bundler.registry.wire", "httpcore.connection", "httpcore.connection_pool",
                 "httpcore.http11", "httpcore.http2", "httpcore.proxy", "httpcore.socks")
"""Our transport (and httpcore, for proxied hosts) traces every response's headers at DEBUG (Harbor's ``sid``
session cookie among them), httpx every URL at INFO (a storage back end's pre-signed URL carries its signature)."""
_HARBOR_MISSING_PROJECT = re.compile(r"(?i)project\s+(\S+)\s+not\s+found")
_CONTENT_CODES = frozenset({"DIGEST_INVALID", "SIZE_INVALID"})


def redact(text: str) -> str:
    """``text`` without userinfo in URLs, token-like query values or Authorization values."""
    text = _USERINFO.sub(r"\1***@", text)
    text = _SECRET_HEADER.sub(r"\1***", text)
    text = _SECRET_PARAM.sub(r"\1***", text)
    return _AUTH_VALUE.sub(r"\1 ***", text)


def redact_url(url: httpx.URL | str) -> str:
    return redact(str(url))


class _RedactingFilter(logging.Filter):
    """Passes every record of the HTTP libraries, with ``redact`` applied to its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction() -> None:
    """Put the redacting filter on httpx's and httpcore's loggers (a logger's filters do not reach its children)."""
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactingFilter) for f in logger.filters):
            logger.addFilter(_RedactingFilter())


def _one_line(text: str) -> str:
    text = " ".join(redact(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


class OciError(msgspec.Struct):
    """One entry of an OCI/Distribution error body ``{"errors": [...]}``."""

    code: str = ""
    message: str = ""
    detail: object = None


class _ErrorBody(msgspec.Struct):
    errors: list[OciError] = []


def parse_error_body(content: bytes) -> list[OciError]:
    """The OCI errors in a body, or ``[]`` for empty, HTML (proxies) or otherwise foreign bodies."""
    try:
        return msgspec.json.decode(content, type=_ErrorBody).errors
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []


def _describe_errors(errors: list[OciError]) -> str:
    parts = []
    for error in errors[:3]:
        text = ": ".join(part for part in (error.code, error.message) if part)
        if isinstance(error.detail, str) and error.detail:
            text += f" [{error.detail}]"
        elif isinstance(error.detail, dict) and error.detail:
            text += " [" + ", ".join(f"{key}={value}" for key, value in error.detail.items())[:120] + "]"
        parts.append(text)
    return "; ".join(part for part in parts if part)


def _netloc(url: httpx.URL) -> str:
    return f"{url.host}:{url.port}" if url.port else url.host


def _response_body(response: httpx.Response) -> bytes:
    try:
        return response.content
    except httpx.ResponseNotRead:
        return b""


def map_status(
    response: httpx.Response, what: str, *, body: bytes | None = None, write: bool = False, auth_hint: str = ""
) -> RegistryError:
    """The error for a final non-success answer to a request about ``what`` (a reference).

    ``body`` is the (possibly truncated) response body when the response was streamed.
    """
    status = response.status_code
    errors = parse_error_body(_response_body(response) if body is None else body)
    host = _netloc(response.request.url)
    said = _describe_errors(errors) or f"{status} {response.reason_phrase}".strip()
    codes = {error.code for error in errors}
    error: RegistryError
    if status == 401:
        error = AuthError(_unauthorized(host, errors, said, auth_hint, write))
    elif status == 403:
        cls = PushRefusedError if write else AuthError
        error = cls(f"{'push refused' if write else 'access denied'} by {host} ({said})")
    elif status == 404:
        error = NotFoundError(f"not found on {host} ({said})")
    elif status == 412 and write:
        error = PushRefusedError(f"{host} refused the write: an immutable tag or a policy ({said})")
    elif status == 413:
        error = PushRefusedError(f"request too large for {host} or a proxy in front of it",
                                 remedy=Remedy.SMALLER_CHUNKS)
    elif "MANIFEST_BLOB_UNKNOWN" in codes and write:  # before DIGEST_INVALID: Distribution sends both, see the class
        error = ReferenceUnknownError(f"{host} does not find what the manifest names ({said})")
    elif codes & _CONTENT_CODES:
        error = RegistryContentError(f"{host} rejected the content ({said})")
    elif status == 429:
        error = RegistryError(f"{host} keeps rate-limiting us ({said}); try again later",
                              remedy=Remedy.FEWER_REQUESTS)
    else:
        error = RegistryError(f"{host} answered {status} ({said})")
    return _about(error, what)


def _about(error: E, what: str) -> E:
    """``error`` as one line without secrets, about ``what``."""
    return type(error)(_one_line(error.detail), remedy=error.remedy, subject=_one_line(what))


def raise_for_answer(
    response: httpx.Response, what: str, *, body: bytes, write: bool = False, auth_hint: str = "",
    remedy: Remedy | None = None,
) -> NoReturn:
    """Raise the error for a non-success answer; as ``Transient`` when its status is worth a retry.

    ``remedy`` is what the user can do about a refusal (401, 403), which only the caller knows."""
    error = map_status(response, what, body=body, write=write, auth_hint=auth_hint)
    if response.status_code in (401, 403) and remedy is not None:
        error.remedy = remedy
    if response.status_code in RETRYABLE_STATUSES:
        raise Transient(error, parse_retry_after(response.headers.get("retry-after")), response.status_code)
    raise error


def _unauthorized(host: str, errors: list[OciError], said: str, auth_hint: str, write: bool) -> str:
    for error in errors:
        missing = _HARBOR_MISSING_PROJECT.search(error.message)
        if missing:
            project = missing.group(1).strip("\"'")
            return (
                f"project {project} does not exist on {host}; create it first "
                f"(Harbor: Projects > New Project, or POST /api/v2.0/projects)"
            )
    need = ", push (write) rights needed" if write else ""
    hint = f"; {auth_hint}" if auth_hint else ""
    return f"{host} refused access ({said}){need}{hint}"


def map_httpx_error(exc: Exception, host: str, what: str) -> ImgbundleError:
    """The imgbundle error for any exception httpx raises (each class has its line here)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return map_status(exc.response, what)
    host = _request_host(exc, host)
    if isinstance(exc, httpx.TransportError):
        reason, remedy = _transport_reason(exc, host)
        return _about(UnreachableError(reason, remedy=remedy), what if what != host else "")
    if isinstance(exc, httpx.DecodingError):
        return _about(RegistryContentError(f"the answer of {host} could not be decoded ({exc})"), what)
    if isinstance(exc, httpx.TooManyRedirects):
        return _about(RegistryError(f"{host} redirected too many times"), what)
    if isinstance(exc, httpx.InvalidURL):
        return _about(RegistryError(f"{host} sent an unusable URL ({exc})"), what)
    return _about(ImgbundleError(f"internal HTTP client error with {host}: {type(exc).__name__}: {exc}"), what)


def _request_host(exc: Exception, fallback: str) -> str:
    if isinstance(exc, httpx.RequestError):
        try:
            return _netloc(exc.request.url)
        except RuntimeError:  # raised by ``.request`` when httpx did not attach one
            pass
    return fallback


def _transport_reason(exc: httpx.TransportError, host: str) -> tuple[str, Remedy | None]:
    verify = find_cause(exc, ssl.SSLCertVerificationError)
    if verify is not None:
        reason = getattr(verify, "verify_message", "") or str(verify)
        if getattr(verify, "verify_code", None) in _NAME_MISMATCH:  # trusted or not, another CA would not help
            return f"the TLS certificate of {host} is not issued for that name ({reason}); use a name it lists", None
        return (
            f"TLS certificate of {host} is not trusted ({reason}); put the CA in /etc/docker/certs.d/{host}/ca.crt",
            Remedy.TRUST_CA,
        )
    tls = find_cause(exc, ssl.SSLError)
    if tls is not None:
        return f"TLS handshake with {host} failed ({getattr(tls, 'reason', None) or tls})", None
    if is_unknown_host(exc):
        return f"cannot connect to {host}: the name does not resolve" + _detail(exc), None
    return _TRANSPORT_REASONS.get(type(exc), "connection to {host} failed").format(host=host) + _detail(exc), None


_NAME_MISMATCH = frozenset({62, 64})
"""OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH."""

_TRANSPORT_REASONS: dict[type, str] = {
    httpx.ConnectTimeout: "connecting to {host} timed out",
    httpx.ReadTimeout: "{host} did not answer in time",
    httpx.WriteTimeout: "sending to {host} timed out",
    httpx.PoolTimeout: "no free connection to {host} in time",
    httpx.ConnectError: "cannot connect to {host}",
    httpx.ReadError: "connection to {host} dropped while reading",
    httpx.WriteError: "connection to {host} dropped while sending",
    httpx.CloseError: "closing the connection to {host} failed",
    BodyCutShort: "{host} cut the answer short",
    httpx.RemoteProtocolError: "{host} broke the HTTP protocol or closed the connection",
    httpx.LocalProtocolError: "invalid request to {host}",
    httpx.ProxyError: "the proxy refused the connection to {host}",
    httpx.UnsupportedProtocol: "unsupported URL scheme for {host}",
}


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return f" ({text})" if text else ""


def retry_notifier(host: str, options: RegistryOptions) -> Notify | None:
    """The ``RetryPolicy.notify`` that tells ``options.on_retry`` of a retry, the failure worded as the error
    it would end as; ``None`` when nobody listens."""
    listener = options.on_retry
    if listener is None:
        return None

    def notify(what: str, request: str, failure: BaseException, attempt: int, delay: float) -> None:
        error = map_failure(failure, host, what)
        unreachable = isinstance(failure, (httpx.ConnectError, httpx.ConnectTimeout))
        listener(RetryNotice(what, request, error.about(what), attempt, options.retries, delay, unreachable))

    return notify


_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.CookieConflict, httpx.StreamError)


@contextmanager
def mapped(host: str, what: str) -> Iterator[None]:
    """Translate everything below into ``bundler.errors`` for an operation on ``what``."""
    try:
        yield
    except GaveUp as gave_up:
        raise map_gave_up(gave_up, host, what) from gave_up.failure
    except Transient as transient:
        raise transient.final from None
    except ContentMismatchError as exc:
        raise _about(RegistryContentError(str(exc)), what) from None
    except _HTTPX_ERRORS as exc:
        raise map_httpx_error(exc, host, what) from exc


def map_failure(failure: BaseException, host: str, what: str) -> ImgbundleError:
    """The error for a retryable failure (an answer or a dropped connection) that ended the retries."""
    if isinstance(failure, Transient):
        return failure.final
    if isinstance(failure, Exception):
        return map_httpx_error(failure, host, what)
    return ImgbundleError(repr(failure), subject=what)


def map_gave_up(gave_up: GaveUp, host: str, what: str) -> ImgbundleError:
    """The last failure's kind of error, saying what was asked of whom and how every try failed.

    The last failure's remedy holds only when every try failed alike (a rate limit, say)."""
    last = map_failure(gave_up.failure, host, what)
    alike = len(gave_up.tries) <= 1
    return type(last)(_one_line(f"{gave_up.request} on {host} failed {gave_up.mix}; last: {last.about(what)}"),
                      remedy=last.remedy if alike else None, remedy_target=last.remedy_target if alike else "",
                      subject=what)

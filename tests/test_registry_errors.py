"""The registry's error mapping, redaction, retry policy and options, without a server."""

from __future__ import annotations

import inspect
import socket
import ssl
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from bundler.cli.errors import describe
from bundler.errors import (
    AuthError,
    ImgbundleError,
    InputError,
    NotFoundError,
    PushRefusedError,
    ReferenceUnknownError,
    RegistryContentError,
    RegistryError,
    Remedy,
    UnreachableError,
)
from bundler.registry.errors import map_httpx_error, map_status, mapped, parse_error_body, redact
from bundler.registry.options import Backoff, MiB, RegistryOptions
from bundler.registry.retry import RETRYABLE_STATUSES, Transient, is_retryable, parse_retry_after

HOST = "reg.example:5000"
URL = f"https://{HOST}/v2/lib/app/manifests/1"


def httpx_exception_classes() -> list[type[Exception]]:
    classes = [getattr(httpx, name) for name in httpx.__all__]
    return [cls for cls in classes if inspect.isclass(cls) and issubclass(cls, Exception)]


def instantiate(cls: type[Exception]) -> Exception:
    request = httpx.Request("GET", URL)
    if cls is httpx.HTTPStatusError:
        return cls("boom", request=request, response=httpx.Response(404, request=request))
    if issubclass(cls, httpx.RequestError):
        return cls("boom", request=request)
    if issubclass(cls, httpx.StreamError) and cls is not httpx.StreamError:
        return cls()
    return cls("boom")


@pytest.mark.parametrize("cls", httpx_exception_classes(), ids=lambda cls: cls.__name__)
def test_every_httpx_exception_is_mapped(cls: type[Exception]) -> None:
    exc = instantiate(cls)
    mapped_error = map_httpx_error(exc, HOST, "reg.example:5000/lib/app:1")
    assert isinstance(mapped_error, ImgbundleError)
    assert "\n" not in str(mapped_error) and HOST in str(mapped_error)
    if isinstance(exc, httpx.TransportError):
        assert isinstance(mapped_error, UnreachableError)
    with pytest.raises(ImgbundleError):
        with mapped(HOST, "what"):
            raise exc


def test_the_list_of_httpx_exceptions_is_complete() -> None:
    names = {cls.__name__ for cls in httpx_exception_classes()}
    assert {"HTTPError", "TransportError", "StreamError", "InvalidURL", "CookieConflict", "ConnectTimeout"} <= names
    assert len(names) >= 27


def test_a_name_that_does_not_resolve_fails_at_once() -> None:
    """Asking the resolver again will not make the name exist; a resolver that could not answer may next time."""
    unknown = httpx.ConnectError("[Errno -2] Name or service not known", request=httpx.Request("GET", URL))
    unknown.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert not is_retryable(unknown)
    assert "the name does not resolve" in str(map_httpx_error(unknown, HOST, "x"))
    busy = httpx.ConnectError("[Errno -3] Temporary failure", request=httpx.Request("GET", URL))
    busy.__cause__ = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert is_retryable(busy) and "does not resolve" not in str(map_httpx_error(busy, HOST, "x"))


def test_tls_causes_are_explained() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate"
    error = httpx.ConnectError("handshake failed", request=httpx.Request("GET", URL))
    error.__cause__ = cause
    mapped_error = map_httpx_error(error, HOST, "x")
    assert "not trusted (self-signed certificate)" in str(mapped_error) and mapped_error.remedy is Remedy.TRUST_CA
    assert "--ca-file" in describe(mapped_error) and "--" not in str(mapped_error)
    assert not is_retryable(error)
    assert is_retryable(httpx.ReadError("reset", request=httpx.Request("GET", URL)))


def response(status: int, body: bytes = b"", *, method: str = "GET", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers, request=httpx.Request(method, URL))


def oci_body(code: str, message: str, detail: object = None) -> bytes:
    import json

    return json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}).encode()


DISTRIBUTION_LINK_RACE = (
    b'{"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match uploaded content"},'
    b' {"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": "sha256:abc"}]}')
"""Distribution 2.8's answer to a manifest PUT while another writer re-links a child it names."""


@pytest.mark.parametrize(
    ("status", "write", "body", "expected"),
    [
        (401, False, oci_body("UNAUTHORIZED", "authentication required"), AuthError),
        (403, False, oci_body("DENIED", "requested access to the resource is denied"), AuthError),
        (403, True, oci_body("DENIED", "Quota exceeded"), PushRefusedError),
        (404, False, oci_body("MANIFEST_UNKNOWN", "manifest unknown", {"Tag": "1"}), NotFoundError),
        (412, True, oci_body("PRECONDITION", "immutable tag"), PushRefusedError),
        (413, True, b"<html><body><h1>413 Request Entity Too Large</h1></body></html>", PushRefusedError),
        (400, True, oci_body("DIGEST_INVALID", "provided digest did not match uploaded content"), RegistryContentError),
        (400, True, oci_body("MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", "sha256:abc"), ReferenceUnknownError),
        (400, True, DISTRIBUTION_LINK_RACE, ReferenceUnknownError),
        (503, False, b"", RegistryError),
    ],
)
def test_status_mapping(status: int, write: bool, body: bytes, expected: type[RegistryError]) -> None:
    error = map_status(response(status, body), "reg.example:5000/lib/app:1", write=write)
    assert type(error) is expected
    message = str(error)
    assert message.startswith("reg.example:5000/lib/app:1: ") and "\n" not in message
    if status == 413:
        assert error.remedy is Remedy.SMALLER_CHUNKS and "<html>" not in message
        assert "--chunk-size" in describe(error)


def test_harbor_missing_project_is_explained() -> None:
    body = oci_body("UNAUTHORIZED", "project newproj not found")
    message = str(map_status(response(401, body), "harbor.example/newproj/app:1", write=True))
    assert "project newproj does not exist" in message and "/api/v2.0/projects" in message


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>oops</html>", b"null", b"[]", b'{"errors": "nope"}', b'{"errors": [{"code": 5}]}', b"\xff\xfe"],
)
def test_error_bodies_are_parsed_defensively(body: bytes) -> None:
    assert parse_error_body(body) == []
    assert isinstance(map_status(response(500, body), "x"), RegistryError)


def test_redaction() -> None:
    text = (
        "GET https://user:s3cret@reg.example/v2/?token=abc.def&service=x and "
        "https://bucket.s3/obj?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA&partNumber=1 "
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig and Basic YWxpY2U6c2VjcmV0 realm: Basic realm=\"x\""
    )
    cleaned = redact(text)
    for secret in ("s3cret", "abc.def", "deadbeef", "AKIA", "eyJhbGciOiJSUzI1NiJ9", "YWxpY2U6c2VjcmV0"):
        assert secret not in cleaned
    assert "service=x" in cleaned and "partNumber=1" in cleaned and 'Basic realm="x"' in cleaned


def test_messages_never_carry_urls_with_secrets() -> None:
    request = httpx.Request("GET", "https://alice:hunter2@reg.example/v2/x?access_token=tok123")
    error = httpx.ConnectError("cannot reach https://alice:hunter2@reg.example/v2/x?access_token=tok123", request=request)
    message = str(map_httpx_error(error, HOST, "x"))
    assert "hunter2" not in message and "tok123" not in message


def test_transient_becomes_its_final_error() -> None:
    final = RegistryError("x: reg answered 503")
    with pytest.raises(RegistryError) as caught, mapped(HOST, "x"):
        raise Transient(final, 1.0)
    assert caught.value is final


# --------------------------------------------------------------------------------------------------
# Retry policy and options


def test_retryable_statuses() -> None:
    assert RETRYABLE_STATUSES == {408, 425, 429, 500, 502, 503, 504}


def test_retry_after_parsing() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("7") == 7.0
    date = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(date, now=lambda: now) == pytest.approx(30.0)
    assert parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT", now=lambda: now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("-3") is None


def test_backoff_delays_grow_and_are_capped() -> None:
    backoff = Backoff()
    for attempt, nominal in enumerate([0.5, 1, 2, 4, 8, 10, 10]):
        assert nominal * 0.9 <= backoff.delay(attempt) <= nominal * 1.1


def test_options_validate_and_choose_upload_mode() -> None:
    with pytest.raises(InputError):
        RegistryOptions(chunk_size=0)
    with pytest.raises(InputError):
        RegistryOptions(jobs=0)
    defaults = RegistryOptions()
    assert defaults.upload_chunk_size(64 * MiB) is None
    assert defaults.upload_chunk_size(64 * MiB + 1) == 16 * MiB
    small = RegistryOptions(chunk_size=MiB)
    assert small.upload_chunk_size(MiB) is None and small.upload_chunk_size(MiB + 1) == MiB
    assert "password" not in repr(RegistryOptions(credentials={"h": ("u", "password")}))

"""``RegistryClient``: the distribution API of one registry host, in registry terms only.

Every operation is one retried unit (``retry.retry_call``) inside one error-mapping boundary
(``errors.mapped``); each request names the token scopes it needs in its extensions, and
``RegistryAuth`` does the rest. Ordering rules for writers: blobs before the manifests that
reference them, child manifests before the index that lists them.

Progress, which keeps retries going (``retry.Activity``), is an operation done, a blob chunk
received or an upload chunk acknowledged; a step redone on every try (opening an upload) is not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import httpx
import msgspec

from bundler.digest import Digest, DigestVerifier
from bundler.errors import (
    ContentMismatchError,
    ImgbundleError,
    InputError,
    RegistryContentError,
    RegistryError,
    Remedy,
)
from bundler.oci import (
    ACCEPT_MANIFESTS,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Placement,
    RawManifest,
    detect_media_type,
)
from bundler.reference import registry_endpoint
from bundler.registry import ranged, urls
from bundler.registry.auth import SCOPES_EXTENSION, RegistryAuth, find_credentials, pull_scope, push_scope
from bundler.registry.errors import map_failure, mapped, raise_for_answer, redact_url, retry_notifier
from bundler.registry.options import MiB, RegistryOptions
from bundler.registry.ranged import RangeNotHonoured, ranged_chunks
from bundler.registry.retry import (
    RETRYABLE,
    RETRYABLE_STATUSES,
    Activity,
    GaveUp,
    RetryPolicy,
    is_outage,
    retry_call,
)
from bundler.registry.transport import SchemeChooser, make_http_client, read_limited
from bundler.registry.wire import BODY_CHUNK

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RegistryClient"]

log = logging.getLogger("bundler.registry")

T = TypeVar("T")
_Listing = TypeVar("_Listing", bound=msgspec.Struct)

READ_CHUNK = BODY_CHUNK
"""Blob bodies are handed on in the pieces our transport reads: no copy between the two."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_ERROR_BODY = 64 * 1024
OCTETS = "application/octet-stream"
CATALOG_SCOPE = "registry:catalog:*"
_STATUS_ANSWERS = frozenset(range(200, 500)) - RETRYABLE_STATUSES
"""Answers to an upload-status GET that settle whether to resume (204) or start over (the rest)."""


class _Page(msgspec.Struct):
    tags: list[str] | None = None
    repositories: list[str] | None = None


class _Referrers(msgspec.Struct):
    manifests: list[Descriptor] = []


class RegistryClient:
    """One registry host (as in ``Reference.registry``) as a read and write store (``bundler.stores``);
    thread-safe; a context manager that closes its pool."""

    page_size = 1000
    """Entries asked per page of ``tags_list``/``catalog`` (``n=``); registries may give fewer."""

    def __init__(self, host: str, options: RegistryOptions | None = None) -> None:
        self.host = host
        self.endpoint = registry_endpoint(host)
        self.options = options or RegistryOptions()
        self._auth = RegistryAuth(self.endpoint, lambda: find_credentials(host, self.options))
        self._http = make_http_client(self.endpoint, self.options, self._auth)
        self._schemes = SchemeChooser(self.endpoint, self.options)
        self._policy = RetryPolicy.from_options(self.options, retry_notifier(self.endpoint, self.options))
        self._activity = Activity()
        self._outage = _Outage(self.endpoint)
        self._storage: dict[str, httpx.Client] = {}
        self._storage_lock = threading.Lock()
        self._referrers_api: bool | None = None
        """Whether the host has the referrers API: unknown until its first answer (a 404 says it has none)."""
        self._referrers_probe = threading.Lock()
        """Held by the one request that finds out; the others wait for its answer."""
        self._ranged_slot = threading.Lock()
        """Held by the one blob being fetched in ranges."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        with self._storage_lock:
            for client in self._storage.values():
                client.close()
            self._storage.clear()

    # ----------------------------------------------------------------------------------------------
    # Plumbing

    def _url(self, build: Callable[..., httpx.URL], *args: str) -> httpx.URL:
        return build(self._schemes.scheme(self._http), self.endpoint, *args)

    def _run(self, what: str, request: str, attempt: Callable[[], T]) -> T:
        """One operation (``request`` says which, for messages): retried, its failures mapped."""
        with mapped(self.endpoint, what), self._outage.guard(what):
            result = retry_call(self._policy, what, attempt, request, self._activity)
        self._activity.moved()
        return result

    def _send(
        self,
        method: str,
        url: httpx.URL,
        *,
        what: str,
        scopes: list[str],
        ok: Iterable[int] = (200,),
        write: bool = False,
        headers: dict[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        stream: bool = False,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        """One request; a response with a status in ``ok``, else the mapped error (``Transient`` if retryable)."""
        http = client or self._http
        extensions = {SCOPES_EXTENSION: scopes}
        request = http.build_request(method, url, headers=headers, content=content, extensions=extensions)
        try:
            response = http.send(request, stream=stream)
        except httpx.ConnectError as error:
            if http is self._http:
                self._schemes.explain(http, error)
            raise
        if log.isEnabledFor(logging.DEBUG):  # redacting a URL costs more than the rest of the logging call
            log.debug("%s %s -> %d", method, redact_url(url), response.status_code)
        if response.status_code in ok:
            return response
        try:
            body = read_limited(response, MAX_ERROR_BODY)
        finally:
            response.close()
        refused = response.status_code in (401, 403)
        hint = self._auth.hint() if refused else ""
        anonymous = refused and self._auth.credentials() is None
        raise_for_answer(response, what, body=body, write=write, auth_hint=hint,
                         remedy=Remedy.LOG_IN if anonymous else None)

    def _what(self, repository: str, reference: str = "") -> str:
        separator = "@" if ":" in reference else ":"
        return f"{self.host}/{repository}{separator}{reference}" if reference else f"{self.host}/{repository}"

    # ----------------------------------------------------------------------------------------------
    # Manifests

    def manifest_get(self, repository: str, reference: str) -> RawManifest:
        """The manifest bytes exactly as served; by digest they must hash to it, by tag to ``Docker-Content-Digest``."""
        what = self._what(repository, reference)

        def attempt() -> tuple[bytes, str, str]:
            url = self._url(urls.manifest, repository, reference)
            headers = {"Accept": ACCEPT_MANIFESTS}
            response = self._send("GET", url, what=what, scopes=[pull_scope(repository)], headers=headers, stream=True)
            with closing(response):
                data = _read_manifest(response, what)
            return data, response.headers.get("content-type", ""), response.headers.get("docker-content-digest", "")

        data, declared, served = self._run(what, "GET manifest", attempt)
        return _raw_manifest(data, declared, _digest_or_none(reference) or _digest_or_none(served), what)

    def manifest_head(self, repository: str, reference: str) -> Descriptor | None:
        """The manifest's descriptor, or ``None`` when it does not exist.

        Harbor answers 412 when a policy blocks a manifest that exists; then the descriptor carries
        only what the headers say (digest may be empty, size 0).
        """
        what = self._what(repository, reference)

        def attempt() -> httpx.Response:
            url = self._url(urls.manifest, repository, reference)
            headers = {"Accept": ACCEPT_MANIFESTS}
            scopes = [pull_scope(repository)]
            response = self._send("HEAD", url, what=what, scopes=scopes, ok=(200, 404, 412), headers=headers)
            response.close()
            return response

        response = self._run(what, "HEAD manifest", attempt)
        if response.status_code == 404:
            return None
        served = response.headers.get("docker-content-digest", "")
        if response.status_code == 200 and not served:
            return self.manifest_get(repository, reference).descriptor()
        expected = _digest_or_none(reference)
        if expected and served and served != expected:
            raise RegistryContentError(f"the registry says this manifest has digest {served}", subject=what)
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        length = response.headers.get("content-length", "")
        size = int(length) if length.isdigit() else 0
        return Descriptor(media_type=media_type, digest=served or expected or "", size=size)

    def manifest_put(self, repository: str, reference: str, manifest: RawManifest) -> None:
        """Push ``manifest`` bytes under a tag or its digest; the registry must compute the same digest."""
        what = self._what(repository, reference)

        def attempt() -> str:
            url = self._url(urls.manifest, repository, reference)
            headers = {"Content-Type": manifest.media_type}
            scopes = [push_scope(repository)]
            response = self._send(
                "PUT", url, what=what, scopes=scopes, ok=(200, 201), write=True, headers=headers, content=manifest.data
            )
            response.close()
            return response.headers.get("docker-content-digest", "")

        served = self._run(what, "PUT manifest", attempt)
        if served and served != manifest.digest:
            raise RegistryContentError(f"the registry computed digest {served}, ours is {manifest.digest}",
                                       subject=what)

    # ----------------------------------------------------------------------------------------------
    # Blobs

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        """HEAD, not following redirects: a redirect to a storage back end means the blob exists."""
        what = self._what(repository, digest)

        def attempt() -> int:
            url = self._url(urls.blob, repository, digest)
            response = self._send("HEAD", url, what=what, scopes=[pull_scope(repository)], ok={200, 404} | REDIRECTS)
            response.close()
            return response.status_code

        return self._run(what, "HEAD blob", attempt) != 404

    def blob_chunks(self, repository: str, digest: Digest, size: int) -> Iterator[bytes]:
        """The blob in ~1 MiB chunks, verified against ``digest`` and ``size`` as it streams.

        More than ``size`` bytes cut the stream off; a mismatch at the end raises
        ``RegistryContentError``. A connection dropped mid-body is resumed with ``Range``. A large blob
        is fetched as ranges on several connections (``bundler.registry.ranged``) where the registry
        honours ``Range``, else in one stream.
        """
        what = self._what(repository, digest)
        verifier = DigestVerifier(digest, size, what="blob")
        with mapped(self.endpoint, what), self._outage.guard(what):
            for chunk in self._blob_stream(repository, digest, size, what):
                verifier.update(chunk)
                yield chunk
            verifier.check()

    def _blob_stream(self, repository: str, digest: Digest, size: int, what: str) -> Iterator[bytes]:
        """In ranges when the blob is large and no other blob is being fetched in ranges (so that the memory
        the parts take is bounded whatever ``jobs`` is), else in one stream."""
        if size >= ranged.RANGED_MIN_SIZE and self.options.jobs > 1 and self._ranged_slot.acquire(blocking=False):
            try:
                yield from ranged_chunks(partial(self._blob_range, repository, digest, what), size)
                return
            except RangeNotHonoured:
                log.debug("%s: the registry ignores Range; one stream instead", what)
            finally:
                self._ranged_slot.release()
        yield from self._blob_range(repository, digest, what, 0, None)

    def _blob_range(self, repository: str, digest: Digest, what: str, start: int, stop: int | None) -> Iterator[bytes]:
        """Bytes ``[start, stop)`` of the blob (to its end when ``stop`` is None), a dropped connection resumed."""
        budget = self._policy.start(what, "GET blob", self._activity)
        offset = start
        while True:
            try:
                for chunk in self._blob_body(repository, digest, offset, stop, what):
                    offset += len(chunk)
                    self._activity.moved()
                    yield chunk
                return
            except RETRYABLE as failure:
                budget.spend(failure)

    def _blob_body(self, repository: str, digest: Digest, offset: int, stop: int | None, what: str) -> Iterator[bytes]:
        """The body from ``offset`` on (to ``stop``); a server that ignores ``Range`` (200) has its first bytes
        skipped, except for a bounded range: that raises ``RangeNotHonoured`` from the blob's start, else fails."""
        wanted = f"bytes={offset}-{stop - 1 if stop is not None else ''}"
        headers = {"Accept-Encoding": "identity", **({"Range": wanted} if offset or stop is not None else {})}
        response = self._open_blob(self._url(urls.blob, repository, digest), headers, repository, what)
        with closing(response):
            skip = offset if response.status_code == 200 else 0
            if response.status_code == 206:
                _check_range(response, offset, what)
            elif stop is not None:
                if offset:
                    raise RegistryError(f"asked for {wanted}, the registry sent the whole blob", subject=what)
                raise RangeNotHonoured()
            for chunk in _body_chunks(response):
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                if skip:
                    chunk, skip = chunk[skip:], 0
                yield chunk

    def _open_blob(self, url: httpx.URL, headers: dict[str, str], repository: str, what: str) -> httpx.Response:
        """GET a blob, following redirects by hand so that Authorization never reaches another host."""
        client = self._http
        for _ in range(MAX_REDIRECTS + 1):
            scopes = [pull_scope(repository)]
            ok = {200, 206} | REDIRECTS
            response = self._send(
                "GET", url, what=what, scopes=scopes, ok=ok, headers=headers, stream=True, client=client
            )
            if response.status_code not in REDIRECTS:
                return response
            response.close()
            location = response.headers.get("location")
            if not location:
                raise RegistryError(f"{self.endpoint} redirected without a Location", subject=what)
            url = urls.resolve(url, location)
            client = self._client_for(url)
        raise RegistryError(f"more than {MAX_REDIRECTS} redirects", subject=what)

    def _client_for(self, url: httpx.URL) -> httpx.Client:
        """Our authenticated client for our own host; a plain one (no credentials) for storage back ends."""
        netloc = url.netloc.decode("ascii")
        if netloc == self.endpoint:
            return self._http
        with self._storage_lock:
            if netloc not in self._storage:
                self._storage[netloc] = make_http_client(netloc, self.options, auth=None)
            return self._storage[netloc]

    def blob_upload(
        self,
        repository: str,
        digest: Digest,
        size: int,
        chunks: Callable[[], Iterable[bytes]],
        *,
        mount_from: str | None = None,
    ) -> Placement:
        """Put a blob into ``repository``, mounted when the registry could take it from ``mount_from``.

        ``chunks`` is called once per attempt. A retry resumes a chunked upload where the registry
        says it stands (bytes before that are read again but not sent); anything else restarts the
        upload in a fresh session.
        """
        what = self._what(repository, digest)
        session = _Session()

        def attempt() -> Placement:
            resumed = self._resume(session, repository, what)
            if resumed is None and mount_from and mount_from != repository:
                mounted, resumed = self._mount(repository, digest, mount_from, what)
                if mounted:
                    return Placement.MOUNTED
            session.location = resumed or self._start_upload(repository, what)
            self._upload(session, repository, digest, size, chunks(), what)
            return Placement.UPLOADED

        return self._run(what, "blob upload", attempt)

    def blob_mount(self, repository: str, digest: Digest, source: str) -> bool:
        """Mount the blob from ``source``; False when the registry refused (an upload session it opened
        instead is left to expire, as the registry's own upload purging does)."""
        what = self._what(repository, digest)
        return self._run(what, "blob mount", lambda: self._mount(repository, digest, source, what)[0])

    def _mount(self, repository: str, digest: Digest, source: str, what: str) -> tuple[bool, httpx.URL | None]:
        """(True, None) when mounted; (False, session) on 202; (False, None) when refused: upload instead."""
        url = self._url(urls.mount, repository, digest, source)
        scopes = [push_scope(repository), pull_scope(source)]
        response = self._send("POST", url, what=what, scopes=scopes, ok=(201, 202, 401, 403, 404), write=True)
        response.close()
        if response.status_code == 201:
            _check_served_digest(response, digest, what)
            return True, None
        if response.status_code == 202:
            return False, _location(response, url, what)
        log.debug("%s: mount from %s refused (%d); uploading instead", what, source, response.status_code)
        return False, None

    def _start_upload(self, repository: str, what: str) -> httpx.URL:
        url = self._url(urls.uploads, repository)
        response = self._send("POST", url, what=what, scopes=[push_scope(repository)], ok=(202,), write=True)
        response.close()
        return _location(response, url, what)

    def _resume(self, session: _Session, repository: str, what: str) -> httpx.URL | None:
        """The Location to go on with an interrupted chunked upload, ``session.offset`` set; None: start over.

        Distribution cancels the session when our Location's ``_state`` is stale (a PATCH that
        reached it but whose answer we lost); then, as on any answer but 204, a fresh one starts.
        """
        location, session.location, session.offset = session.location, None, 0
        if location is None or not session.chunked:
            return None
        response = self._send("GET", location, what=what, scopes=[push_scope(repository)], ok=_STATUS_ANSWERS)
        response.close()
        end = response.headers.get("range", "").rpartition("-")[2]
        if response.status_code != 204 or not end.isdigit() or int(end) == 0:  # "0-0" may mean 0 or 1 byte
            return None
        session.offset = int(end) + 1
        log.debug("%s: resuming the upload at byte %d", what, session.offset)
        return _location(response, location, what, default=location)

    def _upload(
        self, session: _Session, repository: str, digest: Digest, size: int, data: Iterable[bytes], what: str
    ) -> None:
        """Monolithic PUT for small blobs, else PATCH chunks from ``session.offset``, then PUT; check the digest."""
        scopes = [push_scope(repository)]
        exact = _exactly(data, size)
        chunk_size = self.options.upload_chunk_size(size)
        session.chunked = chunk_size is not None
        if chunk_size is None:
            headers = {"Content-Type": OCTETS, "Content-Length": str(size)}
            content: bytes | Iterable[bytes] = exact
        else:
            pieces = _rechunk(_skip(exact, session.offset), chunk_size, size - session.offset)
            self._patch_chunks(session, pieces, scopes, what)
            headers, content = {"Content-Length": "0"}, b""
        assert session.location is not None
        url = urls.with_digest(session.location, digest)
        response = self._send(
            "PUT", url, what=what, scopes=scopes, ok=(201,), write=True, headers=headers, content=content
        )
        response.close()
        _check_served_digest(response, digest, what)

    def _patch_chunks(self, session: _Session, pieces: Iterable[_Piece], scopes: list[str], what: str) -> None:
        """PATCH each piece, always to the latest Location (its ``_state`` carries the offset), kept in ``session``."""
        for piece in pieces:
            assert session.location is not None
            end = session.offset + len(piece) - 1
            headers = {
                "Content-Type": OCTETS, "Content-Range": f"{session.offset}-{end}", "Content-Length": str(len(piece))
            }
            response = self._send(
                "PATCH", session.location, what=what, scopes=scopes, ok=(202,), write=True, headers=headers,
                content=piece,
            )
            response.close()
            session.location = _location(response, session.location, what, default=session.location)
            session.offset = end + 1
            self._activity.moved()

    # ----------------------------------------------------------------------------------------------
    # Listings

    def tags_list(self, repository: str) -> list[str]:
        first = lambda: self._url(urls.tags, repository, str(self.page_size))
        return self._paginate(first, self._what(repository), [pull_scope(repository)])

    def catalog(self) -> list[str]:
        first = lambda: self._url(urls.catalog, str(self.page_size))
        return self._paginate(first, f"{self.host} catalog", [CATALOG_SCOPE])

    def referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        """The referrers API (OCI distribution 1.1), every page; empty where the registry has no such API.

        A registry with the API never answers 404 (the spec forbids it), so a 404 means it has none: that
        is remembered, and the host is not asked again (one request per image manifest saved on a pack).
        """
        if self._referrers_api is None:
            with self._referrers_probe:
                if self._referrers_api is None:
                    return self._referrer_pages(repository, digest)
        return self._referrer_pages(repository, digest) if self._referrers_api else []

    def _referrer_pages(self, repository: str, digest: Digest) -> list[Descriptor]:
        what = f"{self._what(repository, digest)} referrers"
        first = lambda: self._url(urls.referrers, repository, digest)
        pages = list(self._pages(first, what, [pull_scope(repository)], ok=(200, 404)))
        self._referrers_api = bool(pages)
        return [descriptor for page in pages for descriptor in self._decode(page, _Referrers, what).manifests]

    def _paginate(self, first: Callable[[], httpx.URL], what: str, scopes: list[str]) -> list[str]:
        items: list[str] = []
        for body in self._pages(first, what, scopes):
            page = self._decode(body, _Page, what)
            items.extend(page.tags or page.repositories or [])
        return items

    def _decode(self, body: bytes, kind: type[_Listing], what: str) -> _Listing:
        try:
            return msgspec.json.decode(body, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise RegistryError(f"{self.endpoint} answered a listing that is not JSON", subject=what) from None

    def _pages(self, first: Callable[[], httpx.URL], what: str, scopes: list[str],
               ok: tuple[int, ...] = (200,)) -> Iterator[bytes]:
        """Every page's body, following ``Link: <…>; rel="next"``; none when the answer is not 200."""
        url: httpx.URL | None = None
        while True:
            response = self._run(what, "GET list", partial(self._get_page, url, first, what, scopes, ok))
            if response.status_code != 200:
                return
            yield response.content
            following = response.links.get("next", {}).get("url")
            if not following:
                return
            url = urls.resolve(response.request.url, following)

    def _get_page(self, url: httpx.URL | None, first: Callable[[], httpx.URL], what: str, scopes: list[str],
                  ok: tuple[int, ...]) -> httpx.Response:
        response = self._send("GET", url or first(), what=what, scopes=scopes, ok=ok)
        response.close()
        return response

    def ping(self) -> None:
        """``GET /v2/``: fails early and clearly when the host is unreachable, untrusted or refuses us."""
        what = self.host
        self._run(what, "GET /v2/", lambda: self._send("GET", self._url(urls.ping), what=what, scopes=[]).close())


class _Session:
    """A chunked upload under way: its latest Location and the bytes the registry has acknowledged."""

    def __init__(self) -> None:
        self.location: httpx.URL | None = None
        self.offset = 0
        self.chunked = False


class _Outage:
    """Remembers that a request to this host gave up on a failure that speaks for the whole host (no
    connection, no answer, an outage status) after the host had moved nothing for the retry timeout.

    Later operations then fail at once with the same kind of error instead of each waiting out its own
    retries, so a run against a registry that is down for good ends in about one retry timeout, not
    one per image. An operation that succeeds meanwhile (one already under way) clears it.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.error: ImgbundleError | None = None
        """The error that ended the retries, its message without the reference."""

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Inside ``mapped``: fail at once after an outage; remember a new one."""
        first = self.error
        if first is not None:
            raise first.reworded(f"{what}: not tried, an earlier request gave up: {first}")
        try:
            yield
        except (GaveUp, *RETRYABLE) as ended:
            failure = ended.failure if isinstance(ended, GaveUp) else ended
            if is_outage(failure):
                error = map_failure(failure, self.host, what)
                self.error = error.reworded(error.about(what))
            raise
        self.error = None


# --------------------------------------------------------------------------------------------------
# Helpers without state


def _digest_or_none(text: str) -> Digest | None:
    if ":" not in text:
        return None
    try:
        return Digest(text)
    except InputError:
        return None


def _read_manifest(response: httpx.Response, what: str) -> bytes:
    """The body, refused as soon as it is known to exceed ``MAX_MANIFEST_BYTES``."""
    too_big = RegistryContentError(f"manifest larger than {MAX_MANIFEST_BYTES // MiB} MiB, refused", subject=what)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_MANIFEST_BYTES:
        raise too_big
    data = read_limited(response, MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise too_big
    return data


def _raw_manifest(data: bytes, declared: str, expected: Digest | None, what: str) -> RawManifest:
    try:
        media_type = detect_media_type(data, declared)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise RegistryContentError("the registry served a manifest that is not JSON", subject=what) from None
    if media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise RegistryContentError("schema1 manifests are not supported, re-push the image with a current client",
                                   subject=what)
    try:
        return RawManifest.from_bytes(data, media_type, expected)
    except ContentMismatchError as exc:
        raise RegistryContentError(str(exc), subject=what) from None


def _location(
    response: httpx.Response, request_url: httpx.URL, what: str, default: httpx.URL | None = None
) -> httpx.URL:
    location = response.headers.get("location")
    if location:
        return urls.resolve(request_url, location)
    if default is not None:
        return default
    raise RegistryError("the registry opened an upload without a Location", subject=what)


def _check_served_digest(response: httpx.Response, digest: Digest, what: str) -> None:
    served = response.headers.get("docker-content-digest")
    if served and served != digest:
        raise RegistryContentError(f"the registry stored digest {served}", subject=what)


def _check_range(response: httpx.Response, offset: int, what: str) -> None:
    content_range = response.headers.get("content-range", "")
    start = content_range.removeprefix("bytes ").split("-", 1)[0]
    if not start.isdigit() or int(start) != offset:
        raise RegistryError(f"asked for bytes from {offset}, got range {content_range!r}", subject=what)


def _exactly(data: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``data``, refused (before the request completes) when it is not exactly ``size`` bytes long."""
    sent = 0
    for chunk in data:
        sent += len(chunk)
        if sent > size:
            raise ContentMismatchError(f"blob source gave more than the declared {size} bytes")
        yield chunk
    if sent != size:
        raise ContentMismatchError(f"blob source gave {sent} bytes, expected {size}")


def _skip(data: Iterable[bytes], count: int) -> Iterator[bytes]:
    """``data`` without its first ``count`` bytes (the part a resumed upload already delivered)."""
    for chunk in data:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:] if count else chunk
        count = 0


def _body_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body in ``READ_CHUNK`` pieces (the last one shorter); a resumed download restarts at a piece border.

    Our transport's pieces pass as they are. Bytes short of a whole piece (a proxy's transport reads
    64 KiB, and a dropped connection ends short) are held back until a whole piece or the clean end
    of the body. A server that compresses despite ``Accept-Encoding: identity`` is decoded.
    """
    if response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        yield from response.iter_bytes(READ_CHUNK)
        return
    held: list[bytes] = []
    held_size = 0
    for piece in response.iter_raw():
        if not held and len(piece) == READ_CHUNK:
            yield piece
            continue
        held.append(piece)
        held_size += len(piece)
        if held_size >= READ_CHUNK:
            data = b"".join(held)
            whole = held_size - held_size % READ_CHUNK
            yield from (data[start : start + READ_CHUNK] for start in range(0, whole, READ_CHUNK))
            held, held_size = ([data[whole:]] if whole < held_size else []), held_size - whole
    if held:
        yield b"".join(held)  # one piece (a small blob) is passed as it is


def _rechunk(data: Iterable[bytes], size: int, total: int) -> Iterator[_Piece]:
    """``total`` bytes of ``data`` as pieces of exactly ``size`` bytes (the last one shorter), each streamed.

    A piece is a PATCH body read from ``data`` while it is sent, never a ``size``-byte copy: httpx keeps
    a sent request in a reference cycle until a full GC, and that would keep every copy alive.
    """
    chunks = _Chunks(data)
    for start in range(0, total, size):
        yield _Piece(chunks, min(size, total - start))
    chunks.end()


class _Chunks:
    """A chunk stream read in consecutive byte ranges; a chunk that straddles two ranges is split."""

    def __init__(self, data: Iterable[bytes]) -> None:
        self._data = iter(data)
        self._rest = b""

    def take(self, length: int) -> Iterator[bytes]:
        while length > 0:
            chunk = self._rest or next(self._data, b"")
            if not chunk:
                raise ContentMismatchError("blob source ended before its declared size")
            chunk, self._rest = (chunk, b"") if len(chunk) <= length else (chunk[:length], chunk[length:])
            length -= len(chunk)
            yield chunk

    def end(self) -> None:
        """Every byte was taken: more data is refused as ``_exactly`` would refuse it."""
        if self._rest or next(self._data, b""):
            raise ContentMismatchError("blob source gave more than its declared size")


class _Piece:
    """``length`` bytes of a ``_Chunks`` stream: sized for Content-Length, read only when iterated."""

    def __init__(self, chunks: _Chunks, length: int) -> None:
        self._chunks = chunks
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks.take(self._length)

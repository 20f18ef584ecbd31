"""Every ``/v2/…`` URL of the distribution API, built here and nowhere else."""

from __future__ import annotations

import urllib.parse

import httpx

__all__ = ["blob", "catalog", "manifest", "mount", "ping", "referrers", "resolve", "tags", "uploads", "with_digest"]


def _v2(scheme: str, host: str, path: str = "", params: dict[str, str] | None = None) -> httpx.URL:
    """Parsed once: httpx parses a URL again for every keyword (even ``params=None``), a cost per request."""
    url = f"{scheme}://{host}/v2/{path}"
    return httpx.URL(url, params=params) if params else httpx.URL(url)


def ping(scheme: str, host: str) -> httpx.URL:
    return _v2(scheme, host)


def manifest(scheme: str, host: str, repository: str, reference: str) -> httpx.URL:
    return _v2(scheme, host, f"{repository}/manifests/{reference}")


def blob(scheme: str, host: str, repository: str, digest: str) -> httpx.URL:
    return _v2(scheme, host, f"{repository}/blobs/{digest}")


def uploads(scheme: str, host: str, repository: str) -> httpx.URL:
    """Where a POST opens an upload session (the trailing slash is part of the API)."""
    return _v2(scheme, host, f"{repository}/blobs/uploads/")


def mount(scheme: str, host: str, repository: str, digest: str, source: str) -> httpx.URL:
    return _v2(scheme, host, f"{repository}/blobs/uploads/", {"mount": digest, "from": source})


def tags(scheme: str, host: str, repository: str, page_size: str) -> httpx.URL:
    return _v2(scheme, host, f"{repository}/tags/list", {"n": page_size})


def catalog(scheme: str, host: str, page_size: str) -> httpx.URL:
    return _v2(scheme, host, "_catalog", {"n": page_size})


def referrers(scheme: str, host: str, repository: str, digest: str) -> httpx.URL:
    return _v2(scheme, host, f"{repository}/referrers/{digest}")


def resolve(request_url: httpx.URL, location: str) -> httpx.URL:
    """An absolute or relative ``Location``/``Link`` target, resolved against the request URL.

    Distribution builds absolute Locations from ``Host``/``X-Forwarded-Proto`` and may say
    ``http://`` behind a TLS proxy; for the same host we keep the scheme we already speak. An absolute
    one without dot segments is parsed as it is (a join parses it three times; uploads make one per blob).
    """
    absolute = location.startswith(("http://", "https://")) and "/." not in location
    target = httpx.URL(location) if absolute else request_url.join(location)
    if target.host == request_url.host and target.port == request_url.port and target.scheme != request_url.scheme:
        target = target.copy_with(scheme=request_url.scheme)
    return target


def with_digest(location: httpx.URL, digest: str) -> httpx.URL:
    """The URL of the final ``PUT`` that closes an upload session, parsed once (``copy_add_param`` parses
    the URL and its query several times, on every blob uploaded)."""
    separator = "&" if location.query else "?"
    return httpx.URL(f"{location}{separator}digest={urllib.parse.quote(digest, safe='')}")

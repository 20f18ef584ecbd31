"""RegistryClient against a real Docker Distribution: blobs, manifests, mounts, listings, pooling."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import bundler.registry as registry_pkg
import bundler.registry.client as client_module
from bundler.digest import Digest
from bundler.errors import NotFoundError, UnreachableError
from bundler.oci import DOCKER_MANIFEST_LIST, OCI_MANIFEST, RawManifest
from bundler.registry import RegistryClient
from bundler.registry.options import MiB
from bundler.stores import Placement
from bundler.stores.registry import RegistryPool
from support.options import offline_options
from support.registry import RunningRegistry, registry_client, registry_get_manifest

SEED = 20240611




def repo() -> str:
    return f"test/{uuid.uuid4().hex[:12]}"


def blob(size: int, seed: int = SEED) -> tuple[bytes, Digest]:
    data = random.Random(seed + size).randbytes(size)
    return data, Digest.of(data)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def push_blob(client: RegistryClient, repository: str, data: bytes) -> Digest:
    digest = Digest.of(data)
    assert client.blob_upload(repository, digest, len(data), lambda: [data]) is Placement.UPLOADED
    return digest


def oracle_blob(reg: RunningRegistry, repository: str, digest: str) -> bytes:
    with registry_client(reg, [f"repository:{repository}:pull"]) as http:
        response = http.get(f"/v2/{repository}/blobs/{digest}", follow_redirects=True)
    response.raise_for_status()
    return response.content


def test_public_api() -> None:
    assert set(registry_pkg.__all__) == {"RegistryClient", "RegistryOptions", "Backoff"}
    for name in registry_pkg.__all__:
        assert hasattr(registry_pkg, name)


def test_small_blob_round_trip_monolithic(registry: RunningRegistry, caplog: pytest.LogCaptureFixture) -> None:
    data, digest = blob(70_000)
    repository = repo()
    caplog.set_level(logging.DEBUG, logger="bundler.registry")
    with RegistryClient(registry.host, offline_options()) as client:
        assert client.blob_exists(repository, digest) is False
        assert client.blob_upload(repository, digest, len(data), lambda: pieces(data, 4096)) is Placement.UPLOADED
        assert client.blob_exists(repository, digest) is True
        assert b"".join(client.blob_chunks(repository, digest, len(data))) == data
    assert oracle_blob(registry, repository, digest) == data
    methods = [record.getMessage().split()[0] for record in caplog.records if " -> " in record.getMessage()]
    assert "PATCH" not in methods and methods.count("PUT") == 1


def test_large_blob_round_trip_chunked(registry: RunningRegistry, caplog: pytest.LogCaptureFixture) -> None:
    data, digest = blob(5 * 64 * 1024 + 123)
    repository = repo()
    caplog.set_level(logging.DEBUG, logger="bundler.registry")
    with RegistryClient(registry.host, offline_options(chunk_size=64 * 1024)) as client:
        # odd-sized source chunks: the client must regroup them into exact 64 KiB PATCHes
        assert client.blob_upload(repository, digest, len(data), lambda: pieces(data, 10_007)) is Placement.UPLOADED
        chunks = list(client.blob_chunks(repository, digest, len(data)))
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= MiB
    patches = [r.getMessage() for r in caplog.records if r.name == "bundler.registry" and r.getMessage().startswith("PATCH ")]
    assert len(patches) == 6
    assert oracle_blob(registry, repository, digest) == data


def test_upload_of_wrong_length_is_a_content_error(registry: RunningRegistry) -> None:
    from bundler.errors import RegistryContentError

    data, digest = blob(1000)
    with RegistryClient(registry.host, offline_options()) as client, pytest.raises(RegistryContentError) as caught:
        client.blob_upload(repo(), digest, len(data) + 1, lambda: [data])
    assert caught.value.exit_code == 14


def test_manifest_put_get_is_byte_exact(registry: RunningRegistry) -> None:
    repository = repo()
    with RegistryClient(registry.host, offline_options()) as client:
        config = push_blob(client, repository, b'{"architecture":"amd64","os":"linux"}')
        layer_data, _ = blob(1234)
        layer = push_blob(client, repository, layer_data)
        text = (
            '{\n  "schemaVersion" : 2,\n\t"mediaType":   "%s",\n  "config": {"mediaType": '
            '"application/vnd.oci.image.config.v1+json", "digest": "%s", "size": 37},\n'
            '  "layers": [ {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "%s", "size": 1234} ]   }\n\n'
        ) % (OCI_MANIFEST, config, layer)
        manifest = RawManifest.from_bytes(text.encode(), OCI_MANIFEST)
        client.manifest_put(repository, "v1", manifest)
        by_tag = client.manifest_get(repository, "v1")
        by_digest = client.manifest_get(repository, manifest.digest)
        head = client.manifest_head(repository, "v1")
    assert by_tag == manifest and by_digest == manifest
    assert by_tag.data == text.encode()
    assert head is not None
    assert (head.digest, head.size, head.media_type) == (manifest.digest, len(manifest.data), OCI_MANIFEST)
    served, content_type, served_digest = registry_get_manifest(registry, repository, "v1")
    assert (served, content_type, served_digest) == (text.encode(), OCI_MANIFEST, manifest.digest)


def test_index_put_by_digest_keeps_its_media_type(registry: RunningRegistry) -> None:
    repository = repo()
    with RegistryClient(registry.host, offline_options()) as client:
        config = push_blob(client, repository, b"{}")
        child = RawManifest.from_bytes(
            json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2}, "layers": []}).encode(),
            OCI_MANIFEST,
        )
        client.manifest_put(repository, child.digest, child)
        index = RawManifest.from_bytes(
            json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": child.digest, "size": len(child.data),
                 "platform": {"architecture": "amd64", "os": "linux"}}]}, indent=1).encode(),
            DOCKER_MANIFEST_LIST,
        )
        client.manifest_put(repository, "multi", index)
        got = client.manifest_get(repository, "multi")
    assert got.media_type == DOCKER_MANIFEST_LIST and got.is_index and got.data == index.data


def test_missing_things(registry: RunningRegistry) -> None:
    repository = repo()
    _, digest = blob(10)
    with RegistryClient(registry.host, offline_options()) as client:
        assert client.manifest_head(repository, "nope") is None
        with pytest.raises(NotFoundError) as caught:
            client.manifest_get(repository, "nope")
        assert caught.value.exit_code == 12
        assert f"{registry.host}/{repository}:nope" in str(caught.value)
        with pytest.raises(NotFoundError) as caught:
            list(client.blob_chunks(repository, digest, 10))
        assert f"{repository}@{digest}" in str(caught.value)
        with pytest.raises(NotFoundError):
            client.tags_list(repository)


def test_mount_between_repositories(registry: RunningRegistry) -> None:
    source, target = repo(), repo()
    data, digest = blob(4321)
    with RegistryClient(registry.host, offline_options()) as client:
        push_blob(client, source, data)
        calls: list[int] = []
        result = client.blob_upload(target, digest, len(data), lambda: calls.append(1) or [data], mount_from=source)
        assert result is Placement.MOUNTED and calls == []
        assert client.blob_exists(target, digest)
    assert oracle_blob(registry, target, digest) == data


def test_mount_from_repository_without_the_blob_uploads(registry: RunningRegistry, caplog: pytest.LogCaptureFixture) -> None:
    source, target = repo(), repo()
    data, digest = blob(999)
    with RegistryClient(registry.host, offline_options()) as client:
        push_blob(client, source, b"something else")
        caplog.set_level(logging.DEBUG, logger="bundler.registry")
        assert client.blob_upload(target, digest, len(data), lambda: [data], mount_from=source) is Placement.UPLOADED
        assert b"".join(client.blob_chunks(target, digest, len(data))) == data
    posts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("POST ")]
    assert len(posts) == 1 and "mount=" in posts[0] and "-> 202" in posts[0]  # the 202 session is continued


def test_tags_and_catalog_follow_pagination(fresh_registry: RunningRegistry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bundler.registry")
    repositories = [f"pages/r{i}" for i in range(5)]
    with RegistryClient(fresh_registry.host, offline_options()) as client:
        client.page_size = 2
        config = push_blob(client, repositories[0], b"{}")
        manifest = RawManifest.from_bytes(json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2}, "layers": []}).encode(), OCI_MANIFEST)
        for repository in repositories:
            client.blob_upload(repository, config, 2, lambda: [b"{}"], mount_from=repositories[0])
            for tag in ("a", "b", "c", "d", "e"):
                client.manifest_put(repository, tag, manifest)
        assert sorted(client.tags_list(repositories[0])) == ["a", "b", "c", "d", "e"]
        assert sorted(client.catalog()) == repositories
    # Distribution 2.8 pages the catalog (5 repositories at 2 a page) but answers tags/list in one go
    pages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("GET ") and "_catalog" in r.getMessage()]
    assert len(pages) == 3


def test_ping_and_plain_http_fallback_on_loopback(registry: RunningRegistry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bundler.registry")
    port = registry.host.rsplit(":", 1)[1]
    for host in (registry.host, f"localhost:{port}"):
        with RegistryClient(host, offline_options()) as client:
            client.ping()
            assert client._schemes.scheme(client._http) == "http"
    assert sum("does not speak TLS" in record.getMessage() for record in caplog.records) == 2


def test_unreachable_host_is_reported_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    caplog.set_level(logging.DEBUG, logger="bundler.registry")
    with RegistryClient(f"127.0.0.1:{port}", offline_options(retries=2)) as client, pytest.raises(UnreachableError) as caught:
        client.ping()
    assert caught.value.exit_code == 13
    assert f"127.0.0.1:{port}" in str(caught.value) and "\n" not in str(caught.value)
    assert sum("retry" in record.getMessage() for record in caplog.records) == 2


def test_many_threads_share_one_client(registry: RunningRegistry) -> None:
    repository = repo()
    blobs = [blob(2000 + i) for i in range(16)]
    with RegistryClient(registry.host, offline_options(jobs=4)) as client:

        def work(item: tuple[bytes, Digest]) -> bytes:
            data, digest = item
            client.blob_upload(repository, digest, len(data), lambda: [data])
            return b"".join(client.blob_chunks(repository, digest, len(data)))

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(work, blobs)) == [data for data, _ in blobs]


def test_pool_gives_one_client_per_host_and_closes_them(registry: RunningRegistry) -> None:
    with RegistryPool(offline_options()) as pool:
        first = pool.get(registry.host)
        assert pool.get(registry.host) is first
        other = pool.get("localhost:1")
        assert other is not first and other.endpoint == "localhost:1"
        first.ping()
    with pytest.raises(RuntimeError):  # httpx refuses requests on a closed client
        first._http.get(f"{registry.url}/v2/")


def test_docker_hub_host_maps_to_its_endpoint() -> None:
    with RegistryClient("docker.io", offline_options()) as client:
        assert client.endpoint == "registry-1.docker.io"
        assert client._schemes.scheme(client._http) == "https"  # not loopback, not insecure: no probe


@pytest.mark.parametrize("sizes", [[MiB, MiB, 10], [10], [64 * 1024] * 40, [MiB - 1, 2, MiB, 5, 64 * 1024]],
                         ids=["ours", "small-blob", "proxy-pieces", "mixed"])
def test_a_body_is_passed_on_in_whole_pieces_but_the_last(sizes: list[int]) -> None:
    data = random.Random(sum(sizes)).randbytes(sum(sizes))
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    pieces = [data[start : start + size] for start, size in zip(starts, sizes)]
    chunks = list(client_module._body_chunks(httpx.Response(200, content=iter(pieces))))
    assert b"".join(chunks) == data
    assert all(len(chunk) == MiB for chunk in chunks[:-1]) and 0 < len(chunks[-1]) <= MiB


def test_a_body_cut_short_passes_on_only_whole_pieces() -> None:
    def cut() -> Iterator[bytes]:
        yield b"x" * MiB
        yield b"y" * 1000
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    passed = []
    with pytest.raises(httpx.RemoteProtocolError):
        for chunk in client_module._body_chunks(httpx.Response(200, content=cut())):
            passed.append(chunk)
    assert [len(chunk) for chunk in passed] == [MiB]  # the resume asks for bytes=1048576-


DIGEST_PARAM = "sha256:" + "ab" * 32


@pytest.mark.parametrize("location", [
    "http://127.0.0.1:5000/v2/a/b/blobs/uploads/0f3e?_state=AbC%2Bd%3D%3D",
    "https://127.0.0.1:5000/v2/a/b/blobs/uploads/0f3e?_state=x",
    "http://other:5000/v2/a/b/blobs/uploads/0f3e",
    "/v2/a/b/blobs/uploads/0f3e?_state=x",
    "http://127.0.0.1:5000/v2/a/./b/../b/blobs/uploads/0f3e",
])
def test_upload_urls_are_those_httpx_builds(location: str) -> None:
    """The Location and the closing PUT's URL, parsed once, are the URLs httpx's join and
    ``copy_add_param`` make (the scheme we speak kept for our own host)."""
    from bundler.registry import urls

    request_url = httpx.URL("https://127.0.0.1:5000/v2/a/b/blobs/uploads/")
    joined = request_url.join(location)
    if joined.host == request_url.host and joined.port == request_url.port:
        joined = joined.copy_with(scheme=request_url.scheme)
    resolved = urls.resolve(request_url, location)
    assert resolved == joined
    assert urls.with_digest(resolved, DIGEST_PARAM) == joined.copy_add_param("digest", DIGEST_PARAM)
    assert urls.blob("https", "127.0.0.1:5000", "a/b", DIGEST_PARAM) == httpx.URL(
        f"https://127.0.0.1:5000/v2/a/b/blobs/{DIGEST_PARAM}", params=None)


def test_the_registry_client_loads_nothing_above_it() -> None:
    """The HTTP client is a home of the stores, below them: it must not import the stores or the plans."""
    script = "import json, sys, bundler.registry\nprint(json.dumps([m for m in sys.modules if m.startswith('bundler.')]))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    loaded = {name.split(".")[1] for name in json.loads(proc.stdout)}
    assert loaded <= {"digest", "errors", "oci", "reference", "registry", "threads"}, loaded

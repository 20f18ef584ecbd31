"""``imgbundle serve``: a bundle as a read-only registry, checked with real clients (skopeo, containerd's ctr,
a real Distribution as the destination, imgbundle pack) against the generated source set as oracle.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bundler.bundle import read_index
from bundler.errors import CorruptBundleError, InputError, Remedy
from bundler.serve import Naming, ServedView
from bundler.serve.auth import Htpasswd
from bundler.serve.http import parse_range
from bundler.stores.bundle import BundleStore

from support.bundles import blob_frame_offset, flip, make_image_set
from support.cli import run_cli
from support.registry import MANIFEST_ACCEPT, CertAuthority, RunningRegistry
from support.serve import Containerd, Served, start_containerd, start_serve
from support.servers import starts_server
from support.sources import SourceImage, SourceSet, assert_registry_holds, expected_state, skopeo_raw

SKOPEO_TIMEOUT_S = 120


@pytest.fixture(scope="module")
@starts_server
def served(bundle_file: Path) -> Iterator[Served]:
    with start_serve(str(bundle_file)) as running:
        yield running


@pytest.fixture(scope="module")
@starts_server
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    with start_containerd(tmp_path_factory.mktemp("ctd")) as daemon:
        if isinstance(daemon, str):
            pytest.skip(daemon)
        yield daemon


def pinned(served: Served, image: SourceImage) -> str:
    """The image's reference on serve: by tag, or by digest for digest-only images."""
    return served.ref(f"{image.path}:{image.tag}" if image.tag else f"{image.path}@{image.digest}")


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=SKOPEO_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"skopeo {' '.join(args)}: {done.stderr}"
    return done


def dir_blobs(directory: Path) -> dict[str, bytes]:
    """What ``skopeo copy ... dir:`` wrote, by digest: every file named by a hex digest."""
    return {f"sha256:{p.name}": p.read_bytes() for p in directory.iterdir() if len(p.name) == 64}


# --- the registry a client sees -------------------------------------------------------------


def test_skopeo_reads_every_manifest_byte_exact_with_its_media_type(served: Served, source_set: SourceSet) -> None:
    for image in source_set.images:
        assert skopeo_raw(f"docker://{pinned(served, image)}", "--tls-verify=false") == image.manifests[image.digest]
    image = source_set.images[0]
    response = httpx.get(f"{served.url}/v2/{image.path}/manifests/{image.tag}", headers={"Accept": MANIFEST_ACCEPT})
    assert response.headers["content-type"] == image.media_type
    assert response.headers["docker-content-digest"] == image.digest


def test_two_skopeo_clients_at_once_copy_every_platform_with_equal_digests(served: Served, source_set: SourceSet,
                                                                           tmp_path: Path) -> None:
    images = [source_set.images[0], next(i for i in source_set.images if not i.tag)]
    copies = [subprocess.Popen(["skopeo", "copy", "--all", "--src-tls-verify=false",
                                f"docker://{pinned(served, image)}", f"dir:{tmp_path / str(n)}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for n, image in enumerate(images)]
    for copy in copies:
        assert copy.wait(timeout=SKOPEO_TIMEOUT_S) == 0, copy.stderr.read() if copy.stderr else ""
    for n, image in enumerate(images):
        written = dir_blobs(tmp_path / str(n))
        assert set(written) == set(image.blobs)
        assert all("sha256:" + hashlib.sha256(data).hexdigest() == digest for digest, data in written.items())
        assert (tmp_path / str(n) / "manifest.json").read_bytes() == image.manifests[image.digest]
        for digest, data in image.manifests.items():
            child = tmp_path / str(n) / f"{digest.split(':')[1]}.manifest.json"
            assert digest == image.digest or child.read_bytes() == data


def test_skopeo_copies_every_image_into_a_distribution_unchanged(served: Served, source_set: SourceSet,
                                                                 fresh_registry: RunningRegistry) -> None:
    for image in source_set.images:
        target = f"{image.path}:{image.tag}" if image.tag else f"{image.path}@{image.digest}"
        skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{pinned(served, image)}", f"docker://{fresh_registry.ref(target)}")
    assert_registry_holds(fresh_registry, expected_state(source_set, lambda image: image.path))


def test_pack_from_serve_carries_the_blobs_of_the_served_bundle(served: Served, source_set: SourceSet,
                                                                bundle_file: Path, tmp_path: Path) -> None:
    references = [served.ref(image.line.split("/", 1)[1]) for image in source_set.images]
    run_cli("pack", *references, "-o", str(tmp_path / "again.tar.zst"), "--insecure-registry", served.host, "-q")
    again, original = read_index(tmp_path / "again.tar.zst"), read_index(bundle_file)
    assert {e.digest for e in again.blobs} == {e.digest for e in original.blobs}
    assert {e.digest for e in again.manifests} == {e.digest for e in original.manifests}


def test_range_requests_answer_206_with_the_bytes_asked(served: Served, source_set: SourceSet) -> None:
    image = source_set.images[0]
    digest = max(image.blobs, key=lambda d: image.blobs[d])
    data = (source_set.layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    url = f"{served.url}/v2/{image.path}/blobs/{digest}"
    with httpx.Client() as client:
        for header, expected, content_range in [
            ("bytes=10-1009", data[10:1010], f"bytes 10-1009/{len(data)}"),
            (f"bytes={len(data) - 7}-", data[-7:], f"bytes {len(data) - 7}-{len(data) - 1}/{len(data)}"),
            ("bytes=-100", data[-100:], f"bytes {len(data) - 100}-{len(data) - 1}/{len(data)}"),
        ]:
            response = client.get(url, headers={"Range": header})
            assert (response.status_code, response.content) == (206, expected), header
            assert response.headers["content-range"] == content_range
        assert client.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
        head = client.head(url)
        assert (head.status_code, head.headers["content-length"], head.headers["accept-ranges"]) == (
            200, str(len(data)), "bytes")


def test_errors_are_the_spec_codes_and_every_write_is_refused(served: Served) -> None:
    def code(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, response.json()["errors"][0]["code"]

    missing = "sha256:" + "0" * 64
    with httpx.Client(base_url=served.url) as client:
        assert client.get("/v2/").status_code == 200
        assert code(client.get("/v2/no/such/tags/list")) == (404, "NAME_UNKNOWN")
        assert code(client.get("/v2/calico/node/manifests/v0")) == (404, "MANIFEST_UNKNOWN")
        assert code(client.get(f"/v2/calico/node/blobs/{missing}")) == (404, "BLOB_UNKNOWN")
        for method, path in [("POST", "/v2/calico/node/blobs/uploads/"), ("PUT", "/v2/calico/node/manifests/x"),
                             ("PATCH", "/v2/calico/node/blobs/uploads/1"), ("DELETE", f"/v2/calico/node/blobs/{missing}")]:
            assert code(client.request(method, path, content=b"{}")) == (405, "UNSUPPORTED"), method


def test_catalog_and_tags_page_with_n_last_and_link(served: Served, source_set: SourceSet) -> None:
    walked, url = [], "/v2/_catalog?n=4"
    with httpx.Client(base_url=served.url) as client:
        while url:
            response = client.get(url)
            walked += response.json()["repositories"]
            url = response.headers.get("link", "").partition(">")[0].lstrip("<")
        assert walked == sorted({image.path for image in source_set.images})
        first = client.get("/v2/library/nginx/tags/list?n=1")
        assert first.json()["tags"] == ["1.25.2-alpine"] and 'rel="next"' in first.headers["link"]
        assert client.get("/v2/library/nginx/tags/list?n=1&last=1.25.2-alpine").json()["tags"] == ["stable-alpine"]
        assert client.get("/v2/calico/node/referrers/" + source_set.images[0].digest).json()["manifests"] == []


# --- several bundles, damage, TLS and auth ----------------------------------------------------


def test_a_delta_is_served_over_its_base(seeded_registry: tuple[RunningRegistry, object], small_bundle: Path,
                                         small_source: SourceSet, source_set: SourceSet, tmp_path: Path) -> None:
    registry, _ = seeded_registry
    delta = tmp_path / "delta.tar.zst"
    references = [registry.ref(image.line.split("/", 1)[1]) for image in source_set.images]
    run_cli("pack", *references, "-o", str(delta), "--since", str(small_bundle), "--insecure-registry",
            registry.host, "-q")
    node = small_source.images[0]
    assert set(node.blobs) <= {e.digest for e in read_index(delta).external}
    with start_serve(str(small_bundle), str(delta)) as both:
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{pinned(both, node)}", f"dir:{tmp_path / 'c'}")
        assert set(dir_blobs(tmp_path / "c")) >= set(node.blobs)
    with start_serve(str(delta)) as alone:
        blob = next(iter(node.blobs))
        assert httpx.head(f"{alone.url}/v2/{node.path}/blobs/{blob}").status_code == 404
        alone.log_line("is a delta whose base")


@pytest.mark.registry
def test_a_damaged_frame_cuts_the_connection_and_the_log_names_blob_and_images(bundle_file: Path,
                                                                            source_set: SourceSet,
                                                                            tmp_path: Path) -> None:
    image = source_set.images[0]
    digest = max(image.blobs, key=lambda d: image.blobs[d])
    bundle = bundle_file.read_bytes()
    damaged = tmp_path / "damaged.tar.zst"
    damaged.write_bytes(flip(bundle, blob_frame_offset(bundle, digest) + 200))
    with start_serve(str(damaged)) as running:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{running.url}/v2/{image.path}/blobs/{digest}")
        line = running.log_line("damaged")
    assert digest in line and f"{image.path}:{image.tag}" in line
    refused = run_cli("serve", str(damaged), "--verify", "--listen", "127.0.0.1:0", expect=CorruptBundleError.exit_code)
    assert image.path in refused.stderr


@pytest.mark.registry
def test_tls_and_basic_auth(bundle_file: Path, test_ca: CertAuthority, source_set: SourceSet, tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text(subprocess.run(["htpasswd", "-Bbn", "site", "s3cret-pw"], capture_output=True, text=True,
                                    check=True).stdout)
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(test_ca.ca_cert, certs / "ca.crt")
    image = source_set.images[0]
    with start_serve(str(bundle_file), "--tls-cert", str(test_ca.server_cert), "--tls-key", str(test_ca.server_key),
                     "--htpasswd", str(users)) as running:
        assert running.url.startswith("https://")
        with httpx.Client(base_url=running.url, verify=ssl.create_default_context(cafile=test_ca.ca_cert)) as client:
            refused = client.get("/v2/")
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
            assert client.get("/v2/_catalog", auth=("site", "wrong")).status_code == 401
            assert client.get("/v2/_catalog", auth=("site", "s3cret-pw")).status_code == 200
        raw = skopeo_raw(f"docker://{pinned(running, image)}", "--creds", "site:s3cret-pw", "--cert-dir", str(certs))
        assert raw == image.manifests[image.digest]
    assert running.log and not any("s3cret-pw" in line for line in running.log)  # whole: the server stopped


# --- containerd ------------------------------------------------------------------------------


def test_ctr_fetches_every_platform_from_serve(served: Served, containerd: Containerd, source_set: SourceSet) -> None:
    image = source_set.images[0]
    done = containerd.ctr("-n", "serve", "content", "fetch", "--plain-http", "--all-platforms", pinned(served, image))
    assert done.returncode == 0, done.stderr
    stored = set(containerd.ctr("-n", "serve", "content", "ls", "-q").stdout.split())
    assert set(image.blobs) | set(image.manifests) <= stored  # containerd checks each digest as it ingests


def test_zstd_into_ctr_import_brings_every_reference_of_a_bundle(containerd: Containerd, tmp_path: Path) -> None:
    """The path for nodes without any registry, exactly as the README gives it (real gzip'd tar layers: unpacked)."""
    images = make_image_set()
    bundle = tmp_path / "node.tar.zst"
    images.write(bundle)
    unzstd = subprocess.Popen(["zstd", "-dc", str(bundle)], stdout=subprocess.PIPE)
    assert unzstd.stdout is not None
    done = containerd.ctr("-n", "k8s.io", "images", "import", "--all-platforms", "-", stdin=unzstd.stdout.fileno())
    assert unzstd.wait(timeout=60) == 0 and done.returncode == 0, done.stderr
    listed = containerd.ctr("-n", "k8s.io", "images", "ls").stdout.splitlines()[1:]
    assert {tuple(line.split()[0:3:2]) for line in listed} == {(e.reference, e.digest) for e in images.images}


# --- naming and reading, no server ------------------------------------------------------------


def test_names_follow_unpack(bundle_file: Path, source_set: SourceSet) -> None:
    with BundleStore.open(bundle_file) as store:
        assert ServedView([store], Naming()).repositories == sorted({image.path for image in source_set.images})
        flat = ServedView([store], Naming(prefix="mirror", flatten=True)).repositories
        assert {"mirror/calico-node", "mirror/k8s-sig-storage-local-volume-provisioner"} <= set(flat)
        hosted = ServedView([store], Naming(keep_host=True, maps=(("quay.io/calico", "net"),))).repositories
        assert {"net/node", "quay.io/library/nginx"} <= set(hosted)
        with pytest.raises(InputError) as collision:
            ServedView([store], Naming(maps=(("quay.io/calico/node", "x"), ("quay.io/calico/cni", "x"))))
        assert collision.value.remedy is Remedy.TELL_APART



@pytest.mark.parametrize(("header", "span"), [
    (None, None), ("bytes=0-9", (0, 10)), ("bytes=5-", (5, 100)), ("bytes=-10", (90, 100)), ("bytes=90-500", (90, 100)),
    ("bytes=0-1,5-9", None), ("items=0-1", None),
])
def test_a_range_header_is_one_byte_span_or_the_whole_blob(header: str | None, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == span


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=7-3", "bytes=-0"])
def test_a_range_outside_the_blob_cannot_be_satisfied(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 100)


def test_htpasswd_takes_bcrypt_entries_only_and_checks_passwords(tmp_path: Path, bundle_file: Path) -> None:
    def entry(flag: str) -> str:
        return subprocess.run(["htpasswd", flag, "-bn", "site", "pw"], capture_output=True, text=True,
                              check=True).stdout

    bcrypt_file, md5_file = tmp_path / "bcrypt", tmp_path / "md5"
    bcrypt_file.write_text(entry("-B"))
    md5_file.write_text(entry("-m"))
    users = Htpasswd.load(bcrypt_file)
    assert users.allows("Basic " + base64.b64encode(b"site:pw").decode())
    assert users.allows("Basic " + base64.b64encode(b"site:pw").decode())  # remembered, still right
    assert not users.allows("Basic " + base64.b64encode(b"site:pW").decode())
    assert not users.allows("Bearer x") and not users.allows(None)
    refused = run_cli("serve", str(bundle_file), "--htpasswd", str(md5_file), expect=InputError.exit_code)
    assert "line 1: not a bcrypt entry" in refused.stderr


@pytest.mark.registry
def test_stalled_clients_are_dropped_and_free_their_connection_slots(bundle_file: Path) -> None:
    with start_serve(str(bundle_file), "--timeout", "1", "--max-connections", "2") as running:
        host, port = running.host.split(":")
        stalled = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
        started = time.monotonic()
        answer = httpx.get(f"{running.url}/v2/", timeout=30)  # waits in the backlog until a slot frees
        assert answer.status_code == 200 and 0.5 < time.monotonic() - started < 10
        for connection in stalled:
            assert connection.recv(1) == b""  # closed by the server, having sent nothing
            connection.close()

"""The registry fixtures do what they promise, checked with raw HTTP against the live processes."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.registry import (
    CertAuthority,
    RunningRegistry,
    TokenRegistry,
    fetch_token,
    free_port,
    registry_catalog,
    registry_client,
    registry_get_manifest,
    registry_has_manifest,
    registry_tags,
    start_registry,
    start_token_server,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put_blob(client: httpx.Client, repo: str, data: bytes) -> httpx.Response:
    """Monolithic upload: POST opens a session, PUT ?digest= closes it with the whole body."""
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    if start.status_code != 202:
        return start
    location = str(client.base_url.join(start.headers["Location"]))
    sep = "&" if "?" in location else "?"
    return client.put(f"{location}{sep}digest={_digest(data)}", content=data,
                      headers={"Content-Type": "application/octet-stream"})


def _push_small_image(client: httpx.Client, repo: str, tag: str) -> tuple[bytes, str]:
    """Push one config + one layer + an OCI manifest; returns (manifest bytes, manifest digest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
                        sort_keys=True).encode()
    layer = b"layer-bytes-" + repo.encode()
    for blob in (config, layer):
        resp = _put_blob(client, repo, blob)
        assert resp.status_code == 201, resp.text
        assert resp.headers["Docker-Content-Digest"] == _digest(blob)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer),
                    "size": len(layer)}],
    }, separators=(",", ":")).encode()
    resp = client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert resp.status_code == 201, resp.text
    assert resp.headers["Docker-Content-Digest"] == _digest(manifest)
    return manifest, _digest(manifest)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------------------------------------- plain


def test_plain_registry_answers_v2(registry: RunningRegistry) -> None:
    resp = httpx.get(f"{registry.url}/v2/", trust_env=False)
    assert resp.status_code == 200
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert registry.scheme == "http" and registry.url == f"http://{registry.host}"
    assert registry.host.startswith("127.0.0.1:")
    assert registry.ref("a/b:1") == f"{registry.host}/a/b:1"


def test_push_lands_in_storage_dir_and_helpers_see_it(fresh_registry: RunningRegistry) -> None:
    assert registry_catalog(fresh_registry) == []
    assert not registry_has_manifest(fresh_registry, "lib/app", "v1")
    with registry_client(fresh_registry) as client:
        manifest, digest = _push_small_image(client, "lib/app", "v1")
    assert (fresh_registry.storage_dir / "docker/registry/v2/repositories/lib/app").is_dir()
    assert registry_catalog(fresh_registry) == ["lib/app"]
    assert registry_tags(fresh_registry, "lib/app") == ["v1"]
    assert registry_tags(fresh_registry, "lib/missing") == []
    assert registry_has_manifest(fresh_registry, "lib/app", digest)
    assert registry_get_manifest(fresh_registry, "lib/app", "v1") == (manifest, OCI_MANIFEST, digest)


def test_fresh_registries_are_separate(fresh_registry: RunningRegistry, registry: RunningRegistry) -> None:
    assert fresh_registry.host != registry.host
    assert fresh_registry.storage_dir != registry.storage_dir


def test_registry_factory_accepts_start_registry_kwargs(registry_factory: Callable[..., RunningRegistry],
                                                        test_ca: CertAuthority) -> None:
    reg = registry_factory(tls=test_ca, htpasswd={"bob": "pw-bob"})
    assert reg.scheme == "https" and reg.ca_file == test_ca.ca_cert
    assert (reg.username, reg.password) == ("bob", "pw-bob")
    ctx = ssl.create_default_context(cafile=str(reg.ca_file))
    assert httpx.get(f"{reg.url}/v2/", verify=ctx, trust_env=False).status_code == 401
    assert httpx.get(f"{reg.url}/v2/", verify=ctx, auth=("bob", "pw-bob"), trust_env=False).status_code == 200


@pytest.mark.registry
def test_start_failure_is_loud_and_shows_the_log(tmp_path: Path) -> None:
    bad = {"storage": {"filesystem": None, "no-such-driver": {}}}
    with pytest.raises(pytest.fail.Exception, match="log tail"):
        with start_registry(tmp_path, extra_config=bad):
            pass


@pytest.mark.registry
def test_start_retries_when_the_port_was_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr("support.registry.free_port", lambda: next(ports))
        with start_registry(tmp_path) as reg:
            assert reg.host != f"127.0.0.1:{taken}"
            assert httpx.get(f"{reg.url}/v2/", trust_env=False).status_code == 200
    assert "address already in use" in (tmp_path / "registry-1.log").read_text()


# ---------------------------------------------------------------------------------------------------- TLS


def test_tls_handshake_needs_the_test_ca(tls_registry: RunningRegistry, test_ca: CertAuthority) -> None:
    assert tls_registry.scheme == "https" and tls_registry.ca_file == test_ca.ca_cert
    ctx = ssl.create_default_context(cafile=str(tls_registry.ca_file))
    resp = httpx.get(f"{tls_registry.url}/v2/", verify=ctx, trust_env=False)
    assert resp.status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_registry.url}/v2/", trust_env=False)


def test_tls_certificate_names_localhost_too(tls_registry: RunningRegistry) -> None:
    port = tls_registry.host.rsplit(":", 1)[1]
    ctx = ssl.create_default_context(cafile=str(tls_registry.ca_file))
    resp = httpx.get(f"https://localhost:{port}/v2/", verify=ctx, trust_env=False)
    assert resp.status_code == 200


# ---------------------------------------------------------------------------------------------------- basic


def test_basic_auth_required_and_accepted(basic_registry: RunningRegistry) -> None:
    assert basic_registry.username == "alice"
    assert basic_registry.password and basic_registry.password.startswith("pw-")
    url = f"{basic_registry.url}/v2/"
    anonymous = httpx.get(url, trust_env=False)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert httpx.get(url, auth=("alice", "wrong"), trust_env=False).status_code == 401
    assert httpx.get(url, auth=(basic_registry.username, basic_registry.password),
                     trust_env=False).status_code == 200


def test_basic_registry_push_and_read_back(basic_registry: RunningRegistry) -> None:
    with registry_client(basic_registry) as client:
        manifest, digest = _push_small_image(client, "basic/app", "1.0")
    assert registry_get_manifest(basic_registry, "basic/app", "1.0") == (manifest, OCI_MANIFEST, digest)


# ---------------------------------------------------------------------------------------------------- token


def test_token_registry_challenges_with_bearer(token_registry: TokenRegistry) -> None:
    resp = httpx.get(f"{token_registry.url}/v2/", trust_env=False)
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{token_registry.token_url}"' in challenge
    assert f'service="{token_registry.service}"' in challenge
    assert token_registry.token_url.startswith("http://127.0.0.1:")
    assert token_registry.token_url.endswith("/service/token")


def test_token_response_shape(token_registry: TokenRegistry) -> None:
    resp = httpx.get(token_registry.token_url, params={"service": token_registry.service}, trust_env=False)
    assert resp.status_code == 200
    body = resp.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 60
    assert body["issued_at"].endswith("Z")


def test_pusher_pushes_and_reads_back(token_registry: TokenRegistry) -> None:
    scope = "repository:team/app:pull,push"
    before = len(token_registry.token_requests)
    token = fetch_token(token_registry, [scope], user="pusher")
    with httpx.Client(base_url=token_registry.url, headers=_bearer(token), trust_env=False) as client:
        assert client.get("/v2/").status_code == 200
        manifest, digest = _push_small_image(client, "team/app", "v1")
        got = client.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert got.status_code == 200 and got.content == manifest
    assert registry_get_manifest(token_registry, "team/app", digest) == (manifest, OCI_MANIFEST, digest)
    seen = token_registry.token_requests[before]
    assert (seen.path, seen.scopes, seen.user, seen.auth_sent, seen.status) == (
        "/service/token", [scope], "pusher", True, 200)
    assert seen.granted == [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]
    assert token_registry.users["pusher"] not in repr(token_registry.token_requests)


def test_reader_cannot_push(token_registry: TokenRegistry) -> None:
    token = fetch_token(token_registry, ["repository:team/ro:pull,push"], user="reader")
    with httpx.Client(base_url=token_registry.url, headers=_bearer(token), trust_env=False) as client:
        resp = client.post("/v2/team/ro/blobs/uploads/")
    assert resp.status_code in (401, 403)
    assert token_registry.token_requests[-1].granted == [
        {"type": "repository", "name": "team/ro", "actions": ["pull"]}]


def test_anonymous_pulls_only_public(token_registry: TokenRegistry) -> None:
    pusher = fetch_token(token_registry, ["repository:public/base:pull,push", "repository:private/base:pull,push"])
    with httpx.Client(base_url=token_registry.url, headers=_bearer(pusher), trust_env=False) as client:
        _, public_digest = _push_small_image(client, "public/base", "1")
        _, private_digest = _push_small_image(client, "private/base", "1")
    anon_public = fetch_token(token_registry, ["repository:public/base:pull,push"], user=None)
    anon_private = fetch_token(token_registry, ["repository:private/base:pull"], user=None)
    with httpx.Client(base_url=token_registry.url, trust_env=False) as client:
        accept = {"Accept": OCI_MANIFEST}
        ok = client.head(f"/v2/public/base/manifests/{public_digest}", headers=_bearer(anon_public) | accept)
        push = client.post("/v2/public/base/blobs/uploads/", headers=_bearer(anon_public))
        denied = client.head(f"/v2/private/base/manifests/{private_digest}",
                             headers=_bearer(anon_private) | accept)
    assert ok.status_code == 200
    assert push.status_code in (401, 403)
    assert denied.status_code == 401
    anon = token_registry.token_requests[-1]
    assert (anon.auth_sent, anon.user, anon.granted) == (False, None, [])


def test_token_server_rejects_bad_password(token_registry: TokenRegistry) -> None:
    resp = httpx.get(token_registry.token_url, params={"service": token_registry.service},
                     auth=("pusher", "not-the-password"), trust_env=False)
    assert resp.status_code == 401
    seen = token_registry.token_requests[-1]
    assert (seen.status, seen.auth_sent, seen.user) == (401, True, "pusher")
    assert "not-the-password" not in repr(seen)


def test_registry_rejects_tokens_from_an_untrusted_signer(token_registry: TokenRegistry, tmp_path: Path) -> None:
    with start_token_server(tmp_path, {"pusher": "x"}, service=token_registry.service,
                            issuer=token_registry.issuer) as rogue:
        forged, _ = rogue.issue("pusher", [])
    genuine = fetch_token(token_registry, [])
    url = f"{token_registry.url}/v2/"
    assert httpx.get(url, headers=_bearer(genuine), trust_env=False).status_code == 200
    assert httpx.get(url, headers=_bearer(forged), trust_env=False).status_code == 401


def test_catalog_and_tags_through_tokens(token_registry: TokenRegistry) -> None:
    with registry_client(token_registry, ["repository:cat/one:pull,push"]) as client:
        _push_small_image(client, "cat/one", "a")
        _push_small_image(client, "cat/one", "b")
    assert "cat/one" in registry_catalog(token_registry)
    assert sorted(registry_tags(token_registry, "cat/one")) == ["a", "b"]


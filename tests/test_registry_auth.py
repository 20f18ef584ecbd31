"""Credentials lookup and the 401 flow against real registries (htpasswd and Harbor-like tokens)."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import uuid
from pathlib import Path

import pytest
from bundler.cli.errors import describe
from bundler.digest import Digest
from bundler.errors import AuthError, RegistryError, Remedy
from bundler.oci import OCI_MANIFEST, RawManifest
from bundler.registry import RegistryClient, RegistryOptions
from bundler.registry.auth import Credentials, find_credentials, parse_challenges
from bundler.stores import Placement

from support.options import offline_options
from support.registry import RunningRegistry, TokenRegistry


def repo(prefix: str = "test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def upload(client: RegistryClient, repository: str, data: bytes) -> Digest:
    digest = Digest.of(data)
    client.blob_upload(repository, digest, len(data), lambda: [data])
    return digest


def small_manifest(config: Digest) -> RawManifest:
    body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2}}
    return RawManifest.from_bytes(json.dumps(body).encode(), OCI_MANIFEST)


def write_docker_config(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def install_helper(bin_dir: Path, name: str, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


# --------------------------------------------------------------------------------------------------
# Basic auth


def test_basic_auth_with_explicit_credentials(basic_registry: RunningRegistry) -> None:
    creds = {basic_registry.host: (basic_registry.username, basic_registry.password)}
    repository = repo()
    with RegistryClient(basic_registry.host, offline_options(credentials=creds)) as client:
        client.ping()
        digest = upload(client, repository, b"basic blob")
        assert b"".join(client.blob_chunks(repository, digest, 10)) == b"basic blob"


def test_basic_auth_wrong_password_is_auth_error(basic_registry: RunningRegistry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-" + uuid.uuid4().hex
    creds = {basic_registry.host: ("alice", secret)}
    repository = repo()
    with RegistryClient(basic_registry.host, offline_options(credentials=creds)) as client:
        with pytest.raises(AuthError) as caught:
            client.manifest_get(repository, "latest")
        with pytest.raises(AuthError) as pushed:
            upload(client, repository, b"x")
    message = str(caught.value)
    assert caught.value.exit_code == 11
    assert f"{basic_registry.host}/{repository}:latest" in message and "explicit credentials" in message
    encoded = base64.b64encode(f"alice:{secret}".encode()).decode()
    for text in (message, str(pushed.value), caplog.text):
        assert secret not in text and encoded not in text


def test_basic_auth_without_credentials_says_so(basic_registry: RunningRegistry) -> None:
    with RegistryClient(basic_registry.host, offline_options()) as client, pytest.raises(AuthError) as caught:
        client.ping()
    assert f"no credentials found for {basic_registry.host}" in str(caught.value)
    assert caught.value.remedy is Remedy.LOG_IN and "docker login" in describe(caught.value)


def test_docker_config_auths_entry(basic_registry: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = base64.b64encode(f"{basic_registry.username}:{basic_registry.password}".encode()).decode()
    config_dir = write_docker_config(tmp_path / "docker", {"auths": {f"http://{basic_registry.host}/v2/": {"auth": encoded}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    with RegistryClient(basic_registry.host, offline_options(docker_config_dir=None)) as client:
        client.ping()
        upload(client, repo(), b"from config.json")


def test_podman_auth_file(basic_registry: RunningRegistry, tmp_path: Path) -> None:
    auth_file = tmp_path / "auth.json"
    entry = {"username": basic_registry.username, "password": basic_registry.password}
    auth_file.write_text(json.dumps({"auths": {basic_registry.host: entry}}))
    with RegistryClient(basic_registry.host, offline_options(auth_file=auth_file)) as client:
        client.ping()


def test_credential_helper_on_path(basic_registry: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = tmp_path / "asked"
    answer = json.dumps({"ServerURL": basic_registry.host, "Username": basic_registry.username, "Secret": basic_registry.password})
    install_helper(tmp_path / "bin", "test", f"[ \"$1\" = get ] || exit 3\ncat > {asked}\necho '{answer}'\n", monkeypatch)
    config_dir = write_docker_config(tmp_path / "docker", {"credHelpers": {basic_registry.host: "test"}})
    with RegistryClient(basic_registry.host, offline_options(docker_config_dir=config_dir)) as client:
        client.ping()
    assert asked.read_text() == basic_registry.host


def test_missing_or_failing_helpers_mean_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bundler.registry")
    install_helper(tmp_path / "bin", "broken", "echo 'credentials not found in native keychain' >&2\nexit 1\n", monkeypatch)
    config = {"credsStore": "absent-helper", "credHelpers": {"a.example:5000": "broken"}}
    config_dir = write_docker_config(tmp_path / "docker", config)
    assert find_credentials("a.example:5000", offline_options(docker_config_dir=config_dir)) is None
    config["auths"] = {"a.example:5000": {"username": "u", "password": "p"}}
    write_docker_config(config_dir, config)
    found = find_credentials("a.example:5000", offline_options(docker_config_dir=config_dir))
    assert found == Credentials("u", "p", source=f"{config_dir / 'config.json'} (a.example:5000)")
    messages = caplog.text
    assert "docker-credential-absent-helper unusable" in messages and "docker-credential-broken has nothing" in messages


def test_docker_hub_credentials_are_found_under_the_index_url(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"hubuser:hubpass").decode()
    config_dir = write_docker_config(tmp_path / "docker", {"auths": {"https://index.docker.io/v1/": {"auth": encoded}}})
    found = find_credentials("docker.io", offline_options(docker_config_dir=config_dir))
    assert found is not None and (found.username, found.password) == ("hubuser", "hubpass")
    assert "hubpass" not in repr(found)


def test_explicit_credentials_win_over_files(tmp_path: Path) -> None:
    config_dir = write_docker_config(tmp_path / "docker", {"auths": {"r.example": {"username": "file", "password": "f"}}})
    found = find_credentials("r.example", offline_options(docker_config_dir=config_dir, credentials={"r.example": ("cli", "c")}))
    assert found is not None and found.username == "cli"


def test_identity_token_from_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_helper(tmp_path / "bin", "tok", "echo '{\"Username\": \"<token>\", \"Secret\": \"refresh-me\"}'\n", monkeypatch)
    config_dir = write_docker_config(tmp_path / "docker", {"credsStore": "tok"})
    found = find_credentials("r.example", offline_options(docker_config_dir=config_dir))
    assert found is not None and found.identity_token == "refresh-me" and found.username == ""


# --------------------------------------------------------------------------------------------------
# Bearer tokens


def token_options(reg: TokenRegistry, user: str | None = "pusher") -> RegistryOptions:
    creds = {reg.host: (user, reg.users[user])} if user else {}
    return offline_options(credentials=creds)


def requests_since(reg: TokenRegistry, start: int) -> list:
    return reg.token_requests[start:]


def token_server_saw(reg: TokenRegistry, start: int) -> str:
    """For a failure message: each request that reached the token server (an answer it did not give came from
    some other listener on its port)."""
    return ", ".join(f"{r.method} {r.path} -> {r.status}" for r in requests_since(reg, start)) or "nothing"


def test_bearer_flow_asks_push_scope_and_caches_tokens(token_registry: TokenRegistry) -> None:
    repository = repo()
    start = len(token_registry.token_requests)
    with RegistryClient(token_registry.host, token_options(token_registry)) as client:
        try:
            config = upload(client, repository, b"{}")
            client.manifest_put(repository, "v1", small_manifest(config))
        except RegistryError as error:
            pytest.fail(f"{error}; the token server saw: {token_server_saw(token_registry, start)}")
        assert client.manifest_get(repository, "v1").data == small_manifest(config).data
        assert client.manifest_get(repository, "v1").data  # same scope again: cached token
    seen = requests_since(token_registry, start)
    push = [r for r in seen if r.scopes == [f"repository:{repository}:pull,push"]]
    pull = [r for r in seen if r.scopes == [f"repository:{repository}:pull"]]
    assert len(push) == 1 and len(pull) == 1, seen
    assert all(r.auth_sent and r.user == "pusher" and r.status == 200 for r in seen)
    assert all(r.service == token_registry.service for r in seen)
    assert push[0].granted == [{"type": "repository", "name": repository, "actions": ["pull", "push"]}]


def test_bearer_mount_asks_both_scopes_in_one_token(token_registry: TokenRegistry) -> None:
    source, target = repo(), repo()
    with RegistryClient(token_registry.host, token_options(token_registry)) as client:
        digest = upload(client, source, b"mount me")
        start = len(token_registry.token_requests)
        assert client.blob_upload(target, digest, 8, lambda: [b"mount me"], mount_from=source) is Placement.MOUNTED
    scopes = [r.scopes for r in requests_since(token_registry, start)]
    assert scopes == [[f"repository:{target}:pull,push", f"repository:{source}:pull"]]


def test_reader_cannot_push_and_is_told_why(token_registry: TokenRegistry) -> None:
    repository = repo()
    with RegistryClient(token_registry.host, token_options(token_registry)) as pusher:
        digest = upload(pusher, repository, b"readable")
    start = len(token_registry.token_requests)
    with RegistryClient(token_registry.host, token_options(token_registry, "reader")) as reader:
        assert b"".join(reader.blob_chunks(repository, digest, 8)) == b"readable"
        with pytest.raises(AuthError) as caught:
            upload(reader, repository, b"not allowed")
    message = str(caught.value)
    assert caught.value.exit_code == 11
    assert repository in message and "push (write) rights needed" in message
    pushes = [r for r in requests_since(token_registry, start) if r.scopes == [f"repository:{repository}:pull,push"]]
    assert len(pushes) == 1 and pushes[0].granted[0]["actions"] == ["pull"]  # one fresh token, then a final 401


def test_anonymous_pull_of_public_repository(token_registry: TokenRegistry) -> None:
    public, private = repo("public"), repo()
    with RegistryClient(token_registry.host, token_options(token_registry)) as pusher:
        digest = upload(pusher, public, b"open")
        upload(pusher, private, b"open")
    start = len(token_registry.token_requests)
    with RegistryClient(token_registry.host, offline_options()) as anonymous:
        assert b"".join(anonymous.blob_chunks(public, digest, 4)) == b"open"
        with pytest.raises(AuthError) as caught:
            list(anonymous.blob_chunks(private, digest, 4))
    assert "no credentials found" in str(caught.value)
    assert all(not r.auth_sent for r in requests_since(token_registry, start))


def test_wrong_password_at_token_service(token_registry: TokenRegistry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "nope-" + uuid.uuid4().hex
    with RegistryClient(token_registry.host, offline_options(credentials={token_registry.host: ("pusher", secret)})) as client:
        with pytest.raises(AuthError) as caught:
            client.manifest_get(repo(), "latest")
    assert caught.value.exit_code == 11 and "token" in str(caught.value)
    assert token_registry.token_requests[-1].status == 401
    assert secret not in str(caught.value) and secret not in caplog.text


def test_no_token_or_password_in_logs(token_registry: TokenRegistry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = token_registry.users["pusher"]
    repository = repo()
    with RegistryClient(token_registry.host, token_options(token_registry)) as client:
        upload(client, repository, b"quiet")
        with pytest.raises(Exception) as caught:
            client.manifest_get(repository, "missing")
        tokens = [token for token, _ in client._auth._tokens.values()]
    assert tokens
    for text in (caplog.text, str(caught.value)):
        assert password not in text
        assert not any(token in text or token[-40:] in text for token in tokens)


def test_ping_validates_credentials(token_registry: TokenRegistry) -> None:
    with RegistryClient(token_registry.host, token_options(token_registry)) as client:
        client.ping()
    with RegistryClient(token_registry.host, offline_options(credentials={token_registry.host: ("pusher", "bad")})) as client:
        with pytest.raises(AuthError):
            client.ping()


# --------------------------------------------------------------------------------------------------
# Challenge parsing


def test_parse_bearer_challenge_with_quoted_commas() -> None:
    header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull"'
    (challenge,) = parse_challenges([header])
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.example/token"
    assert challenge.params["service"] == "registry.example"
    assert challenge.scopes == ["repository:a/b:pull,push", "repository:c:pull"]


def test_parse_basic_and_several_challenges() -> None:
    found = parse_challenges(['Basic realm="harbor"', 'Bearer realm=https://h/service/token, service=harbor-registry'])
    assert [(c.scheme, c.realm) for c in found] == [("basic", "harbor"), ("bearer", "https://h/service/token")]
    assert found[1].params["service"] == "harbor-registry"
    two = parse_challenges(['Basic realm="a, b", Bearer realm="x",error="insufficient_scope"'])
    assert [(c.scheme, c.realm) for c in two] == [("basic", "a, b"), ("bearer", "x")]
    assert two[1].params["error"] == "insufficient_scope"
    assert parse_challenges(["", "garbage"]) == []

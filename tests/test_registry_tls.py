"""TLS trust: --ca-file, docker's certs.d, insecure hosts, and no silent downgrade to http."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from bundler.cli.errors import describe
from bundler.digest import Digest
from bundler.errors import LocalIOError, Remedy, UnreachableError
from bundler.registry import Backoff, RegistryClient, RegistryOptions
from bundler.registry.transport import is_loopback
from support.options import NOWHERE, offline_options
from support.cli import run_cli
from support.registry import RunningRegistry, make_cert_authority


def options(**overrides: object) -> RegistryOptions:
    return offline_options(**{"backoff": Backoff(initial=0.001, maximum=0.005), "certs_dir": NOWHERE / "certs.d",
                              **overrides})


def round_trip(client: RegistryClient) -> None:
    data = b"over tls"
    digest = Digest.of(data)
    client.blob_upload("tls/test", digest, len(data), lambda: [data])
    assert b"".join(client.blob_chunks("tls/test", digest, len(data))) == data


def test_ca_file_is_trusted(tls_registry: RunningRegistry) -> None:
    with RegistryClient(tls_registry.host, options(ca_file=tls_registry.ca_file)) as client:
        client.ping()
        assert client._schemes.scheme(client._http) == "https"
        round_trip(client)


def test_untrusted_certificate_is_unreachable_without_retries_or_downgrade(tls_registry: RunningRegistry) -> None:
    started = time.monotonic()
    with RegistryClient(tls_registry.host, options(backoff=Backoff(initial=1.0))) as client:
        with pytest.raises(UnreachableError) as caught:
            client.ping()
    message = str(caught.value)
    assert caught.value.exit_code == 13
    assert "certificate" in message and tls_registry.host in message and caught.value.remedy is Remedy.TRUST_CA
    assert time.monotonic() - started < 1.0  # TLS trouble is not retried (the backoff would sleep 1 s)


@pytest.mark.registry
def test_a_certificate_for_other_names_is_named_so_not_untrusted(tls_registry: RunningRegistry) -> None:
    """127.1 reaches 127.0.0.1, which the certificate lists, under a name it does not: no CA would help."""
    other_name = "127.1:" + tls_registry.host.rpartition(":")[2]
    with RegistryClient(other_name, options(ca_file=tls_registry.ca_file)) as client:
        with pytest.raises(UnreachableError) as caught:
            client.ping()
    assert "not issued for that name" in str(caught.value) and caught.value.remedy is None
    assert "--ca-file" not in describe(caught.value)


@pytest.mark.registry
def test_a_ca_file_that_does_not_sign_the_certificate_is_named(tls_registry: RunningRegistry, tmp_path: Path) -> None:
    """"pass --ca-file" would be wrong advice to someone who did: the file given is what to check."""
    other = make_cert_authority(tmp_path / "other-ca")
    done = run_cli("pack", f"{tls_registry.host}/lib/app:1", "-o", str(tmp_path / "x.tar.zst"), "--retries", "0",
                   "--ca-file", str(other.ca_cert), expect=UnreachableError.exit_code)
    [line] = done.error_lines
    assert "is not trusted" in line and line.endswith("the --ca-file given does not sign it (is it this registry's CA?)")
    assert "or pass --ca-file" not in line


def test_docker_certs_d_directory(tls_registry: RunningRegistry, tmp_path: Path) -> None:
    certs_dir = tmp_path / "certs.d"
    (certs_dir / tls_registry.host).mkdir(parents=True)
    assert tls_registry.ca_file is not None
    shutil.copy(tls_registry.ca_file, certs_dir / tls_registry.host / "ca.crt")
    with RegistryClient(tls_registry.host, options(certs_dir=certs_dir)) as client:
        round_trip(client)


def test_insecure_host_skips_verification_but_keeps_tls(tls_registry: RunningRegistry) -> None:
    with RegistryClient(tls_registry.host, options(insecure=frozenset({tls_registry.host}))) as client:
        round_trip(client)
        assert client._schemes.scheme(client._http) == "https"


def test_unreadable_ca_file_is_a_local_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(LocalIOError):
        RegistryClient("127.0.0.1:1", options(ca_file=bad))


def test_loopback_detection() -> None:
    for host in ("127.0.0.1:5000", "127.3.4.5", "localhost:80", "[::1]:5000", "::1", "registry.localhost"):
        assert is_loopback(host), host
    for host in ("10.0.0.1:5000", "registry.example.com", "[2001:db8::1]:443", "localhostish.com"):
        assert not is_loopback(host), host

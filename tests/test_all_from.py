"""``pack --all-from REGISTRY[/PROJECT]``: every tag of every repository, from the catalog or from Harbor's API.

The open-catalog case runs against a real Distribution, paginated with a tiny page size so that
``Link: rel="next"`` is followed. Harbor's closed catalog is played by the stub of support/harbor.py,
which answers ``/v2/_catalog`` with 401/403/404, serves ``/api/v2.0/projects/{p}/repositories`` page by
page (basic auth required), and passes every other ``/v2/`` request through to the real registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from bundler.errors import AuthError, InputError, NotFoundError
from bundler.registry import RegistryClient, harbor
from support.cli import bundle_index, run_main
from support.harbor import PASSWORD, HarborStub, start_harbor_stub
from support.images import seed_into
from support.registry import RunningRegistry, start_registry
from support.servers import starts_server

PROJECTS = ("proj", "team")


@dataclass
class Source:
    registry: RunningRegistry
    digests: dict[str, str]
    """``repo:tag`` (without project) -> top digest."""


@pytest.fixture(scope="module")
@starts_server
def source(tmp_path_factory: pytest.TempPathFactory, small_imageset) -> Iterator[Source]:
    with start_registry(tmp_path_factory.mktemp("all-from-registry")) as reg:
        for project in PROJECTS:
            seed_into(reg, small_imageset, repo_prefix=project)
        yield Source(reg, {info.name: info.digest for info in small_imageset.images})


def packed(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> dict[str, str]:
    """``reference -> digest`` of the bundle that ``pack ARGS`` wrote; the pack must succeed."""
    bundle = tmp_path / "all.tar.zst"
    code, _, stderr = run_main(capsys, "pack", *args, "-o", str(bundle), "-q", "--no-cache")
    assert code == 0, stderr
    return {image["reference"]: image["digest"] for image in bundle_index(capsys, bundle)["images"]}


def test_project_from_a_paginated_catalog(source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """One entry per page: 22 repositories and nginx's two tags are complete only if every next page is followed."""
    monkeypatch.setattr(RegistryClient, "page_size", 1)
    host = source.registry.host
    assert packed(capsys, tmp_path, "--all-from", f"{host}/proj") == {
        f"{host}/proj/{name}": digest for name, digest in source.digests.items()}


def test_whole_registry_filtered_by_patterns(source: Source, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    host = source.registry.host
    got = packed(capsys, tmp_path, "--all-from", host, "--repo", "team/calico/*", "--repo", "*/pause")
    expected = {f"{host}/team/{n}": d for n, d in source.digests.items() if n.startswith("calico/")}
    expected |= {f"{host}/{p}/pause:3.9": source.digests["pause:3.9"] for p in PROJECTS}
    assert got == expected


# --------------------------------------------------------------------------------------------------
# Harbor: catalog closed to non-admins, repositories listed by the project API


@pytest.fixture(params=[401, 403, 404])
def harbor_stub(request: pytest.FixtureRequest, source: Source,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[HarborStub]:
    """The stub, with the registry credentials for it in the environment (``--username admin``)."""
    monkeypatch.setenv("IMGBUNDLE_PASSWORD", PASSWORD)
    with start_harbor_stub(source.registry, request.param) as stub:
        yield stub


def test_closed_catalog_falls_back_to_harbor_projects_api(harbor_stub: HarborStub, source: Source, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page of the project's repositories is read; a sample is packed through the stub."""
    monkeypatch.setattr(harbor, "REPOSITORIES_PAGE_SIZE", 5)
    host = harbor_stub.host
    got = packed(capsys, tmp_path, "--all-from", f"{host}/team", "--username", "admin", "--repo", "*/calico/*",
                 "--repo", "*/k8s/sig-storage/*")
    assert got == {f"{host}/team/{name}": digest for name, digest in source.digests.items()
                   if name.startswith(("calico/", "k8s/sig-storage/"))}
    assert len(got) == 3
    repositories = len({name.split(":")[0] for name in source.digests})
    assert harbor_stub.pages == [("team", n, 5) for n in range(1, repositories // 5 + 2)]


@pytest.mark.parametrize("harbor_stub", [401], indirect=True)
@pytest.mark.parametrize("target, user, error, message", [
    ("{host}", "admin", InputError, "name a project: {host}/PROJECT"),
    ("{host}/nosuch", "admin", NotFoundError, "Harbor project nosuch"),
    ("{host}/team", "mallory", AuthError, "credentials refused"),
])
def test_closed_catalog_failures_say_why(harbor_stub: HarborStub, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         target: str, user: str, error: type, message: str) -> None:
    code, _, stderr = run_main(capsys, "pack", "--all-from", target.format(host=harbor_stub.host), "--username", user,
                               "-o", str(tmp_path / "x.tar.zst"), "-q")
    assert code == error.exit_code and message.format(host=harbor_stub.host) in stderr, stderr
    assert not (tmp_path / "x.tar.zst").exists()


@pytest.mark.parametrize("harbor_stub", [401], indirect=True)
@pytest.mark.parametrize("target", ["{host}", "{host}/team"])
def test_a_closed_catalog_without_credentials_says_to_log_in(harbor_stub: HarborStub, tmp_path: Path, target: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Not "name a project" nor "is this a Harbor?": the registry refused an anonymous client."""
    code, _, stderr = run_main(capsys, "pack", "--all-from", target.format(host=harbor_stub.host),
                               "-o", str(tmp_path / "x.tar.zst"), "-q")
    assert code == AuthError.exit_code, stderr
    assert f"no credentials found for {harbor_stub.host}; log in with docker login, or pass --username" in stderr

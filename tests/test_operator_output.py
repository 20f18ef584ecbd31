"""What a new operator meets on the command line: plans printed as valid references, option values checked
before the first request. (Issue #19; the tests that need a registry live beside the commands they run.)"""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from bundler.bundle import BundleIndex, ImageEntry, SkippedEntry, Totals
from bundler.cli import main
from bundler.cli.bars import RichProgress
from bundler.cli.tables import image_lines, skipped_lines, verify_lines, volumes_line
from bundler.cli.unpack_view import render_unpack
from bundler.errors import AuthError, InputError, LocalIOError, NotABundleError, NotFoundError, UnreachableError
from bundler.mapping import plan_targets
from bundler.pack import ImageRequest
from bundler.platforms import PlatformFilter
from bundler.reference import parse_reference
from bundler.registry.errors import map_status
from bundler.registry.options import RegistryOptions, RetryNotice
from bundler.unpack import UnpackResult
from bundler.unpack.plan import ImagePlan, PushPlan
from bundler.unpack.result import ImageOutcome
from bundler.verify import verify_bundle
from bundler.verify.report import SidecarCheck, SidecarState
from bundler.words import counted
from support.bundles import blob_frame_offset, flip, make_image_set
from support.cli import cli_environment, run_cli
from support.registry import RunningRegistry

DIGEST = "sha256:" + "83" * 32


def entry(line: str) -> ImageEntry:
    return ImageEntry(source=line, reference=str(parse_reference(line)), digest=DIGEST,
                      media_type="application/vnd.oci.image.index.v1+json", platforms=[], size=1)


def test_the_dry_run_plan_prints_references_a_client_can_pull(capsys: pytest.CaptureFixture[str]) -> None:
    images = [entry("registry.k8s.io/pause@" + DIGEST), entry("quay.io/calico/node:v3.26.4")]
    targets = plan_targets(images, "harbor.lan/k8s")
    plan = PushPlan([ImagePlan(target) for target in targets], {}, {})
    render_unpack(UnpackResult("harbor.lan", True, plan, [ImageOutcome(t, True) for t in targets]),
                  as_json=False, report=None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"registry.k8s.io/pause@{DIGEST} -> harbor.lan/k8s/pause@{DIGEST}"
    assert lines[1] == f"quay.io/calico/node:v3.26.4 -> harbor.lan/k8s/calico/node:v3.26.4@{DIGEST}"
    for line in lines[:2]:
        parse_reference(line.split(" -> ")[1])  # each target is one valid reference


def test_platforms_take_buildx_comma_lists() -> None:
    parsed = PlatformFilter.parse_list(["linux/amd64,linux/arm64/v8", "linux/s390x"])
    assert [str(p) for p in parsed] == ["linux/amd64", "linux/arm64/v8", "linux/s390x"]


@pytest.mark.parametrize("text", ["linux/amd64,linux/arm64", "linux", "linux/amd64/v8/x", "linux/amd 64", "linux//"])
def test_a_platform_is_os_arch_and_an_optional_variant(text: str) -> None:
    with pytest.raises(InputError, match="expected OS/ARCH"):
        PlatformFilter.parse(text)


def test_a_bad_platform_fails_before_any_request() -> None:
    """Port 1 refuses connections: a check made only after contacting it would exit 13, not 3."""
    done = run_cli("pack", "127.0.0.1:1/lib/app:1", "-o", "/nonexistent/x.tar.zst", "--platform", "linux/amd64,arm64",
                   expect=InputError.exit_code)
    assert done.error_lines == [
        "imgbundle: error: --platform 'arm64': expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64"
    ]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_taken_before_or_after_the_command(where: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.zst"
    junk.write_bytes(b"not a bundle")
    args = ["--debug", "verify", str(junk)] if where == "before" else ["verify", str(junk), "--debug"]
    root, httpx_logger = logging.getLogger(), logging.getLogger("httpx")
    saved = root.level, httpx_logger.level
    try:
        with pytest.raises(SystemExit) as ended:
            main(args)
        assert ended.value.code == NotABundleError.exit_code
        assert root.level == logging.DEBUG and httpx_logger.level == logging.NOTSET
    finally:
        root.setLevel(saved[0])
        httpx_logger.setLevel(saved[1])


PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/ppc64le", "linux/s390x"]


def listed_index() -> BundleIndex:
    rewritten = "sha256:" + "ab" * 32
    images = [
        ImageEntry(source="a", reference="registry.example.lan:5000/k8s/sig-storage/local-volume-provisioner:v2.5.0",
                   digest=DIGEST, media_type="x", platforms=PLATFORMS, size=123 << 20),
        ImageEntry(source="b", reference=f"registry.k8s.io/pause@{DIGEST}", digest=DIGEST, media_type="x",
                   platforms=["linux/amd64"], size=300 << 10, original_digest=rewritten),
    ]
    return BundleIndex(format="imgbundle", version="1.0", created="2026-12-07T00:00:00Z", tool="imgbundle",
                       images=images, skipped=[SkippedEntry("quay.io/gone:1", "not found on quay.io")],
                       manifests=[], blobs=[], totals=Totals(2, 3, 4, 5, 6))


def test_list_fits_80_columns_with_short_digests_and_counted_platforms() -> None:
    lines = list(image_lines(listed_index(), 80))
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    assert DIGEST not in text and "83" * 6 in text  # 12 hex characters, as docker images shows them
    assert "was " + "ab" * 6 in text  # a rewritten index still says what it was
    assert "linux/amd64 +4" in text and "123.0 MiB" in text
    folded = "".join(line.split("  ")[0].strip() for line in lines[2:5])
    assert folded == "registry.example.lan:5000/k8s/sig-storage/local-volume-provisioner:v2.5.0"


def test_list_on_a_wide_terminal_lists_every_platform() -> None:
    text = "\n".join(image_lines(listed_index(), 160))
    assert ", ".join(PLATFORMS) in text and DIGEST not in text


def test_list_without_truncation_is_complete() -> None:
    text = "\n".join(image_lines(listed_index()))
    assert DIGEST in text and ", ".join(PLATFORMS) in text and f"registry.k8s.io/pause@{DIGEST}" in text
    assert skipped_lines(listed_index()) == ["skipped quay.io/gone:1: not found on quay.io"]


@pytest.mark.parametrize(("names", "line"), [
    (["b.000"], "1 volume: b.000"),
    (["b.000", "b.001"], "2 volumes: b.000, b.001"),
    (["b.000", "b.001", "b.002"], "3 volumes: b.000 … b.002"),
])
def test_volume_lines_count_and_name_each_volume_once(names: list[str], line: str) -> None:
    assert volumes_line(names) == line


def test_counted_nouns_are_singular_for_one() -> None:
    assert [counted(1, "blob"), counted(0, "blob"), counted(2, "repository", "repositories")] == [
        "1 blob", "0 blobs", "2 repositories"]
    assert str(SidecarCheck(SidecarState.OK, volumes=1)) == "ok (sha256 of the one volume matches sidecar)"


def not_found(what: str) -> NotFoundError:
    request = httpx.Request("GET", "http://127.0.0.1:5000/v2/lib/app/manifests/1")
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
    error = map_status(httpx.Response(404, request=request, content=body), what)
    assert isinstance(error, NotFoundError)
    return error


def test_a_skipped_or_failed_image_is_named_once() -> None:
    request = ImageRequest("127.0.0.1:5000/lib/app:1", parse_reference("127.0.0.1:5000/lib/app:1"))
    error = not_found("127.0.0.1:5000/lib/app:1")
    assert str(error) == "127.0.0.1:5000/lib/app:1: not found on 127.0.0.1:5000 (MANIFEST_UNKNOWN: manifest unknown)"
    assert f"{request.line}: {request.reason(error)}" == str(error)
    child = not_found(f"127.0.0.1:5000/lib/app@{DIGEST}")  # a part of the image keeps its own name
    assert request.reason(child) == str(child)
    target = plan_targets([entry("127.0.0.1:5000/lib/app:1")], "harbor.lan")[0]
    outcome = ImageOutcome(target, False, not_found(target.display))
    assert outcome.reason == "not found on 127.0.0.1:5000 (MANIFEST_UNKNOWN: manifest unknown)"
    result = UnpackResult("harbor.lan", False, PushPlan([ImagePlan(target)], {}, {}), [outcome])
    assert result.failure_summary().count(target.display) == 1


def test_progress_counts_references_and_retries_and_speaks_binary_units() -> None:
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None)
    with RichProgress(console) as progress:
        progress.phase("resolve", total_items=3)
        for name in "abc":
            progress.item_done(name)
        progress.retried(RetryNotice("h:5000/a:1", "GET manifest", "cannot connect to h:5000", 1, 5, 0.5, unreachable=True), shown=False)
        progress.phase("download", total_bytes=4 << 20, total_items=2)
        for _ in range(4):
            progress.advance(1 << 20)
            time.sleep(0.02)
    screen = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", console.file.getvalue())  # type: ignore[attr-defined]
    assert "h:5000/a:1: GET manifest: cannot connect to h:5000; retry 1 of 5 in 0.5s" in screen
    assert "resolve   3/3 (1 retry)" in screen and "4.0 MiB of 4.0 MiB" in screen and "MiB/s" in screen
    assert "?" not in screen and " bytes" not in screen and "MB/s" not in screen


@pytest.mark.parametrize("command", [["pack", "127.0.0.1:1/lib/app:1", "-o", "{tmp}/x.tar.zst"],
                                     ["unpack", "{bundle}", "--to", "127.0.0.1:1/site"]])
def test_every_retry_is_a_line_on_stderr(command: list[str], tmp_path: Path) -> None:
    """Port 1 refuses connections: each of the two retries says so before its wait, naming the registry."""
    bundle = tmp_path / "b.tar.zst"
    make_image_set().write(bundle)
    args = [part.format(tmp=tmp_path, bundle=bundle) for part in command]
    done = run_cli(*args, "--retries", "2", "--retry-timeout", "0", expect=UnreachableError.exit_code)
    retries = [line for line in done.stderr_lines if "; retry " in line]
    assert [line.split("; retry ")[1].split(" in ")[0] for line in retries] == ["1 of 2", "2 of 2"]
    assert all("cannot connect to 127.0.0.1:1" in line for line in retries)
    assert "api/v2.0" not in done.stderr  # unpack's first request is Harbor's API; the error names the registry


@pytest.mark.parametrize(("value", "host", "matches"), [
    ("vm:15000", "vm:15000", True), ("VM:15000", "vm:15000", True), ("vm", "vm:15000", False),
    ("vm", "vm", True), ("vm:443", "vm", True), ("vm", "vm:443", True), ("[::1]", "[::1]:5000", False),
    ("[::1]:5000", "[::1]:5000", True),
])
def test_insecure_registry_names_host_and_port_as_docker_does(value: str, host: str, matches: bool) -> None:
    assert RegistryOptions(insecure=frozenset({value})).allows_insecure(host) is matches


@pytest.mark.registry
def test_a_plain_http_registry_under_another_name_says_how_to_allow_it(registry: RunningRegistry,
                                                                      tmp_path: Path) -> None:
    """127.1 reaches the loopback registry under a name that is not loopback's, as vm:15000 would a VM's."""
    host = "127.1:" + registry.host.rpartition(":")[2]
    done = run_cli("pack", f"{host}/lib/app:1", "-o", str(tmp_path / "x.tar.zst"), "--retries", "0",
                   "--insecure-registry", "127.1", expect=UnreachableError.exit_code)
    assert done.error_lines == [
        f"imgbundle: error: 1 of 1 reference failed: {host}/lib/app:1: {host} answers plain HTTP, not HTTPS; "
        f"if that is meant, pass --insecure-registry {host}"
    ]
    assert (f"warning: --insecure-registry 127.1 names no registry this command uses ({host}); "
            f"give HOST:PORT, e.g. --insecure-registry {host}") in done.stderr_lines
    allowed = run_cli("pack", f"{host}/lib/app:1", "-o", str(tmp_path / "x.tar.zst"), "--retries", "0",
                      "--insecure-registry", host, expect=NotFoundError.exit_code)  # it got as far as asking
    assert "not found on" in allowed.error_lines[0] and "warning" not in allowed.stderr


@pytest.mark.parametrize(("extra", "code", "says"), [
    (["-o", "/nonexistent/x.tar.zst"], LocalIOError.exit_code, "/nonexistent/x.tar.zst: no such directory /nonexistent"),
    (["-o", "{tmp}/x.tar.zst", "--since", "{tmp}/nosuch.json"], 2, "'--since': File"),
    (["-o", "{tmp}/x.tar.zst", "--created", "yesterday"], InputError.exit_code, "--created 'yesterday' is not"),
])
def test_local_paths_and_values_are_checked_before_the_first_request(extra: list[str], code: int, says: str,
                                                                     tmp_path: Path) -> None:
    """Port 1 refuses connections: a check made only after contacting it would exit 13 after the retries."""
    args = [part.format(tmp=tmp_path) for part in extra]
    done = run_cli("pack", "127.0.0.1:1/lib/app:1", *args, expect=code)
    assert says in done.stderr and "retry" not in done.stderr


def test_unpack_checks_the_report_directory_before_the_first_request(tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.zst"
    make_image_set().write(bundle)
    done = run_cli("unpack", str(bundle), "--to", "127.0.0.1:1/site", "--report", "/nonexistent/map.csv",
                   expect=LocalIOError.exit_code)
    assert done.error_lines == ["imgbundle: error: --report /nonexistent/map.csv: no such directory /nonexistent"]


def test_help_names_every_place_credentials_come_from() -> None:
    for command in ("pack", "unpack"):
        text = " ".join(run_cli(command, "--help").stdout.split())
        assert all(word in text for word in ("--authfile", "--creds", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG"))


@pytest.mark.registry
@pytest.mark.parametrize("login", ["authfile", "creds", "creds-stdin", "none"])
def test_credentials_as_skopeo_and_podman_take_them(login: str, basic_registry: RunningRegistry,
                                                     tmp_path: Path) -> None:
    """With working credentials the registry says "not found" (exit 12) for an image it does not have; without, 11."""
    user, password = basic_registry.username or "", basic_registry.password or ""
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {basic_registry.host: {"username": user, "password": password}}}))
    flags = {"authfile": ["--authfile", str(auth_file)], "creds": ["--creds", f"{user}:{password}"],
             "creds-stdin": ["--creds", user, "--password-stdin"], "none": []}[login]
    done = run_cli("pack", basic_registry.ref("lib/none:1"), "-o", str(tmp_path / "x.tar.zst"), *flags,
                   stdin=password + "\n", expect=AuthError.exit_code if login == "none" else NotFoundError.exit_code)
    assert password not in done.stderr + done.stdout


def test_a_password_not_given_is_asked_for_on_a_terminal_without_echo(tmp_path: Path) -> None:
    """Port 1 refuses connections: the prompt comes first, then the (failing) request; the secret shows nowhere."""
    secret = "s3cret-typed"
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "bundler", "pack", "127.0.0.1:1/lib/app:1", "-o",
                             str(tmp_path / "x.tar.zst"), "--creds", "ops", "--retries", "0", "--retry-timeout", "0"],
                            stdin=terminal, stdout=subprocess.PIPE, stderr=terminal, env=cli_environment())
    os.close(terminal)
    screen = _read_until(controller, b"password for ops: ")
    os.write(controller, secret.encode() + b"\n")
    stdout, _ = proc.communicate(timeout=120)
    screen += _read_until(controller, b"imgbundle: error:")
    os.close(controller)
    assert proc.returncode == UnreachableError.exit_code
    assert secret.encode() not in screen + stdout


def _read_until(fd: int, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_unpack_help_says_its_arguments_are_one_bundle() -> None:
    text = " ".join(run_cli("unpack", "--help").stdout.split())
    assert "BUNDLE... is one bundle: its file, or a split bundle's volumes" in text


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_as_the_readme_says(shell: str) -> None:
    script = run_cli(env={"_IMGBUNDLE_COMPLETE": f"{shell}_source"}).stdout
    assert "_IMGBUNDLE_COMPLETE" in script and "imgbundle" in script
    if shell == "bash":
        completed = run_cli(env={"_IMGBUNDLE_COMPLETE": "bash_complete", "COMP_WORDS": "imgbundle pack --no-",
                                 "COMP_CWORD": "2"}).stdout
        assert sorted(completed.split()) == ["plain,--no-cache", "plain,--no-referrers"]


def test_a_damaged_member_is_named_once_in_verify_lines(tmp_path: Path) -> None:
    images = make_image_set()
    bundle = tmp_path / "b.tar.zst"
    images.write(bundle)
    digest = max(images.blobs, key=lambda d: len(images.blobs[d][0]))
    data = bundle.read_bytes()
    bundle.write_bytes(flip(data, blob_frame_offset(data, digest) + 100))
    lines = verify_lines(verify_bundle(bundle))
    [bad] = [line for line in lines if line.startswith(f"BAD {digest}")]
    assert bad.startswith(f"BAD {digest}: damaged") and bad.count(digest) == 1, bad
    sums = lines[0].removeprefix("checksum: MISMATCH: ")  # the sums, once: the BAD line says only that they differ
    assert "BAD checksum: file does not match its .sha256 sidecar" in lines and sum(sums in line for line in lines) == 1

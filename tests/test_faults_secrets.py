"""Passwords and tokens never appear in output (``--debug`` included), error messages or bundles.

pack and unpack run through the real command against ``basic_registry`` (htpasswd) and ``token_registry``
(bearer tokens), with credentials from a DOCKER_CONFIG ``config.json`` and from ``--username`` plus
``--password-stdin``. Everything they print, the bundles (compressed and decompressed), their sidecars and
the ``--report`` files are searched for the passwords, the base64 ``user:password`` pairs and every token the
token server issued during the test.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from support.cli import CliRun, run_cli
from support.faults import Answer, FaultProxy, Rule
from support.registry import RunningRegistry, TokenRegistry

PREFIX = "secrets"
SINGLE = "mirantis/k8s-netchecker-server:v1.2.2"


@dataclass
class Evidence:
    """Everything the tool said or wrote, to be searched for secrets."""

    text: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def run(self, *args: str, code: int = 0, **kwargs: object) -> CliRun:
        run = run_cli("--debug", *args, expect=None, **kwargs)  # type: ignore[arg-type]
        self.text += [run.stdout, run.stderr]
        assert run.code == code, f"exit {run.code}, expected {code}: {run.stderr[-2000:]}"
        return run

    def blobs(self) -> Iterator[bytes]:
        yield from (t.encode() for t in self.text)
        for path in self.files:
            data = path.read_bytes()
            yield data
            if path.name.endswith(".zst"):
                with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
                    yield reader.read()


def secrets_of(*registries: RunningRegistry) -> list[str]:
    """Passwords and the base64 of ``user:password`` (what Basic auth and config.json carry)."""
    found = []
    for reg in registries:
        users = reg.users if isinstance(reg, TokenRegistry) else {reg.username: reg.password}
        for user, password in users.items():
            assert user and password
            found += [password, base64.b64encode(f"{user}:{password}".encode()).decode()]
    return found


def issued_tokens(reg: TokenRegistry, since: int) -> list[str]:
    """Every token issued since request ``since``, and its signature alone (a cut token still leaks)."""
    tokens = [r.token for r in reg.token_requests[since:] if r.token]
    return tokens + [token.rsplit(".", 1)[1] for token in tokens]


def assert_nothing_leaks(evidence: Evidence, secrets: list[str]) -> None:
    assert secrets and evidence.files
    for blob in evidence.blobs():
        for secret in secrets:
            assert secret.encode() not in blob, f"secret {secret[:4]}… leaked"


def docker_config(directory: Path, reg: RunningRegistry) -> dict[str, str]:
    """A DOCKER_CONFIG directory whose config.json holds ``reg``'s credentials, as ``docker login`` writes it."""
    directory.mkdir()
    auth = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(directory)}


def pack_list(report: Path, path: Path) -> Path:
    """The image list to pack back: the target references an unpack's ``--report`` names."""
    path.write_text("".join(row["target"] + "\n" for row in json.loads(report.read_text())))
    return path


def test_no_secret_in_debug_output_bundles_or_reports(basic_registry: RunningRegistry, token_registry: TokenRegistry,
                                                       small_bundle: Path, tmp_path: Path) -> None:
    """bundle -> token registry (--password-stdin) -> bundle -> htpasswd registry (config.json) -> bundle."""
    basic, token = basic_registry, token_registry
    before = len(token.token_requests)
    evidence = Evidence()
    config = docker_config(tmp_path / "docker", basic)
    password = f"{token.password}\n"
    prefix = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    from_token, from_basic = tmp_path / "token.tar.zst", tmp_path / "basic.tar.zst"
    r1, r2 = tmp_path / "r1.json", tmp_path / "r2.json"

    evidence.run("unpack", str(small_bundle), "--to", f"{token.host}/{prefix}", "--username", "pusher",
                 "--password-stdin", "--report", str(r1), stdin=password)
    run = evidence.run("pack", "-f", str(pack_list(r1, tmp_path / "t.list")), "-o", str(from_token),
                       "--username", "pusher", "--password-stdin", stdin=password)
    evidence.run("unpack", str(from_token), "--to", f"{basic.host}/{prefix}", "--report", str(r2), env=config)
    evidence.run("pack", "-f", str(pack_list(r2, tmp_path / "b.list")), "-o", str(from_basic), env=config)
    evidence.files = [small_bundle, from_token, from_basic, *tmp_path.glob("*.sha256"), r1, r2]

    assert " -> 200" in run.stderr and "GET " in run.stderr, "--debug should log every request"
    assert len(json.loads(r2.read_text())) == 3
    tokens = issued_tokens(token, before)
    assert len(tokens) >= 4, "the token registry issued no tokens: the bearer path did not run"
    assert_nothing_leaks(evidence, secrets_of(basic, token) + tokens)


def test_wrong_password_is_refused_without_echo(basic_registry: RunningRegistry, token_registry: TokenRegistry,
                                                tmp_path: Path) -> None:
    basic, token = basic_registry, token_registry
    evidence = Evidence()
    wrong = "pw-wrong-" + uuid.uuid4().hex[:8]
    for reg, user in ((basic, "alice"), (token, "pusher")):
        run = evidence.run("pack", f"{reg.host}/{PREFIX}/pause:3.9", "-o", str(tmp_path / "x.tar.zst"),
                           "--username", user, "--password-stdin", stdin=wrong + "\n", code=11)
        assert reg.host in run.error_lines[0]
    for blob in evidence.blobs():
        assert wrong.encode() not in blob
        assert base64.b64encode(f"alice:{wrong}".encode()) not in blob


@pytest.mark.parametrize("form", ["https://alice:{pw}@{host}", "alice:{pw}@{host}", "http://alice:{pw}@{host}"])
def test_credentials_in_a_url_are_refused_and_masked(basic_registry: RunningRegistry, form: str,
                                                     tmp_path: Path) -> None:
    """``user:password@`` is not part of a reference or ``--to``: refused (exit 3), never echoed."""
    basic = basic_registry
    assert basic.password
    url = form.format(pw=basic.password, host=basic.host)
    bundle = tmp_path / "b.tar.zst"
    pack = run_cli("--debug", "pack", f"{url}/{PREFIX}/pause:3.9", "-o", str(bundle), expect=None)
    bundle.write_bytes(b"")
    unpack = run_cli("--debug", "unpack", str(bundle), "--to", f"{url}/mirror", expect=None)
    for run in (pack, unpack):
        assert run.code == 3 and len(run.error_lines) == 1, run.stderr
        assert "***@" in run.error_lines[0] and basic.host in run.error_lines[0]
        assert basic.password not in run.stdout + run.stderr


def test_session_cookies_and_presigned_urls_stay_out_of_debug_logs(
        seeded_registry: tuple[RunningRegistry, object], fault_proxy: Callable[..., FaultProxy],
        tmp_path: Path) -> None:
    """Harbor sets a ``sid`` session cookie; S3-backed registries redirect blob GETs to pre-signed URLs.
    Our transport's debug trace prints response headers and httpx every URL: both must come out masked."""
    reg, _ = seeded_registry
    cookie, signature = "sid-" + uuid.uuid4().hex, "sig" + uuid.uuid4().hex
    presigned = f"X-Amz-Credential=AKIA{signature}&X-Amz-Signature={signature}"
    proxy = fault_proxy(reg)
    proxy.rules += [
        Rule("GET", "/blobs/",
             answer=lambda seen, forward: Answer(307, [("Location", f"http://{reg.host}{seen.path}?{presigned}")])),
        Rule(answer=lambda seen, forward: forward().with_header("Set-Cookie", f"sid={cookie}; Path=/; HttpOnly")),
    ]
    run = run_cli("--debug", "pack", proxy.ref(f"{SINGLE}"), "-o", str(tmp_path / "b.tar.zst"))
    assert run.code == 0, run.stderr
    assert "Set-Cookie" in run.stderr and "X-Amz-Signature=***" in run.stderr, "the trace should show them masked"
    assert cookie not in run.stderr and signature not in run.stderr

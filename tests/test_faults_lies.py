"""A registry that lies: content that does not match its digest or size, indexes too deep or looping, manifests
too large. Each is refused with one line naming the reference, exit code 14, and no bundle or temp file.

The lies are told by the fault proxy in front of the seeded real registry: it rewrites the registry's true
answers (or serves made-up ones for a repository the registry does not have).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bundler.stores.cache import BlobCache
from bundler.digest import Digest
from bundler.errors import RegistryContentError
from bundler.oci import MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST
from bundler.pack import pack, read_requests
from support.cli import files_in, run_cli
from support.faults import Answer, FaultProxy, Forward, Rule, Seen
from support.options import fast_options
from support.registry import RunningRegistry, registry_get_manifest

SINGLE = "mirantis/k8s-netchecker-server"
PAUSE = "pause"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def flip_last_byte(answer: Answer) -> Answer:
    body = answer.body[:-1] + bytes([answer.body[-1] ^ 0x01])
    return Answer(answer.status, answer.headers, body)


def resized(answer: Answer, change: int) -> Answer:
    """The body ``change`` bytes longer or shorter; the proxy sends a ``Content-Length`` that matches it."""
    body = answer.body + b"\x5a" * change if change > 0 else answer.body[:change]
    return Answer(answer.status, answer.headers, body)


def pad(answer: Answer) -> Answer:
    """Still valid JSON, but other bytes than the digest promises."""
    return Answer(answer.status, answer.headers, answer.body + b" ")


def served(data: bytes, media_type: str = OCI_INDEX, **headers: str) -> Answer:
    return Answer(200, [("Content-Type", media_type), *headers.items()], data)


def index_of(child_digest: str, child_size: int = 2) -> bytes:
    child = {"mediaType": OCI_INDEX, "digest": child_digest, "size": child_size,
             "platform": {"os": "linux", "architecture": "amd64"}}
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child]}).encode()


def serve_documents(documents: dict[str, bytes], top: str) -> Callable[[Seen, Forward], Answer]:
    """Answer ``/manifests/REF`` from ``documents`` (by digest; the tag means ``top``), never the real registry."""

    def answer(seen: Seen, forward: Forward) -> Answer:
        reference = seen.path.rsplit("/", 1)[1]
        return served(documents.get(reference, documents[top]))

    return answer


@dataclass(frozen=True)
class Lie:
    """``image`` (a path under the proxy) and the rule that lies about it; ``names`` must appear in the error."""

    image: str
    rules: list[Rule]
    names: list[str]


def layer_of(reg: RunningRegistry, repository: str, tag: str) -> tuple[str, str]:
    """(config digest, first layer digest) of a single-platform image, read with the oracle client."""
    body = json.loads(registry_get_manifest(reg, repository, tag)[0])
    return body["config"]["digest"], body["layers"][0]["digest"]


def deep_chain(depth: int) -> tuple[dict[str, bytes], str]:
    """``depth`` indexes, each listing the next; every digest honest: only the nesting is the lie."""
    documents: dict[str, bytes] = {}
    child, size = "sha256:" + "0" * 64, 2
    for _ in range(depth):
        data = index_of(child, size)
        child, size = sha256(data), len(data)
        documents[child] = data
    return documents, child


def self_referring() -> tuple[dict[str, bytes], str]:
    """An index listing ``sha256:D`` and served again for ``sha256:D``: a loop only a liar can build."""
    loop = "sha256:" + "e" * 64
    data = index_of(loop)
    return {loop: data, "1": data}, "1"


def make_lie(kind: str, reg: RunningRegistry, image_set: object) -> Lie:
    pause_digest = image_set.image(f"{PAUSE}:3.9").digest  # type: ignore[attr-defined]
    config, layer = layer_of(reg, SINGLE, "v1.2.2")
    single = f"{SINGLE}:v1.2.2"
    if kind == "manifest-by-digest":
        rule = Rule("GET", f"/manifests/{pause_digest}", answer=lambda s, f: pad(f()))
        return Lie(f"{PAUSE}@{pause_digest}", [rule], [f"{PAUSE}@{pause_digest}", "digest"])
    if kind == "child-manifest":
        index = json.loads(registry_get_manifest(reg, PAUSE, pause_digest)[0])
        child = index["manifests"][1]["digest"]
        rule = Rule("GET", f"/manifests/{child}", answer=lambda s, f: pad(f()))
        return Lie(f"{PAUSE}@{pause_digest}", [rule], [f"{PAUSE}@{child}"])
    if kind == "tag-digest-header":
        rule = Rule("GET", f"/{SINGLE}/manifests/v1.2.2",
                    answer=lambda s, f: f().with_header("Docker-Content-Digest", "sha256:" + "1" * 64))
        return Lie(single, [rule], [single])
    if kind == "blob-content":
        rule = Rule("GET", f"/blobs/{layer}", answer=lambda s, f: flip_last_byte(f()))
        return Lie(single, [rule], [f"{SINGLE}@{layer}"])
    if kind == "blob-too-long":
        rule = Rule("GET", f"/blobs/{layer}", answer=lambda s, f: resized(f(), +4))
        return Lie(single, [rule], [f"{SINGLE}@{layer}"])
    if kind == "blob-too-short":
        rule = Rule("GET", f"/blobs/{config}", answer=lambda s, f: resized(f(), -10))
        return Lie(single, [rule], [f"{SINGLE}@{config}"])
    if kind in ("index-too-deep", "index-refers-to-itself"):
        documents, top = deep_chain(6) if kind == "index-too-deep" else self_referring()
        rule = Rule("GET", "^/v2/lies/index/manifests/", answer=serve_documents(documents, top))
        return Lie("lies/index:1", [rule], ["lies/index"])
    if kind in ("manifest-too-large", "manifest-too-large-unannounced"):
        huge = b'{"schemaVersion": 2, "padding": "' + b" " * MAX_MANIFEST_BYTES + b'"}'
        close = kind.endswith("unannounced")
        rule = Rule("GET", "^/v2/lies/huge/manifests/",
                    answer=lambda s, f: Answer(200, [("Content-Type", OCI_MANIFEST)], huge, close_delimited=close))
        return Lie("lies/huge:1", [rule], ["lies/huge:1", "4 MiB"])
    raise AssertionError(kind)


KINDS = ["manifest-by-digest", "child-manifest", "tag-digest-header", "blob-content", "blob-too-long",
         "blob-too-short", "index-too-deep", "index-refers-to-itself", "manifest-too-large",
         "manifest-too-large-unannounced"]


@pytest.fixture
def lying(seeded_registry: tuple[RunningRegistry, object], fault_proxy: Callable[..., FaultProxy]
          ) -> Callable[[str], tuple[FaultProxy, Lie]]:
    reg, image_set = seeded_registry

    def start(kind: str) -> tuple[FaultProxy, Lie]:
        lie = make_lie(kind, reg, image_set)
        proxy = fault_proxy(reg)
        proxy.rules.extend(lie.rules)
        return proxy, lie

    return start


@pytest.mark.parametrize("kind", KINDS)
def test_pack_refuses_a_lying_registry(kind: str, lying: Callable[[str], tuple[FaultProxy, Lie]],
                                       tmp_path: Path) -> None:
    proxy, lie = lying(kind)
    out = tmp_path / "out"
    out.mkdir()
    requests = read_requests([proxy.ref(lie.image)], "test")
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(RegistryContentError) as caught:
        pack(requests, out / "b.tar.zst", fast_options(), cache=cache)
    message = str(caught.value)
    assert "\n" not in message and all(name in message for name in lie.names), message
    assert sum(rule.matched for rule in lie.rules) >= 1, "the lie was never told"
    assert len(proxy.requests("GET", "/manifests/")) <= 8, "a loop or a retry storm"
    assert files_in(out) == []
    lied_about = [Digest(name.split("@")[1]) for name in lie.names if "@sha256:" in name]
    assert not any(cache.path(digest).exists() for digest in lied_about), "a lie reached the blob cache"
    assert files_in(tmp_path / "cache" / "tmp") == []


@pytest.mark.parametrize("kind", ["manifest-by-digest", "blob-content", "index-refers-to-itself"])
def test_cli_exit_code_for_a_lying_registry(kind: str, lying: Callable[[str], tuple[FaultProxy, Lie]],
                                            tmp_path: Path) -> None:
    proxy, lie = lying(kind)
    run = run_cli("pack", "-q", proxy.ref(lie.image), "-o", str(tmp_path / "b.tar.zst"), "--retries", "1",
                  expect=None)
    assert run.code == 14, run.stderr
    assert run.stderr.strip().splitlines() == run.error_lines and len(run.error_lines) == 1, run.stderr
    assert all(name in run.error_lines[0] for name in lie.names), run.error_lines[0]
    assert files_in(tmp_path) == []

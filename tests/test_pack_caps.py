"""pack refuses an upstream image whose manifest breaks a rule every bundle reader applies (spec 7.5).

The registry serves an index listing MAX_INDEX_CHILDREN + 1 children (one small artifact, repeated):
valid OCI, but no bundle may carry it, so pack fails that image as it fails any image it cannot pack
(exit 14, the image and the rule named on one line, nothing written), or skips it with --skip-missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundler.bundle.links import MAX_INDEX_CHILDREN
from bundler.errors import RegistryContentError
from support.cli import run_cli
from support.registry import RunningRegistry, registry_client
from support.signing import OCI_CONFIG, OCI_INDEX, OCI_LAYER, push_artifact

pytestmark = pytest.mark.registry

RULE = f"an index listing {MAX_INDEX_CHILDREN + 1} manifests, more than the {MAX_INDEX_CHILDREN} allowed"


@pytest.fixture(scope="module")
def images(registry: RunningRegistry) -> tuple[str, str]:
    """(a plain image, an index one child past the cap) on the registry."""
    child = push_artifact(registry.host, "caps/wide", "child", (b"{}", OCI_CONFIG), [(b"layer", OCI_LAYER)])
    push_artifact(registry.host, "caps/plain", "1", (b"{}", OCI_CONFIG), [(b"plain layer", OCI_LAYER)])
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child] * (MAX_INDEX_CHILDREN + 1)}
    with registry_client(registry) as client:
        client.put("/v2/caps/wide/manifests/1", content=json.dumps(index).encode(),
                   headers={"Content-Type": OCI_INDEX}).raise_for_status()
    return registry.ref("caps/plain:1"), registry.ref("caps/wide:1")


def test_pack_refuses_the_image_naming_it_and_the_rule_and_writes_nothing(
        images: tuple[str, str], tmp_path: Path) -> None:
    plain, wide = images
    run = run_cli("pack", plain, wide, "-o", str(tmp_path / "b.tar.zst"), "-q", expect=RegistryContentError.exit_code)
    assert run.error_lines == [run.stderr.strip()], run.stderr
    assert f"1 of 2 references failed: {wide}: manifest sha256:" in run.stderr and RULE in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []


def test_skip_missing_packs_the_others_and_records_why(images: tuple[str, str], tmp_path: Path) -> None:
    plain, wide = images
    bundle = tmp_path / "b.tar.zst"
    run_cli("pack", plain, wide, "-o", str(bundle), "-q", "--skip-missing")
    index = json.loads(run_cli("list", str(bundle), "--json").stdout)
    assert [image["reference"] for image in index["images"]] == [plain]
    assert [entry["source"] for entry in index["skipped"]] == [wide] and RULE in index["skipped"][0]["reason"]
    run_cli("verify", "-q", str(bundle))

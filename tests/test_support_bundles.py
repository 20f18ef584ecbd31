"""The synthetic image set of tests/support/bundles.py is what it claims to be."""

from __future__ import annotations

from pathlib import Path

from bundler.digest import Digest
from support.bundles import make_image_set


def test_image_set_is_self_consistent() -> None:
    """The factory's digests match its bytes, and the same seed gives the same set."""
    images = make_image_set()
    for digest, (data, _) in images.blobs.items():
        assert Digest.of(data, Digest(digest).algorithm) == digest
    for digest, raw in images.manifests.items():
        assert Digest.of(raw.data) == digest
    assert make_image_set().blobs.keys() == images.blobs.keys()


def test_a_crafted_bundle_is_the_written_one_byte_for_byte(tmp_path: Path) -> None:
    """The raw path for hostile bundles differs from the writer only in what it checks."""
    images = make_image_set(big=True)
    assert images.crafted() == images.write(tmp_path / "b.tar.zst").path.read_bytes()

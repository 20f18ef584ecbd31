"""The synthetic image set of tests/support/bundles.py is what it claims to be."""

from __future__ import annotations

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

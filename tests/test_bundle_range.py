"""A byte range of a blob, read from the frames under it (what serve answers a ``Range`` request with)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from bundler.bundle import BundleReader
from bundler.errors import BundleError

from support.bundles import make_image_set


def test_a_range_of_a_blob_reads_only_the_frames_under_it(tmp_path: Path) -> None:
    images = make_image_set(big=True)
    images.write(tmp_path / "big.tar.zst")
    digest, (data, _) = max(images.blobs.items(), key=lambda item: len(item[1][0]))
    rng = random.Random(18)
    spans = [(0, len(data)), (4 * 1024 * 1024 - 600, 4 * 1024 * 1024 + 600), (len(data) - 1, len(data))]
    spans += [tuple(sorted(rng.sample(range(len(data) + 1), 2))) for _ in range(5)]
    with BundleReader.open(tmp_path / "big.tar.zst") as reader:
        for start, stop in spans:
            assert b"".join(reader.blob_range(digest, start, stop)) == data[start:stop], (start, stop)
        with pytest.raises(BundleError):
            list(reader.blob_range(digest, 0, len(data) + 1))

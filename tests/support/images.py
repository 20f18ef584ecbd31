"""Generated image sets and registries seeded with them (a pytest plugin; conftest lists it in pytest_plugins).

    small_imageset   12 images, ~5 MB, every special case of scripts/imageset.py (session scope)
    seeded_registry  (RunningRegistry, ImageSet): the shared ``registry`` with small_imageset pushed into it
    seed_into()      push an ImageSet into any RunningRegistry (TLS, basic or token auth), with plain httpx

The seed is 1 unless IMAGESET_SEED says otherwise; it is printed in pytest's header so that a failure can be
reproduced with the same bytes. The generator and seeder are scripts/imageset.py, imported by name as the
benchmark and the demo import it (pyproject's pytest ``pythonpath`` puts scripts/ on the path).
"""

from __future__ import annotations

import os

import pytest

import imageset
from imageset import ImageSet, SeedResult
from support.registry import RunningRegistry

__all__ = ["SMALL_IMAGES", "SMALL_SEED", "SMALL_SIZE", "seed_into", "seeded_registry", "small_imageset"]

SMALL_IMAGES = imageset.MIN_IMAGES
SMALL_SIZE = 5 * imageset.MiB
SMALL_SEED = int(os.environ.get("IMAGESET_SEED", "1"))


def pytest_report_header() -> str:
    return f"imageset seed: {SMALL_SEED} (set IMAGESET_SEED to change)"


def seed_into(reg: RunningRegistry, image_set: ImageSet, *, repo_prefix: str = "", jobs: int = 4) -> SeedResult:
    """Push ``image_set`` into ``reg`` with the registry's own CA and credentials (basic or token)."""
    auth = (reg.username, reg.password) if reg.username and reg.password else None
    return imageset.seed_registry(image_set.layout, reg.url, ca_file=reg.ca_file, auth=auth, jobs=jobs,
                                  repo_prefix=repo_prefix)


@pytest.fixture(scope="session")
def small_imageset(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    """A 12-image, ~5 MB set: Docker lists, OCI indexes, attestations, single images, an alias, odd whitespace."""
    return imageset.generate(tmp_path_factory.mktemp("small-imageset"), images=SMALL_IMAGES, total_size=SMALL_SIZE,
                             seed=SMALL_SEED)


@pytest.fixture(scope="session")
def seeded_registry(registry: RunningRegistry, small_imageset: ImageSet) -> tuple[RunningRegistry, ImageSet]:
    """The session's plain registry holding small_imageset at its own paths (``calico/node:v3.26.4`` ...).

    Do not push to these repositories in tests; use other repository names (or ``seed_into`` with a prefix).
    """
    seed_into(registry, small_imageset)
    return registry, small_imageset

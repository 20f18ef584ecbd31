"""unpack: push a bundle into a registry (Harbor or Distribution) with the same digests.

Data first, then execution: ``plan_targets`` names every image's target (pure), ``build_plan``
reads the bundle's manifests into a push plan (``dry_run`` stops here), ``push_plan`` runs it:
blobs, then child manifests, then indexes, then tags. Nothing here prints; progress goes to a
``bundler.progress.Progress`` and the outcome comes back as an ``UnpackResult``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bundler.bundle.volumes import BundleFiles
from bundler.digest import Digest
from bundler.errors import InputError
from bundler.mapping import Target, parse_to, plan_targets, unused_maps
from bundler.progress import NullProgress, Progress
from bundler.reference import DOCKER_HUB
from bundler.stores import WriteStore
from bundler.stores.bundle import BundleStore
from bundler.unpack.expected import check_expected
from bundler.unpack.plan import PushPlan, build_plan
from bundler.unpack.push import push_plan
from bundler.unpack.referrers import push_referrers
from bundler.unpack.result import ImageOutcome, UnpackResult, write_report

if TYPE_CHECKING:
    from bundler.registry import RegistryOptions

# The HTTP stack is imported when a push runs, not with this package.

__all__ = [
    "ImageOutcome",
    "PushPlan",
    "Target",
    "UnpackOptions",
    "UnpackResult",
    "build_plan",
    "plan_targets",
    "unpack",
    "unpack_bundle",
    "write_report",
]

log = logging.getLogger("bundler.unpack")


@dataclass(frozen=True)
class UnpackOptions:
    """What to push where. ``maps`` are ``(SRC_PREFIX, DST_PREFIX)`` pairs, longest prefix wins."""

    to: str
    keep_host: bool = False
    flatten: bool = False
    maps: Sequence[tuple[str, str]] = field(default_factory=tuple)
    dry_run: bool = False
    create_projects: bool = False
    public: bool = False
    jobs: int = 4

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise InputError(f"jobs must be at least 1, not {self.jobs}")


def unpack(bundle: Path | BundleFiles, settings: UnpackOptions, options: RegistryOptions, *,
           progress: Progress | None = None) -> UnpackResult:
    """Open ``bundle`` and push it as ``settings`` say; see ``unpack_bundle``."""
    started = time.monotonic()
    with BundleStore.open(bundle) as store:
        if not store.seekable:
            raise InputError(f"{bundle}: unpack reads blobs in any order; give it a bundle file, not a pipe")
        result = unpack_bundle(store, settings, options, progress=progress)
    result.seconds = time.monotonic() - started
    return result


def unpack_bundle(bundle: BundleStore, settings: UnpackOptions, options: RegistryOptions, *,
                  progress: Progress | None = None, client: WriteStore | None = None) -> UnpackResult:
    """Plan and push an open bundle. Raises ``InputError`` for naming problems, ``PushRefusedError``
    for missing Harbor projects, ``UnreachableError`` and ``Interrupted``; per-image failures come
    back in the result (``result.failure_error()`` is what to exit with).

    ``client`` pushes through a client the caller owns (tests use an in-memory registry); the
    Harbor project check, which needs the real host's API, is then left to the caller.
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    images = list(bundle.index.images)
    targets = plan_targets(images, settings.to, settings.keep_host, settings.flatten, settings.maps)
    for source, destination in unused_maps(images, settings.maps):
        progress.warn(f"map {source}={destination} matches no image in the bundle")
    plan = build_plan(bundle, targets)
    host = parse_to(settings.to).host
    entries = {image.reference: image for image in images}
    if settings.dry_run:
        outcomes = [ImageOutcome(image.target, image.error is None, image.error) for image in plan.images]
        return UnpackResult(host, True, plan, outcomes, seconds=time.monotonic() - started, entries=entries)
    created: list[str] = []
    with ExitStack() as stack:
        if client is None:
            from bundler.registry import RegistryClient

            created = _prepare_harbor(host, plan, settings, options, progress)
            client = stack.enter_context(RegistryClient(host, options))
        mounted = _check_expected(plan, bundle, client, settings, progress)
        result = push_plan(plan, bundle, client, host, jobs=settings.jobs, progress=progress)
        result.entries = entries
        push_referrers(bundle, client, result, jobs=settings.jobs, progress=progress)
    result.blobs_mounted += mounted
    result.blobs_present -= mounted
    result.projects_created = created
    result.seconds = time.monotonic() - started
    return result


def _check_expected(plan: PushPlan, bundle: BundleStore, client: WriteStore, settings: UnpackOptions,
                    progress: Progress) -> int:
    """A delta bundle: the blobs it leaves to its base must be on the target before anything is pushed;
    returns how many were mounted from another repository of this push."""
    external = bundle.index.external
    if not external:
        return 0
    recorded = {Digest(entry.digest): entry.repository for entry in external if entry.repository}
    check = check_expected(plan, [Digest(entry.digest) for entry in external], client, base=bundle.index.base,
                           recorded=recorded, jobs=settings.jobs, progress=progress)
    return check.mounted


def _prepare_harbor(host: str, plan: PushPlan, settings: UnpackOptions, options: RegistryOptions,
                    progress: Progress) -> list[str]:
    """On Harbor, check (or create) the projects before the first push; elsewhere do nothing."""
    from bundler.registry.harbor import HarborProjects, ensure_projects, project_of

    repositories = [image.target.repository for image in plan.images if image.error is None]
    if not repositories or host == DOCKER_HUB:  # Docker Hub is never Harbor; do not ask it
        return []
    with HarborProjects(host, options) as api:
        if not api.is_harbor():
            if settings.create_projects:
                progress.warn(f"{host} is not Harbor (no /api/v2.0/systeminfo): no project to create")
            return []
        flat = sorted({r for r in repositories if "/" not in r})
        if flat:
            raise InputError(
                f"{host} is Harbor, where a repository needs a project as its first path element; "
                f"{flat[0]} has none: push to {host}/PROJECT"
            )
        created = ensure_projects(api, [project_of(r) for r in repositories],
                                  create=settings.create_projects, public=settings.public)
    for name in created:
        log.debug("created Harbor project %s on %s", name, host)
    return created

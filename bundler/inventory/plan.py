"""Taking an inventory: what a site's registry holds, so that the next pack leaves exactly that out.

Per repository: its tags, every manifest they reach (children of indexes too) and every blob those
manifests list, with sizes; only manifests are read, never a blob. Repositories are walked in
parallel; one that fails to list is named in the inventory, which is then marked incomplete (a
delta against it could leave out a blob the site lacks). The format: ``bundler.inventory.format``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bundler import __version__
from bundler.bundle.atomic import TempFile
from bundler.digest import Digest
from bundler.errors import ImgbundleError, LocalIOError, RegistryContentError, Remedy, UnreachableError
from bundler.inventory.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    BlobEntry,
    FailedEntry,
    Inventory,
    RepositoryEntry,
    encode_inventory,
)
from bundler.oci import IMAGE_MANIFEST_TYPES, RawManifest
from bundler.pack.discover import tags_of
from bundler.pack.resolve import MAX_INDEX_DEPTH
from bundler.progress import NULL_PROGRESS, Progress
from bundler.stores import ReadStore
from bundler.threads import stop_workers

__all__ = ["save_inventory", "take_inventory"]


@dataclass
class _Holdings:
    """What one repository was seen to hold."""

    tags: dict[str, Digest] = field(default_factory=dict)
    manifests: set[Digest] = field(default_factory=set)
    blobs: dict[Digest, int] = field(default_factory=dict)


def take_inventory(store: ReadStore, repositories: Sequence[str], source: str, *, created: str, jobs: int = 4,
                   progress: Progress = NULL_PROGRESS) -> Inventory:
    """The inventory of ``repositories`` in ``store``; ``source`` says what was listed (``HOST[/PROJECT]``).

    A repository whose listing fails is recorded as failed (and warned about); an unreachable store
    or an interruption stops the whole run.
    """
    progress.phase("inventory", total_items=len(repositories))

    def attempt(repository: str) -> _Holdings | ImgbundleError:
        try:
            holdings: _Holdings | ImgbundleError = _walk_repository(store, repository)
        except UnreachableError:
            raise
        except ImgbundleError as error:
            holdings = error
            progress.warn(f"{repository}: not listed: {error}")
        progress.item_done(repository, not isinstance(holdings, ImgbundleError))
        return holdings

    executor = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="imgbundle-inventory")
    futures = [executor.submit(attempt, repository) for repository in repositories]
    try:
        outcomes = dict(zip(repositories, (future.result() for future in futures)))
    except BaseException:  # Ctrl-C or an unreachable registry: stop now, not after the other repositories
        stop_workers(executor, futures)
        raise
    executor.shutdown()
    return _inventory(outcomes, source, created)


def _walk_repository(store: ReadStore, repository: str) -> _Holdings:
    holdings = _Holdings()
    for tag in sorted(tags_of(store, repository)):
        top = store.manifest_get(repository, tag)
        holdings.tags[tag] = top.digest
        _walk(store, repository, top, holdings, depth=0)
    return holdings


def _walk(store: ReadStore, repository: str, raw: RawManifest, holdings: _Holdings, depth: int) -> None:
    """Add ``raw`` and everything below it; a manifest seen before (another tag's child) is not read again."""
    if depth > MAX_INDEX_DEPTH:
        raise RegistryContentError(f"{repository}: indexes nested more than {MAX_INDEX_DEPTH} deep")
    if raw.digest in holdings.manifests:
        return
    holdings.manifests.add(raw.digest)
    if raw.is_index:
        for child in raw.index().manifests:
            if Digest(child.digest) not in holdings.manifests:
                _walk(store, repository, store.manifest_get(repository, child.digest), holdings, depth + 1)
    elif raw.media_type in IMAGE_MANIFEST_TYPES:
        for blob in raw.manifest().blobs:
            holdings.blobs[Digest(blob.digest)] = blob.size


def _inventory(outcomes: dict[str, _Holdings | ImgbundleError], source: str, created: str) -> Inventory:
    failed = [FailedEntry(name, str(outcome)) for name, outcome in sorted(outcomes.items())
              if isinstance(outcome, ImgbundleError)]
    held = {name: outcome for name, outcome in sorted(outcomes.items()) if isinstance(outcome, _Holdings)}
    sizes = {digest: size for holdings in held.values() for digest, size in holdings.blobs.items()}
    return Inventory(
        format=FORMAT_NAME, version=FORMAT_VERSION, created=created, tool=f"imgbundle {__version__}",
        source=source, complete=not failed, failed=failed,
        repositories=[_repository_entry(name, holdings) for name, holdings in held.items()],
        blobs=[BlobEntry(str(digest), sizes[digest]) for digest in sorted(sizes)],
    )


def _repository_entry(name: str, holdings: _Holdings) -> RepositoryEntry:
    return RepositoryEntry(
        name=name,
        tags={tag: str(digest) for tag, digest in sorted(holdings.tags.items())},
        manifests=sorted(map(str, holdings.manifests)),
        blobs=sorted(map(str, holdings.blobs)),
    )


def save_inventory(inventory: Inventory, path: Path, *, overwrite: bool) -> int:
    """Write the inventory file whole or not at all (a temp file renamed); returns its size in bytes."""
    if not overwrite and path.exists():
        raise LocalIOError(f"{path} exists", remedy=Remedy.OVERWRITE)
    data = encode_inventory(inventory)
    with TempFile(path) as temp:
        temp.write(data)
        temp.sync()
        temp.commit(overwrite=overwrite)
    return len(data)

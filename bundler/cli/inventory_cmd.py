"""``imgbundle inventory``: what a site's registry holds, written for the next ``pack --since``."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from bundler.cli.errors import ca_file_checked, parsed
from bundler.cli.flags import log_in, make_registry_options, output_flags, registry_options
from bundler.cli.output import CliProgress, format_bytes, make_progress, out, print_json
from bundler.errors import InputError, PartialFailureError

if TYPE_CHECKING:
    from bundler.inventory.format import Inventory
    from bundler.stores import ReadStore

__all__ = ["inventory_command"]


@click.command("inventory")
@click.option("--from", "registry", metavar="REGISTRY[/PROJECT]",
              help="Registry (or Harbor project) to list: the catalog, or Harbor's project API where it is closed.")
@click.option("--project", metavar="PROJECT", help="With --from REGISTRY: only this Harbor project (or path prefix).")
@click.option("-f", "--file", "list_file", type=click.File("r"),
              help="With --from: the repositories to list, one per line ('-' = stdin), instead of the catalog.")
@click.option("--from-storage", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="PATH",
              help="A registry's storage tree (the dir holding docker/registry/v2), no registry running.")
@click.option("--repo", "repos", multiple=True, metavar="PATTERN",
              help="Only repositories matching this glob (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Inventory file to write, e.g. site-2024-03.json.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@registry_options
@output_flags
def inventory_command(registry, project, list_file, from_storage, repos, output, force, quiet, as_json, **kwargs):
    """Record what a registry holds (tags, manifests, blob digests and sizes; no blob is read) for
    'pack --since', which then leaves out every blob the site has."""
    from bundler.inventory.plan import save_inventory, take_inventory
    from bundler.pack.write import created_now

    started = time.monotonic()
    log_in(kwargs)
    with ExitStack() as stack:
        stack.enter_context(ca_file_checked(kwargs["ca_file"]))
        progress = stack.enter_context(make_progress(quiet or as_json))
        store, source, repositories, jobs = _choose_source(stack, registry, project, list_file, from_storage, repos,
                                                           kwargs, progress)
        inventory = take_inventory(store, repositories, source, created=created_now(), jobs=jobs, progress=progress)
    size = save_inventory(inventory, output, overwrite=force)
    _render(inventory, output, size, time.monotonic() - started, as_json=as_json)
    if not inventory.complete:
        names = ", ".join(entry.repository for entry in inventory.failed[:5])
        raise PartialFailureError(f"{len(inventory.failed)} of {len(repositories)} repositories could not be listed "
                                  f"({names}); {output} is marked incomplete")


def _choose_source(stack: ExitStack, registry: str | None, project: str | None, list_file: TextIO | None,
                   from_storage: Path | None, repos: tuple[str, ...], kwargs: dict, progress: CliProgress
                   ) -> tuple[ReadStore, str, list[str], int]:
    """The store to list, what to call it in the inventory, its repositories, and the parallel jobs."""
    if project and list_file:
        raise InputError("--project and -f both choose repositories: give one of them")
    if registry is not None and from_storage is None:
        return _registry_source(stack, registry, project, list_file, repos, kwargs, progress)
    if from_storage is not None and registry is None:
        if project or list_file:
            raise InputError("--project and -f choose repositories of --from REGISTRY")
        return _storage_source(from_storage, repos, kwargs, progress)
    raise InputError("give --from REGISTRY or --from-storage PATH: one of them")


def _storage_source(path: Path, repos: tuple[str, ...], kwargs: dict, progress: CliProgress
                    ) -> tuple[ReadStore, str, list[str], int]:
    from bundler.pack.discover import list_repositories
    from bundler.stores.storage import StorageTree

    jobs = make_registry_options(kwargs, set(), progress).jobs
    tree = StorageTree(path)
    return tree, f"storage:{path}", list_repositories(tree, str(path), patterns=repos), jobs


def _registry_source(stack: ExitStack, registry: str, project: str | None, list_file: TextIO | None,
                     repos: tuple[str, ...], kwargs: dict, progress: CliProgress) -> tuple[ReadStore, str, list[str], int]:
    """Repositories from the list file, else the catalog (Harbor's project API where it is closed)."""
    from bundler.pack.discover import registry_repositories, registry_target, repository_matches
    from bundler.stores.registry import RegistryPool

    host, prefix = parsed("--from", registry, registry_target)
    target = f"{host}/{project.strip('/')}" if project else registry.strip().strip("/")
    options = make_registry_options(kwargs, {host}, progress)
    pool = stack.enter_context(RegistryPool(options))
    if list_file is None:
        return pool.get(host), target, registry_repositories(pool, target, repos, options)[1], options.jobs
    listed = sorted({name for line in list_file if (name := line.strip().strip("/")) and not name.startswith("#")})
    chosen = [name for name in listed if repository_matches(name, prefix=prefix, patterns=repos)]
    if not chosen:
        raise InputError(f"{list_file.name}: no repository listed" + (" matches" if listed else ""))
    return pool.get(host), target, chosen, options.jobs


def _render(inventory: Inventory, path: Path, size: int, seconds: float, *, as_json: bool) -> None:
    manifests = len({digest for repository in inventory.repositories for digest in repository.manifests})
    tags = sum(len(repository.tags) for repository in inventory.repositories)
    blob_bytes = sum(blob.size for blob in inventory.blobs)
    if as_json:
        print_json({
            "inventory": str(path), "source": inventory.source, "checksum": inventory.checksum,
            "complete": inventory.complete, "repositories": len(inventory.repositories),
            "failed": [entry.repository for entry in inventory.failed], "tags": tags, "manifests": manifests,
            "blobs": len(inventory.blobs), "blobBytes": blob_bytes, "bytes": size, "seconds": round(seconds, 3),
        })
        return
    out.print(f"inventory of {inventory.source}: {len(inventory.repositories)} repositories, {tags} tags, "
              f"{manifests} manifests, {len(inventory.blobs)} blobs ({format_bytes(blob_bytes)}) -> {path} "
              f"({format_bytes(size)}) in {seconds:.1f}s", markup=False)
    for entry in inventory.failed:
        out.print(f"not listed: {entry.repository}: {entry.reason}", markup=False)

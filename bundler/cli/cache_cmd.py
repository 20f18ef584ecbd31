"""``imgbundle cache``: look at and cap the local blob cache that ``pack`` fills."""

from __future__ import annotations

import click

from bundler.cli.output import format_bytes, out, parse_size, print_json
from bundler.words import counted

# The cache's modules are imported by the commands that use it: every other command starts without them.

__all__ = ["cache_group"]


@click.group("cache")
def cache_group() -> None:
    """The local blob cache: repeated packs download only manifests.

    \b
    Location: $IMGBUNDLE_CACHE_DIR, else the user cache dir (~/.cache/imgbundle on Linux).
    Entries are verified before use; a damaged one is deleted and fetched again.
    """


@cache_group.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def cache_info(as_json: bool) -> None:
    """Where the cache is, how many blobs it holds and their size."""
    from bundler.stores.cache import BlobCache

    info = BlobCache().info()
    if as_json:
        print_json({"path": str(info.root), "blobs": info.entries, "bytes": info.bytes})
        return
    out.print(f"{info.root}: {counted(info.entries, 'blob')}, {format_bytes(info.bytes)}", markup=False)


@cache_group.command("prune")
@click.option("--max-size", default="10G", show_default=True, metavar="SIZE",
              help="Keep at most SIZE (e.g. 500M, 10G); least recently used blobs go first.")
@click.option("--all", "everything", is_flag=True, help="Remove every blob.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def cache_prune(max_size: str, everything: bool, as_json: bool) -> None:
    """Cap the cache's size, removing least recently used blobs first."""
    from bundler.stores.cache import BlobCache

    cache = BlobCache()
    result = cache.prune(0 if everything else parse_size(max_size))
    if as_json:
        print_json({"path": str(cache.root), "removed": result.removed, "removedBytes": result.removed_bytes,
                    "blobs": result.kept, "bytes": result.kept_bytes})
        return
    out.print(
        f"removed {counted(result.removed, 'blob')} ({format_bytes(result.removed_bytes)}); "
        f"{counted(result.kept, 'blob')} ({format_bytes(result.kept_bytes)}) left in {cache.root}",
        markup=False,
    )

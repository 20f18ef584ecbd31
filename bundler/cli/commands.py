"""The click commands; each parses options, calls one plan, and renders its result."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from bundler.bundle.index import bundle_id
from bundler.bundle.volumes import BundleFiles, bundle_from_paths
from bundler.cli.errors import ca_file_checked, parsed
from bundler.cli.flags import log_in, make_registry_options, output_flags, registry_options
from bundler.cli.output import CliProgress, format_bytes, make_progress, out, parse_size, print_json
from bundler.errors import BundleError, CorruptBundleError, InputError, LocalIOError
from bundler.words import counted

if TYPE_CHECKING:
    from bundler.bundle import WriteResult
    from bundler.bundle.delta import Since
    from bundler.bundle.index import BundleIndex, ExternalEntry
    from bundler.pack import ImageRequest, ReferrerPolicy
    from bundler.reference import Reference
    from bundler.registry import RegistryOptions
    from bundler.serve import RegistryServer
    from bundler.stores import StorePool
    from bundler.verify import VerifyReport

# The plans, the HTTP stack and the tables are imported by the commands that run them: ``verify``, ``list``
# and ``serve`` start sooner without what they do not use (docs/benchmark.md).

__all__ = ["list_command", "pack_command", "serve_command", "unpack_command", "verify_command"]


@contextmanager
def _naming(bundle: Path | BundleFiles) -> Iterator[None]:
    """Prefix bundle errors with the file's name: the reader only sees a file object, and the volumes
    name only the volume they concern."""
    try:
        yield
    except BundleError as error:
        raise error.reworded(f"{bundle}: {error}") from error


def _input_flags(command: Callable) -> Callable:
    """Where pack reads from besides an image list: a registry's storage tree or a whole registry."""
    options = [
        click.option("--from-storage", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="PATH",
                     help="Pack every tagged image of a registry storage tree (the dir holding docker/registry/v2)."),
        click.option("--storage-host", default="localhost", show_default=True, metavar="HOST",
                     help="With --from-storage: registry host written in the bundle's references."),
        click.option("--all-from", metavar="REGISTRY[/PROJECT]",
                     help="Pack every tag of every repository (under PROJECT) of a registry or Harbor."),
        click.option("--repo", "repos", multiple=True, metavar="PATTERN",
                     help="With --from-storage/--all-from: only repositories matching this glob (repeatable)."),
        click.option("--no-cache", is_flag=True, help="Neither read nor fill the local blob cache."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _choose_stores(stack: ExitStack, refs: tuple[str, ...], list_file, kwargs: dict, progress: CliProgress, *,
                   from_storage: Path | None, storage_host: str, all_from: str | None, repos: tuple[str, ...]
                   ) -> tuple[list[ImageRequest], RegistryOptions, StorePool | None]:
    """The requests, registry options and store pool (None: registries by reference) of one pack."""
    from bundler.pack import read_requests
    from bundler.pack.discover import discover, discover_registry, registry_target
    from bundler.stores import SinglePool
    from bundler.stores.registry import RegistryPool
    from bundler.stores.storage import StorageTree

    if sum([bool(refs or list_file), from_storage is not None, all_from is not None]) != 1:
        raise InputError("give images (arguments or -f FILE), --from-storage PATH or --all-from REGISTRY: one of them")
    if repos and not (from_storage or all_from):
        raise InputError("--repo selects repositories of --from-storage or --all-from")
    if from_storage is not None:
        host, _ = parsed("--storage-host", storage_host, registry_target)
        tree = StorageTree(from_storage)
        options = make_registry_options(kwargs, set(), progress)
        return _whole(discover(tree, host, patterns=repos)), options, stack.enter_context(SinglePool(host, tree))
    if all_from is not None:
        options = make_registry_options(kwargs, {parsed("--all-from", all_from, registry_target)[0]}, progress)
        pool = stack.enter_context(RegistryPool(options))
        return _whole(discover_registry(pool, all_from, repos)), options, pool
    lines = list(list_file) if list_file else []
    requests = read_requests(lines, list_file.name if list_file else "args", refs)
    return requests, make_registry_options(kwargs, {r.reference.registry for r in requests}, progress), None


def _whole(references: list[Reference]) -> list[ImageRequest]:
    from bundler.pack import ImageRequest

    return [ImageRequest(str(reference), reference) for reference in references]


@click.command("pack")
@click.argument("refs", nargs=-1)
@click.option("-f", "--file", "list_file", type=click.File("r"),
              help="Image list, one reference per line ('-' = stdin).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Bundle to write, e.g. site.tar.zst (a NAME.sha256 sidecar is written beside it).")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Keep only these platforms (repeatable, or comma-separated); default: all, attestations included.")
@click.option("--skip-missing", is_flag=True, help="Pack the images that resolve; record the others as skipped.")
@click.option("--level", type=click.IntRange(1, 19), default=3, show_default=True,
              help="zstd level for metadata and uncompressed blobs; gzip and zstd layers always get level 1.")
@click.option("--created", metavar="RFC3339",
              help="Timestamp recorded in the bundle (default: now or SOURCE_DATE_EPOCH).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--split", metavar="SIZE",
              help="Write volumes NAME.000, NAME.001 … each smaller than SIZE (e.g. 4G for FAT32, 3900M).")
@click.option("--since", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="OLD", multiple=True,
              help="Delta bundle: leave out blobs that bundle OLD (or its 'list --json' output) brought, or that "
                   "a site inventory lists (repeatable: their union).")
@click.option("--allow-incomplete", is_flag=True,
              help="With --since: accept an inventory in which some repositories could not be listed.")
@click.option("--no-referrers", is_flag=True,
              help="Leave out the signatures, attestations, SBOMs and other referrers attached to the images.")
@click.option("--artifact-type", "artifact_types", multiple=True, metavar="TYPE",
              help="Keep only referrers of this artifactType (repeatable), e.g. application/spdx+json.")
@_input_flags
@registry_options
@output_flags
def pack_command(refs, list_file, output, platforms, skip_missing, level, created, force, from_storage, storage_host,
                 all_from, repos, no_cache, quiet, as_json, **kwargs):
    """Resolve images from registries into one bundle: every blob once, manifests byte-exact.

    Images come from the references given, from a registry's storage directory (--from-storage,
    no registry running), or from every repository of a registry or Harbor project (--all-from).
    """
    from bundler.bundle.layout import check_created
    from bundler.pack import check_output, pack
    from bundler.platforms import PlatformFilter
    from bundler.stores.cache import BlobCache

    filters = parsed("--platform", platforms, PlatformFilter.parse_list)
    split, since = _split_and_since(kwargs)
    referrers = _referrer_policy(kwargs)
    if created is not None:
        parsed("--created", created, check_created)
    check_output(output, overwrite=force)
    log_in(kwargs)
    with ExitStack() as stack:
        stack.enter_context(ca_file_checked(kwargs["ca_file"]))
        progress = stack.enter_context(make_progress(quiet or as_json))
        requests, options, stores = _choose_stores(stack, refs, list_file, kwargs, progress, from_storage=from_storage,
                                                   storage_host=storage_host, all_from=all_from, repos=repos)
        cache = None if no_cache or from_storage is not None else BlobCache()
        result = pack(
            requests, output, options, stores=stores, cache=cache, filters=filters, skip_missing=skip_missing,
            jobs=options.jobs, level=level, created=created, overwrite=force, progress=progress,
            since=since, split=split, referrers=referrers,
        )
    write = result.write
    if as_json:
        print_json({
            "bundle": str(write.path), "sidecar": str(write.sidecar), "sha256": write.sha256,
            "bundleBytes": write.compressed_size, "images": len(result.images),
            "skipped": [s.source for s in result.skipped], "blobs": write.index.totals.blobs,
            "blobBytes": write.index.totals.blob_bytes, "downloadedBytes": result.downloaded_bytes,
            "cachedBytes": result.cached_bytes, "seconds": round(result.seconds, 3),
            **_volumes_and_delta_json(write),
        })
        return
    totals = write.index.totals
    out.print(
        f"packed {counted(len(result.images), 'image')} ({len(result.skipped)} skipped), "
        f"{counted(totals.manifests, 'manifest')} and {counted(totals.blobs, 'blob')} ({format_bytes(totals.blob_bytes)}) into {write.path} "
        f"({format_bytes(write.compressed_size)}) in {result.seconds:.1f}s"
        + (f", {format_bytes(result.cached_bytes)} of blobs from the cache" if result.cached_bytes else ""),
        markup=False,
    )
    out.print(f"sha256 {write.sha256}  {write.sidecar.name}", markup=False)
    for line in _volumes_and_delta_lines(write):
        out.print(line, markup=False)


def _split_and_since(kwargs: dict) -> tuple[int | None, Since | None]:
    """``--split`` in bytes and the union of the ``--since`` bases, read before anything is fetched."""
    split, paths, allow_incomplete = kwargs.pop("split"), kwargs.pop("since"), kwargs.pop("allow_incomplete")
    from bundler.bundle.delta import Since, load_base

    if allow_incomplete and not paths:
        raise InputError("--allow-incomplete applies to an inventory given with --since")
    since = Since.of([parsed("--since", path, load_base) for path in paths], allow_incomplete=allow_incomplete)
    return (parse_size(split) if split else None), (since if paths else None)


def _referrer_policy(kwargs: dict) -> ReferrerPolicy:
    """``--no-referrers`` or ``--artifact-type``: which referrers come along (by default all)."""
    from bundler.pack import ReferrerPolicy

    leave_out, types = kwargs.pop("no_referrers"), kwargs.pop("artifact_types")
    if leave_out and types:
        raise click.UsageError("--no-referrers leaves out every referrer; --artifact-type keeps some: give one")
    return ReferrerPolicy(enabled=not leave_out, artifact_types=frozenset(types))


def _volumes_and_delta_json(write: WriteResult) -> dict:
    index = write.index
    fields: dict = {"volumes": [str(path) for path in write.volumes]} if write.volumes else {}
    if index.base:
        fields.update(base=index.base, externalBlobs=len(index.external),
                      externalBytes=sum(entry.size for entry in index.external))
    if index.bases:
        fields["bases"] = [{"kind": entry.kind, "id": entry.id} for entry in index.bases]
    return fields


def _volumes_and_delta_lines(write: WriteResult) -> list[str]:
    from bundler.cli.tables import volumes_line

    lines = []
    if write.volumes:
        lines.append(volumes_line([path.name for path in write.volumes]))
    index = write.index
    if index.base:
        left = sum(entry.size for entry in index.external)
        lines.append(f"delta of {_relative_to(index)}: {counted(len(index.external), 'blob')} "
                     f"({format_bytes(left)}) left out")
    return lines


def _relative_to(index: BundleIndex) -> str:
    """What a delta leaves blobs to: ``base ID`` (one bundle), else each bundle and inventory."""
    if not index.bases:
        return f"base {index.base}"
    return ", ".join(f"{entry.kind} {entry.id}" + (f" of {entry.source}" if entry.source else "")
                     + f" ({entry.created})" for entry in index.bases)


def _expected_lines(report: VerifyReport, *, verbose: bool) -> list[str]:
    """A delta's verify says what it does not carry, which the target registry must hold: a count and
    bytes, and with ``verbose`` every blob (``--json`` lists them too)."""
    if not report.base:
        return []
    lines = [_expects_line(f"base {report.base}", report.expected) + ("" if verbose or not report.expected else
                                                             " (-v lists them)")]
    if verbose:
        lines += [f"expects {entry.digest} ({format_bytes(entry.size)})" for entry in report.expected]
    return lines


def _expects_line(relative_to: str, expected: list[ExternalEntry]) -> str:
    size = sum(entry.size for entry in expected)
    return f"delta of {relative_to}: expects {counted(len(expected), 'blob')} ({format_bytes(size)}) on the target"


def _bundle_argument(*, allow_dash: bool) -> Callable:
    """BUNDLE...: a bundle file, a volume or the bare NAME of a split bundle, or every volume of one set."""
    return click.argument("bundle", nargs=-1, required=True,
                          type=click.Path(dir_okay=False, allow_dash=allow_dash, path_type=Path))


def _bundle_files(paths: tuple[Path, ...]) -> Path | BundleFiles:
    """The bundle the arguments name; ``-`` (standard input) is passed on as is. A name under which
    there is nothing, not even volumes, is a usage error (exit 2), as for any missing file argument."""
    if len(paths) == 1 and str(paths[0]) == "-":
        return paths[0]
    missing = [path for path in paths if not os.path.lexists(path)]
    bare_name = len(paths) == 1 and any(paths[0].parent.glob(glob.escape(paths[0].name) + ".[0-9][0-9][0-9]"))
    if missing and not bare_name:
        raise click.BadParameter(f"{str(missing[0])!r} does not exist.", param_hint="'BUNDLE...'")
    return bundle_from_paths(paths)


def _stdin_if_dash(bundle: Path | BundleFiles) -> tuple[Path | BundleFiles, BinaryIO | None]:
    """``-`` means the bundle comes on standard input: a pipe, read once from front to back."""
    if str(bundle) == "-":
        return Path("<stdin>"), sys.stdin.buffer
    return bundle, None


@click.command("list")
@_bundle_argument(allow_dash=True)
@click.option("--json", "as_json", is_flag=True, help="Print the bundle index as JSON.")
@click.option("--no-trunc", is_flag=True, help="On a terminal too: full digests and every platform.")
def list_command(bundle: tuple[Path, ...], as_json: bool, no_trunc: bool) -> None:
    """Show the images in a bundle (reads only its index and seek table, instant on any size; '-' = stdin).

    BUNDLE... is one bundle: its file, or a split bundle's volumes (all, the first, or the bare NAME).

    On a terminal the table fits its width: digests shortened to 12 hex characters, platforms counted
    when their list does not fit. Piped, or with --no-trunc, everything is in full.
    """
    from bundler.bundle import BundleReader, read_index
    from bundler.cli.tables import image_lines, skipped_lines

    source, stream = _stdin_if_dash(_bundle_files(bundle))
    with _naming(source):
        if stream is not None:
            index = read_index(stream)
        else:
            with BundleReader.open(source) as reader:  # checks the seek table too: a truncated copy shows at once
                index = reader.index
    if as_json:
        print_json(index)
        return
    for line in image_lines(index, None if no_trunc or not out.is_terminal else out.width):
        sys.stdout.write(line + "\n")
    for line in skipped_lines(index):
        sys.stdout.write(line + "\n")
    out.print(f"bundle id {bundle_id(index)}", markup=False)
    if index.base:
        out.print(_expects_line(_relative_to(index), index.external), markup=False)


@click.command("verify")
@_bundle_argument(allow_dash=True)
@click.option("-v", "--verbose", is_flag=True, help="List every blob a delta expects on the target.")
@click.option("--file-checksum", is_flag=True,
              help="Also hash the compressed file against its sidecar, as sha256sum -c does "
                   "(the sidecar's content digest already proves every member and the tar stream).")
@output_flags
def verify_command(bundle: tuple[Path, ...], verbose: bool, file_checksum: bool, quiet: bool, as_json: bool) -> None:
    """Prove a bundle whole: its checksum, every blob's digest, every reference ('-' = stdin).

    BUNDLE... is one bundle: its file, or a split bundle's volumes (all, the first, or the bare NAME).
    """
    from bundler.cli.tables import verify_lines
    from bundler.verify import verify_bundle

    source, stream = _stdin_if_dash(_bundle_files(bundle))
    with make_progress(quiet or as_json) as progress, _naming(source):
        report = verify_bundle(source, progress=progress, stream=stream, file_checksum=file_checksum)
    if as_json:
        print_json(report.as_dict())
    else:
        for line in verify_lines(report) + _expected_lines(report, verbose=verbose):
            out.print(line, markup=False)
    if not report.ok:
        raise CorruptBundleError(f"{source}: {counted(len(report.problems), 'problem')}; {report.broken_summary()}")


@click.command("unpack")
@_bundle_argument(allow_dash=False)
@click.option("--to", "target", required=True, metavar="HOST[/PREFIX]", help="Registry (and path prefix) to push into.")
@click.option("--keep-host", is_flag=True, help="Keep the source registry host as the first path element.")
@click.option("--flatten", is_flag=True, help="Turn the remaining '/' in paths into '-' (one-level registries).")
@click.option("--map", "maps", multiple=True, metavar="SRC_PREFIX=DST_PREFIX",
              help="Rewrite a path prefix (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show source -> target ref@digest without pushing.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write source -> target refs (.json or .csv).")
@click.option("--create-projects", is_flag=True, help="Create missing Harbor projects (private unless --public).")
@click.option("--public", is_flag=True, help="With --create-projects: create them public.")
@click.option("--chunk-size", metavar="SIZE",
              help="Upload large blobs in PATCH chunks of SIZE (e.g. 16M) for proxies that cap bodies.")
@registry_options
@output_flags
def unpack_command(bundle, target, keep_host, flatten, maps, dry_run, report, create_projects, public, chunk_size,
                   quiet, as_json, **kwargs):
    """Push a bundle into a registry: blobs, then manifests, then indexes, then tags; same digests.

    BUNDLE... is one bundle: its file, or a split bundle's volumes (all of them, the first one, or the
    bare NAME of NAME.000, NAME.001 …). Several bundles are unpacked by one command each.
    """
    from bundler.cli.unpack_view import render_unpack
    from bundler.mapping import parse_to
    from bundler.unpack import UnpackOptions, unpack
    from bundler.unpack.result import report_format

    if public and not create_projects:
        raise InputError("--public only applies with --create-projects")
    if report is not None:
        parsed("--report", report, report_format)
        if not report.parent.is_dir():
            raise LocalIOError(f"--report {report}: no such directory {report.parent}")
    bundle = _bundle_files(bundle)
    parsed_maps = [_parse_map(m) for m in maps]
    host = parsed("--to", target, parse_to).host
    log_in(kwargs)
    with ca_file_checked(kwargs["ca_file"]), make_progress(quiet or as_json or dry_run) as progress, _naming(bundle):
        options = make_registry_options(kwargs, {host}, progress,
                                         chunk_size=parse_size(chunk_size) if chunk_size else None)
        settings = UnpackOptions(
            to=target, keep_host=keep_host, flatten=flatten, maps=parsed_maps, dry_run=dry_run,
            create_projects=create_projects, public=public, jobs=options.jobs,
        )
        result = unpack(bundle, settings, options, progress=progress)
    render_unpack(result, as_json=as_json, report=report)
    failure = result.failure_error()
    if failure is not None:
        with ca_file_checked(options.ca_file):
            raise failure


def _parse_map(text: str) -> tuple[str, str]:
    source, sep, target = text.partition("=")
    if not sep or not source:
        raise InputError(f"--map {text!r}: expected SRC_PREFIX=DST_PREFIX")
    return source.strip("/"), target.strip("/")


@click.command("serve")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--listen", default="127.0.0.1:5000", show_default=True, metavar="HOST:PORT",
              help="Address to serve on (':5000' for every interface; port 0 picks a free one).")
@click.option("--prefix", default="", metavar="PREFIX", help="Serve every repository under PREFIX (as unpack's --to).")
@click.option("--keep-host", is_flag=True, help="Keep the source registry host as the first path element.")
@click.option("--flatten", is_flag=True, help="Turn the remaining '/' in paths into '-'.")
@click.option("--map", "maps", multiple=True, metavar="SRC_PREFIX=DST_PREFIX",
              help="Rewrite a path prefix (repeatable).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Serve HTTPS: certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The certificate's key (PEM).")
@click.option("--htpasswd", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require basic auth: users from this file (bcrypt entries, htpasswd -B).")
@click.option("--verify", "verify_first", is_flag=True, help="Prove every bundle whole before serving it.")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Seconds a client may stall in any one read or write before it is dropped.")
@click.option("--max-connections", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Client connections served at once (more wait in the listen queue).")
@click.option("-q", "--quiet", is_flag=True, help="No access log; warnings and errors only.")
def serve_command(bundles, listen, prefix, keep_host, flatten, maps, tls_cert, tls_key, htpasswd, verify_first,
                  timeout, max_connections, quiet):
    """Serve bundles as a read-only registry, straight from the compressed files (Ctrl-C stops)."""
    import logging

    from bundler.errors import Interrupted
    from bundler.mapping import normalise_map
    from bundler.serve import Naming, ServeSettings, parse_listen, serve, verify_all

    if (tls_cert is None) != (tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    files = [_bundle_files((path,)) for path in bundles]
    host, port = parsed("--listen", listen, parse_listen)
    naming = Naming(prefix.strip("/"), keep_host, flatten,
                    tuple(parsed("--map", m, lambda text: normalise_map(*_parse_map(text))) for m in maps))
    settings = ServeSettings(host=host, port=port, client_timeout=timeout, max_connections=max_connections,
                             tls_cert=tls_cert, tls_key=tls_key, htpasswd=htpasswd)
    access_log = min(logging.INFO, logging.getLogger().level)  # --debug shows more
    logging.getLogger("bundler.serve").setLevel(logging.WARNING if quiet else access_log)
    if verify_first:
        verify_all(files)

    def ready(server: RegistryServer) -> None:
        view = server.view
        out.print(f"serving {len(view.images)} images in {len(view.repositories)} repositories from "
                  f"{len(files)} bundle(s) at {server.url}", markup=False)
        sys.stdout.flush()

    try:
        serve(files, naming, settings, ready)
    except (KeyboardInterrupt, Interrupted):
        out.print("stopped", markup=False)

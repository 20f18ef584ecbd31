"""The click commands; each parses options, calls one plan, and renders its result."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

import click

from bundler.cli.output import format_bytes, make_progress, out, parse_size, print_json
from bundler.cli.tables import image_table, verify_lines
from bundler.errors import BundleError, CorruptBundleError, InputError
from bundler.pack import pack, read_requests
from bundler.platforms import PlatformFilter
from bundler.registry import RegistryOptions

__all__ = ["pack_command", "list_command", "verify_command", "unpack_command"]


def _registry_options(command: Callable) -> Callable:
    """Options every command that talks to a registry shares."""
    options = [
        click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Extra CA certificate (PEM) to trust, e.g. a self-signed Harbor's."),
        click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST",
                     help="Allow plain HTTP or an unverified certificate for HOST (repeatable)."),
        click.option("--username", envvar="IMGBUNDLE_USERNAME", help="Registry user (else docker/podman config)."),
        click.option("--password-stdin", is_flag=True, help="Read the password from standard input."),
        click.option("--retries", type=click.IntRange(0, 50), default=5, show_default=True,
                     help="Retries per request on 5xx, 429 and dropped connections."),
        click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
                     help="Seconds without progress before a request is retried."),
        click.option("-j", "--jobs", type=click.IntRange(1, 64), default=4, show_default=True,
                     help="Parallel transfers."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _make_registry_options(kwargs: dict, hosts: set[str], *, chunk_size: int | None = None) -> RegistryOptions:
    """RegistryOptions from the shared flags; the password comes from stdin or IMGBUNDLE_PASSWORD, never argv.

    ``--username`` applies to ``hosts``, which must be one registry: credentials are never sent to a host
    they were not meant for (use docker login / config.json for several).
    """
    username = kwargs.pop("username")
    password_stdin = kwargs.pop("password_stdin")
    credentials = {}
    if username:
        if len(hosts) != 1:
            raise InputError("--username is ambiguous with several registries; use docker login (config.json) instead")
        password = sys.stdin.readline().rstrip("\n") if password_stdin else _env_password()
        credentials = {next(iter(hosts)): (username, password)}
    return RegistryOptions(
        ca_file=kwargs.pop("ca_file"),
        insecure=frozenset(kwargs.pop("insecure")),
        retries=kwargs.pop("retries"),
        read_timeout=kwargs.pop("timeout"),
        jobs=kwargs["jobs"],
        chunk_size=chunk_size,
        credentials=credentials,
    )


def _env_password() -> str:
    password = os.environ.get("IMGBUNDLE_PASSWORD")
    if password is None:
        raise InputError("--username needs a password: use --password-stdin or set IMGBUNDLE_PASSWORD")
    return password


@contextmanager
def _naming(bundle: Path) -> Iterator[None]:
    """Prefix bundle errors with the file's name: the reader only sees a file object."""
    try:
        yield
    except BundleError as error:
        if str(bundle) in str(error):
            raise
        raise type(error)(f"{bundle}: {error}") from error


def _output_flags(command: Callable) -> Callable:
    command = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(command)
    return click.option("-q", "--quiet", is_flag=True, help="No progress output; warnings and errors only.")(command)


@click.command("pack")
@click.argument("refs", nargs=-1)
@click.option("-f", "--file", "list_file", type=click.File("r"), help="Image list, one reference per line ('-' = stdin).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Bundle to write, e.g. site.tar.zst (a NAME.sha256 sidecar is written beside it).")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Keep only these platforms (repeatable); default: all, attestations included.")
@click.option("--skip-missing", is_flag=True, help="Pack the images that resolve; record the others as skipped.")
@click.option("--level", type=click.IntRange(1, 19), default=3, show_default=True, help="zstd compression level.")
@click.option("--created", metavar="RFC3339", help="Timestamp recorded in the bundle (default: now or SOURCE_DATE_EPOCH).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@_registry_options
@_output_flags
def pack_command(refs, list_file, output, platforms, skip_missing, level, created, force, quiet, as_json, **kwargs):
    """Resolve images from registries into one bundle: every blob once, manifests byte-exact."""
    lines = list(list_file) if list_file else []
    requests = read_requests(lines, list_file.name if list_file else "args", refs)
    filters = tuple(PlatformFilter.parse(p) for p in platforms)
    options = _make_registry_options(kwargs, {r.reference.registry for r in requests})
    with make_progress(quiet or as_json) as progress:
        result = pack(
            requests, output, options, filters=filters, skip_missing=skip_missing, jobs=options.jobs,
            level=level, created=created, overwrite=force, progress=progress,
        )
    write = result.write
    if as_json:
        print_json({
            "bundle": str(write.path), "sidecar": str(write.sidecar), "sha256": write.sha256,
            "bundleBytes": write.compressed_size, "images": len(result.images),
            "skipped": [s.source for s in result.skipped], "blobs": write.index.totals.blobs,
            "blobBytes": write.index.totals.blob_bytes, "downloadedBytes": result.downloaded_bytes,
            "seconds": round(result.seconds, 3),
        })
        return
    totals = write.index.totals
    out.print(
        f"packed {len(result.images)} images ({len(result.skipped)} skipped), {totals.manifests} manifests and "
        f"{totals.blobs} blobs ({format_bytes(totals.blob_bytes)}) into {write.path} "
        f"({format_bytes(write.compressed_size)}) in {result.seconds:.1f}s",
        markup=False,
    )
    out.print(f"sha256 {write.sha256}  {write.sidecar.name}", markup=False)


@click.command("list")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the bundle index as JSON.")
def list_command(bundle: Path, as_json: bool) -> None:
    """Show the images in a bundle (reads only its index, instant on any size)."""
    from bundler.bundle import read_index

    with _naming(bundle):
        index = read_index(bundle)
    if as_json:
        print_json(index)
        return
    out.print(image_table(index))


@click.command("verify")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_output_flags
def verify_command(bundle: Path, quiet: bool, as_json: bool) -> None:
    """Prove a bundle whole: its checksum, every blob's digest, every reference."""
    from bundler.verify import verify_bundle

    with make_progress(quiet or as_json) as progress, _naming(bundle):
        report = verify_bundle(bundle, progress=progress)
    if as_json:
        print_json(report.as_dict())
    else:
        for line in verify_lines(report):
            out.print(line, markup=False)
    if not report.ok:
        raise CorruptBundleError(f"{bundle}: {len(report.problems)} problem(s); {report.broken_summary()}")


@click.command("unpack")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "target", required=True, metavar="HOST[/PREFIX]", help="Registry (and path prefix) to push into.")
@click.option("--keep-host", is_flag=True, help="Keep the source registry host as the first path element.")
@click.option("--flatten", is_flag=True, help="Turn the remaining '/' in paths into '-' (one-level registries).")
@click.option("--map", "maps", multiple=True, metavar="SRC_PREFIX=DST_PREFIX", help="Rewrite a path prefix (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show source -> target ref@digest without pushing.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write source -> target refs (.json or .csv).")
@click.option("--create-projects", is_flag=True, help="Create missing Harbor projects (private unless --public).")
@click.option("--public", is_flag=True, help="With --create-projects: create them public.")
@click.option("--chunk-size", metavar="SIZE", help="Upload large blobs in PATCH chunks of SIZE (e.g. 16M) for proxies that cap bodies.")
@_registry_options
@_output_flags
def unpack_command(bundle, target, keep_host, flatten, maps, dry_run, report, create_projects, public, chunk_size,
                   quiet, as_json, **kwargs):
    """Push a bundle into a registry: blobs, then manifests, then indexes, then tags; same digests."""
    from bundler.cli.unpack_view import render_unpack
    from bundler.unpack import UnpackOptions, unpack

    from bundler.unpack.mapping import parse_to

    parsed_maps = [_parse_map(m) for m in maps]
    host = parse_to(target).host
    options = _make_registry_options(kwargs, {host}, chunk_size=parse_size(chunk_size) if chunk_size else None)
    settings = UnpackOptions(
        to=target, keep_host=keep_host, flatten=flatten, maps=parsed_maps, dry_run=dry_run,
        create_projects=create_projects, public=public, jobs=options.jobs,
    )
    with make_progress(quiet or as_json or dry_run) as progress:
        result = unpack(bundle, settings, options, progress=progress)
    render_unpack(result, as_json=as_json, report=report)
    failure = result.failure_error()
    if failure is not None:
        raise failure


def _parse_map(text: str) -> tuple[str, str]:
    source, sep, target = text.partition("=")
    if not sep or not source:
        raise InputError(f"--map {text!r}: expected SRC_PREFIX=DST_PREFIX")
    return source.strip("/"), target.strip("/")

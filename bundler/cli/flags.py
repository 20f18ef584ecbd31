"""Options several commands share: how to reach registries (TLS, credentials, retries) and how to report."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bundler.errors import InputError

if TYPE_CHECKING:
    from bundler.cli.output import CliProgress
    from bundler.registry import RegistryOptions

__all__ = ["log_in", "make_registry_options", "output_flags", "registry_options"]


def registry_options(command: Callable) -> Callable:
    """Options every command that talks to a registry shares."""
    options = [
        click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Extra CA certificate (PEM) to trust, e.g. a self-signed Harbor's."),
        click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
                     help="Allow plain HTTP or an unverified certificate for this registry (repeatable); as for "
                          "docker, HOST alone means port 443."),
        click.option("--username", envvar="IMGBUNDLE_USERNAME",
                     help="Registry user; the password comes from --password-stdin, IMGBUNDLE_PASSWORD or a prompt. "
                          "Without it: docker's config.json ($DOCKER_CONFIG, else ~/.docker) and its credential "
                          "helpers, then podman's auth.json ($REGISTRY_AUTH_FILE, else the usual places)."),
        click.option("--creds", metavar="USER[:PASSWORD]",
                     help="User and password in one (as skopeo); without :PASSWORD it is asked for, not echoed."),
        click.option("--password-stdin", is_flag=True, help="Read the password from standard input."),
        click.option("--authfile", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="PATH",
                     help="Credentials file as podman and skopeo write it, read before any other."),
        click.option("--retries", type=click.IntRange(0, 50), default=5, show_default=True,
                     help="Retries per request on 5xx, 429 and dropped connections, more while the registry "
                          "moves bytes (see --retry-timeout)."),
        click.option("--retry-timeout", type=click.FloatRange(0, 86400), default=300.0, show_default=True,
                     help="Seconds without a byte moved after which a failing request gives up."),
        click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
                     help="Seconds without progress before a request is retried."),
        click.option("-j", "--jobs", type=click.IntRange(1, 64), default=4, show_default=True,
                     help="Parallel transfers."),
        click.option("-v", "--verbose", "every_retry", is_flag=True,
                     help="One line on stderr per retried request (without it, only for a registry that cannot "
                          "be reached)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def log_in(kwargs: dict) -> None:
    """Read ``--username``/``--creds`` and the password into ``kwargs["login"]``, first thing: a prompt
    must come before any progress bar."""
    username, creds, password_stdin = kwargs.pop("username"), kwargs.pop("creds"), kwargs.pop("password_stdin")
    password: str | None = None
    if creds is not None:
        if username:
            raise InputError("--creds and --username both name a user; give one of them")
        username, sep, given = creds.partition(":")
        if not username:
            raise InputError("--creds: expected USER[:PASSWORD]")
        password = given if sep else None
    if username and password is None:
        password = _password(username, password_stdin)
    kwargs["login"] = (username, password) if username else None


def _password(username: str, from_stdin: bool) -> str:
    """From standard input, IMGBUNDLE_PASSWORD or, on a terminal, a prompt that does not echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = os.environ.get("IMGBUNDLE_PASSWORD")
    if password is not None:
        return password
    if sys.stdin.isatty():
        return str(click.prompt(f"password for {username}", hide_input=True, err=True))
    raise InputError(f"no password for {username}: use --password-stdin, IMGBUNDLE_PASSWORD or --creds USER:PASSWORD")


def make_registry_options(kwargs: dict, hosts: set[str], progress: CliProgress, *,
                           chunk_size: int | None = None) -> RegistryOptions:
    """RegistryOptions from the shared flags (``log_in`` has read the credentials).

    ``--username`` applies to ``hosts``, which must be one registry: credentials are never sent to a host
    they were not meant for (use docker login / config.json for several).
    """
    from bundler.registry import RegistryOptions

    login = kwargs.pop("login")
    credentials = {}
    if login is not None:
        if len(hosts) != 1:
            raise InputError("--username is ambiguous with several registries; log in to each with docker login, or "
                             "give one file for all with --authfile")
        credentials = {next(iter(hosts)): login}
    options = RegistryOptions(
        ca_file=kwargs.pop("ca_file"),
        auth_file=kwargs.pop("authfile"),
        insecure=frozenset(kwargs.pop("insecure")),
        retries=kwargs.pop("retries"),
        retry_timeout=kwargs.pop("retry_timeout"),
        read_timeout=kwargs.pop("timeout"),
        jobs=kwargs["jobs"],
        chunk_size=chunk_size,
        credentials=credentials,
        on_retry=partial(progress.retried, shown=kwargs.pop("every_retry")),
    )
    _warn_unmatched_insecure(options, hosts, progress)
    return options


def _warn_unmatched_insecure(options: RegistryOptions, hosts: set[str], progress: CliProgress) -> None:
    """A ``--insecure-registry`` value that names no registry the command uses would silently do nothing."""
    from bundler.reference import registry_endpoint

    used = sorted(hosts)
    for value in options.unmatched_insecure(hosts | {registry_endpoint(host) for host in hosts}):
        name = value.partition(":")[0].lower()
        near = [host for host in used if host.lower().partition(":")[0] == name]
        hint = f"; give HOST:PORT, e.g. --insecure-registry {near[0]}" if near else ""
        progress.warn(f"--insecure-registry {value} names no registry this command uses "
                      f"({', '.join(used) or 'none'}){hint}")



def output_flags(command: Callable) -> Callable:
    command = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(command)
    return click.option("-q", "--quiet", is_flag=True, help="No progress output; warnings and errors only.")(command)

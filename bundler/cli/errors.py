"""Library errors in the command line's words: the options that apply a remedy, the option a bad value came from.

Below ``cli`` no message names an option; an error carries a ``Remedy`` instead, worded here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from bundler.errors import ImgbundleError, InputError, Remedy

__all__ = ["ca_file_checked", "describe", "parsed"]

T = TypeVar("T")
V = TypeVar("V")

REMEDIES: dict[Remedy, str] = {
    Remedy.LOG_IN: "; log in with docker login, or pass --username",
    Remedy.TRUST_CA: " or pass --ca-file",
    Remedy.CHECK_CA: "; the --ca-file given does not sign it (is it this registry's CA?)",
    Remedy.SMALLER_CHUNKS: "; retry with a smaller --chunk-size, e.g. 8MiB",
    Remedy.FEWER_REQUESTS: " or with fewer --jobs",
    Remedy.CREATE_PROJECTS: " or re-run with --create-projects",
    Remedy.LIST_IMAGES: ", list the images with -f instead",
    Remedy.OVERWRITE: "; use --force to overwrite it",
    Remedy.TELL_APART: " (use --keep-host or --map to tell them apart)",
    Remedy.NAME_BASE: "; give a bundle, what 'imgbundle list --json' printed for it, or an inventory",
    Remedy.ALLOW_INCOMPLETE: "; take the inventory again, or pass --allow-incomplete to leave out what it lists",
    Remedy.ALLOW_PLAIN_HTTP: "; if that is meant, pass --insecure-registry {target}",
}
"""Each is appended to the message, so it starts with its own separator; ``{target}`` is the error's
``remedy_target``."""


def describe(error: ImgbundleError) -> str:
    """The error's one line, with its remedy in terms of our options."""
    if error.remedy is None:
        return str(error)
    return f"{error}{REMEDIES[error.remedy].format(target=error.remedy_target)}"


@contextmanager
def ca_file_checked(ca_file: Path | None) -> Iterator[None]:
    """An untrusted certificate although ``--ca-file`` was given: that file is what to check, not a flag to add."""
    try:
        yield
    except ImgbundleError as error:
        if ca_file is None or error.remedy is not Remedy.TRUST_CA:
            raise
        raise error.reworded(str(error), Remedy.CHECK_CA) from error


def parsed(option: str, value: V, parse: Callable[[V], T]) -> T:
    """``parse(value)``; its ``InputError`` names ``option`` first, as every bad option value is reported."""
    try:
        return parse(value)
    except InputError as error:
        raise error.reworded(f"{option} {error}") from None

"""The ``imgbundle`` command: click commands, progress and the one place errors become exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import NoReturn

import click

from bundler import __version__
from bundler.cli.cache_cmd import cache_group
from bundler.cli.commands import list_command, pack_command, serve_command, unpack_command, verify_command
from bundler.cli.errors import describe
from bundler.cli.inventory_cmd import inventory_command
from bundler.cli.malloc import tune_malloc
from bundler.cli.output import err
from bundler.errors import ImgbundleError, Interrupted, LocalIOError
from bundler.threads import lingering_workers

__all__ = ["cli", "main"]


def _log_requests(context: click.Context, parameter: click.Parameter, enabled: bool) -> None:
    if enabled:
        logging.getLogger().setLevel(logging.DEBUG)
        logging.getLogger("httpx").setLevel(logging.NOTSET)


def _debug_option() -> click.Option:
    """``--debug``, taken before the command as well as after it, as docker, skopeo and crane users type it."""
    return click.Option(["--debug"], is_flag=True, expose_value=False, callback=_log_requests,
                        help="Log every request (credentials and tokens are redacted).")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="imgbundle")
def cli() -> None:
    """Move container images into air-gapped sites as one verifiable bundle.

    \b
    Connected side:  imgbundle pack -f images.list -o site.tar.zst
    On arrival:      imgbundle verify site.tar.zst
    Isolated side:   imgbundle unpack site.tar.zst --to harbor.example.lan/k8s
    Next month:      imgbundle inventory --from harbor.example.lan -o held.json   (isolated side)
                     imgbundle pack -f images.list -o next.tar.zst --since held.json
    """


_COMMANDS = (pack_command, list_command, verify_command, unpack_command, serve_command, inventory_command)
for _command in (cli, *_COMMANDS):
    _command.params.append(_debug_option())
for _command in (*_COMMANDS, cache_group):
    cli.add_command(_command)


_signalled: list[int] = []


def _on_signal(signum: int, frame: object) -> NoReturn:
    """The first SIGINT or SIGTERM raises in the main thread so that cleanup runs (temporary files
    removed, workers stopped within CANCEL_GRACE); a second one exits at once, for whoever will not wait."""
    code = 143 if signum == signal.SIGTERM else 130
    if _signalled:
        os.write(2, b"imgbundle: error: forced exit by a second signal; temporary files may remain\n")
        os._exit(code)
    _signalled.append(signum)
    if signum == signal.SIGTERM:
        raise Interrupted("terminated (SIGTERM); run the same command again to finish", exit_code=code)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; every failure ends as one line on stderr and the error class's exit code."""
    tune_malloc()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        cli.main(args=argv, prog_name="imgbundle", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        _fail(Interrupted("interrupted (Ctrl-C); run the same command again to finish"))
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except ImgbundleError as error:
        _fail(error)
    except OSError as error:
        _fail(LocalIOError(f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")))
    except Exception as error:  # the last line of defence: one line, never a traceback
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        _fail(ImgbundleError(f"internal error, please report it (rerun with --debug for details): {error!r}"))
    sys.exit(0)


def _fail(error: ImgbundleError) -> NoReturn:
    err.print(f"imgbundle: error: {describe(error)}", markup=False, highlight=False)
    if lingering_workers():  # stuck on a stalled connection; everything to clean up is cleaned up
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(error.exit_code)
    sys.exit(error.exit_code)

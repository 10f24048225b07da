"""The ``relugeom`` command: one verb per analysis.

Exit codes: 0 success; 1 an error (one line on stderr naming the file or layer, no traceback);
2 a usage error; 3 finished, but some inputs were skipped (each named in a warning);
130 interrupted. ``RELUGEOM_DEBUG=1`` shows tracebacks of unexpected errors.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from .._progress import set_quiet
from .._version import __version__
from ..errors import RelugeomError, RelugeomWarning, ShardIncomplete, SkippedWarning

EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED, EXIT_INTERNAL = 1, 2, 3, 130, 70


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="relugeom")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def cli(quiet: bool) -> None:
    """relugeom: the geometry of trained ReLU networks.

    Point a verb at a model checkpoint (.pt/.pth/.tar/.safetensors), a run folder written by
    `relugeom train` (every epoch), or several of those. Checkpoints are loaded with
    weights_only=True: a pickle that would run code is refused.

    Exit codes: 0 ok, 1 error, 2 usage error, 3 done but some inputs were skipped (see the
    warnings), 130 interrupted.
    """
    set_quiet(quiet)


# One module per verb under relugeom/cli/, each defining ``command`` (a click command or group).
VERBS: tuple[str, ...] = (
    "stats", "train", "demo", "cones", "toy", "reinit", "reproduce", "regions", "measures", "report",
)


def _register() -> None:
    import importlib

    for name in VERBS:
        if name not in cli.commands:
            module = importlib.import_module(f"{__name__}.{name}")
            cli.add_command(module.command)


class _EchoHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(record.getMessage(), err=True)


def _log_to_stderr() -> None:
    """relugeom's log lines (parts computed and reused) go to stderr, once."""
    logger = logging.getLogger("relugeom")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: runs a verb and maps errors to exit codes."""
    _register()
    skipped: list[str] = []

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, SkippedWarning):
            skipped.append(str(message))
        if issubclass(category, RelugeomWarning):
            click.secho(f"warning: {message}", fg="yellow", err=True)
        else:
            click.echo(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), err=True)

    debug = os.environ.get("RELUGEOM_DEBUG", "") not in ("", "0")
    _log_to_stderr()
    with warnings.catch_warnings():
        warnings.simplefilter("always", RelugeomWarning)
        warnings.showwarning = show
        try:
            cli.main(args=argv, prog_name="relugeom", standalone_mode=False)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except ShardIncomplete as e:
            click.echo(str(e), err=True)
            sys.exit(0)
        except RelugeomError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as e:
            if debug:
                raise
            click.secho(
                f"internal error: {type(e).__name__}: {e}\n"
                "This is a bug in relugeom; rerun with RELUGEOM_DEBUG=1 for the traceback and report it.",
                fg="red", err=True,
            )  # fmt: skip
            sys.exit(EXIT_INTERNAL)
    if skipped:
        click.secho(f"finished, but {len(skipped)} input(s) were skipped (see the warnings above)", err=True)
        sys.exit(EXIT_PARTIAL)

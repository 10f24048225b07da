"""The ``relugeom`` command: one verb per analysis.

Exit codes: 0 success; 1 an error in the input or the environment (one line on stderr naming the
file or layer, no traceback: a corrupt checkpoint, a full or read-only disk, a run locked by another
process, not enough memory); 2 a usage error (a bad option value); 3 finished, but some inputs were
skipped (each named in a warning); 70 an internal error, i.e. a bug in relugeom; 130 interrupted.
``RELUGEOM_DEBUG=1`` shows tracebacks of unexpected errors.
"""

from __future__ import annotations

import logging
import os
import re
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
@click.option("--verify", is_flag=True,
              help="Check the CRC-32 of every record of every checkpoint read (slower; for disks you do not trust).")
def cli(quiet: bool, verify: bool) -> None:
    """relugeom: the geometry of trained ReLU networks.

    Point a verb at a model checkpoint (.pt/.pth/.tar/.safetensors), a run folder written by
    `relugeom train` (every epoch), or several of those. Checkpoints are loaded with
    weights_only=True: a pickle that would run code is refused.

    Exit codes: 0 ok, 1 error (input or environment), 2 usage error, 3 done but some inputs were
    skipped (see the warnings), 70 internal error (a bug in relugeom), 130 interrupted.
    """
    set_quiet(quiet)
    if verify:
        from ..checkpoints import set_verify

        set_verify(True)


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
    """Holds relugeom's log lines (parts computed and reused) until the verb has finished: shown on success (or
    an incomplete shard), dropped when the verb fails, whose error stays one line."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.held.append(record.getMessage())

    def show(self) -> None:
        for line in self.held:
            click.echo(line, err=True)
        self.held.clear()


def _log_to_stderr() -> _EchoHandler:
    """relugeom's log lines go to stderr through one held handler (returned, emptied)."""
    logger = logging.getLogger("relugeom")
    handler = next((h for h in logger.handlers if isinstance(h, _EchoHandler)), None)
    if handler is None:
        handler = _EchoHandler()
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    handler.held.clear()
    return handler


# A file name inside a message (anything with a slash, or a checkpoint's file name) and an epoch number: two
# warnings that differ only there are the same warning repeated over the checkpoints of a series.
_FILE_OR_EPOCH = re.compile(r"(\bepochs? )\d+|[^\s'\"]*[/\\][^\s'\":]*"
                            r"|[^\s'\"]+\.(?:pt|pth|tar|ckpt|bin|safetensors)\b")


def _pattern(message: str) -> str:
    """``message`` with file names replaced by <file> and epoch numbers by <n>."""
    return _FILE_OR_EPOCH.sub(lambda m: f"{m.group(1)}<n>" if m.group(1) else "<file>", message)


class WarningDisplay:
    """Shows relugeom warnings on stderr, each once: a warning that differs from an earlier one only in a file
    name or epoch (the same problem in every checkpoint of a run) is counted, not shown again, and
    :meth:`summary` prints one line per such warning with its count."""

    def __init__(self) -> None:
        self.skipped: list[str] = []
        self.seen: dict[tuple[type, str], list] = {}  # key -> [first message, count]

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if issubclass(category, SkippedWarning):
            self.skipped.append(str(message))
        if not issubclass(category, RelugeomWarning):
            click.echo(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), err=True)
            return
        key = (category, _pattern(str(message)))
        if key in self.seen:
            self.seen[key][1] += 1
            return
        self.seen[key] = [str(message), 1]
        click.secho(f"warning: {message}", fg="yellow", err=True)

    def summary(self) -> None:
        for (_, pattern), (_, count) in self.seen.items():
            if count > 1:
                click.secho(f"warning: {pattern} (repeated for {count} checkpoints)", fg="yellow", err=True)


def _environment_error(e: BaseException) -> str | None:
    """The one-line message of an error caused by the machine or the input, not by relugeom (None otherwise)."""
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
            "can't allocate memory" in str(e) or "out of memory" in str(e).lower())):  # fmt: skip
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else "MemoryError"
        return f"not enough memory ({first}); use smaller inputs, fewer samples or a smaller batch"
    if isinstance(e, OSError):
        where = e.filename if e.filename is not None else ""
        reason = e.strerror or str(e)
        return f"{where}: {reason}" if where else reason
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: runs a verb and maps errors to exit codes."""
    display = WarningDisplay()
    skipped = display.skipped
    debug = os.environ.get("RELUGEOM_DEBUG", "") not in ("", "0")
    held = _log_to_stderr()
    with warnings.catch_warnings():
        warnings.simplefilter("always", RelugeomWarning)
        warnings.showwarning = display.show
        try:
            _register()  # imports torch and the verbs: Ctrl-C here is an interruption too
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
            held.show()
            click.echo(str(e), err=True)
            sys.exit(0)
        except RelugeomError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as e:
            if debug:
                raise
            message = _environment_error(e)
            if message is not None:
                click.secho(f"error: {message}", fg="red", err=True)
                sys.exit(EXIT_ERROR)
            click.secho(
                f"internal error: {type(e).__name__}: {e}\n"
                "This is a bug in relugeom; rerun with RELUGEOM_DEBUG=1 for the traceback and report it.",
                fg="red", err=True,
            )  # fmt: skip
            sys.exit(EXIT_INTERNAL)
        else:
            held.show()
        finally:
            display.summary()
    if skipped:
        click.secho(f"finished, but {len(skipped)} input(s) were skipped (see the warnings above)", err=True)
        sys.exit(EXIT_PARTIAL)

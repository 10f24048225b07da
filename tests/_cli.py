"""Shared helper of the CLI tests: run ``relugeom ARGV`` in-process."""

import pytest

from relugeom.cli import main


def run(argv, capsys):
    """(exit code, stdout, stderr) of ``relugeom argv``; no output may contain a traceback."""
    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return e.value.code or 0, out.out, out.err


def exit_code(argv):
    """Exit code of ``relugeom argv`` (0 when it returns normally); output is left to the caller."""
    try:
        main(argv)
    except SystemExit as e:
        return e.code
    return 0

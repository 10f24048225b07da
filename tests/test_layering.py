"""The layering of DESIGN.md: data flows one way (checkpoints -> graph/layers -> analyses -> DataFrames ->
report/CLI) and nothing imports upward. The contracts are import-linter's, in pyproject.toml; they are run here
on the package and on a copy with an upward import planted in it (so that this test can fail)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def _lint(root: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    p = subprocess.run([sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def test_nothing_imports_upward():
    code, out = _lint(ROOT)
    assert code == 0, out
    assert "2 kept, 0 broken" in out


def test_the_contracts_catch_upward_imports(tmp_path):
    shutil.copytree(ROOT / "src" / "relugeom", tmp_path / "src" / "relugeom",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    layers = tmp_path / "src" / "relugeom" / "layers.py"  # a lazy import inside a function counts too
    layers.write_text(layers.read_text() + "\n\ndef _planted():\n    from .experiments.models import build_model\n")
    train = tmp_path / "src" / "relugeom" / "experiments" / "train.py"
    train.write_text(train.read_text() + "\nfrom .. import __version__ as _v  # noqa\n")
    code, out = _lint(tmp_path)
    flat = " ".join(out.split())
    assert code == 1, out
    assert "relugeom.layers is not allowed to import relugeom.experiments.models" in flat
    assert "relugeom.experiments.train is not allowed to import relugeom" in flat
    assert "0 kept, 2 broken" in flat


def test_every_module_sits_on_a_floor():
    """A new module must be placed in the contract (pyproject.toml), else its imports go unchecked."""
    import pkgutil

    import pytest

    import relugeom

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    placed = [n.strip().strip("()") for layer in layers for n in layer.replace("|", ":").split(":")]
    packages = {m.name for m in pkgutil.walk_packages(relugeom.__path__, "relugeom.") if m.ispkg}
    loose = [m.name for m in pkgutil.walk_packages(relugeom.__path__, "relugeom.")
             if m.name not in packages | {"relugeom.__main__"}
             and not any(m.name == n or m.name.startswith(n + ".") for n in placed)]  # fmt: skip
    assert not loose, f"modules on no floor of the layering contract in pyproject.toml: {loose}"

"""Every docstring example in the package runs (doctest), and every name that relugeom exports has one."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import relugeom

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(relugeom.__path__, "relugeom.") if m.name != "relugeom.__main__"]
    return ["relugeom", *sorted(names)]


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found = []
    for name in _module_names():
        found += [t for t in finder.find(importlib.import_module(name), name) if t.examples]
    return sorted(found, key=lambda t: t.name)


DOCTESTS = _doctests()


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example_runs(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    lines: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=lines.append, clear_globs=True)
    assert result.failed == 0, "".join(lines)


def _runnable_examples(obj: object, name: str) -> int:
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, module=False, globs={})
    return sum(not ex.options.get(doctest.SKIP, False) for t in tests for ex in t.examples)


@pytest.mark.parametrize("name", sorted(relugeom.__all__))
def test_every_exported_name_has_an_example(name):
    assert _runnable_examples(getattr(relugeom, name), name) > 0, f"relugeom.{name} has no docstring example that runs"


def test_the_finder_finds_the_examples():
    assert len(DOCTESTS) >= len(relugeom.__all__)
    assert any(t.name == "relugeom.architectures.create_model" for t in DOCTESTS)

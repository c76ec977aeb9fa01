"""Old module names (noisegrad.demo, noisegrad.shapes, noisegrad.cli_explain) still import, warn, and give the new
module itself; unknown names still fail."""

import importlib
import sys
import warnings

import pytest

from noisegrad import _deprecated


def _forget(monkeypatch, name):
    """Make ``name`` look never imported (restored after the test), so its import goes through the finder again."""
    monkeypatch.delitem(sys.modules, name, raising=False)
    package, _, attr = name.rpartition(".")
    monkeypatch.delattr(sys.modules[package], attr, raising=False)


@pytest.mark.parametrize("old, new", sorted(_deprecated.RENAMED.items()))
def test_old_name_warns_and_is_the_new_module(monkeypatch, old, new):
    _forget(monkeypatch, old)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*import {new} instead"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new and module.__spec__.name == new  # the new module's identity is kept
    assert sys.modules[old] is module


def test_old_names_in_import_statements_and_from_imports(monkeypatch):
    _forget(monkeypatch, "noisegrad.demo")
    _forget(monkeypatch, "noisegrad.shapes")
    _forget(monkeypatch, "noisegrad.cli_explain")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import noisegrad.demo
        from noisegrad import shapes
        from noisegrad.cli_explain import ExplainError
    from noisegrad.app import demo, explain
    from noisegrad.app import shapes as new_shapes

    assert noisegrad.demo is demo and shapes is new_shapes and ExplainError is explain.ExplainError
    assert [w.category for w in caught] == [DeprecationWarning] * 3
    assert all(w.filename == __file__ for w in caught)  # the warning points at the importing line


def test_a_rename_added_to_the_table_works_too(monkeypatch):
    monkeypatch.setitem(_deprecated.RENAMED, "noisegrad.old_plan", "noisegrad.plan")
    _forget(monkeypatch, "noisegrad.old_plan")
    with pytest.warns(DeprecationWarning, match="import noisegrad.plan instead"):
        module = importlib.import_module("noisegrad.old_plan")
    assert module is importlib.import_module("noisegrad.plan")


def test_other_missing_modules_still_fail_and_the_finder_is_installed_once():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("noisegrad.no_such_module")
    importlib.reload(_deprecated)
    assert sum(getattr(f, "finds_renamed_noisegrad_modules", False) for f in sys.meta_path) == 1

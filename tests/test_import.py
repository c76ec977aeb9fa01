"""``import noisegrad`` stays light: figures load on first use, and the library never reaches into the app."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "noisegrad"
APP = "noisegrad.app"

PROBE = textwrap.dedent(
    """
    import json, sys
    import noisegrad

    def loaded(name):
        return sorted(m for m in sys.modules if m == name or m.startswith(name + "."))

    report = {"file": noisegrad.__file__, "viz_after_import": loaded("noisegrad.viz"),
              "app_after_import": loaded("noisegrad.app")}
    plot = noisegrad.viz.plot_image_attr
    from noisegrad import viz
    report["viz_after_access"] = "noisegrad.viz" in sys.modules
    report["same_module"] = viz is sys.modules["noisegrad.viz"] and plot is viz.plot_image_attr
    report["viz_in_all"] = "viz" in noisegrad.__all__
    print(json.dumps(report))
    """
)


def test_import_leaves_viz_and_app_out_until_viz_is_used():
    # This worktree's noisegrad, not an installed copy: put the repository first on the path.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PACKAGE.parent, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).resolve().parent == PACKAGE
    assert report["viz_after_import"] == [], "import noisegrad imported its figures"
    assert report["app_after_import"] == [], "import noisegrad imported the app"
    assert report["viz_after_access"] and report["same_module"] and report["viz_in_all"]


# --------------------------------------------------------------------------- the library does not import the app


def imported_modules(tree: ast.AST, module: str) -> set:
    """Absolute names of every module an AST imports, ``module`` being the dotted name of its own file.

    Counts ``import a.b``, ``from a.b import c`` (as ``a.b`` and ``a.b.c``:
    ``c`` may be a submodule), relative imports, and
    ``importlib.import_module`` / ``__import__`` with a constant name.
    """
    # where relative imports start: the module's package (for an __init__, the package it initialises)
    package = module.split(".")[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join(base + ([node.module] if node.module else []))
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def reaches_app(names: set) -> bool:
    return any(name == APP or name.startswith(APP + ".") for name in names)


def library_modules():
    """(dotted name, path) of every module under noisegrad/ outside noisegrad/app/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if relative.parts[:2] == ("noisegrad", "app"):
            continue
        yield ".".join(relative.parts), path


@pytest.mark.parametrize(
    "source, module, reaches",
    [
        ("import noisegrad.app", "noisegrad.tunnel", True),
        ("import noisegrad.app.demo as demo", "noisegrad.tunnel", True),
        ("from noisegrad.app import demo", "noisegrad.tunnel", True),
        ("from noisegrad import app", "noisegrad.tunnel", True),
        ("from .app import demo", "noisegrad.tunnel", True),
        ("from .. import app", "noisegrad.viz.image", True),
        ("from . import app", "noisegrad.__init__", True),
        ("def f():\n    from noisegrad.app.demo import main", "noisegrad.cli_explain", True),
        ("importlib.import_module('noisegrad.app')", "noisegrad.__init__", True),
        ("import noisegrad.apple", "noisegrad.tunnel", False),
        ("from . import viz", "noisegrad.__init__", False),
        ("from .app import demo", "noisegrad.viz.image", False),  # noisegrad.viz.app, not the app
    ],
)
def test_the_import_scanner_sees_every_way_to_import_the_app(source, module, reaches):
    assert reaches_app(imported_modules(ast.parse(source), module)) == reaches


def test_no_library_module_imports_the_app():
    modules = list(library_modules())
    assert len(modules) > 20 and any(name == "noisegrad.tunnel" for name, _ in modules)
    offenders = [
        name for name, path in modules
        if reaches_app(imported_modules(ast.parse(path.read_text(encoding="utf-8"), str(path)), name))
    ]
    assert offenders == [], f"library modules that import {APP}: {offenders}"

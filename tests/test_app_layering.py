"""The library and the application are apart: the app imports the library, never the reverse."""

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "noisegrad"

#: The one library file allowed to name the app: ``python -m noisegrad`` has to start it.
ENTRY_POINT = PACKAGE / "__main__.py"


def _imported_modules(path: Path):
    """Every module an ``import`` or ``from ... import`` in ``path`` names, relative imports resolved."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def test_no_library_module_imports_the_app():
    library = [p for p in PACKAGE.rglob("*.py") if "app" not in p.relative_to(PACKAGE).parts and p != ENTRY_POINT]
    assert len(library) > 20
    offenders = {str(p.relative_to(REPO)): name for p in library for name in _imported_modules(p)
                 if name == "noisegrad.app" or name.startswith("noisegrad.app.")}
    assert offenders == {}


def test_importing_the_library_loads_no_app_module():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = "import sys, noisegrad; print(sorted(m for m in sys.modules if m.startswith('noisegrad.app')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_entry_point_only_calls_the_app_command_line():
    from noisegrad import __main__ as entry
    from noisegrad.app import cli

    assert entry.main is cli.main
    assert set(_imported_modules(ENTRY_POINT)) == {"noisegrad.app.cli", "noisegrad.app.cli.main"}

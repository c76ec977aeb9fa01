"""Old module names that still import, for one release, with a ``DeprecationWarning`` naming the new one.

Importing this module puts one finder at the front of ``sys.meta_path`` (once,
however often it is imported). The finder answers only for the names in
:data:`RENAMED`: it imports the new module and hands back that very module
object, so ``noisegrad.demo is noisegrad.app.demo`` and no code runs twice.
No file is left at the old path.

Examples
--------
>>> import warnings
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore", DeprecationWarning)  # the first import of the old name warns
...     import noisegrad.shapes as old
>>> import noisegrad.app.shapes as new
>>> old is new
True
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Dict

__all__ = ["RENAMED"]

#: Old module name → new module name. Add a rename here; remove it one release after it appears in CHANGELOG.md.
RENAMED: Dict[str, str] = {
    "noisegrad.demo": "noisegrad.app.demo",
    "noisegrad.shapes": "noisegrad.app.shapes",
    "noisegrad.cli_explain": "noisegrad.app.explain",
    "noisegrad.moments": "noisegrad.stats.moments",
    "noisegrad.smoothing": "noisegrad.stats.smoothing",
    "noisegrad.stderr": "noisegrad.stats.grouped",
    "noisegrad.convergence": "noisegrad.stats.stopping",
    "noisegrad.deltas": "noisegrad.stats.deltas",
    "noisegrad.seeding": "noisegrad.sampling.seeding",
    "noisegrad.samplers": "noisegrad.sampling.samplers",
    "noisegrad.noise": "noisegrad.perturb.inputs",
    "noisegrad.joint": "noisegrad.estimators.joint_ig",
    "noisegrad.budget": "noisegrad.plan",
}


class _RenamedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old names of :data:`RENAMED`, and only those."""

    #: Marks the finder, so that importing this module again (a reload) does not add a second one.
    finds_renamed_noisegrad_modules = True

    def find_spec(self, fullname, path, target=None):  # noqa: D102  (importlib's protocol)
        new_name = RENAMED.get(fullname)
        if new_name is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new_name))


class _AliasLoader(importlib.abc.Loader):
    """Loads an old name as the module of its new name, warning once per process (the import system caches it)."""

    def __init__(self, new_name: str) -> None:
        self.new_name = new_name
        self.new_spec = None

    def create_module(self, spec) -> ModuleType:
        # stacklevel 2 is the importing line: the warnings machinery skips importlib's own frames
        warnings.warn(f"{spec.name} is deprecated and will be removed in the next release; import "
                      f"{self.new_name} instead", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new_name)
        self.new_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the module already ran under its new name; the import system has just stamped the old name's spec
        # on it, so put its own back (importlib.reload, pickle and pytest look it up)
        module.__spec__ = self.new_spec


def _install() -> None:
    if not any(getattr(finder, "finds_renamed_noisegrad_modules", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RenamedModuleFinder())


_install()

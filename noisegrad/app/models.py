"""``explain --model``: a TorchScript file, a ``torch.export`` archive or ``package.module:function``, and what
loading each one trusts.

* A TorchScript file is loaded with ``torch.jit.load``, which compiles the TorchScript code in the file and runs
  it when the model is called: it is a program you choose to run. No Python pickle is involved (TorchScript's own
  unpickler rebuilds only tensors and TorchScript objects), and every Python unpickler is disabled while it loads.
* A ``torch.export`` archive (``.pt2``) is checked and loaded by :mod:`noisegrad.app.export_archive` without
  unpickling anything; an archive that would need pickle, holds compiled code or calls an operator that could
  reach a file is refused.
* ``package.module:function`` imports and runs the Python code you name: fully trusted.
* A ``torch.save`` file (a pickled module or state dict) is refused: loading it runs its pickle.

Examples
--------
>>> load_model("no_such_file.pt")
Traceback (most recent call last):
...
noisegrad.app.errors.ExplainError: --model 'no_such_file.pt': no such file, and not of the form package.module:function
"""

import importlib
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, List

import torch

from noisegrad.app._unpickling import UnpicklingRefused, no_unpickling
from noisegrad.app.errors import ExplainError
from noisegrad.app.export_archive import UnsafeArchive, load_exported_module, static_batch_inputs

__all__ = ["load_model", "is_model_file", "import_named"]

#: How to fix an exported program whose batch dimension is fixed.
DYNAMIC_BATCH_HINT = ("a torch.export program must have a dynamic batch dimension, because noisy copies are stacked "
                      "along it: torch.export.export(model, args, dynamic_shapes=... "
                      "{0: torch.export.Dim('batch')} ...)")


def load_model(spec: str) -> Callable[..., Any]:
    """The model named by ``--model``, in eval mode when it has one.

    Raises
    ------
    ExplainError
        If the file is refused or cannot be loaded as TorchScript or torch.export, or the
        ``module:function`` cannot be imported, found, or returns no model.
    """
    model = _load_model_file(Path(spec)) if is_model_file(spec) else _load_model_factory(spec)
    if isinstance(model, torch.nn.Module):
        try:
            model.eval()
        except NotImplementedError:  # an exported program's module: already traced in inference mode
            pass
    return model


def is_model_file(spec: str) -> bool:
    """Whether ``--model`` names a file (True) or ``package.module:function`` (False); checks nothing is loaded.

    Raises
    ------
    ExplainError
        If ``spec`` is neither an existing file nor of the form ``package.module:function``.
    """
    path = Path(spec)
    if path.is_file():
        return True
    if path.exists():
        raise ExplainError(f"--model '{spec}' is not a file")
    if ":" in spec and os.path.sep not in spec.split(":", 1)[0]:
        return False
    raise ExplainError(f"--model '{spec}': no such file, and not of the form package.module:function")


def _load_model_file(path: Path) -> Callable[..., Any]:
    if not zipfile.is_zipfile(path):
        raise ExplainError(f"--model '{path}' is neither a TorchScript nor a torch.export file (not a zip archive); "
                           "save the model with torch.jit.save or torch.export.save")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if _is_export_archive(names):
        return _load_export(path)
    if not any("/code/" in n for n in names) and any(n.endswith("/data.pkl") for n in names):
        raise ExplainError(f"--model '{path}' is neither a TorchScript nor a torch.export file but a torch.save file "
                           "(a pickled module or state_dict), refused because loading it would run its pickle: save "
                           "the model with torch.jit.save or torch.export.save, or give package.module:function")
    return _load_script(path)


def _is_export_archive(names: List[str]) -> bool:
    return any(n.endswith(("/archive_format", "serialized_exported_program.json")) or "/models/" in n for n in names)


def _load_script(path: Path) -> Callable[..., Any]:
    try:
        with no_unpickling(f"--model '{path}'"), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+ deprecates TorchScript; it was asked for
            return torch.jit.load(str(path), map_location="cpu")
    except UnpicklingRefused as err:
        raise ExplainError(str(err)) from None
    except Exception as err:  # torch.jit.load fails in its own ways on files that are not TorchScript
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExplainError(f"--model '{path}' is neither a TorchScript nor a torch.export file (torch.jit.load: "
                           f"{type(err).__name__}: {first}); save the model with torch.jit.save or "
                           "torch.export.save, or give package.module:function") from None


def _load_export(path: Path) -> Callable[..., Any]:
    try:
        module = load_exported_module(path)
    except UnsafeArchive as err:
        raise ExplainError(f"--model '{path}' is refused: {err}. A torch.export file is loaded without running "
                           "anything it carries but tensor operators") from None
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExplainError(f"--model '{path}' cannot be loaded as a torch.export program: {type(err).__name__}: "
                           f"{first}") from None
    static = static_batch_inputs(module)
    if static:
        raise ExplainError(f"--model '{path}': the batch dimension of {', '.join(static)} is fixed; "
                           f"{DYNAMIC_BATCH_HINT}")
    return module


def import_named(spec: str, option: str) -> Any:
    """The object ``package.module:name`` names (the current folder is on the import path): trusted user code.

    Raises
    ------
    ExplainError
        Naming ``option``, if ``spec`` is not of that form, the module cannot be imported or has no such name.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ExplainError(f"{option} '{spec}': expected package.module:function")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ExplainError(f"{option} '{spec}': cannot import '{module_name}': {type(err).__name__}: {err}") from err
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ExplainError(f"{option} '{spec}': '{module_name}' has no attribute '{attr}'")
        target = getattr(target, part)
    return target


def _load_model_factory(spec: str) -> Callable[..., Any]:
    attr = spec.partition(":")[2]
    target = import_named(spec, "--model")
    if isinstance(target, torch.nn.Module):
        return target
    if not callable(target):
        raise ExplainError(f"--model '{spec}': '{attr}' is neither an nn.Module nor a function returning one")
    try:
        model = target()
    except Exception as err:
        raise ExplainError(f"--model '{spec}': calling {attr}() failed: {type(err).__name__}: {err}") from err
    if not callable(model):
        raise ExplainError(f"--model '{spec}': {attr}() returned {type(model).__name__}, not a model")
    return model

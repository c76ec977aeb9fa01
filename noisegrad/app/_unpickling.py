"""Two guards against the code a pickle can carry: reading what a pickle would import without running it, and a
context in which nothing can be unpickled.

A pickle is a small program: its ``GLOBAL`` / ``STACK_GLOBAL`` opcodes import any callable (``os.system``) and
``REDUCE`` calls it. :func:`pickle_imports` lists those imports from the opcodes alone (``pickletools.genops``
parses, it does not execute), so a file can be judged before anything loads it. :func:`no_unpickling` makes
``pickle.load`` / ``loads`` / ``Unpickler``, torch's full ``torch.load`` and its TorchScript object unpickler
raise for the duration of a block: whatever a library does inside, it cannot unpickle.

Examples
--------
>>> import pickle
>>> pickle_imports(pickle.dumps(print, protocol=4))
['builtins.print']
>>> with no_unpickling("this example"):
...     pickle.loads(pickle.dumps(1))
Traceback (most recent call last):
...
noisegrad.app._unpickling.UnpicklingRefused: this example would unpickle data (pickle.loads); refused
"""

import contextlib
import pickle
import pickletools
import re
from typing import Callable, Iterator, List

import torch

__all__ = ["UnpicklingRefused", "pickle_imports", "non_tensor_imports", "no_unpickling"]

#: What ``torch.save`` of tensors, tuples, lists and dicts imports; anything else is code.
_TENSOR_IMPORTS = frozenset({"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
                             "collections.OrderedDict"})
_STORAGE_IMPORT = re.compile(r"torch\.[A-Za-z0-9]+Storage")

_STRING_PUSHES = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                            "BINUNICODE8"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_NO_PUSH = frozenset({"PROTO", "FRAME", "STOP"})
_MISSING = object()


class UnpicklingRefused(RuntimeError):
    """Something tried to unpickle inside :func:`no_unpickling`."""


def pickle_imports(data: bytes) -> List[str]:
    """Every ``module.name`` a pickle would import, in order, read from its opcodes without running it.

    Raises
    ------
    ValueError
        If ``data`` is not a readable pickle, or imports a name this reading cannot resolve (a
        ``STACK_GLOBAL`` whose operands are not plain strings, or an extension-registry code).
    """
    imports: List[str] = []
    recent: List[object] = []  # what the last opcodes pushed: the string, or None for anything else
    memo = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in _STRING_PUSHES:
                recent.append(arg)
            elif name in _MEMO_GETS:
                recent.append(memo.get(arg))
            elif name in _MEMO_PUTS or name == "MEMOIZE":
                memo[arg if name in _MEMO_PUTS else len(memo)] = recent[-1] if recent else None
            elif name in ("GLOBAL", "INST"):
                imports.append(".".join(str(arg).split(" ", 1)))
                recent.append(None)
            elif name == "STACK_GLOBAL":
                module, attr = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise ValueError("a STACK_GLOBAL whose module and name are not plain strings")
                imports.append(f"{module}.{attr}")
                recent.append(None)
            elif name.startswith("EXT"):
                raise ValueError(f"an import through the copyreg extension registry (code {arg})")
            elif name not in _NO_PUSH:
                recent.append(None)
    except ValueError as err:
        raise ValueError(f"cannot tell what this pickle imports: {err}") from None
    return imports


def non_tensor_imports(data: bytes) -> List[str]:
    """The imports of a pickle beyond what a ``torch.save`` of tensors needs (empty: only tensors).

    Examples
    --------
    >>> import collections
    >>> non_tensor_imports(pickle.dumps(collections.OrderedDict(), protocol=2))
    []
    >>> non_tensor_imports(pickle.dumps(print, protocol=4))
    ['builtins.print']
    """
    return [name for name in pickle_imports(data)
            if name not in _TENSOR_IMPORTS and not _STORAGE_IMPORT.fullmatch(name)]


@contextlib.contextmanager
def no_unpickling(what: str) -> Iterator[None]:
    """Inside the block, unpickling raises :class:`UnpicklingRefused` naming ``what``; everything is put back after.

    Covers ``pickle.load``, ``pickle.loads``, ``pickle.Unpickler`` (and their pure-Python twins), ``torch.load``
    unless given ``weights_only=True`` (torch's restricted unpickler, which rebuilds only tensors and plain
    containers) and TorchScript's ``torch._C._pickle_load_obj``. Process-wide while it lasts: meant for a
    command line that loads one file, not for threads.
    """

    def refuse(name: str) -> Callable[..., object]:
        def refused(*args, **kwargs):
            raise UnpicklingRefused(f"{what} would unpickle data ({name}); refused")

        return refused

    class RefusedUnpickler:
        def __init__(self, *args, **kwargs):
            refuse("pickle.Unpickler")()

    real_torch_load = torch.serialization.load

    def torch_load(*args, weights_only=None, **kwargs):
        if weights_only is not True:
            refuse("torch.load without weights_only=True")()
        return real_torch_load(*args, weights_only=True, **kwargs)

    patches = [(pickle, "load", refuse("pickle.load")), (pickle, "loads", refuse("pickle.loads")),
               (pickle, "_load", refuse("pickle.load")), (pickle, "_loads", refuse("pickle.loads")),
               (pickle, "Unpickler", RefusedUnpickler), (pickle, "_Unpickler", RefusedUnpickler),
               (torch, "load", torch_load), (torch.serialization, "load", torch_load),
               (torch._C, "_pickle_load_obj", refuse("torch._C._pickle_load_obj"))]
    originals = [(owner, name, getattr(owner, name, _MISSING)) for owner, name, _ in patches]
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in reversed(originals):
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)

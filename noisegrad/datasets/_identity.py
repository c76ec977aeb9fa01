"""What a data-set run's result depends on, as JSON a later run can compare: values, functions, a Captum method's
own state, and the data set.

A function is told apart by its qualified name and a SHA-256 of its code (bytecode, constants, names, defaults and
the plain values its closure holds): two lambdas of one module differ when their code does. What a function reaches
beyond that — a global it reads, a module it calls that is not the model — is not seen.

Examples
--------
>>> describe(lambda b: b[1])["function"]
'noisegrad.datasets._identity.<lambda>'
>>> describe(lambda b: b[1]) == describe(lambda b: b[1] + 1)
False
>>> data_fingerprint(torch.arange(6.0).reshape(3, 2))["examples"]
3
"""

import functools
import hashlib
import inspect
import json
import types
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["describe", "method_state", "data_fingerprint", "digest"]

#: How deep a Captum method's attributes are followed (LayerIntegratedGradients keeps an IntegratedGradients).
_DEPTH = 3


def digest(value: Any) -> str:
    """SHA-256 of a JSON value (sorted keys): a short, comparable stand-in for a long description."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def describe(value: Any) -> Any:
    """``value`` as JSON: plain values as they are, a tensor or array by its shape, dtype and SHA-256, a function
    by its qualified name and the SHA-256 of its code.

    Examples
    --------
    >>> describe({"n_steps": 8, "baselines": torch.zeros(2)})["baselines"]["shape"]
    [2]
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        data = (flat.view(torch.int16) if flat.dtype == torch.bfloat16 else flat).numpy().tobytes()
        return {"shape": list(value.shape), "dtype": str(value.dtype), "sha256": hashlib.sha256(data).hexdigest()}
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {"shape": list(value.shape), "dtype": str(value.dtype),
                "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    if isinstance(value, (set, frozenset)):  # sorted: a set's order changes from one process to the next
        return sorted((describe(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, nn.Module):  # its weights are the model fingerprint's business
        return {"module": _qualified(type(value))}
    if callable(value):
        return _function(value)
    text = repr(value)
    return text if " at 0x" not in text else {"object": _qualified(type(value))}


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _function(fn: Any) -> Dict[str, Any]:
    """A callable's name and what tells one body from another."""
    if isinstance(fn, functools.partial):
        return {"partial": describe(fn.func), "args": describe(list(fn.args)), "keywords": describe(fn.keywords)}
    if inspect.ismethod(fn):
        return dict(_function(fn.__func__), bound_to=_qualified(type(fn.__self__)))
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: its class's __call__
        call = getattr(type(fn), "__call__", None)
        code = getattr(call, "__code__", None)
        return {"object": _qualified(type(fn)), "code": _code_sha256(code) if code is not None else None}
    closure = [cell.cell_contents for cell in (fn.__closure__ or ()) if _filled(cell)]
    plain = [describe(v) for v in closure if v is None or isinstance(v, (bool, int, float, str, Tensor))]
    return {"function": _qualified(fn), "code": _code_sha256(code),
            "defaults": describe(list(fn.__defaults__ or ())), "closure": plain}


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _code_sha256(code: types.CodeType) -> str:
    sha = hashlib.sha256()
    _feed_code(sha, code)
    return sha.hexdigest()


def _feed_code(sha: Any, code: types.CodeType) -> None:
    sha.update(code.co_code)
    sha.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(sha, const)
        else:
            sha.update(repr(const).encode())


def method_state(method: Any, model: Any, depth: int = _DEPTH) -> Any:
    """A Captum method's own state (``multiply_by_inputs``, its layer as a name in ``model``, an inner method's
    state, ...) as JSON; the forward function as ``"model"`` when it is the model, else by :func:`describe`."""
    if method is model:
        return "model"
    if isinstance(method, nn.Module):
        name = _module_name(model, method)
        return {"layer": name} if name is not None else describe(method)
    if isinstance(method, (list, tuple)):
        return [method_state(v, model, depth) for v in method]
    if depth > 0 and hasattr(method, "__dict__") and not callable(method) and type(method).__module__.startswith(
            ("captum.", "noisegrad.")):
        state = {key: method_state(value, model, depth - 1) for key, value in sorted(vars(method).items())
                 if not key.startswith("__")}
        return {"class": _qualified(type(method)), "state": state}
    return describe(method)


def _module_name(model: Any, module: nn.Module) -> Optional[str]:
    if not isinstance(model, nn.Module):
        return None
    for name, candidate in model.named_modules():
        if candidate is module:
            return name or "<the model>"
    return None


def data_fingerprint(dataset: Any) -> Dict[str, Any]:
    """How many examples, and a SHA-256 of the first, middle and last (a folder's data set adds its file list).

    A data set that gives other examples on each read (random augmentation) gives another fingerprint each run.
    """
    count = len(dataset)
    picked: List[int] = sorted({0, count // 2, count - 1}) if count else []
    fingerprint: Dict[str, Any] = {"examples": count,
                                   "sampled": {str(i): digest(describe(dataset[i])) for i in picked}}
    listing = getattr(dataset, "_noisegrad_fingerprint", None)
    if callable(listing):
        fingerprint["files"] = listing()
    return fingerprint

"""A private structural copy of the user's model, and the wrapped method pointed at it.

Weight noise is never written into the user's module, not even for the
duration of a call: another thread may run it at the same time, and an
interrupt may come at any moment. The noisy weights go into a deep copy that
shares no tensor and no module with the user's, and the method's forward
function, layers and model attributes are redirected to that copy: bound
methods are rebound, partials and closures rebuilt with the copy in place of
the model, a function's globals replaced where they name it.
"""

import copy
import functools
import types
from typing import Any, Dict, List, Tuple

from captum.attr import Attribution
from torch import Tensor, nn

from noisegrad._state import modules_of

__all__ = ["model_root", "private_copy", "redirect_method", "is_detached_from"]

_DEPTH = 5
_ATOMIC = (str, bytes, int, float, complex, bool, Tensor, type, types.ModuleType, types.BuiltinFunctionType)


def _layers(method: Any) -> List[nn.Module]:
    layer = getattr(method, "layer", None)
    return [m for m in (list(layer) if isinstance(layer, (list, tuple)) else [layer]) if isinstance(m, nn.Module)]


def model_root(method: Attribution) -> nn.Module:
    """The one module behind the method's forward function (and its layers) that holds all the others.

    Raises ``TypeError`` when there is none (a forward function that reaches
    no ``nn.Module``) or several unrelated ones.

    Examples
    --------
    >>> from captum.attr import Saliency
    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> model_root(Saliency(lambda x: net(x))) is net
    True
    """
    found = modules_of(method.forward_func, *_layers(method), getattr(method, "model", None))
    roots = [m for m in found if not any(other is not m and _contains(other, m) for other in found)]
    if not roots:
        raise TypeError(
            "weight_noise needs the model: no torch.nn.Module was found behind the forward function "
            f"{method.forward_func!r}; give the attribution method the model, its bound method, or a lambda, "
            "partial or closure that calls it"
        )
    if len(roots) > 1:
        names = ", ".join(type(m).__name__ for m in roots)
        raise TypeError(
            f"weight_noise found {len(roots)} separate modules behind the forward function ({names}); put them "
            "in one module (e.g. torch.nn.ModuleDict) so that their parameters have one set of names to filter"
        )
    return roots[0]


def _contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def private_copy(root: nn.Module) -> Tuple[nn.Module, Dict[int, nn.Module]]:
    """A deep copy of ``root`` with ``requires_grad`` off, and the map from ``id`` of each original module to its copy.

    Gradients are only ever taken with respect to inputs, so the copy's
    parameters need no graph of their own.
    """
    memo: Dict[int, Any] = {}
    try:
        twin = copy.deepcopy(root, memo)
    except Exception as error:  # noqa: BLE001  (any failure to copy is reported the same way)
        raise TypeError(
            f"weight_noise perturbs a private copy of the model, and {type(root).__name__} cannot be deep-copied "
            f"({type(error).__name__}: {error})"
        ) from error
    for parameter in twin.parameters():
        parameter.requires_grad_(False)
    swap = {id(original): memo[id(original)] for original in root.modules()}
    return twin, swap


def redirect_method(method: Attribution, swap: Dict[int, nn.Module], originals: List[nn.Module]) -> Attribution:
    """Point ``method`` (a shallow copy the caller owns) at the copies in ``swap``, in place; return it.

    Every attribute is redirected: the forward function, the layer(s),
    DeepLift's ``model``, Layer IntegratedGradients' inner method. Raises
    ``TypeError`` if the user's model can still be reached afterwards.
    """
    done: Dict[int, Any] = {}
    for name, value in list(vars(method).items()):
        vars(method)[name] = _redirect(value, swap, _DEPTH, done)
    originals_ids = {id(m) for root in originals for m in root.modules()}
    reached = modules_of(method.forward_func, *_layers(method), getattr(method, "model", None))
    leaked = [m for m in reached if id(m) in originals_ids]
    if leaked or not reached:
        raise TypeError(
            f"weight_noise could not point the forward function {getattr(method.forward_func, '__name__', '')!r} "
            "at a private copy of the model; give the attribution method the model itself, its bound method, "
            "or a lambda, partial or closure that calls it (the user's model is never perturbed)"
        )
    return method


def _redirect(value: Any, swap: Dict[int, nn.Module], depth: int, done: Dict[int, Any]) -> Any:
    """``value`` with every module in ``swap`` replaced by its copy; ``value`` itself if nothing changed."""
    if value is None or isinstance(value, _ATOMIC) or depth < 0:
        return value
    key = id(value)
    if key in done:
        return done[key]
    done[key] = value  # a cycle leads back to the value as it is
    result = value
    if isinstance(value, nn.Module):
        result = swap.get(key, value)
    elif isinstance(value, types.MethodType):
        owner = _redirect(value.__self__, swap, depth - 1, done)
        if owner is not value.__self__:
            result = types.MethodType(value.__func__, owner)
    elif isinstance(value, functools.partial):
        func = _redirect(value.func, swap, depth - 1, done)
        args = [_redirect(a, swap, depth - 1, done) for a in value.args]
        keywords = {k: _redirect(v, swap, depth - 1, done) for k, v in value.keywords.items()}
        if func is not value.func or _changed(args, value.args) or _changed(keywords.values(), value.keywords.values()):
            result = functools.partial(func, *args, **keywords)
    elif isinstance(value, types.FunctionType):
        result = _rebuilt(value, swap, depth, done)
    elif type(value) in (list, tuple):
        items = [_redirect(v, swap, depth - 1, done) for v in value]
        if _changed(items, value):
            result = type(value)(items)
    elif type(value) is dict:
        items = {k: _redirect(v, swap, depth - 1, done) for k, v in value.items()}
        if _changed(items.values(), value.values()):
            result = items
    elif hasattr(value, "__dict__") and (callable(value) or isinstance(value, Attribution)):
        result = _redirected_object(value, swap, depth, done)
    done[key] = result
    return result


def _changed(new: Any, old: Any) -> bool:
    return any(a is not b for a, b in zip(new, old))


def _redirected_object(value: Any, swap: Dict[int, nn.Module], depth: int, done: Dict[int, Any]) -> Any:
    """A shallow copy of a callable object (or a nested attribution method) with its attributes redirected."""
    attributes = {k: _redirect(v, swap, depth - 1, done) for k, v in vars(value).items()}
    if not _changed(attributes.values(), vars(value).values()):
        return value
    try:
        twin = copy.copy(value)
        vars(twin).update(attributes)
    except Exception:  # noqa: BLE001  (an object that cannot be copied stays as it is; the leak check names it)
        return value
    return twin


def _rebuilt(function: types.FunctionType, swap: Dict[int, nn.Module], depth: int, done: Dict[int, Any]) -> Any:
    """``function`` rebuilt with closure cells and globals that name the model replaced by the copy."""
    cells = function.__closure__ or ()
    contents = [_redirect(_contents(c), swap, depth - 1, done) if _filled(c) else None for c in cells]
    new_cells = None
    if any(_filled(c) and v is not _contents(c) for c, v in zip(cells, contents)):
        new_cells = tuple(types.CellType(v) if _filled(c) else c for c, v in zip(cells, contents))
    own_globals = function.__globals__
    replaced = {}
    for name in _global_names(function.__code__):
        if name in own_globals:
            redirected = _redirect(own_globals[name], swap, depth - 1, done)
            if redirected is not own_globals[name]:
                replaced[name] = redirected
    if new_cells is None and not replaced:
        return function
    # a copy of the globals dict: the user's module namespace is never written
    new_globals = dict(own_globals, **replaced) if replaced else own_globals
    rebuilt = types.FunctionType(function.__code__, new_globals, function.__name__, function.__defaults__,
                                 new_cells if new_cells is not None else function.__closure__)
    rebuilt.__kwdefaults__ = function.__kwdefaults__
    rebuilt.__dict__.update(function.__dict__)
    for attribute in ("__qualname__", "__module__", "__doc__", "__annotations__"):
        setattr(rebuilt, attribute, getattr(function, attribute))
    return rebuilt


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True


def _contents(cell: Any) -> Any:
    return cell.cell_contents


def _global_names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def is_detached_from(twin: nn.Module, root: nn.Module) -> bool:
    """Whether ``twin`` shares no parameter or buffer storage with ``root`` (what :func:`private_copy` promises)."""
    storages = {t.untyped_storage().data_ptr() for t in list(root.parameters()) + list(root.buffers()) if t.numel()}
    return not any(t.untyped_storage().data_ptr() in storages
                   for t in list(twin.parameters()) + list(twin.buffers()) if t.numel())

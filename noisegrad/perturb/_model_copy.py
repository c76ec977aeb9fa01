"""A private structural copy of the user's model, and the wrapped method pointed at it.

Weight noise is never written into the user's module, not even for the
duration of a call: another thread may run it at the same time, and an
interrupt may come at any moment. The noisy weights go into a deep copy that
shares no tensor and no module with the user's, and the method's forward
function, layers and model attributes are redirected to that copy: bound
methods are rebound, partials and closures rebuilt with the copy in place of
the model, a function's globals replaced where they name it.
"""

import contextlib
import copy
import functools
import threading
import types
from typing import Any, Dict, Iterator, List, Tuple

import torch
from captum.attr import Attribution
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_pre_hook

from noisegrad._state import filled, loaded_globals, modules_of, tensors_of

__all__ = ["model_root", "private_copy", "redirect_method", "is_detached_from", "refusing_to_run",
           "refuse_scripted"]

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


def refuse_scripted(root: nn.Module) -> None:
    """``TypeError`` for a TorchScript model: weight noise needs an nn.Module whose parameters can be replaced."""
    scripted = [name or type(root).__name__ for name, m in root.named_modules() if isinstance(m, torch.jit.ScriptModule)]
    if scripted:
        raise TypeError(
            f"weight_noise needs an nn.Module that can be copied and whose parameters can be replaced per draw, and "
            f"{scripted[0]!r} is a TorchScript module (torch.jit.script / trace); give the attribution method the "
            "original nn.Module"
        )


def private_copy(root: nn.Module) -> Tuple[nn.Module, Dict[int, nn.Module]]:
    """A deep copy of ``root`` with ``requires_grad`` off, and the map from ``id`` of each original module to its copy.

    Gradients are only ever taken with respect to inputs, so the copy's
    parameters need no graph of their own. A copy that still shares a tensor
    with ``root`` (a model's own ``__deepcopy__`` may) or whose modules
    differ from the original's is refused.
    """
    refuse_scripted(root)
    try:
        twin = copy.deepcopy(root)
        for parameter in twin.parameters():
            parameter.requires_grad_(False)
    except Exception as error:  # noqa: BLE001  (any failure to copy is reported the same way)
        raise TypeError(
            f"weight_noise perturbs a private copy of the model, and {type(root).__name__} cannot be deep-copied "
            f"({type(error).__name__}: {error})"
        ) from error
    twins = dict(twin.named_modules(remove_duplicate=False))
    originals = list(root.named_modules(remove_duplicate=False))
    if any(name not in twins or type(twins[name]) is not type(m) for name, m in originals) \
            or not is_detached_from(twin, root):
        raise TypeError(
            f"weight_noise perturbs a private copy of the model, and copy.deepcopy of {type(root).__name__} (its own "
            "__deepcopy__?) does not give an independent module of the same structure: the copy must hold the same "
            "submodules under the same names and share no parameter or buffer with the original"
        )
    return twin, {id(m): twins[name] for name, m in originals}


def redirect_method(method: Attribution, swap: Dict[int, nn.Module], originals: List[nn.Module]) -> Attribution:
    """Point ``method`` (a shallow copy the caller owns) at the copies in ``swap``, in place; return it.

    Every attribute is redirected: the forward function, the layer(s),
    DeepLift's ``model``, Layer IntegratedGradients' inner method. No object
    of the user's is written: functions, partials and objects on the way are
    rebuilt or shallow-copied. Raises ``TypeError`` if the user's model, or
    one of its parameters or buffers, can still be reached afterwards.
    """
    redirect = _Redirect(swap)
    for name, value in list(vars(method).items()):
        vars(method)[name] = redirect(value, _DEPTH)
    originals_ids = {id(m) for root in originals for m in root.modules()}
    reached = modules_of(method.forward_func, *_layers(method), getattr(method, "model", None))
    leaked = [m for m in reached if id(m) in originals_ids]
    forward = getattr(method.forward_func, "__name__", type(method.forward_func).__name__)
    if leaked or not reached:
        stuck = "".join(f"; {what}" for what in redirect.stuck[:2])
        raise TypeError(
            f"weight_noise could not point the forward function {forward!r} at a private copy of the model"
            f"{stuck}. Give the attribution method the model itself, a function, lambda or partial over it, or the "
            "method of an object that can be shallow-copied (the user's model is never perturbed)"
        )
    tensor_ids = {id(t) for root in originals for t in list(root.parameters()) + list(root.buffers())}
    if any(id(t) in tensor_ids for t in tensors_of(method.forward_func)):
        raise TypeError(
            f"the forward function {forward!r} holds the model's parameter or buffer tensors itself (e.g. a dict "
            "for torch.func.functional_call), so weight noise cannot reach them; let it call the model, "
            "e.g. lambda x: model(x)"
        )
    return method


class _Redirect:
    """Values with every module in ``swap`` replaced by its copy; each value itself if nothing in it changed."""

    def __init__(self, swap: Dict[int, nn.Module]) -> None:
        self.swap = swap
        self.done: Dict[int, Any] = {}
        self.stuck: List[str] = []  # what could not be redirected, for the error message

    def __call__(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, _ATOMIC) or depth < 0:
            return value
        key = id(value)
        if key in self.done:
            return self.done[key]
        self.done[key] = value  # a cycle leads back to the value as it is
        result = value
        if isinstance(value, nn.Module):
            result = self.swap.get(key, value)
        elif isinstance(value, types.MethodType):
            owner = self(value.__self__, depth - 1)
            if owner is not value.__self__:
                result = types.MethodType(value.__func__, owner)
        elif isinstance(value, functools.partial):
            func = self(value.func, depth - 1)
            args = [self(a, depth - 1) for a in value.args]
            keywords = {k: self(v, depth - 1) for k, v in value.keywords.items()}
            if func is not value.func or _changed(args, value.args) or _changed(keywords.values(),
                                                                                value.keywords.values()):
                result = functools.partial(func, *args, **keywords)
        elif isinstance(value, types.FunctionType):
            result = self._rebuilt(value, depth)
        elif type(value) in (list, tuple):
            items = [self(v, depth - 1) for v in value]
            if _changed(items, value):
                result = type(value)(items)
        elif type(value) is dict:
            items = {k: self(v, depth - 1) for k, v in value.items()}
            if _changed(items.values(), value.values()):
                result = items
        elif hasattr(value, "__dict__") and not isinstance(value, (types.ModuleType, type)):
            result = self._object(value, depth)
        self.done[key] = result
        return result

    def _object(self, value: Any, depth: int) -> Any:
        """A shallow copy of an object (a callable, a holder of the model, a nested method), attributes redirected."""
        attributes = {k: self(v, depth - 1) for k, v in vars(value).items()}
        if not _changed(attributes.values(), vars(value).values()):
            return value
        what = type(value).__name__
        try:
            twin = copy.copy(value)
        except Exception as error:  # noqa: BLE001  (an object that cannot be copied stays as it is)
            self.stuck.append(f"{what} cannot be copied ({type(error).__name__}: {error})")
            return value
        if twin is value or vars(twin) is vars(value):  # e.g. functools.lru_cache: never write the user's object
            self.stuck.append(f"copy.copy of the {what} returns the object itself (as functools.lru_cache does), "
                              "and the user's object is never written")
            return value
        vars(twin).update(attributes)
        return twin

    def _rebuilt(self, function: types.FunctionType, depth: int) -> Any:
        """``function`` rebuilt with closure cells and globals that name the model replaced by the copy."""
        cells = function.__closure__ or ()
        contents = [self(_contents(c), depth - 1) if filled(c) else None for c in cells]
        new_cells = None
        if any(filled(c) and v is not _contents(c) for c, v in zip(cells, contents)):
            new_cells = tuple(types.CellType(v) if filled(c) else c for c, v in zip(cells, contents))
        own_globals = function.__globals__
        replaced = {}
        for name in loaded_globals(function.__code__):
            if name in own_globals:
                redirected = self(own_globals[name], depth - 1)
                if redirected is not own_globals[name]:
                    replaced[name] = redirected
        if new_cells is None and not replaced:
            return function
        # a copy of the globals dict: the user's module namespace is never written (so neither is a `global` the
        # function assigns: it changes the copy)
        new_globals = dict(own_globals, **replaced) if replaced else own_globals
        rebuilt = types.FunctionType(function.__code__, new_globals, function.__name__, function.__defaults__,
                                     new_cells if new_cells is not None else function.__closure__)
        rebuilt.__kwdefaults__ = function.__kwdefaults__
        rebuilt.__dict__.update(function.__dict__)
        for attribute in ("__qualname__", "__module__", "__doc__", "__annotations__"):
            setattr(rebuilt, attribute, getattr(function, attribute))
        return rebuilt


def _changed(new: Any, old: Any) -> bool:
    return any(a is not b for a, b in zip(new, old))


def _contents(cell: Any) -> Any:
    return cell.cell_contents


def is_detached_from(twin: nn.Module, root: nn.Module) -> bool:
    """Whether ``twin`` shares no parameter or buffer storage with ``root`` (what :func:`private_copy` promises)."""
    storages = {t.untyped_storage().data_ptr() for t in list(root.parameters()) + list(root.buffers()) if t.numel()}
    return not any(t.untyped_storage().data_ptr() in storages
                   for t in list(twin.parameters()) + list(twin.buffers()) if t.numel())


@contextlib.contextmanager
def refusing_to_run(root: nn.Module) -> Iterator[None]:
    """Raise ``RuntimeError`` if any module of ``root`` runs a forward in this thread while the body runs.

    The safety net behind the redirection: with weight noise, only the private
    copy may run in the calling thread, so a forward of the user's module means
    that the noise could not reach the model through the forward function, and
    the result would silently be the un-noised one. The check is a global
    forward pre-hook (``torch.nn.modules.module.register_module_forward_pre_hook``)
    filtered by thread and by module: nothing is registered on, or written to,
    the user's module, and other threads running it are not affected.
    Not for a ``torch.compile``'d model: with a global hook present, dynamo
    traces the hooks and compiles each call's new copy again.
    """
    if any(type(m).__name__ == "OptimizedModule" for m in root.modules()):
        yield
        return
    watched = {id(m) for m in root.modules()}
    thread = threading.get_ident()

    def check(module: nn.Module, args: Any) -> None:
        if id(module) in watched and threading.get_ident() == thread:
            raise RuntimeError(
                f"weight_noise: the forward function ran the user's own {type(module).__name__} instead of the "
                "private copy that holds the noisy weights, so the noise could not reach the model through it (it "
                "reaches the model in a way noisegrad cannot follow). Give the attribution method the model itself, "
                "or a function, lambda or partial that calls it through a module-level name, a closure variable, "
                "an argument or an attribute of an object that can be shallow-copied"
            )

    handle = register_module_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()

"""Leave the user's model, gradients and random state as they were, even when a call raises or runs in two threads."""

import contextlib
import dis
import functools
import inspect
import random
import threading
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from noisegrad import _numpy_rng
from noisegrad._caller import user_stacklevel

__all__ = ["modules_of", "tensors_of", "loaded_globals", "filled", "preserved_modules", "preserved_global_rngs",
           "seeded_global_rng", "seed_global_rngs", "guarded"]

#: Held while the process-wide RNGs are seeded for one call: they belong to the process, not to a model.
_GLOBAL_RNG_LOCK = threading.RLock()
#: Guards the registry of what is set aside while any call is running.
_REGISTRY_LOCK = threading.Lock()
#: id(object) → [object, saved state, number of running calls that use it]
_SET_ASIDE: Dict[int, List[Any]] = {}
_SEARCH_DEPTH = 4


def modules_of(*objects: Any) -> List[nn.Module]:
    """The ``nn.Module``s a callable reaches.

    Follows modules themselves, bound methods (their ``self``), partials
    (function, arguments), closures (their cells), the globals a function's
    code loads (a notebook ``lambda t: model(t)``; attribute names such as
    ``self.model`` are not globals), and the attributes of other objects
    (a holder whose method is the forward function), a few levels deep.

    Examples
    --------
    >>> import functools
    >>> net = torch.nn.Linear(2, 1)
    >>> [type(m).__name__ for m in modules_of(lambda t: net(t), functools.partial(net.forward))]
    ['Linear']
    """
    found: Dict[int, Any] = {}
    seen: set = set()
    for obj in objects:
        _search(obj, found, seen, _SEARCH_DEPTH, None)
    return list(found.values())


def tensors_of(*objects: Any) -> List[torch.Tensor]:
    """The tensors a callable holds outside modules (a parameter dict for ``torch.func.functional_call``, say).

    Searched as :func:`modules_of` searches; the tensors inside a module are not listed.

    Examples
    --------
    >>> weight = torch.ones(2)
    >>> [tuple(t.shape) for t in tensors_of(lambda x: x * weight)]
    [(2,)]
    """
    found: Dict[int, Any] = {}
    seen: set = set()
    for obj in objects:
        _search(obj, {}, seen, _SEARCH_DEPTH, found)
    return list(found.values())


def _search(obj: Any, found: Dict[int, Any], seen: set, depth: int, tensors: Optional[Dict[int, Any]]) -> None:
    if isinstance(obj, torch.Tensor) and tensors is not None:
        tensors.setdefault(id(obj), obj)
        return
    if obj is None or depth < 0 or id(obj) in seen or isinstance(obj, (str, bytes, int, float, torch.Tensor)):
        return
    seen.add(id(obj))
    if isinstance(obj, nn.Module):
        found.setdefault(id(obj), obj)
        return
    children: List[Any] = []
    if inspect.ismethod(obj):
        children = [obj.__self__, obj.__func__]
    elif isinstance(obj, functools.partial):
        children = [obj.func, *obj.args, *obj.keywords.values()]
    elif inspect.isfunction(obj):
        children = [cell.cell_contents for cell in obj.__closure__ or () if filled(cell)]
        children += [obj.__globals__[n] for n in loaded_globals(obj.__code__) if n in obj.__globals__]
    elif isinstance(obj, (list, tuple)):
        children = list(obj)
    elif isinstance(obj, dict):
        children = list(obj.values())
    elif hasattr(obj, "__dict__") and not _is_namespace(obj):
        children = list(vars(obj).values())
    for child in children:
        if _is_namespace(child) or inspect.isbuiltin(child):
            continue
        _search(child, found, seen, depth - 1, tensors)


def _is_namespace(obj: Any) -> bool:
    """A module or a class: shared by the whole program, never searched nor copied."""
    return inspect.ismodule(obj) or inspect.isclass(obj)


def filled(cell: Any) -> bool:
    """Whether a closure cell holds a value (an empty cell raises on reading it)."""
    try:
        cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True


def loaded_globals(code: Any) -> set:
    """The global names a code object (and the functions defined inside it) loads.

    Only names read as globals count: ``co_names`` also holds attribute and
    method names (``self.model`` puts ``model`` there), which must not be
    mistaken for a global of the same name.

    Examples
    --------
    >>> sorted(loaded_globals((lambda t: self_.model(t) + torch.ones(1)).__code__))
    ['self_', 'torch']
    """
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= loaded_globals(const)
    return names


def _state_items(modules: List[nn.Module]) -> List[Tuple[Any, str]]:
    submodules = list({id(m): m for root in modules for m in root.modules()}.values())
    params = list({id(p): p for m in submodules for p in m._parameters.values() if p is not None}.values())
    items: List[Tuple[Any, str]] = [(m, "module") for m in submodules] + [(p, "param") for p in params]
    items += [
        (buffer, "buffer")
        for m in submodules
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.training
        for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buffer is not None
    ]
    return items


def _save(obj: Any, kind: str) -> Any:
    if kind == "module":
        return obj.training
    if kind == "param":
        saved = (obj.requires_grad, obj.grad)
        if saved[1] is not None:
            obj.grad = None  # set aside, so that nothing in the call can accumulate into it
        return saved
    return obj.clone()


def _restore(obj: Any, kind: str, saved: Any) -> None:
    # what the call did not change is not set again: nn.Module.__setattr__ and the .grad setter cost
    # microseconds each, per module and parameter of every call
    if kind == "module":
        if obj.training is not saved:
            obj.training = saved
    elif kind == "param":
        if obj.requires_grad is not saved[0]:
            obj.requires_grad_(saved[0])
        if obj.grad is not saved[1]:
            obj.grad = saved[1]
    else:
        with torch.no_grad():
            obj.copy_(saved)


@contextlib.contextmanager
def preserved_modules(modules: List[nn.Module]) -> Iterator[None]:
    """Restore ``.training``, ``requires_grad``, ``.grad`` and BatchNorm running statistics on exit.

    Existing ``.grad`` tensors are set aside (not copied) while the body runs,
    so nothing in it can accumulate into them; whatever it leaves in ``.grad``
    is dropped. Calls running at the same time (other threads) share one
    saved state per object: the first to start saves it, the last to finish
    restores it, so they cannot restore each other's intermediate state.
    """
    items = _state_items(modules)
    if any(kind == "buffer" for _, kind in items):
        warnings.warn(
            "the model has BatchNorm layers in training mode: the noisy copies of an example share batch "
            "statistics, so each attribution depends on the others; call model.eval() first for "
            "independent samples (running statistics are restored after the call)",
            stacklevel=user_stacklevel(),
        )
    with _REGISTRY_LOCK:
        for obj, kind in items:
            entry = _SET_ASIDE.get(id(obj))
            if entry is None:
                _SET_ASIDE[id(obj)] = [obj, _save(obj, kind), 1]
            else:
                entry[2] += 1
    try:
        yield
    finally:
        with _REGISTRY_LOCK:
            for obj, kind in items:
                entry = _SET_ASIDE[id(obj)]
                entry[2] -= 1
                if entry[2] == 0:
                    del _SET_ASIDE[id(obj)]
                    _restore(obj, kind, entry[1])


@contextlib.contextmanager
def preserved_global_rngs(cuda_devices: Optional[List[torch.device]] = None) -> Iterator[None]:
    """Restore torch's CPU and CUDA, numpy's and Python's global RNG states on exit, also after an exception.

    ``cuda_devices``: the CUDA devices whose generators to save; default every
    device when CUDA is initialised (an uninitialised CUDA has drawn nothing,
    and saving its state would initialise it). Holds the process-wide RNG
    lock, so seeded calls in other threads wait.

    Examples
    --------
    >>> before = torch.get_rng_state()
    >>> with preserved_global_rngs():
    ...     _ = torch.rand(3), np.random.rand(), random.random()
    >>> torch.equal(torch.get_rng_state(), before)
    True
    """
    if cuda_devices is None:
        count = torch.cuda.device_count() if torch.cuda.is_initialized() else 0
        cuda_devices = [torch.device("cuda", index) for index in range(count)]
    with _GLOBAL_RNG_LOCK:
        saved_torch = torch.get_rng_state()
        saved_cuda = [(device, torch.cuda.get_rng_state(device)) for device in cuda_devices]
        saved_numpy = _numpy_rng.save()
        saved_python = random.getstate()
        try:
            yield
        finally:
            torch.set_rng_state(saved_torch)
            for device, state in saved_cuda:
                torch.cuda.set_rng_state(state, device)
            _numpy_rng.restore(saved_numpy)
            random.setstate(saved_python)


@contextlib.contextmanager
def seeded_global_rng(seed: Optional[int], device: torch.device) -> Iterator[None]:
    """Run the body with torch's (CPU and ``device``), numpy's and Python's global RNGs seeded, then restore them.

    Wrapped methods that draw from the global RNGs themselves (GradientShap,
    dropout in training mode) become reproducible under a ``seed=``, and the
    caller's RNG state does not move. The RNGs belong to the process, so the
    seeded section holds a process-wide lock: seeded calls that need it run
    one at a time. With ``seed=None`` the body runs on the caller's RNG state
    untouched.
    """
    if seed is None:
        yield
        return
    with preserved_global_rngs([device] if device.type == "cuda" else []):
        seed_global_rngs(seed, device)
        yield


def seed_global_rngs(seed: int, device: torch.device) -> None:
    """Seed torch's (CPU and ``device``), numpy's and Python's global RNGs; only inside :func:`seeded_global_rng`."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def guarded(method: Any, device: torch.device, seed: Optional[int]) -> Iterator[None]:
    """A wrapped attribution method's call: its model (forward function and layers) and the global RNGs restored.

    ``seed``: the seed for the global RNGs during the call (anything in it may
    draw from them: GradientShap, dropout in training mode, a model that adds
    noise itself), or None to leave them to the call.
    """
    layer = getattr(method, "layer", None)
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    modules = modules_of(method.forward_func, *layers)
    if not modules:
        warnings.warn(
            f"noisegrad found no torch.nn.Module behind the forward function {method.forward_func!r}: its "
            "training mode, requires_grad flags, .grad and BatchNorm statistics cannot be guarded; pass the "
            "model (or its bound method) to the attribution method to have them restored after each call",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    with preserved_modules(modules), seeded_global_rng(seed, device):
        yield

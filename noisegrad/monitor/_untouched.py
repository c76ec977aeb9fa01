"""A snapshot's guard: the model in eval mode for it, and everything training depends on exactly as it was after."""

import contextlib
import copy
from typing import Iterator, List

import torch
from captum.attr import Attribution
from torch import nn

from noisegrad._state import preserved_global_rngs, preserved_modules


@contextlib.contextmanager
def training_untouched(models: List[nn.Module]) -> Iterator[None]:
    """Run the body with ``models`` in eval mode and autocast off; restore what training depends on, also on errors.

    Everything is recorded before ``eval()`` runs, so a module whose own
    ``train(mode)`` changes state (freezes parameters, swaps in EMA weights)
    is seen as the user left it. Restored: every submodule's mode, through the
    modules' own ``train(mode)`` (so such a module undoes what its ``eval()``
    did); every parameter's and buffer's binding (the same tensor object in its
    module, also where the forward rebinds one, ``self.peak = ...``); every
    parameter's ``requires_grad`` and ``.grad`` (the same tensor, never written
    to while set aside); every buffer's values (in place, only where they
    changed, so an unchanged buffer's version counter does not move); torch's
    CPU and CUDA, numpy's and Python's global RNG states. Optimizers are never
    seen.
    """
    # Recorded under the process-wide RNG lock that the whole snapshot holds: a snapshot in another thread (a second
    # monitor of the same model) cannot record the eval mode this one set, nor restore the training mode while
    # this one still runs, and leave the model in eval mode for the rest of training.
    with preserved_global_rngs(), _autocast_off():
        submodules = list({id(m): m for root in models for m in root.modules()}.values())
        modes = [m.training for m in submodules]
        bindings = [(m, slots, name, value) for m in submodules for slots in (m._parameters, m._buffers)
                    for name, value in slots.items()]
        params = list({id(p): p for m in submodules for p in m._parameters.values() if p is not None}.values())
        requires = [p.requires_grad for p in params]
        buffers = list({id(b): b for m in submodules for b in m._buffers.values() if b is not None}.values())
        saved = [b.detach().clone() for b in buffers]
        try:
            for root in models:
                root.eval()
            with preserved_modules(models):
                yield
        finally:
            _restore_modes(models, submodules, modes)
            for module, slots, name, value in bindings:
                if slots.get(name, None) is not value:
                    slots[name] = value
            for param, flag in zip(params, requires):
                if param.requires_grad is not flag:
                    param.requires_grad_(flag)
            with torch.no_grad():
                for buffer, value in zip(buffers, saved):
                    if not torch.equal(buffer, value):
                        buffer.copy_(value)


def _restore_modes(models: List[nn.Module], submodules: List[nn.Module], modes: List[bool]) -> None:
    """Each module back in its recorded mode by calling its own ``train(mode)``: each root first (its override
    undoes what its ``eval()`` did), then, parents before children, every submodule left in another mode than it
    had (a BatchNorm the user froze in eval mode inside a model in training mode)."""
    recorded = {id(m): mode for m, mode in zip(submodules, modes)}
    if all(m.training == mode for m, mode in zip(submodules, modes)):
        return  # everything was in eval mode already: nothing to undo
    for root in models:
        root.train(recorded[id(root)])
    for module, mode in zip(submodules, modes):  # modules() lists parents before their children
        if module.training != mode:
            module.train(mode)


def local_method(method: Attribution) -> Attribution:
    """``method`` on the module inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper, else itself.

    The wrapper's forward takes part in collective communication (buffer
    broadcasts, the reducer's bookkeeping): a snapshot taken on one rank only
    would wait for the others forever. The inner module has the same
    parameters; the method is copied (shallowly, nested attributions such as
    LayerIntegratedGradients' own included), the user's is left as it is.
    Wrappers hidden in a function (``lambda x: ddp(x)``) are not seen: build
    the method on ``ddp.module``.
    """
    wrapper = method.forward_func
    if not isinstance(wrapper, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return method
    local = copy.copy(method)
    for name, value in vars(method).items():
        if value is wrapper:
            setattr(local, name, wrapper.module)
        elif isinstance(value, Attribution) and value is not method:
            setattr(local, name, local_method(value))
    return local


@contextlib.contextmanager
def _autocast_off() -> Iterator[None]:
    """Full precision inside, whether or not the caller runs under ``torch.autocast`` (its cache is left alone)."""
    with contextlib.ExitStack() as stack:
        for device_type in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield

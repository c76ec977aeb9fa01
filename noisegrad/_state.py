"""Leave the user's model, gradients and random state as they were, even when a call raises."""

import contextlib
import random
import warnings
from typing import Any, Iterator, List, Optional

import numpy as np
import torch
from torch import nn


def modules_of(*objects: Any) -> List[nn.Module]:
    """The ``nn.Module``s among ``objects`` and the owners of bound methods among them."""
    found: List[nn.Module] = []
    for obj in objects:
        owner = getattr(obj, "__self__", obj)
        if isinstance(owner, nn.Module) and all(owner is not m for m in found):
            found.append(owner)
    return found


@contextlib.contextmanager
def preserved_modules(modules: List[nn.Module]) -> Iterator[None]:
    """Restore ``.training``, ``requires_grad``, ``.grad`` and BatchNorm running statistics on exit.

    Existing ``.grad`` tensors are set aside (not copied) while the body runs,
    so nothing in it can accumulate into them; whatever it leaves in ``.grad``
    is dropped.
    """
    submodules = list({id(m): m for root in modules for m in root.modules()}.values())
    params = list({id(p): p for m in submodules for p in m._parameters.values() if p is not None}.values())
    training = [(m, m.training) for m in submodules]
    requires_grad = [(p, p.requires_grad) for p in params]
    grads = [(p, p.grad) for p in params]
    batch_norms = [m for m in submodules if isinstance(m, nn.modules.batchnorm._NormBase) and m.training]
    if batch_norms:
        warnings.warn(
            "the model has BatchNorm layers in training mode: the noisy copies of an example share batch "
            "statistics, so each attribution depends on the others; call model.eval() first for "
            "independent samples (running statistics are restored after the call)",
            stacklevel=4,
        )
    running = [
        (buffer, buffer.clone())
        for m in batch_norms
        for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buffer is not None
    ]
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        for m, mode in training:
            m.training = mode
        for p, flag in requires_grad:
            p.requires_grad_(flag)
        for p, grad in grads:
            p.grad = grad
        with torch.no_grad():
            for buffer, saved in running:
                buffer.copy_(saved)


@contextlib.contextmanager
def seeded_global_rng(seed: Optional[int], device: torch.device) -> Iterator[None]:
    """Run the body with torch's (CPU and ``device``), numpy's and Python's global RNGs seeded, then restore them.

    Wrapped methods that draw from the global RNGs themselves (GradientShap,
    dropout in training mode) become reproducible under a ``seed=``, and the
    caller's RNG state does not move. With ``seed=None`` the body runs on the
    caller's RNG state untouched.
    """
    if seed is None:
        yield
        return
    cuda = device.type == "cuda"
    saved_torch = torch.get_rng_state()
    saved_cuda = torch.cuda.get_rng_state(device) if cuda else None
    saved_numpy = np.random.get_state()
    saved_python = random.getstate()
    torch.default_generator.manual_seed(seed)
    if cuda:
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved_torch)
        if cuda:
            torch.cuda.set_rng_state(saved_cuda, device)
        np.random.set_state(saved_numpy)
        random.setstate(saved_python)


@contextlib.contextmanager
def guarded(method: Any, device: torch.device, global_seed: Optional[int]) -> Iterator[None]:
    """A wrapped attribution method's call: its model (forward function and layers) and the global RNGs restored on exit."""
    layer = getattr(method, "layer", None)
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    with preserved_modules(modules_of(method.forward_func, *layers)), seeded_global_rng(global_seed, device):
        yield

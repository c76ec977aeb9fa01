"""A snapshot's guard: the model in eval mode for it, and everything training depends on exactly as it was after."""

import contextlib
from typing import Iterator, List

import torch
from torch import nn

from noisegrad._state import preserved_global_rngs, preserved_modules


@contextlib.contextmanager
def training_untouched(models: List[nn.Module]) -> Iterator[None]:
    """Run the body with ``models`` in eval mode and autocast off; restore what training depends on, also on errors.

    Restored: every submodule's ``.training``; every parameter's
    ``requires_grad`` and ``.grad`` (the same tensor, never written to while
    set aside); every buffer's values (in place, only where they changed, so
    an unchanged buffer's version counter does not move); torch's CPU and
    CUDA, numpy's and Python's global RNG states. Optimizers are never seen.
    """
    submodules = list({id(m): m for root in models for m in root.modules()}.values())
    modes = [m.training for m in submodules]
    buffers = list({id(b): b for m in submodules for b in m.buffers(recurse=False)}.values())
    saved = [b.detach().clone() for b in buffers]
    with preserved_global_rngs(), _autocast_off():
        try:
            for root in models:
                root.eval()
            with preserved_modules(models):
                yield
        finally:
            for module, mode in zip(submodules, modes):
                module.training = mode
            with torch.no_grad():
                for buffer, value in zip(buffers, saved):
                    if not torch.equal(buffer, value):
                        buffer.copy_(value)


@contextlib.contextmanager
def _autocast_off() -> Iterator[None]:
    """Full precision inside, whether or not the caller runs under ``torch.autocast`` (its cache is left alone)."""
    with contextlib.ExitStack() as stack:
        for device_type in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield

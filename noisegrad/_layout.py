"""The memory layout of the noisy copies: channels-last for a convolutional model on the CPU, where it is faster.

oneDNN's CPU convolutions run on channels-last (NHWC) images without the
layout conversions they make for contiguous (NCHW) ones: a chunk's forward
and backward takes less time (``benchmarks/LAYOUT.md``). float64 runs slower
that way, so it stays contiguous, as does anything on another device (a
GPU's kernels have preferences of their own), and a ``torch.compile``d
model, which chooses its layouts itself and would compile again for new
strides. The layout changes no value, only rounding inside the
convolutions. A model with any module in training mode stays contiguous: a
dropout mask is drawn in memory order, so the layout would change a seeded
map.

A forward may not take the layout: ``x.view(x.size(0), -1)`` after the
convolutions raises, and so may a check of the model's own. A call whose first chunk
fails on channels-last copies runs again on contiguous ones (the tunnel's
``_run``); if that succeeds, the model gets contiguous copies for the rest
of the process (:func:`keep_contiguous`, which a user may also call). A
forward that reads memory as contiguous without checking (``as_strided``,
an unchecked custom operator) gets wrong values silently: such a model must
be kept contiguous.
"""

import threading
import weakref
from typing import Any, Tuple

import torch
from torch import Tensor, nn

from noisegrad._state import modules_of

__all__ = ["channels_last", "in_layout", "like", "keep_contiguous"]

#: Models given contiguous copies only (weakly held: an entry goes with its model).
_CONTIGUOUS: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
_LOCK = threading.Lock()


def _convertible(x: Tensor) -> bool:
    return x.dim() == 4 and x.dtype == torch.float32 and x.device.type == "cpu"


def channels_last(inputs: Tuple[Tensor, ...], forward_func: Any) -> bool:
    """Whether the noisy copies of ``inputs`` should be channels-last for ``forward_func``.

    Yes when an input is a float32 image batch on the CPU and the model
    behind ``forward_func`` has a ``Conv2d``, is in eval mode throughout, is
    not compiled, and is not kept contiguous.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)).eval()
    >>> channels_last((torch.rand(2, 3, 8, 8),), net), channels_last((torch.rand(2, 3, 8, 8).double(),), net)
    (True, False)
    """
    if not any(_convertible(x) for x in inputs):
        return False
    modules = [m for model in modules_of(forward_func) for m in model.modules()]
    with _LOCK:  # a model kept contiguous stays so inside a wrapper, and so does a wrapper of a kept submodule
        if any(m in _CONTIGUOUS for m in modules):
            return False
    # a module in training mode may draw from the RNG in memory order (dropout): the same seed must give the same map
    if any(m.training or _compiled(m) for m in modules):
        return False
    return any(isinstance(m, nn.Conv2d) for m in modules)


def _compiled(module: nn.Module) -> bool:
    """``torch.compile(module)`` (an OptimizedModule) or ``module.compile()`` (in place)."""
    return type(module).__name__ == "OptimizedModule" or getattr(module, "_compiled_call_impl", None) is not None


def in_layout(rows: Tensor) -> Tensor:
    """``rows`` (a chunk's noisy copies of one input) channels-last, if they are a float32 image batch on the CPU."""
    return rows.contiguous(memory_format=torch.channels_last) if _convertible(rows) else rows


def like(t: Tensor, rows: Tensor) -> Tensor:
    """``t`` (made from ``rows``, such as IG's path points) channels-last if ``rows`` are."""
    if rows.dim() == 4 and not rows.is_contiguous() and rows.is_contiguous(memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t


def keep_contiguous(model: Any) -> None:
    """Give ``model`` (a module, or a function that calls one) contiguous noisy copies from now on.

    noisegrad does this itself when a call fails on channels-last copies and
    succeeds on contiguous ones; call it for a model whose forward accepts
    channels-last tensors but must not get them (a custom operator that
    reads memory as contiguous without checking).

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    >>> keep_contiguous(net)
    >>> channels_last((torch.rand(2, 3, 8, 8),), net)
    False
    """
    with _LOCK:
        for module in modules_of(model):
            _CONTIGUOUS.add(module)

"""The wrapped method's call: in the grad mode it needs, with its known failures explained."""

from typing import Any, Dict

import torch
from captum.attr import Attribution, GradientAttribution

from noisegrad.budget import ChunkOutOfMemory


def call_wrapped(method: Attribution, inputs: Any, kwargs: Dict[str, Any]) -> Any:
    """``method.attribute(inputs, **kwargs)``, raising errors that name the argument at fault.

    A gradient method runs with gradients enabled, whatever the caller's grad
    mode: Captum's enable them themselves, a user-written one may not. Any
    other method runs under ``torch.no_grad()``, so it builds no graph.
    ``torch.OutOfMemoryError`` becomes :class:`ChunkOutOfMemory`.
    """
    grad_mode = torch.enable_grad() if isinstance(method, GradientAttribution) else torch.no_grad()
    try:
        with grad_mode:
            return method.attribute(inputs, **kwargs)
    except torch.OutOfMemoryError as error:
        # Nothing has been merged yet, so the chunk can be retried smaller.
        raise ChunkOutOfMemory(str(error)) from error

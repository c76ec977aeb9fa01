"""A leaner stand-in for Captum's ``compute_gradients``: one backward of the summed outputs."""

import contextlib
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import torch
from captum._utils.common import _run_forward
from captum._utils.gradient import compute_gradients
from captum.attr import Attribution
from torch import Tensor


def summed_gradients(
    forward_fn: Callable[..., Any],
    inputs: Union[Tensor, Tuple[Tensor, ...]],
    target_ind: Any = None,
    additional_forward_args: Optional[object] = None,
) -> Tuple[Tensor, ...]:
    """Gradients of the selected outputs w.r.t. ``inputs``, as ``compute_gradients`` returns them.

    Captum differentiates ``torch.unbind(outputs)``, one graph root per row;
    the gradient of their sum is the same vector-Jacobian product with all-one
    weights, taken from a single root, which on small models is several times
    cheaper.
    """
    with torch.autograd.set_grad_enabled(True):
        outputs = _run_forward(forward_fn, inputs, target_ind, additional_forward_args)
        if outputs[0].numel() != 1:
            raise ValueError(
                "target is needed: the model returns several outputs per example "
                f"(output shape {tuple(outputs.shape)}), and a gradient needs one scalar per example"
            )
        return torch.autograd.grad(outputs.sum(), inputs)


@contextlib.contextmanager
def lean_gradients(method: Attribution) -> Iterator[None]:
    """Swap ``summed_gradients`` into a method that uses Captum's default gradient function, then swap it back."""
    if getattr(method, "gradient_func", None) is not compute_gradients:
        yield
        return
    method.gradient_func = summed_gradients
    try:
        yield
    finally:
        method.gradient_func = compute_gradients

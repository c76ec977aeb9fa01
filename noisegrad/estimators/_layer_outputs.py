"""LayerGradientXActivation for several outputs at once: one forward per chunk, K gradients w.r.t. the layer.

Captum's LayerGradientXActivation, with ``target`` replaced by K output
columns: the layer's values are captured in one forward over the rows (by
Captum's own hook, so a layer's input, a tuple of tensors and a
DataParallel model are seen as Captum sees them), the gradients of the K
selected outputs with respect to them are taken through that one graph
(:func:`noisegrad._captum.output_vjps`), and each is multiplied by the
layer's values if the method multiplies by inputs.
"""

from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from captum.attr import LayerGradientXActivation
from torch import Tensor

from noisegrad import _captum

__all__ = ["layer_gradient_x_activation_of_outputs"]


def layer_gradient_x_activation_of_outputs(method: LayerGradientXActivation,
                                           outputs: Tuple[int, ...]) -> Callable[..., Any]:
    """``method.attribute`` for the output columns ``outputs``: each layer tensor's attribution ``(K, rows, ...)``.

    The returned function takes LayerGradientXActivation's arguments
    (``grad_kwargs`` only as None: see :func:`noisegrad._captum.batches_outputs`)
    and returns what Captum returns for one target, with a first dimension
    of K added to each tensor. It equals K calls with ``target=k``
    (``tests/test_layer_outputs.py``).

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> x = torch.randn(5, 3)
    >>> attributions = layer_gradient_x_activation_of_outputs(LayerGradientXActivation(model, model[1]), (1, 0))(x)
    >>> attributions.shape
    torch.Size([2, 5, 4])
    >>> one = LayerGradientXActivation(model, model[1]).attribute(x, target=0)
    >>> torch.allclose(attributions[1], one)
    True
    """

    def attribute(
        inputs: Union[Tensor, Tuple[Tensor, ...]],
        target: None = None,  # the K outputs take its place (the tunnel refuses a target beside outputs=)
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        grad_kwargs: Optional[Dict[str, Any]] = None,
    ) -> Union[Tensor, Tuple[Tensor, ...]]:
        if target is not None:
            raise ValueError(f"outputs= explains its own columns; target={target!r} cannot be given beside it")
        if grad_kwargs:
            raise ValueError("grad_kwargs cannot be given beside outputs= (the tunnel runs once per output then)")
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        extra = _captum.format_additional_forward_args(additional_forward_args)
        roots, values, output, gather = _captum.layer_values_and_output(method, inputs, extra,
                                                                        attribute_to_layer_input)
        with torch.autograd.set_grad_enabled(True):
            grads = gather(list(_captum.stacked_vjps(_captum.selected_outputs(output, outputs), roots)))
        if method.multiplies_by_inputs:
            grads = tuple(g * v for g, v in zip(grads, values))
        return grads if len(grads) > 1 else grads[0]

    return attribute

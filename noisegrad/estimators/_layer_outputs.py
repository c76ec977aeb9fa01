"""Layer methods for several outputs at once: one forward per chunk (per step batch), K gradients w.r.t. the layer.

Captum's LayerGradientXActivation, with ``target`` replaced by K output
columns: the layer's values are captured in one forward over the rows (by
Captum's own hook, so a layer's input and a tuple of tensors are seen as
Captum sees them), the gradients of the K
selected outputs with respect to them are taken through that one graph
(:func:`noisegrad._gradients.output_vjps`), and each is multiplied by the
layer's values if the method multiplies by inputs.

Captum's LayerIntegratedGradients likewise: the layer's values at the
inputs and at the baselines (one forward each, no gradients), then
IntegratedGradients for several outputs (:mod:`._ig_outputs`) along the
path between them in the layer's space, each step batch one forward of the
inputs with the layer's output replaced by the path's points.
"""

import threading
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from torch import Tensor

from noisegrad import _captum, _gradients
from noisegrad.estimators._ig_outputs import convergence_deltas, path_sums

__all__ = ["layer_gradient_x_activation_of_outputs", "layer_integrated_gradients_of_outputs"]


def layer_gradient_x_activation_of_outputs(method: LayerGradientXActivation,
                                           outputs: Tuple[int, ...]) -> Callable[..., Any]:
    """``method.attribute`` for the output columns ``outputs``: each layer tensor's attribution ``(K, rows, ...)``.

    The returned function takes LayerGradientXActivation's arguments
    (``grad_kwargs`` only as None, one layer, no DataParallel: see
    :func:`noisegrad._captum.batches_outputs`)
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
        roots, values, output = _gradients.layer_values_and_output(method, inputs, extra, attribute_to_layer_input)
        with torch.autograd.set_grad_enabled(True):
            grads = _gradients.stacked_vjps(_gradients.selected_outputs(output, outputs), roots)
        if values[0].device != grads[0].device:  # memory_efficient: Captum's attributions are on the CPU
            grads = tuple(g.cpu() for g in grads)
        if method.multiplies_by_inputs:
            grads = tuple(g * v for g, v in zip(grads, values))
        return grads if len(grads) > 1 else grads[0]

    return attribute


def layer_integrated_gradients_of_outputs(layer_ig: LayerIntegratedGradients,
                                          outputs: Tuple[int, ...]) -> Callable[..., Any]:
    """``layer_ig.attribute`` for the output columns ``outputs``: attributions ``(K, rows, ...)``, deltas ``(K, rows)``.

    The returned function takes LayerIntegratedGradients' arguments
    (``grad_kwargs`` only as None; one layer, no ``device_ids``: see
    :func:`noisegrad._captum.batches_outputs`) and returns what Captum
    returns for one target, with a first dimension of K added to each
    attribution and delta. It equals K calls with ``target=k``
    (``tests/test_layer_outputs.py``), up to the order in which the
    step-weighted gradients are summed.

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> x = torch.randn(5, 3)
    >>> attribute = layer_integrated_gradients_of_outputs(LayerIntegratedGradients(model, model[1]), (1, 0))
    >>> attributions, delta = attribute(x, n_steps=8, return_convergence_delta=True)
    >>> attributions.shape, delta.shape
    (torch.Size([2, 5, 4]), torch.Size([2, 5]))
    >>> one = LayerIntegratedGradients(model, model[1]).attribute(x, target=0, n_steps=8)
    >>> torch.allclose(attributions[1], one, atol=1e-6)
    True
    """

    def attribute(
        inputs: Union[Tensor, Tuple[Tensor, ...]],
        baselines: Any = None,
        target: None = None,  # the K outputs take its place (the tunnel refuses a target beside outputs=)
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        grad_kwargs: Optional[Dict[str, Any]] = None,
    ) -> Any:
        if target is not None:
            raise ValueError(f"outputs= explains its own columns; target={target!r} cannot be given beside it")
        if grad_kwargs:
            raise ValueError("grad_kwargs cannot be given beside outputs= (the tunnel runs once per output then)")
        formatted, formatted_baselines = _captum.format_input_baseline(inputs, baselines)
        _captum.validate_path_input(formatted, formatted_baselines, n_steps, method)
        starts = _captum.tensorize_baseline(formatted, formatted_baselines)
        extra = _captum.format_additional_forward_args(additional_forward_args)
        forward_func, layer = layer_ig.forward_func, layer_ig.layer

        def values_at(points: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
            with torch.no_grad():
                return _gradients.own_layer_forward(forward_func, points, layer, extra, attribute_to_layer_input,
                                                 False)[0]

        at_inputs, at_starts = values_at(formatted), values_at(starts)

        def with_layer_at(*args: Any) -> Any:  # the path's points (one per layer tensor), then the model's arguments
            points, model_args = args[:len(at_inputs)], args[len(at_inputs):]

            def replace(_module: Any, hook_inputs: Any, hook_outputs: Any = None) -> Any:
                if threading.get_ident() != owner:  # another thread's forward through a shared model: its own values
                    return None
                is_tuple = isinstance(hook_inputs if attribute_to_layer_input else hook_outputs, tuple)
                return tuple(points) if is_tuple else points[0]

            owner = threading.get_ident()
            handle = (layer.register_forward_pre_hook(replace) if attribute_to_layer_input
                      else layer.register_forward_hook(replace))
            try:
                return _gradients.run_forward(forward_func, (), None, model_args)
            finally:
                handle.remove()

        model_args = formatted + extra if extra is not None else formatted
        sums = path_sums(with_layer_at, at_inputs, at_starts, model_args, outputs, n_steps, method,
                         internal_batch_size)
        if layer_ig.multiplies_by_inputs:
            for total, x, start in zip(sums, at_inputs, at_starts):
                total.mul_(x - start)
        attributions = tuple(sums) if len(sums) > 1 else sums[0]
        if not return_convergence_delta:
            return attributions
        return attributions, convergence_deltas(forward_func, sums, formatted, starts, extra, outputs)

    return attribute

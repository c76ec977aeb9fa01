"""IntegratedGradients' path built once: for several outputs at once, or for one target.

Captum's IntegratedGradients builds its path one step at a time and sums
the step-weighted gradients in passes of its own. Here the path points
``baseline + α (x − baseline)`` are built in one broadcast for the rows, each
forward runs once, and the gradients are summed over the steps (weighted by
the approximation's step sizes) as they are taken:

* with K output columns in place of ``target``, output ``k``'s gradients go
  into ``(K, rows, ...)``, so neither the path nor its gradients exist K
  times; the convergence delta needs one forward at the inputs and one at
  the baselines for all K outputs;
* with ``target`` (what NoiseTunnel wraps every plain IntegratedGradients
  with), the same numbers as Captum's ``attribute`` (``tests/test_ig_outputs.py``),
  without its per-step passes; the convergence delta is Captum's own.
"""

import warnings
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import torch
from captum.attr import IntegratedGradients
from torch import Tensor

from noisegrad import _captum, _gradients
from noisegrad._caller import user_stacklevel

__all__ = ["integrated_gradients_of_outputs", "integrated_gradients_of_target", "path_sums", "convergence_deltas"]


def integrated_gradients_of_outputs(ig: IntegratedGradients, outputs: Tuple[int, ...]) -> Callable[..., Any]:
    """``ig.attribute`` for the output columns ``outputs``: attributions ``(K, rows, ...)``, deltas ``(K, rows)``.

    The returned function takes IntegratedGradients' arguments but
    ``target``, and returns what Captum's ``attribute`` returns for one
    target, with a first dimension of K added to each attribution and delta.
    It equals K calls with ``target=k`` (``tests/test_ig_outputs.py``), up to
    the order in which the step-weighted gradients are summed.

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> x = torch.randn(5, 3)
    >>> attribute = integrated_gradients_of_outputs(IntegratedGradients(model), (1, 0))
    >>> attributions, delta = attribute(x, n_steps=8, return_convergence_delta=True)
    >>> attributions.shape, delta.shape
    (torch.Size([2, 5, 3]), torch.Size([2, 5]))
    >>> one = IntegratedGradients(model).attribute(x, target=0, n_steps=8)
    >>> torch.allclose(attributions[1], one, atol=1e-6)
    True
    """

    def attribute(
        inputs: Union[Tensor, Tuple[Tensor, ...]],
        baselines: Any = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        target: None = None,  # the K outputs take its place (the tunnel refuses a target beside outputs=)
    ) -> Any:
        if target is not None:
            raise ValueError(f"outputs= explains its own columns; target={target!r} cannot be given beside it")
        formatted, formatted_baselines, extra, sums = _path_attributions(
            ig, inputs, baselines, additional_forward_args, n_steps, method, internal_batch_size, outputs, None)
        attributions = tuple(sums) if isinstance(inputs, tuple) else sums[0]
        if not return_convergence_delta:
            return attributions
        starts = _captum.tensorize_baseline(formatted, formatted_baselines)
        return attributions, convergence_deltas(ig.forward_func, sums, formatted, starts, extra, outputs)

    return attribute


def integrated_gradients_of_target(ig: IntegratedGradients) -> Callable[..., Any]:
    """``ig.attribute`` with the path built once (module docstring): the same arguments and results.

    For a plain ``IntegratedGradients`` using Captum's gradient function
    (:func:`noisegrad._captum.builds_ig_path`); equal to Captum's up to the
    order in which the step-weighted gradients are summed.

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> x = torch.randn(5, 3)
    >>> ours, delta = integrated_gradients_of_target(IntegratedGradients(model))(
    ...     x, target=1, n_steps=8, return_convergence_delta=True)
    >>> theirs = IntegratedGradients(model).attribute(x, target=1, n_steps=8)
    >>> torch.allclose(ours, theirs, atol=1e-6), delta.shape
    (True, torch.Size([5]))
    """

    def attribute(
        inputs: Union[Tensor, Tuple[Tensor, ...]],
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        formatted, _, _, sums = _path_attributions(ig, inputs, baselines, additional_forward_args, n_steps, method,
                                                   internal_batch_size, None, target)
        rows = formatted[0].shape[0]
        if internal_batch_size is not None and internal_batch_size < rows:  # Captum warns of this too
            warnings.warn(f"internal_batch_size={internal_batch_size} is below the {rows} rows attributed together; "
                          f"each forward holds one path step of all {rows} rows", stacklevel=user_stacklevel())
        sums = [total[0] for total in sums]
        attributions = tuple(sums) if isinstance(inputs, tuple) else sums[0]
        if not return_convergence_delta:
            return attributions
        return attributions, ig.compute_convergence_delta(tuple(sums), baselines, inputs, target=target,
                                                          additional_forward_args=additional_forward_args)

    return attribute


def _path_attributions(
    ig: IntegratedGradients, inputs: Any, baselines: Any, additional_forward_args: Any, n_steps: int, method: str,
    internal_batch_size: Optional[int], outputs: Optional[Tuple[int, ...]], target: Any,
) -> Tuple[Tuple[Tensor, ...], Tuple[Any, ...], Any, List[Tensor]]:
    """Captum's checks of IntegratedGradients' arguments, then :func:`path_sums` (times ``x − baseline`` if the method
    multiplies by its inputs): ``(inputs, baselines, forward arguments, sums)``, the first three as Captum formats
    them."""
    formatted, formatted_baselines = _captum.format_input_baseline(inputs, baselines)
    _captum.validate_path_input(formatted, formatted_baselines, n_steps, method)
    extra = _captum.format_additional_forward_args(additional_forward_args)
    sums = path_sums(ig.forward_func, formatted, formatted_baselines, extra, outputs, n_steps, method,
                     internal_batch_size, target=target)
    if ig.multiplies_by_inputs:
        for total, x, baseline in zip(sums, formatted, formatted_baselines):
            total.mul_(x.detach() - baseline)
    return formatted, formatted_baselines, extra, sums


def path_sums(
    forward_func: Callable[..., Any],
    inputs: Tuple[Tensor, ...],
    baselines: Tuple[Any, ...],
    extra: Optional[Tuple[Any, ...]],
    outputs: Optional[Tuple[int, ...]],
    n_steps: int,
    approximation: str,
    internal_batch_size: Optional[int],
    target: Any = None,
) -> List[Tensor]:
    """Per input, Σ_steps step size × gradient of each output at the path point: ``(K, rows, ...)``.

    ``outputs=None``: the gradient of ``target``'s output (K = 1), as Captum
    selects it. The steps run in batches of ``internal_batch_size // rows``
    (at least one), as Captum splits them.
    """
    step_sizes_of, alphas_of = _captum.approximation_parameters(approximation)
    step_sizes, alphas = step_sizes_of(n_steps), alphas_of(n_steps)
    rows = inputs[0].shape[0]
    per_forward = n_steps if internal_batch_size is None else max(1, internal_batch_size // rows)
    count = 1 if outputs is None else len(outputs)
    # Captum weights the gradients with float32 step sizes: a half-precision input's sums are float32, a wider one's
    # keep its dtype
    sums = [torch.zeros((count,) + tuple(x.shape), dtype=_summed_dtype(x), device=x.device) for x in inputs]
    spans = [x.detach() - b for x, b in zip(inputs, baselines)]
    for first in range(0, n_steps, per_forward):
        steps = range(first, min(first + per_forward, n_steps))
        with torch.autograd.set_grad_enabled(True):
            path = tuple(_points(b, span, [alphas[s] for s in steps]).requires_grad_()
                         for b, span in zip(baselines, spans))
            # Captum's step sizes are float32 whatever the inputs' dtype: the same weights give the same sums
            weights = [torch.tensor([step_sizes[s] for s in steps], dtype=torch.float32, device=x.device).to(total.dtype)
                       for x, total in zip(inputs, sums)]
            step_extra = None if extra is None else _captum.expand_additional_forward_args(extra, len(steps))
            for which, grads in _step_gradients(forward_func, path, step_extra, outputs, target, len(steps)):
                for total, grad, weight in zip(sums, grads, weights):
                    per_step = grad.reshape(grad.shape[0], len(steps), -1).to(weight.dtype)
                    total[which].add_(torch.matmul(weight, per_step).reshape(total[which].shape))
    return sums


def _step_gradients(forward_func: Callable[..., Any], path: Tuple[Tensor, ...], extra: Any,
                    outputs: Optional[Tuple[int, ...]], target: Any, steps: int) -> Iterator[Tuple[slice, Tuple[Tensor, ...]]]:
    """``(columns, gradients)`` at a batch of path points: the K outputs' products, or ``target``'s one gradient."""
    if outputs is None:
        grads = _gradients.summed_gradients(forward_func, path, _captum.expand_target(target, steps), extra)
        yield slice(0, 1), tuple(g.unsqueeze(0) for g in grads)
        return
    selected = _gradients.selected_outputs(_gradients.run_forward(forward_func, path, None, extra), outputs)
    yield from _gradients.output_vjps(selected, path)


def convergence_deltas(
    forward_func: Callable[..., Any],
    attributions: List[Tensor],
    inputs: Tuple[Tensor, ...],
    starts: Tuple[Tensor, ...],
    extra: Any,
    outputs: Tuple[int, ...],
) -> Tensor:
    """Captum's convergence delta of each output, ``(K, rows)``: the attributions' sum per row minus f(x) − f(start).

    ``attributions``: ``(K, rows, ...)`` each; the model runs at ``starts``,
    then at ``inputs``, as Captum's ``compute_convergence_delta`` does.
    """
    with torch.no_grad():
        at_start = _selected(forward_func, starts, extra, outputs)
        change = _selected(forward_func, inputs, extra, outputs) - at_start
        total = sum(a.reshape(a.shape[0], a.shape[1], -1).sum(2) for a in attributions)
    return total - change.transpose(0, 1)


def _points(baseline: Any, span: Tensor, alphas: List[float]) -> Tensor:
    """``baseline + α · span`` for each α, one block of rows per α: ``(len(alphas) · rows, ...)``.

    ``α · span`` is taken with α in float32 or wider and rounded to the
    span's dtype, as PyTorch multiplies a half-precision tensor by Captum's
    Python float α: the same path points as Captum's.
    """
    alpha = torch.tensor(alphas, dtype=_summed_dtype(span), device=span.device).reshape((-1,) + (1,) * span.dim())
    return (baseline + (alpha * span).to(span.dtype)).reshape((-1,) + tuple(span.shape[1:]))


def _summed_dtype(x: Tensor) -> torch.dtype:
    """float32 for a half-precision tensor, its own dtype for a wider one: the dtype Captum's step sums come in."""
    return torch.promote_types(x.dtype, torch.float32)


def _selected(forward_func: Callable[..., Any], points: Tuple[Tensor, ...], extra: Any,
              outputs: Tuple[int, ...]) -> Tensor:
    """The ``outputs`` columns of the model at ``points``: ``(rows, K)``."""
    return _gradients.selected_outputs(_gradients.run_forward(forward_func, points, None, extra), outputs)

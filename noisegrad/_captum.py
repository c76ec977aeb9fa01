"""Everything that knows Captum's internals or its method classes, in one place.

noisegrad calls wrapped methods through their public ``attribute``; what it
needs beyond that — how many forward rows a method makes per input row,
which methods sample baselines or split their own forward, Captum's private
forward and layer helpers the joint estimator reuses, and its default
gradient function — is read here, and ``tests/test_captum_adapter.py``
checks every assumption against the installed Captum.
"""

import copy
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from captum._utils.common import _format_additional_forward_args, _run_forward
from captum._utils.gradient import _forward_layer_eval, compute_gradients
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS, SUPPORTED_RIEMANN_METHODS
from captum.attr._utils.common import _format_input_baseline, _tensorize_baseline
from captum.attr import (
    Attribution,
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    FeaturePermutation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    InternalInfluence,
    LayerConductance,
    LayerDeepLiftShap,
    LayerGradientShap,
    LayerIntegratedGradients,
    NeuronConductance,
    NeuronDeepLift,
    NeuronDeepLiftShap,
    NeuronGradientShap,
    NeuronIntegratedGradients,
    Saliency,
    ShapleyValueSampling,
)
from torch import Tensor

__all__ = [
    "rows_per_copy",
    "is_path_method",
    "path_points",
    "takes_baseline_distribution",
    "takes_internal_batch_size",
    "rows_per_split_copy",
    "draws_from_global_rng",
    "calls_model_as_black_box",
    "lean",
    "summed_gradients",
    "run_forward",
    "format_additional_forward_args",
    "forward_layer_eval",
    "layer_gradient_func",
    "PATH_METHODS",
    "APPROXIMATION_METHODS",
    "RIEMANN_METHODS",
    "SAMPLES_METHODS",
]

#: Path methods: one forward row per step (``n_steps``, default 50); they can split their own forward.
PATH_METHODS = (
    IntegratedGradients, LayerIntegratedGradients, LayerConductance, InternalInfluence,
    NeuronIntegratedGradients, NeuronConductance,
)
#: Methods that draw ``n_samples`` (default 5) random (baseline, noise, α) rows per input row.
SAMPLES_METHODS = (GradientShap, LayerGradientShap, NeuronGradientShap)
#: Methods that make one row per baseline row.
BASELINE_ROWS_METHODS = (DeepLiftShap, LayerDeepLiftShap, NeuronDeepLiftShap)
#: Methods that run the inputs and their baselines in one forward (DeepLift's rescale rule compares the two).
_PAIRED_METHODS = (DeepLift, NeuronDeepLift) + BASELINE_ROWS_METHODS  # LayerDeepLift is a DeepLift

#: The approximation ``method``s path methods take, and those that are Riemann sums (they need 2 steps).
APPROXIMATION_METHODS = tuple(SUPPORTED_METHODS)
RIEMANN_METHODS = tuple(SUPPORTED_RIEMANN_METHODS)

_DEFAULT_N_STEPS = 50
_DEFAULT_N_SAMPLES = 5

run_forward = _run_forward
format_additional_forward_args = _format_additional_forward_args
forward_layer_eval = _forward_layer_eval


def rows_per_copy(method: Attribution, kwargs: Dict[str, Any]) -> int:
    """Forward rows the wrapped method makes of one noisy copy of one example.

    Examples
    --------
    >>> from captum.attr import IntegratedGradients, Saliency
    >>> model = torch.nn.Linear(3, 2)
    >>> rows_per_copy(IntegratedGradients(model), {"n_steps": 20}), rows_per_copy(Saliency(model), {})
    (20, 1)
    >>> from captum.attr import DeepLiftShap
    >>> rows_per_copy(DeepLiftShap(model), {"baselines": torch.zeros(3, 3)})  # each input row beside 3 baselines
    6
    """
    if isinstance(method, PATH_METHODS):
        return path_points(method, int(kwargs.get("n_steps", _DEFAULT_N_STEPS)))
    if isinstance(method, SAMPLES_METHODS):
        return int(kwargs.get("n_samples", _DEFAULT_N_SAMPLES))
    beside_baseline = 2 if isinstance(method, _PAIRED_METHODS) else 1  # DeepLift: each row and its baseline row
    if isinstance(method, BASELINE_ROWS_METHODS):
        baselines = kwargs.get("baselines")
        first = baselines[0] if isinstance(baselines, tuple) else baselines
        return beside_baseline * (int(first.shape[0]) if isinstance(first, Tensor) and first.dim() > 0 else 1)
    if isinstance(method, (FeatureAblation, ShapleyValueSampling)):  # and Occlusion, ShapleyValues
        return int(kwargs.get("perturbations_per_eval", 1))
    return beside_baseline


def is_path_method(method: Attribution) -> bool:
    """Whether the method integrates gradients along a path, taking ``n_steps`` and an approximation ``method``."""
    return isinstance(method, PATH_METHODS)


def path_points(method: Attribution, n_steps: int) -> int:
    """Points a path method evaluates on each path: ``n_steps``, and one more for LayerConductance.

    LayerConductance differences the layer's values at neighbouring points,
    so its ``n_steps`` steps need ``n_steps + 1`` points.

    Examples
    --------
    >>> from captum.attr import IntegratedGradients, LayerConductance
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    >>> path_points(IntegratedGradients(model), 4), path_points(LayerConductance(model, model[0]), 4)
    (4, 5)
    """
    return n_steps + 1 if isinstance(method, LayerConductance) else n_steps


def takes_baseline_distribution(method: Attribution) -> bool:
    """Whether the method samples or averages over its baselines (any number of rows is valid)."""
    return isinstance(method, SAMPLES_METHODS + BASELINE_ROWS_METHODS)


def takes_internal_batch_size(method: Attribution) -> bool:
    """Whether the method can split its own forward into ``internal_batch_size`` rows."""
    return isinstance(method, PATH_METHODS)


def rows_per_split_copy(method: Attribution) -> int:
    """The fewest rows per copy of one example a forward split by ``internal_batch_size`` holds; 0: no split.

    One path point; two for LayerConductance, whose differences need
    consecutive points in one forward (Captum raises a smaller
    ``internal_batch_size`` to two rows per example, with a warning).
    """
    if not takes_internal_batch_size(method):
        return 0
    return 2 if isinstance(method, LayerConductance) else 1


def draws_from_global_rng(method: Attribution) -> bool:
    """Whether the method itself draws from torch's and numpy's global RNGs (GradientShap's baselines, noise, α)."""
    return isinstance(method, SAMPLES_METHODS)


#: Methods that reach the model only through ``forward_func`` (no hooks on its modules, no layer) and whose forwards
#: hold whole blocks of their input rows, in order: a path method's steps, an ablation's perturbations
#: (``tests/test_weight_noise.py`` checks it for each).
BLACK_BOX_METHODS = (Saliency, InputXGradient, IntegratedGradients, FeatureAblation)


def calls_model_as_black_box(method: Attribution) -> bool:
    """Whether every forward of the method is ``forward_func`` on whole blocks of its input rows.

    Then one forward can run rows of several models side by side (weight
    draws); layer, neuron and hook-based methods (DeepLift, GuidedBackprop),
    GradientShap, whose forwards interleave its rows, and FeaturePermutation,
    which permutes features across all rows of a forward, cannot.
    """
    return isinstance(method, BLACK_BOX_METHODS) and not isinstance(method, FeaturePermutation)


def summed_gradients(
    forward_fn: Callable[..., Any],
    inputs: Union[Tensor, Tuple[Tensor, ...]],
    target_ind: Any = None,
    additional_forward_args: Optional[object] = None,
) -> Tuple[Tensor, ...]:
    """Gradients of the selected outputs w.r.t. ``inputs``, as Captum's ``compute_gradients`` returns them.

    Captum differentiates ``torch.unbind(outputs)``, one graph root per row;
    the gradient of their sum is the same vector-Jacobian product with all-one
    weights, taken from a single root, which on small models is several times
    cheaper. Through ``torch.autograd.grad``, never ``.backward()``, so no
    parameter's ``.grad`` is touched.
    """
    with torch.autograd.set_grad_enabled(True):
        outputs = _run_forward(forward_fn, inputs, target_ind, additional_forward_args)
        if outputs[0].numel() != 1:
            raise ValueError(
                f"target is needed: the model returns {outputs[0].numel()} outputs per example (shape "
                f"{tuple(outputs.shape[1:])} each), and a gradient needs one scalar per example; give target=, "
                "outputs=[...] for several outputs at once, or objective= for a score of your own"
            )
        return torch.autograd.grad(outputs.sum(), inputs)


#: Methods whose several outputs (``outputs=``) are one forward and K batched vector-Jacobian products: they take
#: their gradients from ``gradient_func`` and only apply elementwise steps to them (|·|, × input, IG's path sum).
BATCHED_OUTPUT_METHODS = (Saliency, InputXGradient, IntegratedGradients)


def batches_outputs(method: Attribution) -> bool:
    """Whether ``outputs=`` runs one forward per chunk for ``method`` (else one run per output)."""
    return type(method) in BATCHED_OUTPUT_METHODS and getattr(method, "gradient_func", None) is compute_gradients


def output_gradients(outputs: Tuple[int, ...], copies: int) -> Callable[..., Tuple[Tensor, ...]]:
    """A ``gradient_func`` for inputs tiled once per output: one forward, K vector-Jacobian products.

    The estimator gives the method its ``copies`` noisy rows tiled K times
    (output-major), so each forward's rows are ``(steps, K, copies)`` with the
    K blocks equal. The forward runs on one block; the K outputs' gradients
    are K vector-Jacobian products through its graph: one by one on a CPU,
    where that is faster than ``is_grads_batched`` (benchmarks/OUTPUTS.md),
    batched elsewhere (falling back to one by one for operations without a
    batching rule), laid out as the method expects: block ``k`` holds output
    ``k``'s gradient.
    """
    count = len(outputs)

    def one_block(value: Tensor, rows: int) -> Tensor:
        return _one_block(value, rows, count, copies)

    def gradient_func(
        forward_fn: Callable[..., Any], inputs: Any, target_ind: Any = None, additional_forward_args: Any = None
    ) -> Tuple[Tensor, ...]:
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        rows = inputs[0].shape[0]
        if rows % (count * copies):
            raise ValueError(f"a forward of {rows} rows cannot hold {count} outputs × {copies} noisy copies; "
                             "outputs= needs the method's forwards to keep whole copies (leave internal_batch_size)")
        extra = _format_additional_forward_args(additional_forward_args)
        if extra is not None:
            extra = tuple(one_block(a, rows) if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == rows else a
                          for a in extra)
        with torch.autograd.set_grad_enabled(True):
            block = tuple(one_block(x, rows) for x in inputs)
            out = _run_forward(forward_fn, block, None, extra)
            if out.dim() != 2:
                raise ValueError(f"outputs= selects columns of a (batch, outputs) model output; the model returns "
                                 f"shape {tuple(out.shape)}")
            if max(outputs) >= out.shape[1]:
                raise ValueError(f"outputs={list(outputs)} names column {max(outputs)}, but the model returns "
                                 f"{out.shape[1]} outputs per example")
            selected = out[:, list(outputs)]
            grads = None
            if block[0].device.type != "cpu":  # one set of kernels for the K products (unmeasured: no GPU here)
                eye = torch.eye(count, dtype=selected.dtype, device=selected.device)
                weights = eye.unsqueeze(1).expand(count, selected.shape[0], count)
                try:
                    grads = torch.autograd.grad(selected, block, grad_outputs=weights, is_grads_batched=True,
                                                retain_graph=True)
                except RuntimeError:  # an operation without a batching rule
                    grads = None
            if grads is None:  # one product per output through the same graph
                per_output = [torch.autograd.grad(selected[:, k].sum(), block, retain_graph=k < count - 1)
                              for k in range(count)]
                grads = tuple(torch.stack(parts) for parts in zip(*per_output))
        return tuple(
            g.reshape((count, rows // (count * copies), copies) + tuple(g.shape[2:])).transpose(0, 1).reshape(
                (rows,) + tuple(g.shape[2:]))
            for g in grads
        )

    return gradient_func


def _one_block(value: Tensor, rows: int, count: int, copies: int) -> Tensor:
    """Of ``rows`` rows laid out ``(steps, count, copies)`` with the ``count`` blocks equal, the first block."""
    steps = rows // (count * copies)
    return value.reshape((steps, count, copies) + tuple(value.shape[1:]))[:, 0].reshape(
        (steps * copies,) + tuple(value.shape[1:]))


def output_convergence_delta(method: Attribution, outputs: Tuple[int, ...], copies: int) -> Callable[..., Tensor]:
    """IG's ``compute_convergence_delta`` for inputs tiled once per output (:func:`output_gradients`).

    Captum's delta, Σ attributions − (F(end) − F(start)) per row, with each
    point's forward run on one block and block ``k`` reading output ``k``,
    instead of K forwards of equal rows.
    """
    count = len(outputs)

    def delta(attributions: Any, start_point: Any, end_point: Any, target: Any = None,
              additional_forward_args: Any = None) -> Tensor:
        end_point, start_point = _format_input_baseline(end_point, start_point)
        start_point = _tensorize_baseline(end_point, start_point)
        rows = end_point[0].shape[0]
        extra = _format_additional_forward_args(additional_forward_args)
        if extra is not None:
            extra = tuple(_one_block(a, rows, count, copies) if isinstance(a, Tensor) and a.dim() > 0
                          and a.shape[0] == rows else a for a in extra)

        def selected(point: Tuple[Tensor, ...]) -> Tensor:  # (rows,): block k's rows read output k
            out = _run_forward(method.forward_func, tuple(_one_block(x, rows, count, copies) for x in point),
                               None, extra)
            return out[:, list(outputs)].transpose(0, 1).reshape(rows)

        attributions = attributions if isinstance(attributions, tuple) else (attributions,)
        with torch.no_grad():
            attr_sum = sum(a.reshape(rows, -1).sum(dim=1) for a in attributions)
            return attr_sum - (selected(end_point) - selected(start_point))

    return delta


def attributes_to(method: Attribution, module: Any, to_layer_input: bool) -> bool:
    """Whether a layer method attributes to ``module``'s output (its ``layer``, or one of its list)."""
    layer = getattr(method, "layer", None)
    layers = layer if isinstance(layer, (list, tuple)) else [layer]
    return not to_layer_input and any(candidate is module for candidate in layers)


def repeats_examples_in_place(method: Attribution) -> bool:
    """Whether the method repeats each example in consecutive rows of its forward (GradientShap, DeepLiftShap).

    Noise at a layer tiles each copy's noise over whole blocks of the chunk's
    rows, so these methods' row order would give rows other examples' noise.
    """
    return isinstance(method, SAMPLES_METHODS + BASELINE_ROWS_METHODS)


def evaluates_layer_at_baselines(method: Attribution) -> bool:
    """Whether the method runs the model on its inputs and, separately, on its baselines to find a layer's values.

    Layer IntegratedGradients does (then interpolates in the layer's space):
    noise at a layer then belongs in the inputs' forward only, as Captum's
    NoiseTunnel perturbs inputs and not baselines.
    """
    return isinstance(method, LayerIntegratedGradients)


def lean(method: Attribution) -> Attribution:
    """The method to call: a shallow copy of the user's, using :func:`summed_gradients` if it uses Captum's default.

    Whatever a call sets on the method (a gradient function, a watched
    forward function) is set on the copy, so the user's object is never
    modified and concurrent calls on one method (threads) cannot see each
    other's changes.
    """
    twin = copy.copy(method)
    if getattr(method, "gradient_func", None) is compute_gradients:
        twin.gradient_func = summed_gradients
    return twin


def layer_gradient_func(
    method: LayerIntegratedGradients, counts: List[int], to_layer_input: bool, grad_kwargs: Optional[Dict[str, Any]]
) -> Callable[..., Tuple[Tensor, ...]]:
    """Layer IG's own gradient function: gradients w.r.t. the layer's values, through its forward hooks.

    ``counts``: how many tensors each of the method's layers has.
    """
    cumsum = torch.cumsum(torch.tensor([0] + list(counts)), dim=0)
    return method._make_gradient_func(cumsum, to_layer_input, grad_kwargs)

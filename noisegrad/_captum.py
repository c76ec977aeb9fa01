"""Everything that knows Captum's internals or its method classes, in one place.

noisegrad calls wrapped methods through their public ``attribute``; what it
needs beyond that — how many forward rows a method makes per input row,
which methods sample baselines or split their own forward, Captum's private
forward and layer helpers the joint estimator reuses, and its default
gradient function — is read here, and ``tests/test_captum_adapter.py``
checks every assumption against the installed Captum. The gradient
functions noisegrad substitutes for Captum's are in
:mod:`noisegrad._gradients`.
"""

import copy
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from captum._utils.common import _expand_additional_forward_args, _expand_target, _format_additional_forward_args
from captum._utils.gradient import _forward_layer_eval, compute_gradients
from captum.attr._utils.approximation_methods import (
    SUPPORTED_METHODS,
    SUPPORTED_RIEMANN_METHODS,
    approximation_parameters,
)
from captum.attr._utils.common import _format_input_baseline, _tensorize_baseline, _validate_input
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
    LayerGradientXActivation,
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

from noisegrad._gradients import summed_gradients

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
    "format_additional_forward_args",
    "forward_layer_eval",
    "format_input_baseline",
    "validate_path_input",
    "tensorize_baseline",
    "expand_additional_forward_args",
    "approximation_parameters",
    "batches_outputs",
    "builds_ig_path",
    "returns_new_tensors",
    "expand_target",
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

format_additional_forward_args = _format_additional_forward_args
forward_layer_eval = _forward_layer_eval
#: What IntegratedGradients does with its inputs and baselines before its path (``estimators/_ig_outputs.py``): one
#: baseline per input (None → 0), checked against the inputs with ``n_steps`` and the approximation; a number or a
#: one-row baseline as a tensor of the inputs' shape (for the delta's forward); tensor forward arguments repeated
#: once per step, and a target once per step (``expand_target``); and the approximation's step sizes and points,
#: ``approximation_parameters(method)``.
format_input_baseline = _format_input_baseline
validate_path_input = _validate_input
tensorize_baseline = _tensorize_baseline
expand_additional_forward_args = _expand_additional_forward_args
expand_target = _expand_target


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


#: Methods whose several outputs (``outputs=``) are one forward and K vector-Jacobian products: Saliency and
#: InputXGradient take them from ``gradient_func`` and apply elementwise steps to them (|·|, × input);
#: IntegratedGradients' path and step sums are noisegrad's (``estimators/_ig_outputs.py``), and so are the layer
#: forms' (``estimators/_layer_outputs.py``).
BATCHED_OUTPUT_METHODS = (Saliency, InputXGradient, IntegratedGradients, LayerGradientXActivation,
                          LayerIntegratedGradients)
#: Of these, the layer methods: batched on one layer, without ``grad_kwargs`` (see :func:`batches_outputs`).
_BATCHED_LAYER_METHODS = (LayerGradientXActivation, LayerIntegratedGradients)


def returns_new_tensors(method: Attribution, kwargs: Dict[str, Any]) -> bool:
    """Whether ``method``'s attributions, called with ``kwargs``, are tensors made in the call that nothing else holds
    (noisegrad may centre them in place).

    Saliency, InputXGradient and IntegratedGradients with Captum's gradient
    function and their class's ``attribute``: what they return is arithmetic
    on a gradient autograd made. Not Saliency with ``abs=False``, which
    returns the gradients as autograd hands them: one tensor for two inputs
    (``x + y``), an expanded view (``x.sum(1)``), or whatever a custom
    backward returns. Any other method may return a tensor it keeps, or one
    of the model's (a layer whose output is a parameter).

    Examples
    --------
    >>> from captum.attr import LayerActivation, Saliency
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    >>> returns_new_tensors(Saliency(model), {}), returns_new_tensors(Saliency(model), {"abs": False})
    (True, False)
    >>> returns_new_tensors(LayerActivation(model, model[0]), {})
    False
    """
    if type(method) is Saliency and not kwargs.get("abs", True):
        return False
    return type(method) in (Saliency, InputXGradient, IntegratedGradients) and _as_captum_wrote_it(method)


def builds_ig_path(method: Attribution) -> bool:
    """Whether noisegrad builds ``method``'s IntegratedGradients path itself (``estimators/_ig_outputs.py``).

    Only a plain ``IntegratedGradients`` with Captum's gradient function and
    its class's ``attribute``: a subclass, a gradient function of the user's
    or an ``attribute`` replaced on the instance keeps the method's own.
    """
    return type(method) is IntegratedGradients and _as_captum_wrote_it(method)


def _as_captum_wrote_it(method: Attribution) -> bool:
    """Whether ``method`` uses Captum's gradient function and its class's ``attribute`` (none replaced on it)."""
    return getattr(method, "gradient_func", None) is compute_gradients and "attribute" not in vars(method)


def batches_outputs(method: Attribution, kwargs: Optional[Dict[str, Any]] = None) -> bool:
    """Whether ``outputs=`` runs one forward per chunk for ``method`` called with ``kwargs`` (else one run per output).

    The layer methods only on one layer (a list of layers returns a list,
    which NoiseTunnel takes from no method), without ``grad_kwargs`` (their
    meaning for K batched products is not Captum's to define) and not on a
    DataParallel model (``device_ids``: Captum gathers or scatters the layer
    over the devices; unmeasured here, no GPU).

    Examples
    --------
    >>> from captum.attr import LayerGradientXActivation
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    >>> batches_outputs(LayerGradientXActivation(model, model[0]), {"attribute_to_layer_input": True})
    True
    >>> batches_outputs(LayerGradientXActivation(model, model[0]), {"grad_kwargs": {"retain_graph": True}})
    False
    """
    if type(method) not in BATCHED_OUTPUT_METHODS:
        return False
    if isinstance(method, _BATCHED_LAYER_METHODS):
        scattered = bool(method.device_ids or getattr(method.forward_func, "device_ids", None))
        return isinstance(method.layer, torch.nn.Module) and not (kwargs or {}).get("grad_kwargs") and not scattered
    return getattr(method, "gradient_func", None) is compute_gradients


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

"""Everything that knows Captum's internals or its method classes, in one place.

noisegrad calls wrapped methods through their public ``attribute``; what it
needs beyond that — how many forward rows a method makes per input row,
which methods sample baselines or split their own forward, Captum's private
forward and layer helpers the joint estimator reuses, and its default
gradient function — is read here, and ``tests/test_captum_adapter.py``
checks every assumption against the installed Captum.
"""

import copy
import inspect
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from captum._utils.common import (
    _expand_additional_forward_args,
    _format_additional_forward_args,
    _format_inputs,
    _select_targets,
)
from captum._utils.gradient import _forward_layer_eval, apply_gradient_requirements, compute_gradients
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
    "format_input_baseline",
    "validate_path_input",
    "tensorize_baseline",
    "expand_additional_forward_args",
    "approximation_parameters",
    "batches_outputs",
    "output_gradients",
    "selected_outputs",
    "output_vjps",
    "stacked_vjps",
    "layer_values_and_output",
    "own_layer_forward",
    "batched_vjps",
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
#: once per step; and the approximation's step sizes and points, ``approximation_parameters(method)``.
format_input_baseline = _format_input_baseline
validate_path_input = _validate_input
tensorize_baseline = _tensorize_baseline
expand_additional_forward_args = _expand_additional_forward_args


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


#: Whether a forward function takes parameters, by the function (weakly held: an entry goes with its function).
_TAKES_ARGUMENTS: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _takes_arguments(forward_func: Callable[..., Any]) -> bool:
    """Whether ``inspect.signature(forward_func)`` has parameters, looked up once per function (15 µs for a module).

    A bound method is a new object at each attribute access, so it is looked up each time.
    """
    try:
        return _TAKES_ARGUMENTS[forward_func]
    except (KeyError, TypeError):  # not seen yet, or not weakly referable or hashable
        pass
    takes = len(inspect.signature(forward_func).parameters) > 0
    try:
        _TAKES_ARGUMENTS[forward_func] = takes
    except TypeError:
        pass
    return takes


def run_forward(forward_func: Callable[..., Any], inputs: Any, target: Any = None,
                additional_forward_args: Optional[object] = None) -> Any:
    """Captum's ``_run_forward`` (the outputs ``target`` selects from ``forward_func(*inputs, *additional args)``),
    without its signature lookup at every call.

    As Captum's: a forward function without parameters is called without
    arguments, and a ``torch.futures.Future`` output selects its targets
    when it completes.
    """
    if not _takes_arguments(forward_func):
        output = forward_func()
        return output if target is None else _select_targets(output, target)
    extra = _format_additional_forward_args(additional_forward_args)
    output = forward_func(*_format_inputs(inputs), *(extra if extra is not None else ()))
    if isinstance(output, torch.futures.Future):
        return output.then(lambda done: _select_targets(done.value(), target))
    return _select_targets(output, target)


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
        outputs = run_forward(forward_fn, inputs, target_ind, additional_forward_args)
        if outputs[0].numel() != 1:
            raise ValueError(
                f"target is needed: the model returns {outputs[0].numel()} outputs per example (shape "
                f"{tuple(outputs.shape[1:])} each), and a gradient needs one scalar per example; give target=, "
                "outputs=[...] for several outputs at once, or objective= for a score of your own"
            )
        return torch.autograd.grad(outputs.sum(), inputs)


#: Methods whose several outputs (``outputs=``) are one forward and K vector-Jacobian products: Saliency and
#: InputXGradient take them from ``gradient_func`` and apply elementwise steps to them (|·|, × input);
#: IntegratedGradients' path and step sums are noisegrad's (``estimators/_ig_outputs.py``), and so are the layer
#: forms' (``estimators/_layer_outputs.py``).
BATCHED_OUTPUT_METHODS = (Saliency, InputXGradient, IntegratedGradients, LayerGradientXActivation,
                          LayerIntegratedGradients)
#: Of these, the layer methods: batched on one layer, without ``grad_kwargs`` (see :func:`batches_outputs`).
_BATCHED_LAYER_METHODS = (LayerGradientXActivation, LayerIntegratedGradients)


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


def output_gradients(outputs: Tuple[int, ...]) -> Callable[..., Tuple[Tensor, ...]]:
    """A ``gradient_func`` for several outputs at once: one forward, K vector-Jacobian products.

    Each of its gradients is ``(K, rows, ...)``: output ``k``'s gradient of
    the rows the method gives it, which Saliency's ``|·|`` and
    InputXGradient's ``× inputs`` (broadcast over the first dimension) apply
    to as they are.
    """

    def gradient_func(
        forward_fn: Callable[..., Any], inputs: Any, target_ind: Any = None, additional_forward_args: Any = None
    ) -> Tuple[Tensor, ...]:
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        with torch.autograd.set_grad_enabled(True):
            selected = selected_outputs(run_forward(forward_fn, inputs, None, additional_forward_args), outputs)
            return stacked_vjps(selected, inputs)

    return gradient_func


def stacked_vjps(selected: Tensor, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """The gradients of the K columns of ``selected`` w.r.t. each of ``inputs``, ``(K,) + input.shape``, each in memory
    of its own (:func:`output_vjps`, joined)."""
    blocks: List[List[Tensor]] = [[] for _ in inputs]
    for _, parts in output_vjps(selected, inputs):
        for block, part in zip(blocks, parts):
            block.append(part)
    return _own_memory(tuple(block[0] if len(block) == 1 else torch.cat(block) for block in blocks))


def _own_memory(grads: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """``grads``, each copied if it shares memory with an earlier one or is an expanded view (a zero stride).

    Autograd hands the gradient of ``x + y`` to both inputs as one tensor,
    and that of ``x.sum(1)`` as an expanded view: the estimator's statistics
    write into these gradients in place (Saliency with ``abs=False`` returns
    them as they are), which would change another input's gradient or fail.
    """
    owned: List[Tensor] = []
    storages = set()
    for grad in grads:
        storage = grad.untyped_storage().data_ptr()
        if storage in storages or any(stride == 0 and size > 1 for stride, size in zip(grad.stride(), grad.shape)):
            grad = grad.clone(memory_format=torch.contiguous_format)
        storages.add(grad.untyped_storage().data_ptr())
        owned.append(grad)
    return tuple(owned)


def selected_outputs(out: Tensor, outputs: Tuple[int, ...]) -> Tensor:
    """The ``outputs`` columns of a ``(rows, outputs)`` model output, ``(rows, K)``; a ValueError if it has none."""
    if out.dim() != 2:
        raise ValueError(f"outputs= selects columns of a (batch, outputs) model output; the model returns "
                         f"shape {tuple(out.shape)}")
    if max(outputs) >= out.shape[1]:
        raise ValueError(f"outputs={list(outputs)} names column {max(outputs)}, but the model returns "
                         f"{out.shape[1]} outputs per example")
    return out[:, list(outputs)]


def output_vjps(selected: Tensor, inputs: Tuple[Tensor, ...]) -> Iterator[Tuple[slice, Tuple[Tensor, ...]]]:
    """The gradients of each column of ``selected`` w.r.t. ``inputs``, through one graph, a block of columns at a time.

    Yields ``(columns, gradients)``: a slice of the K columns and, per
    input, their gradients ``(len(columns),) + input.shape``. On a CPU one
    column at a time, where K plain backward passes are faster than one
    batched (``is_grads_batched``) product (benchmarks/OUTPUTS.md); elsewhere
    all K at once, falling back to one at a time for operations without a
    batching rule (unmeasured: no GPU here). Never ``.backward()``: no
    parameter's ``.grad`` is touched.
    """
    count = selected.shape[1]
    grads = batched_vjps(selected, inputs) if inputs[0].device.type != "cpu" else None
    if grads is not None:
        yield slice(0, count), grads
        return
    for k in range(count):
        grads = torch.autograd.grad(selected[:, k].sum(), inputs, retain_graph=k < count - 1)
        yield slice(k, k + 1), tuple(g.unsqueeze(0) for g in grads)


def layer_values_and_output(
    method: LayerGradientXActivation, inputs: Tuple[Tensor, ...], extra: Any, to_layer_input: bool,
) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...], Tensor]:
    """One forward with gradients, as Captum's layer gradient methods run it: the layer's tensors and the output.

    Returns ``(roots, values, output)``: the layer's tensors as the graph
    holds them, to differentiate with respect to; the same as Captum's
    ``layer_evals`` (detached and moved to the CPU for a ``memory_efficient``
    method); and the model's whole output. One device only
    (:func:`batches_outputs` leaves DataParallel models to Captum); this
    thread's forward only (:func:`own_layer_forward`).
    """
    with torch.autograd.set_grad_enabled(True):
        roots, output = own_layer_forward(method.forward_func, inputs, method.layer, extra, to_layer_input, True)
    offloads = bool(getattr(method, "_memory_efficient", False))
    return roots, tuple(t.detach().cpu() for t in roots) if offloads else roots, output


def own_layer_forward(
    forward_func: Callable[..., Any], inputs: Tuple[Tensor, ...], layer: torch.nn.Module, extra: Any,
    to_layer_input: bool, in_graph: bool,
) -> Tuple[Tuple[Tensor, ...], Any]:
    """Captum's ``_forward_layer_distributed_eval`` on one device, seeing this thread's calls of ``layer`` only.

    Returns ``(values, output)``: the layer's input or output tensors at its
    last call in this forward, and the model's output. ``in_graph``: the
    tensors as the graph holds them (made to require gradients, the forward
    going on with clones, as Captum's ``forward_hook_with_return``); else
    detached clones. Captum's hook takes every thread's call of a shared
    model's layer: another thread's values for this one's, and its tensors
    made to require gradients.
    """
    owner, saved = threading.get_ident(), []

    def hook(_module: Any, hook_inputs: Any, hook_outputs: Any = None) -> Any:
        if threading.get_ident() != owner:
            return None
        found = hook_inputs if to_layer_input else hook_outputs
        tensors = tuple(found) if isinstance(found, (tuple, list)) else (found,)
        if not in_graph:
            saved[:] = [tuple(t.detach().clone() for t in tensors)]
            return None
        apply_gradient_requirements(tensors, warn=False)
        saved[:] = [tensors]
        clones = [t.clone() for t in tensors]
        return type(found)(clones) if isinstance(found, (tuple, list)) else clones[0]

    handle = layer.register_forward_pre_hook(hook) if to_layer_input else layer.register_forward_hook(hook)
    try:
        output = run_forward(forward_func, inputs, None, extra)
    finally:
        handle.remove()
    if not saved:
        raise AssertionError(f"the forward function did not run the layer {type(layer).__name__}")
    return saved[0], output


def batched_vjps(selected: Tensor, inputs: Tuple[Tensor, ...]) -> Optional[Tuple[Tensor, ...]]:
    """The gradients of all K columns of ``selected`` as one batched product, ``(K,) + input.shape`` each.

    None if an operation of the graph has no batching rule; the graph is kept
    either way.
    """
    count = selected.shape[1]
    eye = torch.eye(count, dtype=selected.dtype, device=selected.device)
    try:
        return torch.autograd.grad(selected, inputs, grad_outputs=eye.unsqueeze(1).expand(
            count, selected.shape[0], count), is_grads_batched=True, retain_graph=True)
    except RuntimeError:
        return None


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

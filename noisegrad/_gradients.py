"""The gradient functions noisegrad hands to Captum's methods, and the forwards behind them.

* :func:`summed_gradients`: Captum's ``compute_gradients`` with one graph
  root for all rows (what :func:`noisegrad._captum.lean` installs);
* :func:`output_gradients`, :func:`output_vjps`, :func:`stacked_vjps`,
  :func:`batched_vjps`: K outputs' gradients from one forward
  (``outputs=``);
* :func:`run_forward`, :func:`own_layer_forward`, :func:`own_layers_forward`,
  :func:`layer_values_and_output`: Captum's forward helpers without their
  per-call signature lookup, and a layer's values seen by this thread only;
* :func:`gradients_at_layers`: Captum's layer-IG gradient function, its
  layer values replaced in this thread's forward only.

What Captum's methods are and do (rows per copy, path methods, which
methods batch several outputs) stays in :mod:`noisegrad._captum`;
``tests/test_captum_adapter.py`` checks both against the installed Captum.
"""

import contextlib
import functools
import inspect
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from captum._utils.common import _format_additional_forward_args, _format_inputs, _select_targets
from captum._utils.gradient import apply_gradient_requirements
from captum.attr import LayerGradientXActivation
from torch import Tensor

__all__ = [
    "run_forward",
    "summed_gradients",
    "output_gradients",
    "stacked_vjps",
    "selected_outputs",
    "output_vjps",
    "batched_vjps",
    "layer_values_and_output",
    "own_layer_forward",
    "own_layers_forward",
    "gradients_at_layers",
    "LayerNotSeen",
]

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
        outputs = _one_per_row(run_forward(forward_fn, inputs, target_ind, additional_forward_args))
        return torch.autograd.grad(outputs.sum(), inputs)


def _one_per_row(outputs: Tensor) -> Tensor:
    """``outputs``, if they hold one scalar per row (what a gradient needs); else a ValueError asking for target=."""
    if outputs[0].numel() != 1:
        raise ValueError(
            f"target is needed: the model returns {outputs[0].numel()} outputs per example (shape "
            f"{tuple(outputs.shape[1:])} each), and a gradient needs one scalar per example; give target=, "
            "outputs=[...] for several outputs at once, or objective= for a score of your own"
        )
    return outputs


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
    values, output = own_layers_forward(forward_func, inputs, [layer], extra, to_layer_input, in_graph)
    return values[0], output


class LayerNotSeen(AssertionError):
    """A layer did not run in the forward, or not in the calling thread."""


def own_layers_forward(
    forward_func: Callable[..., Any], inputs: Tuple[Tensor, ...], layers: List[torch.nn.Module], extra: Any,
    to_layer_input: bool, in_graph: bool, any_thread: bool = False,
) -> Tuple[List[Tuple[Tensor, ...]], Any]:
    """:func:`own_layer_forward` for several layers in one forward: each layer's values, and the model's output.

    ``any_thread``: take the layers' calls in every thread, as Captum does (a model that runs a layer in threads of
    its own); :class:`LayerNotSeen` tells a caller to try that.
    """
    owner = None if any_thread else threading.get_ident()
    saved: List[List[Tuple[Tensor, ...]]] = [[] for _ in layers]

    def hook(index: int, _module: Any, hook_inputs: Any, hook_outputs: Any = None) -> Any:
        if owner is not None and threading.get_ident() != owner:
            return None
        found = hook_inputs if to_layer_input else hook_outputs
        tensors = tuple(found) if isinstance(found, (tuple, list)) else (found,)
        if not in_graph:
            saved[index][:] = [tuple(t.detach().clone() for t in tensors)]
            return None
        apply_gradient_requirements(tensors, warn=False)
        saved[index][:] = [tensors]
        clones = [t.clone() for t in tensors]
        return type(found)(clones) if isinstance(found, (tuple, list)) else clones[0]

    with _hooked(layers, to_layer_input, hook):
        output = run_forward(forward_func, inputs, None, extra)
    for layer, values in zip(layers, saved):
        if not values:
            where = "" if any_thread else " in the calling thread"
            raise LayerNotSeen(f"the forward function did not run the layer {type(layer).__name__}{where}")
    return [values[0] for values in saved], output


def gradients_at_layers(
    forward_func: Callable[..., Any], layers: List[torch.nn.Module], points: Tuple[Tensor, ...], counts: List[int],
    to_layer_input: bool, target: Any, model_args: Any, grad_kwargs: Optional[Dict[str, Any]] = None,
    any_thread: bool = False,
) -> Tuple[Tensor, ...]:
    """The gradients of the selected outputs w.r.t. ``points``, which stand in for the layers' values.

    Captum's layer-IG gradient function on one device, in this thread's
    forward only: ``points`` (flattened over the layers, ``counts[i]`` tensors
    for layer ``i``) replace each layer's input or output where this thread
    runs it, while another thread running the same model gets the layer's
    own values (``any_thread``: in every thread, as Captum's; :class:`LayerNotSeen`
    if a layer did not run where it was hooked). One graph root for all rows,
    as :func:`summed_gradients`.
    """
    owner = None if any_thread else threading.get_ident()
    starts = [sum(counts[:i]) for i in range(len(counts))]
    replaced = set()

    def replace(index: int, _module: Any, hook_inputs: Any, hook_outputs: Any = None) -> Any:
        if owner is not None and threading.get_ident() != owner:
            return None
        replaced.add(index)
        own = points[starts[index] : starts[index] + counts[index]]
        return tuple(own) if isinstance(hook_inputs if to_layer_input else hook_outputs, tuple) else own[0]

    with torch.autograd.set_grad_enabled(True):  # the caller may be under no_grad (the path density's pilot)
        with _hooked(layers, to_layer_input, replace):
            outputs = _one_per_row(run_forward(forward_func, (), target, model_args))
        for index, layer in enumerate(layers):
            if index not in replaced:
                where = "" if any_thread else " in the calling thread"
                raise LayerNotSeen(f"the forward function did not run the layer {type(layer).__name__}{where}")
        return torch.autograd.grad(outputs.sum(), points, **(grad_kwargs or {}))


@contextlib.contextmanager
def _hooked(layers: List[torch.nn.Module], to_layer_input: bool, hook: Callable[..., Any]) -> Iterator[None]:
    """``hook(index, module, inputs[, outputs])`` on each layer's inputs (a pre-hook) or outputs, for the body."""
    handles = []
    try:
        for index, layer in enumerate(layers):
            bound = functools.partial(hook, index)
            handles.append(layer.register_forward_pre_hook(bound) if to_layer_input
                           else layer.register_forward_hook(bound))
        yield
    finally:
        for handle in handles:
            handle.remove()


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

"""Choosing ``nt_samples_batch_size``: rows per forward, memory per row, and the "auto" rule.

A chunk of ``k`` noisy copies of a batch of ``B`` examples makes the wrapped
method run forwards of ``B × k × e`` rows, where ``e`` is the method's own
expansion (IntegratedGradients' ``n_steps``, GradientShap's ``n_samples``, the
number of baselines of DeepLiftShap, FeatureAblation's
``perturbations_per_eval``). Everything here counts those real rows.
"""

import warnings
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from captum.attr import (
    Attribution,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    IntegratedGradients,
    InternalInfluence,
    LayerConductance,
    LayerDeepLiftShap,
    LayerGradientShap,
    LayerIntegratedGradients,
    NeuronConductance,
    NeuronDeepLiftShap,
    NeuronGradientShap,
    NeuronIntegratedGradients,
)
from torch import Tensor, nn

__all__ = [
    "rows_per_copy",
    "is_path_method",
    "path_points",
    "takes_internal_batch_size",
    "takes_baseline_distribution",
    "chunk_for_rows",
    "activation_bytes_per_row",
    "choose_chunk",
    "halved_chunk",
    "ChunkOutOfMemory",
    "AUTO_CPU_BYTES",
]

# Path methods: one forward row per step; they can split their own forward (internal_batch_size).
_PATH_METHODS = (
    IntegratedGradients, LayerIntegratedGradients, LayerConductance, InternalInfluence,
    NeuronIntegratedGradients, NeuronConductance,
)
_SAMPLES_METHODS = (GradientShap, LayerGradientShap, NeuronGradientShap)
_BASELINE_ROWS_METHODS = (DeepLiftShap, LayerDeepLiftShap, NeuronDeepLiftShap)

#: On a CPU the fastest chunk is the one whose forward keeps about this many
#: bytes of activations: larger allocations are page-faulted afresh on every
#: call, smaller chunks pay the per-call overhead (measured in
#: benchmarks/CHUNKS.md).
AUTO_CPU_BYTES = 32 * 2**20


def rows_per_copy(method: Attribution, kwargs: Dict[str, Any]) -> int:
    """Forward rows the wrapped method makes of one noisy copy of one example.

    Examples
    --------
    >>> from captum.attr import IntegratedGradients, Saliency
    >>> model = torch.nn.Linear(3, 2)
    >>> rows_per_copy(IntegratedGradients(model), {"n_steps": 20}), rows_per_copy(Saliency(model), {})
    (20, 1)
    """
    if isinstance(method, _PATH_METHODS):
        return int(kwargs.get("n_steps", 50))
    if isinstance(method, _SAMPLES_METHODS):
        return int(kwargs.get("n_samples", 5))
    if isinstance(method, _BASELINE_ROWS_METHODS):
        baselines = kwargs.get("baselines")
        first = baselines[0] if isinstance(baselines, tuple) else baselines
        return int(first.shape[0]) if isinstance(first, Tensor) and first.dim() > 0 else 1
    if isinstance(method, FeatureAblation):  # and Occlusion
        return int(kwargs.get("perturbations_per_eval", 1))
    return 1


def is_path_method(method: Attribution) -> bool:
    """Whether the method integrates gradients along a path, taking ``n_steps`` and an approximation ``method``."""
    return isinstance(method, _PATH_METHODS)


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
    return isinstance(method, _SAMPLES_METHODS + _BASELINE_ROWS_METHODS)


def takes_internal_batch_size(method: Attribution) -> bool:
    """Whether the method can split its own forward into ``internal_batch_size`` rows."""
    return isinstance(method, _PATH_METHODS)


def chunk_for_rows(max_rows: int, batch: int, per_copy: int, nt_samples: int, splits_itself: bool) -> Tuple[int, bool]:
    """The largest chunk whose forwards stay within ``max_rows``; and whether the method must split itself.

    A method that splits its own forward (``splits_itself``) only needs the
    chunk's copies, ``batch × k``, to fit; it is then given
    ``internal_batch_size=max_rows``. Raises ``ValueError`` if not even one
    copy per example fits.

    Examples
    --------
    >>> chunk_for_rows(256, batch=8, per_copy=1, nt_samples=64, splits_itself=False)
    (32, False)
    >>> chunk_for_rows(256, batch=8, per_copy=50, nt_samples=64, splits_itself=True)
    (32, True)
    """
    rows = batch * per_copy
    if rows <= max_rows:
        return max(1, min(nt_samples, max_rows // rows)), False
    if splits_itself and batch <= max_rows:
        return max(1, min(nt_samples, max_rows // batch)), True
    raise ValueError(
        f"max_batch_rows={max_rows} is smaller than one noisy copy of the batch: {batch} examples × "
        f"{per_copy} rows each = {rows} rows; raise the budget or attribute the batch in parts"
    )


def activation_bytes_per_row(
    forward_func: Callable[..., Any], inputs: Tuple[Tensor, ...], additional_forward_args: Any
) -> Optional[int]:
    """Bytes of module outputs one input row produces, from a forward of the first example.

    Counts the outputs of every leaf ``nn.Module`` (what autograd keeps for the
    backward pass, roughly); ``None`` when ``forward_func`` is not a module or a
    module's method, or is TorchScript, so nothing can be hooked.
    """
    owner = getattr(forward_func, "__self__", forward_func)
    if not isinstance(owner, nn.Module) or isinstance(owner, torch.jit.ScriptModule):
        return None  # nothing to hook (TorchScript modules take no Python hooks)
    total = [0]

    def count(_module: nn.Module, _args: Any, output: Any) -> None:
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, Tensor):
                total[0] += t.numel() * t.element_size()

    leaves = [m for m in owner.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    extra = additional_forward_args if isinstance(additional_forward_args, tuple) else (
        () if additional_forward_args is None else (additional_forward_args,)
    )
    extra = tuple(a[:1] if isinstance(a, Tensor) and a.dim() > 0 else a for a in extra)
    try:
        with torch.no_grad():
            forward_func(*(x[:1] for x in inputs), *extra)
    finally:
        for handle in handles:
            handle.remove()
    return total[0] + sum(x[:1].numel() * x.element_size() for x in inputs)


def choose_chunk(
    method: Attribution,
    forward_func: Callable[..., Any],
    inputs: Tuple[Tensor, ...],
    nt_samples: int,
    batch_size: Union[int, str, None],
    max_rows: Optional[int],
    memory_budget: Optional[int],
    kwargs: Dict[str, Any],
) -> Tuple[int, Dict[str, Any]]:
    """Copies per chunk, and the kwargs (with ``internal_batch_size`` if the method must split itself)."""
    if isinstance(batch_size, int):
        return min(batch_size, nt_samples), kwargs
    if batch_size is None and max_rows is None and memory_budget is None:
        return nt_samples, kwargs
    batch = inputs[0].shape[0]
    if batch_size == "auto" or memory_budget is not None:
        per_row = activation_bytes_per_row(forward_func, inputs, kwargs.get("additional_forward_args"))
        per_row = per_row if per_row is not None else 4 * sum(x[:1].numel() * x.element_size() for x in inputs)
        budget = memory_budget if memory_budget is not None else _auto_budget(inputs[0].device)
        rows = max(1, budget // per_row)
        max_rows = rows if max_rows is None else min(rows, max_rows)
    internal = kwargs.get("internal_batch_size")
    if internal is not None:  # the user's own split caps the method's forwards already
        max_rows = min(max_rows, internal)
    splits_itself = takes_internal_batch_size(method)
    chunk, must_split = chunk_for_rows(max_rows, batch, rows_per_copy(method, kwargs), nt_samples, splits_itself)
    if must_split and internal is None:
        kwargs = dict(kwargs, internal_batch_size=max_rows)
    return chunk, kwargs


def _auto_budget(device: torch.device) -> int:
    """Activation bytes per forward for nt_samples_batch_size="auto"."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 2
    return AUTO_CPU_BYTES


class ChunkOutOfMemory(Exception):
    """The wrapped method ran out of memory on a chunk before anything of it was merged."""


def halved_chunk(chunk: int, failed: int, device: torch.device, error: ChunkOutOfMemory) -> int:
    """The chunk size to retry with after ``failed`` copies per example ran out of memory."""
    if failed <= 1:
        raise error.__cause__
    if device.type == "cuda":
        torch.cuda.empty_cache()
    smaller = max(1, failed // 2)
    warnings.warn(
        f"out of memory with {failed} noisy copies per example per chunk; retrying with "
        f"nt_samples_batch_size={smaller} (the result does not depend on it for a fixed seed)",
        RuntimeWarning,
        stacklevel=3,
    )
    return smaller

"""Captum's estimator: the wrapped method attributes every noisy copy, and each copy's attribution is a sample."""

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from captum.attr import (
    Attribution,
    GradientAttribution,
    IntegratedGradients,
    LayerGradientXActivation,
    LayerIntegratedGradients,
)
from torch import Tensor

from noisegrad import _captum, _gradients
from noisegrad._call import call_wrapped
from noisegrad._state import seed_global_rngs
from noisegrad.estimators._ig_outputs import integrated_gradients_of_outputs, integrated_gradients_of_target
from noisegrad.estimators._layer_outputs import (
    layer_gradient_x_activation_of_outputs,
    layer_integrated_gradients_of_outputs,
)
from noisegrad.expand import ChunkKwargs, select_examples
from noisegrad.objective import Objective, with_objective
from noisegrad.perturb.inputs import InputNoise
from noisegrad.stats.tally import Chunk

__all__ = ["NestedEstimator"]


class NestedEstimator:
    """The wrapped method on a chunk of noisy copies; its attribution of copy ``k`` is sample ``k``.

    Parameters
    ----------
    method : captum.attr.Attribution
    perturbation : InputNoise
        Gives the chunk's rows.
    kwargs : dict
        The wrapped method's arguments, expanded per copy as Captum expands them.
    is_inputs_tuple : bool
        Whether the method is called with a tuple.
    return_delta : bool
        Whether the method returns deltas (``return_convergence_delta=True``).
    baseline_seed : int, optional
        ``draw_baseline_from_distrib``: the call's base seed, which keys the
        baseline row drawn per copy (with the sample and the example's id).
    sample_seed : callable, optional
        For methods that draw from the global RNGs themselves (GradientShap)
        under a seed: the global seed of sample ``k``. Each sample is then
        attributed in a call of its own with the global RNGs seeded for it,
        so what the method draws follows the sample, not the chunk, and the
        result does not depend on the chunk size (nor on out-of-memory
        halving).
    outputs : tuple of int, optional
        Several outputs at once: every copy's attribution gets a last
        dimension K. Only for the methods whose K outputs share one forward
        (:func:`noisegrad._captum.batches_outputs`).
    times_input : {None, "clean", "noisy"}
        Each copy's attribution times the clean input or its own noisy
        input, before it is a sample (so every statistic, standard error and
        stopping rule sees the product).
    objective : callable, optional
        ``g(model, inputs, targets)``: the method attributes its scores
        (:func:`noisegrad.objective.with_objective`).
    """

    splits_itself: int

    def __init__(
        self,
        method: Attribution,
        perturbation: InputNoise,
        kwargs: Dict[str, Any],
        is_inputs_tuple: bool,
        return_delta: bool,
        baseline_seed: Optional[int] = None,
        sample_seed: Optional[Callable[[int], int]] = None,
        outputs: Optional[Tuple[int, ...]] = None,
        times_input: Optional[str] = None,
        objective: Optional[Objective] = None,
    ) -> None:
        if return_delta:
            kwargs = dict(kwargs, return_convergence_delta=True)
        self.method = perturbation.prepare(_captum.lean(method))
        if objective is not None:  # around what the perturbation prepared (a private model copy, a watched forward)
            self.method, kwargs = with_objective(self.method, objective, kwargs, perturbation.inputs,
                                                 is_inputs_tuple)
        self.is_gradient_method = isinstance(method, GradientAttribution)
        self.perturbation, self.is_inputs_tuple, self.return_delta = perturbation, is_inputs_tuple, return_delta
        self.kwargs, self.baseline_seed, self.sample_seed = kwargs, baseline_seed, sample_seed
        # GradientShap and DeepLiftShap sample or average over their baselines: never one row per example
        self.baseline_distribution = _captum.takes_baseline_distribution(method) or baseline_seed is not None
        self.chunk_kwargs = self._chunk_kwargs()
        self.outputs, self.times_input = outputs, times_input
        # outputs= (the tunnel runs other methods once per output): one forward per chunk, K gradients, the
        # attributions (K, rows, ...); IntegratedGradients' path and its step sums, and the layer forms', are built for
        # it here; a plain IntegratedGradients' path is built here for its target too
        self.own_attribute: Optional[Callable[..., Any]] = None  # called instead of the method's attribute
        if outputs is not None and isinstance(method, IntegratedGradients):
            self.own_attribute = integrated_gradients_of_outputs(self.method, outputs)
        elif outputs is not None and isinstance(method, LayerGradientXActivation):
            self.own_attribute = layer_gradient_x_activation_of_outputs(self.method, outputs)
        elif outputs is not None and isinstance(method, LayerIntegratedGradients):
            self.own_attribute = layer_integrated_gradients_of_outputs(self.method, outputs)
        elif outputs is not None:
            self.method.gradient_func = _gradients.output_gradients(outputs)
        elif objective is None and _captum.builds_ig_path(method):  # the same numbers without Captum's step passes
            self.own_attribute = integrated_gradients_of_target(self.method)
        # outputs=: a forward holds one block of rows (the K gradients are taken from it), so max_batch_rows
        # counts one block; the K gradients it keeps count in the bytes of a row (memory_budget)
        self.rows_per_copy = _captum.rows_per_copy(method, kwargs)
        self.gradients_per_row = len(outputs) if outputs else 1
        if hasattr(perturbation, "rows_per_copy"):  # weight noise: how many rows per draw a forward would hold
            perturbation.rows_per_copy = self.rows_per_copy
        self.splits_itself = _captum.rows_per_split_copy(method)
        # attributions that are ours to centre in place: what known methods made of gradients, those of several
        # outputs (views of what the method made of the gradients noisegrad took), products with the inputs
        self.owns_attributions = (_captum.returns_new_tensors(method, kwargs) or outputs is not None
                                  or times_input is not None)

    def set_internal_batch_size(self, rows: int) -> None:
        """Let the method split its own forwards into ``rows`` rows (path methods)."""
        self.kwargs = dict(self.kwargs, internal_batch_size=rows)
        self.chunk_kwargs = self._chunk_kwargs()

    def _chunk_kwargs(self) -> ChunkKwargs:
        draw = None if self.baseline_seed is None else (self.baseline_seed, self.perturbation.example_ids)
        return ChunkKwargs(self.kwargs, self.perturbation.inputs, draw, self.baseline_distribution)

    def chunk(self, sample_ids: range) -> Chunk:
        if self.sample_seed is None:
            # a perturbation may need several calls for one chunk (weight noise: one per weight draw)
            calls = getattr(self.perturbation, "calls", lambda ids: (ids,))(sample_ids)
            parts = [self._attribute(ids) for ids in calls]
        else:
            device = self.perturbation.inputs[0].device
            parts = []
            for sample in sample_ids:
                seed_global_rngs(self.sample_seed(sample), device)
                parts.append(self._attribute(range(sample, sample + 1)))
        if len(parts) == 1:
            return parts[0]
        deltas = torch.cat([p.deltas for p in parts]) if self.return_delta else None
        attributions = tuple(torch.cat(tensors) for tensors in zip(*(p.attributions for p in parts)))
        return Chunk(attributions, deltas, (True,) * len(attributions))

    def _attribute(self, sample_ids: range) -> Chunk:
        rows = self.perturbation.rows(sample_ids)
        noisy = rows
        n, batch = len(sample_ids), rows[0].shape[0] // len(sample_ids)
        if self.is_gradient_method:
            rows = tuple(x.requires_grad_() if x.is_floating_point() else x for x in rows)
        kwargs = self.chunk_kwargs.for_chunk(sample_ids)
        with self.perturbation.applied():
            out = call_wrapped(self.method, rows if self.is_inputs_tuple else rows[0], kwargs, self.own_attribute)
        deltas = None
        if self.return_delta:
            out, delta = out
            deltas = torch.as_tensor(delta).detach()
        attributions = out if isinstance(out, tuple) else (out,)
        self.is_attr_tuple = isinstance(out, tuple)
        if self.outputs is None:
            by_sample = tuple(_by_sample(a, batch, n) for a in attributions)
            deltas = None if deltas is None else deltas.reshape(n, batch, -1)
        else:  # (K, rows, ...) → (n, batch, ..., K)
            count = len(self.outputs)
            by_sample = tuple(_outputs_last(a, count, batch, n) for a in attributions)
            deltas = None if deltas is None else _outputs_last(deltas, count, batch, n).unsqueeze(-1)
        if self.times_input is not None:
            by_sample = self._times_input(by_sample, noisy, n, batch)
        return Chunk(by_sample, deltas, (self.owns_attributions,) * len(by_sample))

    def _times_input(self, by_sample: Tuple[Tensor, ...], noisy: Tuple[Tensor, ...], n: int, batch: int,
                     ) -> Tuple[Tensor, ...]:
        """Each copy's attribution ``(n, batch, ...[, K])`` times the clean inputs or its noisy rows."""
        if len(by_sample) != len(noisy):
            raise ValueError(f"times_input multiplies one attribution per input tensor; the method returned "
                             f"{len(by_sample)} for {len(noisy)} inputs")
        out = []
        for a, clean, rows in zip(by_sample, self.perturbation.inputs, noisy):
            factor = clean.unsqueeze(0) if self.times_input == "clean" else rows.detach().reshape(
                (n, batch) + tuple(rows.shape[1:]))
            shape = a.shape[1:a.dim() - 1] if self.outputs is not None else a.shape[1:]
            if tuple(shape) != tuple(clean.shape):
                raise ValueError(f"times_input needs attributions shaped like the inputs, got {tuple(shape)} for "
                                 f"inputs of shape {tuple(clean.shape)}")
            if self.outputs is not None:
                factor = factor.unsqueeze(-1)
            out.append(a * factor)
        return tuple(out)

    def select(self, keep: Tensor) -> None:
        running = self.perturbation.inputs[0].shape[0]
        self.perturbation.select(keep)
        self.kwargs = select_examples(self.kwargs, running, keep, self.baseline_distribution)
        self.chunk_kwargs = self._chunk_kwargs()

    def format(self, tensors: Tuple[Tensor, ...]) -> Any:
        """The user's form: a tuple if the method returned one."""
        return tensors if self.is_attr_tuple else tensors[0]


def _outputs_last(attribution: Tensor, count: int, batch: int, n: int) -> Tensor:
    """A chunk's ``(K, rows, ...)`` attribution of K outputs as ``(n, batch, ..., K)``: a view, without a copy.

    Its memory stays output-major; the statistics read it in that order
    (every operation on it is elementwise or a reduction over samples).
    """
    if attribution.dim() < 2 or tuple(attribution.shape[:2]) != (count, batch * n):
        raise ValueError(
            f"the wrapped method returned an attribution of shape {tuple(attribution.shape)} for {count} outputs; "
            f"NoiseTunnel needs dimensions 0 and 1 to index the {count} outputs and the {n} × {batch} noisy copies"
        )
    return attribution.detach().reshape((count, n, batch) + tuple(attribution.shape[2:])).movedim(0, -1)


def _by_sample(attribution: Tensor, batch: int, n: int) -> Tensor:
    """View the (sample-major) rows of a chunk's attribution as ``(sample, example, ...)``."""
    if attribution.dim() == 0 or attribution.shape[0] != batch * n:
        raise ValueError(
            f"the wrapped method returned an attribution of shape {tuple(attribution.shape)}; "
            f"NoiseTunnel needs dimension 0 to index the {n} × {batch} noisy copies"
        )
    return attribution.detach().reshape((n, batch) + tuple(attribution.shape[1:]))

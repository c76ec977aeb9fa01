"""SmoothGrad × Integrated Gradients as one integral: sample the noise and the path point jointly.

``NoiseTunnel(IntegratedGradients)`` estimates E_ε[IG(x + ε)] with a nested
loop, ``nt_samples`` noise draws × ``n_steps`` path points. The same quantity
is one expectation over (ε, α):

    E_ε E_α[(x + ε − b) ⊙ ∇f(b + α (x + ε − b))],  ε ~ N(0, σ²), α ~ U(0, 1),

so each sample needs one gradient, at one random point of its own noisy path.
"""

import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from torch import Tensor

from noisegrad import _layout
from noisegrad._call import chunk_failure_on_oom
from noisegrad._captum import (
    format_additional_forward_args,
    forward_layer_eval,
    layer_gradient_func,
)
from noisegrad._gradients import LayerNotSeen, gradients_at_layers, own_layers_forward, run_forward, summed_gradients
from noisegrad.estimators.path_density import PathDensity, fit_path_density
from noisegrad.expand import ChunkKwargs
from noisegrad.perturb.inputs import InputNoise, StdevsType
from noisegrad.sampling.samplers import SAMPLERS
from noisegrad.sampling.keyed import row_keys, uniform
from noisegrad.sampling.seeding import SampleSeeds
from noisegrad.sampling.streams import Purpose, stream
from noisegrad.stats.tally import Chunk

__all__ = ["joint_integrated_gradients", "JointEstimator"]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]


def joint_integrated_gradients(
    method: Union[IntegratedGradients, LayerIntegratedGradients],
    inputs: TensorOrTuple,
    nt_samples: int = 5,
    nt_samples_batch_size: Optional[int] = None,
    stdevs: StdevsType = 1.0,
    *,
    nt_type: str = "smoothgrad",
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    example_ids: Union[Sequence[int], Tensor, None] = None,
    stratify: bool = True,
    sampler: str = "iid",
    path_density: str = "uniform",
    return_convergence_delta: bool = False,
    return_stderr: bool = False,
    **kwargs: Any,
) -> Any:
    """SmoothGrad of (layer) integrated gradients from ``nt_samples`` joint (noise, path point) samples.

    Sample ``k`` of an example draws noise ε_k and a path fraction α_k and
    costs **one** gradient: its contribution is
    ``(x + ε_k − b) ⊙ ∇f(b + α_k (x + ε_k − b))`` (without the ``(x + ε_k − b)``
    factor if the method has ``multiply_by_inputs=False``), and the estimate
    is the mean of the contributions. It is unbiased for what
    ``NoiseTunnel(IntegratedGradients)`` converges to as ``n_steps`` grows, at
    ``nt_samples`` gradients per example instead of ``nt_samples × n_steps``.
    For ``LayerIntegratedGradients`` the path runs in the layer's space, from
    the layer's value at the baseline to its value at ``x + ε_k``, as Captum's
    layer IG does for each noisy copy.

    Parameters
    ----------
    method : IntegratedGradients or LayerIntegratedGradients
        The wrapped Captum method (its forward function, layer and
        ``multiply_by_inputs`` are used; its gradient function is not).
    inputs : Tensor or tuple of Tensor
    nt_samples : int
        Joint samples per example = gradient evaluations per example (plus
        the pilot's with ``path_density="adaptive"``).
        With ``sampler="antithetic"`` it must be even.
    nt_samples_batch_size : int, optional
        Samples per example computed together (the forward batch is
        ``batch × nt_samples_batch_size`` rows); ``None``: all at once. The
        result does not depend on it beyond float rounding.
    stdevs : float, tensor, noisegrad.relative(...), or a tuple of these
        As for ``NoiseTunnel.attribute``.
    nt_type : {"smoothgrad"}
        SmoothGrad² and VarGrad are defined on per-noise-draw IG values,
        which a joint sample does not give; they raise ``ValueError``.
    seed, generator
        As for ``NoiseTunnel.attribute``: the draws of sample ``k`` depend only
        on the seed and ``k`` (and on ``nt_samples``, which sets the strata).
        With ``stratify=False, sampler="iid"``, sample ``k``'s noise is the
        noise ``NoiseTunnel`` draws for sample ``k`` with the same seed.
    example_ids : sequence of int or integer tensor, optional
        As for ``NoiseTunnel.attribute``: an example's noise and path points
        are keyed by its id (default: its position), not by its batch.
    stratify : bool
        Stratify the path fraction: sample ``k`` takes α in the ``k``-th of
        ``nt_samples`` equal intervals of [0, 1), uniformly within it
        (α_k = (k + U_k) / nt_samples). As every ε_k is independent of ``k``,
        this fixed assignment is unbiased.
    sampler : {"iid", "antithetic", "qmc", "lhs"}
        The noise, as :class:`noisegrad.sampling.samplers.NoiseSampler` draws it (QMC
        and LHS as one design). With ``"antithetic"`` samples ``2j`` and
        ``2j + 1`` use noise ε and −ε and the same α (with ``stratify``, the
        ``j``-th of ``nt_samples / 2`` strata), which cancels every odd order
        of the noise in the pair's mean. Standard errors are available for
        ``"iid"`` and ``"antithetic"``.
    path_density : {"uniform", "adaptive"}
        How α is distributed on the path. ``"adaptive"`` first runs a pilot
        of 28 gradients per example, on top of ``nt_samples`` (two in each of
        14 bins, log-spaced below α = 1/16), and draws α where the
        contributions are large,
        weighting each sample by the inverse of its density, which keeps the
        estimate unbiased; stratification then applies to the density's
        quantiles. Worth it where IG's mass sits in a sliver of the path,
        typically a network that normalises its input (a LayerNorm first)
        explained from a zero baseline: on bench_tunnel's transformer it
        needed a median of 1/110 of ``"uniform"``'s gradients for a 10 %
        error, the pilot included; on its CNN as many; on its ResNet and MLP,
        which need 30–200 gradients, the pilot made it cost 1.3–1.9 times as
        many (benchmarks/PATH_DENSITY.md). No weight exceeds 4, so a sample's
        mean square is at most 4 times its uniform one, however wrong the
        pilot.
    return_convergence_delta : bool
        Also return, per example, the completeness gap of the smoothed
        estimate: the mean over samples of
        ``Σ attribution_k − (f(x + ε_k) − f(b))``. It costs one forward pass
        (no backward) per sample, plus one per example for ``f(b)``.
    return_stderr : bool
        Return a :class:`noisegrad.SmoothedAttribution` with standard errors instead of a
        tensor or tuple. Standard errors come from independent units: single
        samples, or the means of antithetic pairs; with ``stratify``,
        neighbouring strata are paired and the squared differences of their
        units are used (the collapsed-strata estimator, slightly conservative).
        Needs 2 independent units: ``nt_samples >= 2``, or ``>= 4`` with
        ``sampler="antithetic"``.
    **kwargs
        The method's ``baselines`` (None, a number, a tensor per example, a
        single-row tensor, or a tuple of these), ``target``,
        ``additional_forward_args``; for the layer method also
        ``attribute_to_layer_input`` and ``grad_kwargs``. ``n_steps``,
        ``method`` and ``internal_batch_size`` belong to the nested estimator
        and are rejected.

    Returns
    -------
    attributions, (attributions, delta), or SmoothedAttribution
        Attributions shaped like the wrapped method's, in the gradients' dtype.

    Examples
    --------
    >>> import torch
    >>> from captum.attr import IntegratedGradients
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> x = torch.rand(2, 4)
    >>> attr, delta = joint_integrated_gradients(
    ...     IntegratedGradients(model), x, nt_samples=32, nt_samples_batch_size=8, stdevs=0.1,
    ...     target=1, return_convergence_delta=True, seed=0)
    >>> attr.shape, delta.shape
    (torch.Size([2, 4]), torch.Size([2]))

    References
    ----------
    M. Sundararajan, A. Taly, Q. Yan (2017), "Axiomatic attribution for deep
    networks", arXiv:1703.01365. D. Smilkov et al. (2017), "SmoothGrad:
    removing noise by adding noise", arXiv:1706.03825. Captum's GradientShap
    samples (noise, α) pairs the same way for baselines.
    """
    from noisegrad._request import check_request
    from noisegrad.tunnel import NoiseTunnel  # the estimator plugs into the tunnel's loop

    if "return_convergence_delta" in kwargs:
        raise TypeError("pass return_convergence_delta as joint_integrated_gradients' own argument")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    request = check_request(
        method, inputs, nt_type, nt_samples, nt_samples_batch_size, stdevs, draw_baseline_from_distrib=False,
        max_batch_rows=None, memory_budget=None, joint=True if sampler == "iid" else sampler, sampler="iid",
        path_density=path_density,
        return_stderr=return_stderr, tol=None, max_samples=None, seed=seed, generator=generator,
        delta_reduction="mean", kwargs=dict(kwargs, return_convergence_delta=return_convergence_delta),
        stratify=stratify, example_ids=example_ids,
    )
    return NoiseTunnel(method)._run(request)


class JointEstimator:
    """SmoothGrad × (layer) IG from joint (noise, path point) samples: one gradient per sample.

    Sample ``k`` of an example draws noise ε_k (from ``perturbation``) and a
    path fraction α_k (stratified: in the ``k``-th of ``nt_samples`` equal
    intervals, or the pair's for antithetic noise) and contributes
    ``(x + ε_k − b) ⊙ ∇f(b + α_k (x + ε_k − b))``; with ``return_delta``
    also ``Σ contribution − (f(x + ε_k) − f(b))``, the completeness gap.
    With ``adaptive``, α_k is the fitted density's quantile of that
    (stratified) uniform number, and the contribution is weighted by
    ``1 / density(α_k)``; the pilot runs in the first chunk, at its size.
    """

    rows_per_copy = 1
    splits_itself = False

    def __init__(
        self,
        method: Union[IntegratedGradients, LayerIntegratedGradients],
        perturbation: InputNoise,
        kwargs: Dict[str, Any],
        is_inputs_tuple: bool,
        return_delta: bool,
        nt_samples: int,
        seeds: SampleSeeds,
        stratify: bool,
        adaptive: bool = False,
    ) -> None:
        self.method, self.perturbation, self.is_inputs_tuple = method, perturbation, is_inputs_tuple
        self.nt_samples, self.seeds, self.stratify, self.adaptive = nt_samples, seeds, stratify, adaptive
        self.density: Optional[PathDensity] = None
        self.antithetic = perturbation.sampler.kind == "antithetic"
        kwargs = dict(kwargs)
        layer_options = {k: kwargs.pop(k) for k in ("attribute_to_layer_input", "grad_kwargs") if k in kwargs}
        baselines = _full_baselines(kwargs.pop("baselines", None), perturbation.inputs)
        self.kwargs = kwargs
        self.chunk_kwargs = ChunkKwargs(kwargs, perturbation.inputs)
        if isinstance(method, LayerIntegratedGradients):
            self.path: Any = _LayerPath(method, baselines, kwargs, **layer_options)
        else:
            self.path = _InputPath(method, baselines)
        self.base_output = _outputs(method, baselines, kwargs) if return_delta else None

    def chunk(self, sample_ids: range) -> Chunk:
        n, chunk_kwargs = len(sample_ids), self.chunk_kwargs.for_chunk(sample_ids)
        if self.adaptive and self.density is None:
            # at the first chunk's size, which the plan fits in memory, before that chunk's rows exist
            with chunk_failure_on_oom():
                self.density = self._pilot(n)
        noisy = self.perturbation.rows(sample_ids)
        batch = noisy[0].shape[0] // n
        alphas = _path_fractions(
            sample_ids, self.nt_samples, self.perturbation.example_ids, self.seeds, self.stratify, self.antithetic
        )
        with chunk_failure_on_oom():
            if self.density is not None:
                alphas, weights = self.density.transform(alphas)
            contributions = self.path.contributions(noisy, alphas, chunk_kwargs, n, batch)
            if self.density is not None:
                contributions = [c * weights.to(c.dtype).reshape((n, batch) + (1,) * (c.dim() - 2))
                                 for c in contributions]
            deltas = None
            if self.base_output is not None:
                totals = sum(c.reshape(n, batch, -1).sum(2, dtype=torch.float64) for c in contributions)
                noisy_output = _outputs(self.method, noisy, chunk_kwargs).reshape(n, batch)
                deltas = (totals - (noisy_output - self.base_output).double()).to(contributions[0].dtype)
        return Chunk(tuple(contributions), None if deltas is None else deltas.unsqueeze(2), (True,) * len(contributions))

    def _pilot(self, samples_per_chunk: int) -> PathDensity:
        noise = self.perturbation

        def contributions(noisy: Tuple[Tensor, ...], alphas: Tensor, n: int) -> List[Tensor]:
            batch = noisy[0].shape[0] // n
            return self.path.contributions(noisy, alphas, self.chunk_kwargs.for_chunk(range(n)), n, batch)

        return fit_path_density(contributions, noise.inputs, noise.sigmas, noise.example_ids, self.seeds,
                                samples_per_chunk)

    def select(self, keep: Tensor) -> None:
        raise NotImplementedError("joint sampling stops at a fixed nt_samples")

    def format(self, tensors: Tuple[Tensor, ...]) -> Any:
        return self.path.format(list(tensors), self.is_inputs_tuple)


# --------------------------------------------------------------------------- draws


def _path_fractions(
    sample_ids: range,
    nt_samples: int,
    example_ids: Tensor,
    seeds: SampleSeeds,
    stratify: bool,
    antithetic: bool,
) -> Tensor:
    """α of each (sample, example), shape ``(len(sample_ids), len(example_ids))``, float64.

    Keyed by the sample (the pair when antithetic) and the example's id, so
    neither chunking nor the batch can change it; with ``stratify``, unit
    ``u`` of ``U`` lies in ``[u / U, (u + 1) / U)``.
    """
    units = nt_samples // 2 if antithetic else nt_samples
    ids = torch.arange(sample_ids.start, sample_ids.stop, device=example_ids.device)
    unit = ids // 2 if antithetic else ids
    alpha = uniform(row_keys(seeds.base_seed, stream(Purpose.PATH_POINT), example_ids, unit))
    return alpha.add_(unit.view(-1, 1)).div_(units) if stratify else alpha


# --------------------------------------------------------------------------- paths


def _full_baselines(baselines: Any, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """One baseline tensor per input, shaped like it: None → zeros, a number → filled, one row → expanded."""
    items = baselines if isinstance(baselines, tuple) else (baselines,) * len(inputs)
    full = []
    for b, x in zip(items, inputs):
        if b is None:
            full.append(torch.zeros_like(x))
        elif isinstance(b, Tensor):
            full.append(b.detach().to(device=x.device, dtype=x.dtype).expand_as(x))
        else:
            full.append(torch.full_like(x, float(b)))
    return tuple(full)


def _interpolate(start: Tensor, end: Tensor, alphas: Tensor, n: int, batch: int) -> Tuple[Tensor, Tensor]:
    """``end − start`` and the path point ``start + α (end − start)``, rows sample-major.

    ``start`` has one row per example (broadcast over samples), ``end`` one per (sample, example).
    """
    shape = tuple(end.shape[1:])
    diff = end.reshape((n, batch) + shape) - start
    alpha = alphas.to(diff.dtype).reshape((n, batch) + (1,) * len(shape))
    point = (start + alpha * diff).reshape((n * batch,) + shape)
    return diff.reshape((n * batch,) + shape), point


class _InputPath:
    """IG's path in input space."""

    def __init__(self, method: IntegratedGradients, baselines: Tuple[Tensor, ...]) -> None:
        self.method, self.baselines = method, baselines
        self.dtypes: List[torch.dtype] = []

    def contributions(
        self, noisy: Tuple[Tensor, ...], alphas: Tensor, chunk: Dict[str, Any], n: int, batch: int
    ) -> List[Tensor]:
        pairs = [_interpolate(b, x, alphas, n, batch) for b, x in zip(self.baselines, noisy)]
        points = tuple(_layout.like(point, x).requires_grad_() for (_, point), x in zip(pairs, noisy))
        grads = summed_gradients(
            self.method.forward_func, points, chunk.get("target"), chunk.get("additional_forward_args")
        )
        self.dtypes = [g.dtype for g in grads]
        if not self.method.multiplies_by_inputs:
            return [g.reshape((n, batch) + tuple(g.shape[1:])) for g in grads]
        return [(g * diff).reshape((n, batch) + tuple(g.shape[1:])) for g, (diff, _) in zip(grads, pairs)]

    def format(self, tensors: List[Tensor], is_inputs_tuple: bool) -> TensorOrTuple:
        return tuple(tensors) if is_inputs_tuple else tensors[0]


class _LayerPath:
    """Layer IG's path in the layer's space: the layers' values, and gradients with the path's points put in place.

    On one device the layers are hooked for this thread's forwards only
    (:mod:`noisegrad._gradients`), so another thread running the same model
    meanwhile keeps its own values; a model that runs the layer in threads of
    its own (a thread pool over branches) is hooked in every thread, as
    Captum hooks it, so two such calls at once on one model can take each
    other's values, as Captum's would. A DataParallel model (``device_ids``) runs its replicas
    in threads of its own; there Captum's gather and scatter hooks are used,
    as Captum's layer IG does.
    """

    def __init__(
        self,
        method: LayerIntegratedGradients,
        baselines: Tuple[Tensor, ...],
        kwargs: Dict[str, Any],
        attribute_to_layer_input: bool = False,
        grad_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.method, self.to_layer_input, self.grad_kwargs = method, attribute_to_layer_input, grad_kwargs
        # as LayerIntegratedGradients.attribute does, without writing it into the user's method
        self.device_ids = method.device_ids if method.device_ids is not None else getattr(
            method.forward_func, "device_ids", None
        )
        self.is_layer_list = isinstance(method.layer, list)
        self.layers = list(method.layer) if self.is_layer_list else [method.layer]
        self.any_thread = False  # True once the layer is seen to run outside the calling thread
        self.baselines = self._layer_eval(baselines, kwargs.get("additional_forward_args"))
        self.dtypes: List[torch.dtype] = []

    def _layer_eval(self, inputs: Tuple[Tensor, ...], additional_forward_args: Any) -> Tuple[Tensor, ...]:
        """The layer's values (flattened over layers and their outputs) and how many each layer has."""
        with torch.no_grad():
            if self.device_ids:
                evaluated = forward_layer_eval(
                    self.method.forward_func, inputs, self.method.layer,
                    additional_forward_args=additional_forward_args, device_ids=self.device_ids,
                    attribute_to_layer_input=self.to_layer_input,
                )
                per_layer = [(v,) if isinstance(v, Tensor) else tuple(v)
                             for v in (evaluated if self.is_layer_list else [evaluated])]
            else:
                extra = format_additional_forward_args(additional_forward_args)
                evaluate = functools.partial(own_layers_forward, self.method.forward_func, inputs, self.layers, extra,
                                             self.to_layer_input, False)
                per_layer, _ = self._seen_anywhere(evaluate)
        self.counts = [len(values) for values in per_layer]
        return tuple(t.detach() for values in per_layer for t in values)

    def _seen_anywhere(self, hooked_forward: Callable[..., Any]) -> Any:
        """``hooked_forward(any_thread=...)``, again with hooks in every thread if the model ran a layer elsewhere
        (a thread pool over branches), as Captum hooks it; from then on for the rest of the call."""
        try:
            return hooked_forward(any_thread=self.any_thread)
        except LayerNotSeen:
            if self.any_thread:
                raise
        self.any_thread = True
        return hooked_forward(any_thread=True)

    def contributions(
        self, noisy: Tuple[Tensor, ...], alphas: Tensor, chunk: Dict[str, Any], n: int, batch: int
    ) -> List[Tensor]:
        extra = format_additional_forward_args(chunk.get("additional_forward_args"))
        noisy_layer = self._layer_eval(noisy, extra)
        pairs = [_interpolate(b, v, alphas, n, batch) for b, v in zip(self.baselines, noisy_layer)]
        points = tuple(point.requires_grad_() for _, point in pairs)
        model_args = noisy + (extra if extra is not None else ())
        if self.device_ids:
            gradient_func = layer_gradient_func(self.method, self.counts, self.to_layer_input, self.grad_kwargs)
            grads = gradient_func(self.method.forward_func, points, chunk.get("target"), model_args)
        else:
            gradients = functools.partial(gradients_at_layers, self.method.forward_func, self.layers, points,
                                          self.counts, self.to_layer_input, chunk.get("target"), model_args,
                                          self.grad_kwargs)
            grads = self._seen_anywhere(gradients)
        self.dtypes = [g.dtype for g in grads]
        if not self.method.multiplies_by_inputs:
            return [g.reshape((n, batch) + tuple(g.shape[1:])) for g in grads]
        return [(g * diff).reshape((n, batch) + tuple(g.shape[1:])) for g, (diff, _) in zip(grads, pairs)]

    def format(self, tensors: List[Tensor], is_inputs_tuple: bool) -> Any:
        """As Captum's layer IG: per layer a tensor or a tuple; a list for a list of layers."""
        per_layer, start = [], 0
        for count in self.counts:
            part = tuple(tensors[start : start + count])
            per_layer.append(part if count > 1 else part[0])
            start += count
        return per_layer if self.is_layer_list else per_layer[0]


def _outputs(method: Any, inputs: Tuple[Tensor, ...], kwargs: Dict[str, Any]) -> Tensor:
    """The selected output of every row (one forward, no graph), as a flat tensor."""
    with torch.no_grad():
        out = run_forward(method.forward_func, inputs, kwargs.get("target"), kwargs.get("additional_forward_args"))
    return out.reshape(inputs[0].shape[0], -1).sum(1)

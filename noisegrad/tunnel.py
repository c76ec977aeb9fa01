"""NoiseTunnel: smooth any Captum attribution over noisy copies of its inputs."""

import contextlib
from typing import Any, List, Optional, Tuple, Union

import torch
from captum.attr import (
    Attribution,
    DeepLiftShap,
    GradientAttribution,
    GradientShap,
    LayerDeepLiftShap,
    LayerGradientShap,
    NeuronDeepLiftShap,
    NeuronGradientShap,
)
from torch import Tensor

from noisegrad._gradients import lean_gradients
from noisegrad._state import modules_of, preserved_modules, seeded_global_rng
from noisegrad._validate import (
    accepted_keywords,
    validate_counts,
    validate_delta,
    validate_inputs,
    validate_keywords,
    validate_seed,
)
from noisegrad.deltas import ConvergenceDeltas
from noisegrad.expand import ChunkKwargs, validate_kwargs
from noisegrad.moments import Moments
from noisegrad.noise import StdevsType, noisy_copies, resolve_stdevs
from noisegrad.plan import plan_chunks
from noisegrad.seeding import SampleSeeds
from noisegrad.smoothing import smooth, validate_nt_type

__all__ = ["NoiseTunnel"]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]

# Methods whose baselines are a distribution they sample or average over.
_SAMPLES_BASELINES = (
    GradientShap, DeepLiftShap, LayerGradientShap, LayerDeepLiftShap, NeuronGradientShap, NeuronDeepLiftShap
)


class NoiseTunnel(Attribution):
    """Smooth an attribution method over Gaussian noise: SmoothGrad, SmoothGrad² and VarGrad.

    A drop-in replacement for ``captum.attr.NoiseTunnel`` that wraps any Captum
    ``Attribution`` (gradient, perturbation, layer and neuron methods). Each
    input example is copied ``nt_samples`` times with noise added, the wrapped
    method attributes the copies in chunks of ``nt_samples_batch_size``, and
    the chunk statistics are merged stably (:class:`noisegrad.Moments`):

    * ``"smoothgrad"``: the mean of the noisy attributions;
    * ``"smoothgrad_sq"``: the mean of their squares;
    * ``"vargrad"``: their population variance (÷ ``nt_samples``, as Captum).

    Note that Captum's ``Saliency`` defaults to ``abs=True``, so
    ``NoiseTunnel(Saliency(model))`` averages ``|∇f|``; pass ``abs=False`` for
    the SmoothGrad paper's signed mean.

    Beyond Captum: noise is reproducible with ``seed=``/``generator=`` and does
    not depend on the chunk size; σ may be a per-feature tensor or relative to
    the data (:func:`noisegrad.relative`); noise is drawn in the input's dtype,
    so float16/bfloat16 models work; the convergence delta is averaged per
    input; and the user's model, gradients and RNG are left as they were.

    Parameters
    ----------
    attribution_method : captum.attr.Attribution
        The method to smooth, e.g. ``Saliency(model)`` or ``IntegratedGradients(model)``.

    Examples
    --------
    >>> import torch
    >>> from captum.attr import IntegratedGradients
    >>> from noisegrad import NoiseTunnel
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> x = torch.rand(2, 4)
    >>> nt = NoiseTunnel(IntegratedGradients(model))
    >>> attr, delta = nt.attribute(x, nt_samples=8, nt_samples_batch_size=3, stdevs=0.1,
    ...                            target=1, return_convergence_delta=True, seed=0)
    >>> attr.shape, delta.shape
    (torch.Size([2, 4]), torch.Size([2]))
    """

    def __init__(self, attribution_method: Attribution) -> None:
        if not isinstance(attribution_method, Attribution):
            raise TypeError(
                "attribution_method must be a captum.attr.Attribution (e.g. Saliency(model)), "
                f"got {type(attribution_method).__name__}"
            )
        self.attribution_method = attribution_method
        self.is_delta_supported = attribution_method.has_convergence_delta()
        self._multiply_by_inputs = attribution_method.multiplies_by_inputs
        self.is_gradient_method = isinstance(attribution_method, GradientAttribution)
        self._accepted_keywords = accepted_keywords(attribution_method)
        Attribution.__init__(self, attribution_method.forward_func)

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return self.is_delta_supported

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        nt_type: str = "smoothgrad",
        nt_samples: int = 5,
        nt_samples_batch_size: Optional[int] = None,
        stdevs: StdevsType = 1.0,
        draw_baseline_from_distrib: bool = False,
        *,
        seed: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        delta_reduction: str = "mean",
        **kwargs: Any,
    ) -> Union[TensorOrTuple, Tuple[TensorOrTuple, Tensor]]:
        """Attribute ``inputs`` with the wrapped method, smoothed over ``nt_samples`` noisy copies.

        Parameters
        ----------
        inputs : Tensor or tuple of Tensor
            Floating-point tensors whose dimension 0 indexes the examples.
        nt_type : {"smoothgrad", "smoothgrad_sq", "vargrad"}
        nt_samples : int
            Noisy copies per example (>= 1).
        nt_samples_batch_size : int, optional
            Copies per example attributed together (>= 1); ``None``: all at once.
            The forward batch of a chunk is ``batch × nt_samples_batch_size``
            rows (times the wrapped method's own expansion, e.g. IG's steps).
        stdevs : float, tensor, noisegrad.relative(...), or a tuple of these
            The noise's standard deviation: one value for all inputs, or one
            entry per input tensor. A tensor broadcastable to an input gives
            a σ per feature (features with σ = 0 get no noise).
            :func:`noisegrad.relative` scales σ to each example's range or std.
        draw_baseline_from_distrib : bool
            Give every noisy copy a baseline row drawn at random from
            ``baselines`` (seeded like the noise).
        seed : int, optional
            Makes the noise (and any randomness of the wrapped method)
            reproducible without touching the global RNG. The noise of sample
            ``k`` of each example does not depend on ``nt_samples_batch_size``.
        generator : torch.Generator, optional
            Alternative to ``seed``: one integer is drawn from it per call.
        delta_reduction : {"mean", "none"}
            With ``return_convergence_delta=True``: ``"mean"`` returns one delta
            per example, the mean over its noisy copies; ``"none"`` returns the
            per-copy deltas in Captum's shape and order (chunk, example, copy).
        **kwargs
            Passed to the wrapped method's ``attribute`` (``target``,
            ``baselines``, ``additional_forward_args``, ``feature_mask``,
            ``return_convergence_delta``, ...), expanded per copy as Captum does.

        Returns
        -------
        attributions, or (attributions, delta)
            Attributions shaped like the wrapped method's (a tensor or tuple),
            in its dtype; ``delta`` when ``return_convergence_delta=True``.
        """
        is_inputs_tuple = isinstance(inputs, tuple)
        inputs_tuple = validate_inputs(inputs)
        nt_type, needs_m2 = validate_nt_type(nt_type)
        validate_counts(nt_samples, nt_samples_batch_size)
        validate_seed(seed, generator)
        return_delta = bool(kwargs.get("return_convergence_delta", False))
        validate_delta(return_delta, self.attribution_method, delta_reduction)
        validate_keywords(self.attribution_method, self._accepted_keywords, kwargs)
        validate_kwargs(
            kwargs, inputs_tuple, draw_baseline_from_distrib, isinstance(self.attribution_method, _SAMPLES_BASELINES)
        )
        sigmas = resolve_stdevs(stdevs, inputs_tuple)

        seeds = SampleSeeds.from_arguments(seed, generator)
        device = inputs_tuple[0].device
        noise_generator = torch.Generator(device=device)
        batch = inputs_tuple[0].shape[0]
        moments: List[Moments] = []
        deltas = ConvergenceDeltas(batch, delta_reduction)
        chunk_kwargs = ChunkKwargs(kwargs, inputs_tuple, (seeds, noise_generator) if draw_baseline_from_distrib else None)
        with self._guarded(device, seeds.derived(0) if seed is not None or generator is not None else None):
            for sample_ids in plan_chunks(nt_samples, nt_samples_batch_size):
                noisy = tuple(
                    noisy_copies(x, sigma, sample_ids, seeds, stream, noise_generator)
                    for stream, (x, sigma) in enumerate(zip(inputs_tuple, sigmas))
                )
                dtypes, is_attr_tuple = self._attribute_chunk(
                    noisy, is_inputs_tuple, chunk_kwargs.for_chunk(sample_ids), moments, deltas, needs_m2
                )
                del noisy  # before the next chunk's noise is drawn
        smoothed = tuple(smooth(m, nt_type).to(dtype) for m, dtype in zip(moments, dtypes))
        result = smoothed if is_attr_tuple else smoothed[0]
        return (result, deltas.result()) if return_delta else result

    def attribute_future(self) -> None:
        """Not implemented, as in Captum."""
        raise NotImplementedError("attribute_future is not implemented for NoiseTunnel")

    @contextlib.contextmanager
    def _guarded(self, device: torch.device, global_seed: Optional[int]):
        """Everything the loop changes temporarily, undone on exit (also on an exception)."""
        method = self.attribution_method
        modules = modules_of(self.forward_func, *_as_list(getattr(method, "layer", None)))
        with preserved_modules(modules), seeded_global_rng(global_seed, device), lean_gradients(method):
            yield

    def _attribute_chunk(
        self,
        noisy: Tuple[Tensor, ...],
        is_inputs_tuple: bool,
        chunk_kwargs: dict,
        moments: List[Moments],
        deltas: ConvergenceDeltas,
        needs_m2: bool,
    ) -> Tuple[List[torch.dtype], bool]:
        """Attribute one chunk and merge it into ``moments`` and ``deltas``.

        A method of its own so that the chunk's attributions are freed on
        return, not kept alive through the next chunk's forward and backward.
        """
        if self.is_gradient_method:
            noisy = tuple(x.requires_grad_() for x in noisy)
        # Like Captum: no graph for the wrapped call; gradient methods enable it themselves.
        with torch.no_grad():
            out = self.attribution_method.attribute(noisy if is_inputs_tuple else noisy[0], **chunk_kwargs)
        n, batch = noisy[0].shape[0] // deltas.batch, deltas.batch
        if chunk_kwargs.get("return_convergence_delta", False):
            out, delta = out
            deltas.add(delta, n)
        is_attr_tuple = isinstance(out, tuple)
        attributions = out if is_attr_tuple else (out,)
        if not moments:
            moments.extend(Moments(track_m2=needs_m2) for _ in attributions)
        for accumulator, attribution in zip(moments, attributions):
            # A fresh (non-view) attribution is ours to centre in place.
            owned = attribution._base is None
            accumulator.update(_by_sample(attribution, batch, n), dim=0, overwrite=owned)
        return [a.dtype for a in attributions], is_attr_tuple


def _by_sample(attribution: Tensor, batch: int, n: int) -> Tensor:
    """View the (sample-major) rows of a chunk's attribution as ``(sample, example, ...)``."""
    if attribution.dim() == 0 or attribution.shape[0] != batch * n:
        raise ValueError(
            f"the wrapped method returned an attribution of shape {tuple(attribution.shape)}; "
            f"NoiseTunnel needs dimension 0 to index the {n} × {batch} noisy copies"
        )
    return attribution.detach().reshape((n, batch) + tuple(attribution.shape[1:]))


def _as_list(layer: Any) -> list:
    return list(layer) if isinstance(layer, (list, tuple)) else [layer]

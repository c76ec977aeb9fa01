"""NoiseTunnel: smooth any Captum attribution over noisy copies of its inputs."""

import contextlib
from typing import Any, Callable, List, Optional, Tuple, Union

import torch
from captum.attr import Attribution, GradientAttribution
from torch import Tensor

from noisegrad._call import call_wrapped
from noisegrad._gradients import lean_gradients
from noisegrad._state import guarded
from noisegrad._validate import (
    accepted_keywords,
    validate_auto,
    validate_baselines,
    validate_counts,
    validate_delta,
    validate_feature_mask,
    validate_grad_mode,
    validate_inputs,
    validate_keywords,
    validate_method_arguments,
    validate_seed,
    validate_stderr_units,
    validate_target,
)
from noisegrad.budget import ChunkOutOfMemory, choose_chunk, halved_chunk, takes_baseline_distribution
from noisegrad.convergence import ConvergenceRule
from noisegrad.deltas import ConvergenceDeltas
from noisegrad.expand import ChunkKwargs, select_examples, validate_kwargs
from noisegrad.joint import joint_integrated_gradients
from noisegrad.moments import Moments
from noisegrad.noise import StdevsType, noisy_copies, resolve_stdevs
from noisegrad.samplers import DEFAULT_REPLICATES, SAMPLERS, NoiseSampler
from noisegrad.seeding import SampleSeeds
from noisegrad.smoothing import smooth, validate_nt_type
from noisegrad.stderr import GroupedMoments, SmoothedAttribution, relative_stderr

__all__ = ["NoiseTunnel"]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]


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
        nt_samples: Union[int, str] = 5,
        nt_samples_batch_size: Union[int, str, None] = None,
        stdevs: StdevsType = 1.0,
        draw_baseline_from_distrib: bool = False,
        *,
        max_batch_rows: Optional[int] = None,
        memory_budget: Optional[int] = None,
        joint: Union[bool, str] = False,
        sampler: str = "iid",
        return_stderr: bool = False,
        tol: float = 0.05,
        max_samples: int = 1024,
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
        nt_samples : int or "auto"
            Noisy copies per example (>= 1). ``"auto"``: draw chunks until the
            relative standard error ``‖stderr‖ / ‖attribution‖`` of every
            example is at most ``tol`` (or ``max_samples`` is reached); an
            example that has converged leaves the batch, so it stops costing
            compute. Returns a :class:`noisegrad.SmoothedAttribution` whose
            ``nt_samples`` holds the samples each example used. Not with
            ``sampler="lhs"``, whose design needs the sample count up front.
        nt_samples_batch_size : int, "auto" or None
            Copies per example attributed together (>= 1); ``None``: all at
            once (Captum's default). The forward batch of a chunk is
            ``batch × nt_samples_batch_size`` rows times the wrapped method's
            own expansion (IG's ``n_steps``, GradientShap's ``n_samples``).
            ``"auto"`` picks the chunk from the model's activation bytes per
            row (measured with one forward of one example): about
            :data:`noisegrad.budget.AUTO_CPU_BYTES` of activations per forward
            on a CPU, half the free memory on a GPU. On CUDA, a chunk that
            runs out of memory is halved and retried, with a warning.
        max_batch_rows : int, optional
            The most rows any forward of the wrapped method may see; the chunk
            is chosen to fit, and path methods (IG, Conductance) get
            ``internal_batch_size`` to split their steps if one copy per
            example does not fit.
        memory_budget : int, optional
            Bytes of activations a forward may keep; converted to rows with the
            same measurement as ``"auto"``.
        joint : False, True, "antithetic", "qmc" or "lhs"
            For IntegratedGradients and LayerIntegratedGradients: sample noise
            and path point jointly (:func:`noisegrad.joint_integrated_gradients`),
            one gradient per sample instead of ``n_steps``; ``nt_samples`` then
            counts gradient evaluations per example. ``True`` stratifies the
            path point with i.i.d. noise; a sampler name draws the noise that
            way (``"antithetic"``: ``nt_samples`` even; compared in
            benchmarks/JOINT.md).
            Only ``nt_type="smoothgrad"``. The default, ``False``, is Captum's
            nested estimator.
        sampler : {"iid", "antithetic", "qmc", "lhs"}
            How the noise is drawn (:class:`noisegrad.samplers.NoiseSampler`):
            independently (Captum's behaviour, the default), in antithetic
            pairs ε, −ε, from randomised Sobol points, or as a Latin
            hypercube. All are unbiased for the mean, reproducible with
            ``seed`` and independent of the chunk size. Measured in
            benchmarks/SAMPLERS.md: antithetic pairs reach i.i.d.'s error with
            about half the samples for signed SmoothGrad, the Latin hypercube
            with 0.4–0.6 of them for SmoothGrad of absolute gradients and
            SmoothGrad²; none beats i.i.d. reliably for VarGrad. With
            ``return_stderr`` or ``nt_samples="auto"``, QMC and LHS designs are
            split into 4 independently randomised replicates (the units of the
            standard error), which costs them some of that gain.
        return_stderr : bool
            Return a :class:`noisegrad.SmoothedAttribution` with the
            Monte-Carlo standard error of every element and, per example,
            ``‖stderr‖ / ‖attribution‖``, from the same samples (no extra
            forward or backward). For SmoothGrad with i.i.d. noise it is the
            textbook standard error of a mean, ``√(M2 / (n (n − 1)))``;
            otherwise the delete-one-group jackknife over the sampler's
            independent units (8 groups of i.i.d. samples or of antithetic
            pairs; the 4 randomised replicates of QMC / LHS). Needs 2
            independent units (3 for VarGrad). With ``joint=``, the joint
            estimator's :class:`noisegrad.joint.JointEstimate`.
        tol : float
            With ``nt_samples="auto"``: the relative standard error to reach.
        max_samples : int
            With ``nt_samples="auto"``: the most samples any example gets.
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
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if joint is not False:
            if sampler != "iid":
                raise ValueError(
                    f'sampler={sampler!r} applies to the nested estimator; with joint sampling choose the noise '
                    'with joint=True (i.i.d.) or joint="antithetic" / "qmc" / "lhs"'
                )
            return self._attribute_joint(
                inputs, nt_type, nt_samples, nt_samples_batch_size, stdevs, joint, seed, generator,
                draw_baseline_from_distrib=draw_baseline_from_distrib, delta_reduction=delta_reduction,
                max_batch_rows=max_batch_rows, memory_budget=memory_budget, return_stderr=return_stderr, **kwargs,
            )
        is_inputs_tuple = isinstance(inputs, tuple)
        inputs_tuple = validate_inputs(inputs)
        validate_grad_mode(self.attribution_method)
        nt_type, needs_m2 = validate_nt_type(nt_type)
        nt_samples, nt_samples_batch_size, max_batch_rows, memory_budget = validate_counts(
            nt_samples, nt_samples_batch_size, max_batch_rows, memory_budget
        )
        auto = nt_samples == "auto"
        if auto:
            max_samples = validate_auto(tol, max_samples, sampler, delta_reduction)
        seed = validate_seed(seed, generator)
        return_delta = bool(kwargs.get("return_convergence_delta", False))
        validate_delta(return_delta, self.attribution_method, delta_reduction)
        validate_stderr_units(return_stderr and not auto, nt_type, sampler, nt_samples)
        validate_keywords(self.attribution_method, self._accepted_keywords, kwargs)
        validate_target(kwargs.get("target"))
        validate_method_arguments(self.attribution_method, kwargs)
        validate_kwargs(
            kwargs, inputs_tuple, draw_baseline_from_distrib, takes_baseline_distribution(self.attribution_method)
        )
        validate_baselines(kwargs.get("baselines"), inputs_tuple)
        kwargs = validate_feature_mask(kwargs, inputs_tuple)
        sigmas = resolve_stdevs(stdevs, inputs_tuple)

        seeds = SampleSeeds.from_arguments(seed, generator)
        limit = max_samples if auto else nt_samples
        # QMC and LHS are most accurate as one design; standard errors need independent replicates of it.
        draws = NoiseSampler(sampler, seeds, limit, DEFAULT_REPLICATES if return_stderr or auto else 1)
        if return_stderr or auto:
            groups = draws.standard_error_groups()
            # i.i.d. SmoothGrad keeps M2 too: its textbook standard error has all n − 1 degrees of freedom.
            with_m2 = needs_m2 or sampler == "iid"
            new_accumulator = lambda: GroupedMoments(draws, groups, track_m2=with_m2)  # noqa: E731
        else:
            new_accumulator = lambda: Moments(track_m2=needs_m2)  # noqa: E731
        device = inputs_tuple[0].device
        noise_generator = torch.Generator(device=device)
        batch = inputs_tuple[0].shape[0]
        moments: List[Moments] = []
        deltas = ConvergenceDeltas(batch, delta_reduction)
        baseline_draw = (seeds, noise_generator) if draw_baseline_from_distrib else None
        rule = ConvergenceRule(batch, tol, max_samples, _AUTO_MIN_SAMPLES) if auto else None
        # The running examples (all, unless nt_samples="auto" has let some go) and their arguments.
        active, running_inputs, running_sigmas = None, inputs_tuple, sigmas
        with self._guarded(device, seeds.derived(0) if seed is not None or generator is not None else None):
            chunk, kwargs = choose_chunk(
                self.attribution_method, self.forward_func, inputs_tuple, limit, nt_samples_batch_size,
                max_batch_rows, memory_budget, kwargs,
            )
            if auto and nt_samples_batch_size is None and max_batch_rows is None and memory_budget is None:
                chunk = min(chunk, _AUTO_MODE_CHUNK)
            chunk_kwargs = ChunkKwargs(kwargs, inputs_tuple, baseline_draw)
            start = 0
            while start < limit:
                stop = rule.next_stop(start, chunk) if auto else min(start + chunk, limit)
                sample_ids = range(start, stop)
                noisy = tuple(
                    noisy_copies(x, sigma, sample_ids, draws, stream, noise_generator, active)
                    for stream, (x, sigma) in enumerate(zip(running_inputs, running_sigmas))
                )
                try:
                    dtypes, is_attr_tuple = self._attribute_chunk(
                        noisy, is_inputs_tuple, chunk_kwargs.for_chunk(sample_ids), sample_ids, moments, deltas,
                        new_accumulator, active,
                    )
                except ChunkOutOfMemory as error:
                    del noisy
                    chunk = halved_chunk(chunk, len(sample_ids), device, error)
                    continue
                del noisy  # before the next chunk's noise is drawn
                start = sample_ids.stop
                if not auto or start < min(rule.min_samples, limit):
                    continue
                running = active if active is not None else torch.arange(batch, device=device)
                done = rule.check(moments, nt_type, running, start)
                if bool(done.all()):
                    break
                if bool(done.any()):
                    keep = (~done).nonzero().squeeze(1)
                    moments[:] = [m.select(keep) for m in moments]
                    kwargs = select_examples(kwargs, len(running), keep)
                    running_inputs = tuple(x[keep] for x in running_inputs)
                    running_sigmas = tuple(_per_example(s, len(running), keep) for s in running_sigmas)
                    active = running[keep]
                    chunk_kwargs = ChunkKwargs(kwargs, running_inputs, baseline_draw)
        if auto:
            values, errors, used = rule.results(dtypes)
            return SmoothedAttribution(
                values if is_attr_tuple else values[0], errors if is_attr_tuple else errors[0],
                relative_stderr(errors, values), used, deltas.result() if return_delta else None,
            )
        totals = [m.total() if return_stderr else m for m in moments]
        smoothed = tuple(smooth(m, nt_type).to(dtype) for m, dtype in zip(totals, dtypes))
        result = smoothed if is_attr_tuple else smoothed[0]
        delta = deltas.result() if return_delta else None
        if return_stderr:
            errors = tuple(m.stderr(nt_type).to(dtype) for m, dtype in zip(moments, dtypes))
            return SmoothedAttribution(
                result, errors if is_attr_tuple else errors[0], relative_stderr(errors, smoothed), nt_samples, delta
            )
        return (result, delta) if return_delta else result

    def attribute_future(self) -> None:
        """Not implemented, as in Captum."""
        raise NotImplementedError("attribute_future is not implemented for NoiseTunnel")

    @contextlib.contextmanager
    def _guarded(self, device: torch.device, global_seed: Optional[int]):
        """Everything the loop changes temporarily, undone on exit (also on an exception)."""
        with guarded(self.attribution_method, device, global_seed), lean_gradients(self.attribution_method):
            yield

    def _attribute_joint(
        self,
        inputs: TensorOrTuple,
        nt_type: str,
        nt_samples: int,
        nt_samples_batch_size: Union[int, str, None],
        stdevs: StdevsType,
        joint: Union[bool, str],
        seed: Optional[int],
        generator: Optional[torch.Generator],
        **kwargs: Any,
    ) -> Union[TensorOrTuple, Tuple[TensorOrTuple, Tensor]]:
        if joint is not True and joint not in SAMPLERS[1:]:
            raise ValueError(f'joint must be False, True, "antithetic", "qmc" or "lhs", got {joint!r}')
        if nt_samples == "auto":
            raise ValueError('nt_samples="auto" is not available with joint sampling: give an int nt_samples '
                             "(return_stderr=True reports the error it reaches)")
        unsupported = {
            "draw_baseline_from_distrib": kwargs.pop("draw_baseline_from_distrib") is not False,
            "delta_reduction": kwargs.pop("delta_reduction") != "mean",
            "max_batch_rows": kwargs.pop("max_batch_rows") is not None,
            "memory_budget": kwargs.pop("memory_budget") is not None,
            'nt_samples_batch_size="auto"': nt_samples_batch_size == "auto",
        }
        named = [name for name, used in unsupported.items() if used]
        if named:
            raise ValueError(
                f"joint={joint!r} does not support {', '.join(named)}: a joint sample has no per-copy IG value "
                "or delta, and its chunk is set with an int nt_samples_batch_size"
            )
        return_delta = bool(kwargs.pop("return_convergence_delta", False))
        return joint_integrated_gradients(
            self.attribution_method, inputs, nt_samples, nt_samples_batch_size, stdevs, nt_type=nt_type,
            seed=seed, generator=generator, sampler="iid" if joint is True else joint,
            return_convergence_delta=return_delta, return_stderr=kwargs.pop("return_stderr"), **kwargs,
        )

    def _attribute_chunk(
        self,
        noisy: Tuple[Tensor, ...],
        is_inputs_tuple: bool,
        chunk_kwargs: dict,
        sample_ids: range,
        moments: list,
        deltas: ConvergenceDeltas,
        new_accumulator: Callable[[], Union[Moments, GroupedMoments]],
        examples: Optional[Tensor],
    ) -> Tuple[List[torch.dtype], bool]:
        """Attribute one chunk and merge it into ``moments`` and ``deltas``.

        A method of its own so that the chunk's attributions are freed on
        return, not kept alive through the next chunk's forward and backward.
        """
        if self.is_gradient_method:
            noisy = tuple(x.requires_grad_() for x in noisy)
        out = call_wrapped(self.attribution_method, noisy if is_inputs_tuple else noisy[0], chunk_kwargs)
        n = len(sample_ids)
        batch = noisy[0].shape[0] // n
        if chunk_kwargs.get("return_convergence_delta", False):
            out, delta = out
            deltas.add(delta, n, examples)
        is_attr_tuple = isinstance(out, tuple)
        attributions = out if is_attr_tuple else (out,)
        if not moments:
            moments.extend(new_accumulator() for _ in attributions)
        for accumulator, attribution in zip(moments, attributions):
            samples = _by_sample(attribution, batch, n)
            # A fresh (non-view) attribution is ours to centre in place.
            overwrite = attribution._base is None
            if isinstance(accumulator, GroupedMoments):
                accumulator.update(samples, sample_ids, overwrite=overwrite)
            else:
                accumulator.update(samples, dim=0, overwrite=overwrite)
        return [a.dtype for a in attributions], is_attr_tuple


#: Samples per chunk in nt_samples="auto" mode unless a chunk size or budget is given.
_AUTO_MODE_CHUNK = 64
#: The first convergence check: by then every standard-error group holds several units (4 i.i.d.
#: samples or 2 antithetic pairs in each of 8 groups, 8 points in each of 4 QMC replicates).
_AUTO_MIN_SAMPLES = 32


def _per_example(sigma: Tensor, batch: int, keep: Tensor) -> Tensor:
    """σ of the kept examples when it has one row per example, else σ as it is."""
    if sigma.dim() > 0 and sigma.shape[0] == batch and batch > 1:
        return sigma[keep]
    return sigma


def _by_sample(attribution: Tensor, batch: int, n: int) -> Tensor:
    """View the (sample-major) rows of a chunk's attribution as ``(sample, example, ...)``."""
    if attribution.dim() == 0 or attribution.shape[0] != batch * n:
        raise ValueError(
            f"the wrapped method returned an attribution of shape {tuple(attribution.shape)}; "
            f"NoiseTunnel needs dimension 0 to index the {n} × {batch} noisy copies"
        )
    return attribution.detach().reshape((n, batch) + tuple(attribution.shape[1:]))

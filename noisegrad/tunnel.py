"""NoiseTunnel: smooth any Captum attribution over noisy copies of its inputs."""

import contextlib
import dataclasses
import inspect
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from captum.attr import Attribution, GradientAttribution
from torch import Tensor, nn

from noisegrad._caller import user_stacklevel
from noisegrad import _captum, _gradients, _layout
from noisegrad._loop import run
from noisegrad._progress import check_show_progress, progress_bar
from noisegrad._request import Request, check_request
from noisegrad._state import guarded, preserved_global_rngs, preserved_modules, seeded_global_rng
from noisegrad._validate import accepted_keywords
from noisegrad.estimators.joint_ig import JointEstimator
from noisegrad.estimators.nested import NestedEstimator
from noisegrad.perturb.inputs import InputNoise, StdevsType
from noisegrad.perturb._model_copy import refusing_to_run
from noisegrad.perturb.layer import LayerNoise
from noisegrad.perturb.weight_spec import WeightNoiseSpec
from noisegrad.perturb.weights import WeightNoise
from noisegrad.objective import Objective, with_objective
from noisegrad.reducers import reduce_channels
from noisegrad.plan import ChunkPlan, activation_bytes_per_row, chunk_for_rows
from noisegrad.result import FIELDS as RESULT_FIELDS
from noisegrad.result import SmoothedAttribution
from noisegrad.sampling.samplers import DEFAULT_REPLICATES, NoiseSampler
from noisegrad.sampling.streams import Purpose, stream
from noisegrad.stats.grouped import relative_stderr
from noisegrad.stats.stopping import StoppingRule
from noisegrad.stats.tally import Tally

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
        path_density: str = "uniform",
        sampler: str = "iid",
        return_stderr: bool = False,
        tol: Optional[float] = None,
        max_samples: Optional[int] = None,
        seed: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        example_ids: Union[Sequence[int], Tensor, None] = None,
        noise_layer: Union[nn.Module, str, None] = None,
        noise_mask: Optional[Tensor] = None,
        weight_noise: Optional[WeightNoiseSpec] = None,
        outputs: Optional[Sequence[int]] = None,
        objective: Optional[Objective] = None,
        times_input: Optional[str] = None,
        channel_reducer: Optional[str] = None,
        delta_reduction: str = "mean",
        show_progress: bool = False,
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
            ``nt_samples`` holds the samples each example used and
            ``converged`` whether it reached ``tol`` (a ``RuntimeWarning``
            names those that stopped at ``max_samples``). With
            ``sampler="lhs"``, whose design would need the sample count up
            front, the samples are consecutive independent Latin hypercubes
            of 4 (:data:`noisegrad.sampling.samplers.AUTO_BLOCK`), and the
            checks come after whole hypercubes.
        nt_samples_batch_size : int, "auto" or None
            Copies per example attributed together (>= 1); ``None``: all at
            once (Captum's default). The forward batch of a chunk is
            ``batch × nt_samples_batch_size`` rows times the wrapped method's
            own expansion (IG's ``n_steps``, GradientShap's ``n_samples``).
            With ``nt_samples="auto"`` that is the chunk of the whole batch: as
            inputs reach ``tol`` and leave, the others get more copies per
            chunk, up to as many rows.
            ``"auto"`` picks the chunk from the model's activation bytes per
            row (measured with one forward of the first example, twice): about
            :data:`noisegrad.plan.AUTO_CPU_BYTES` of activations per forward
            on a CPU, half the free memory on a GPU. On CUDA, a chunk that
            runs out of memory is halved and retried, with a warning.
        max_batch_rows : int, optional
            The most rows any forward of the wrapped method may see; the chunk
            is chosen to fit, and path methods (IG, Conductance) get
            ``internal_batch_size`` to split their steps if one copy per
            example does not fit. With ``outputs=`` a batched forward holds
            the rows of one output, as with ``target=``.
        memory_budget : int, optional
            Bytes of activations a forward may keep; converted to rows with the
            same measurement as ``"auto"``. With ``outputs=`` each row counts
            K times (the K gradients taken from it are held together).
        joint : False, True, "antithetic", "qmc" or "lhs"
            For IntegratedGradients and LayerIntegratedGradients: sample noise
            and path point jointly (:func:`noisegrad.joint_integrated_gradients`),
            one gradient per sample instead of ``n_steps``; ``nt_samples`` then
            counts gradient evaluations per example. ``True`` stratifies the
            path point with i.i.d. noise; a sampler name draws the noise that
            way (``"antithetic"``: ``nt_samples`` even; compared in
            benchmarks/JOINT.md). Chunk sizes, budgets, out-of-memory
            halving and standard errors work as for the nested estimator.
            Only ``nt_type="smoothgrad"``, a fixed ``nt_samples``. The
            default, ``False``, is Captum's nested estimator.
        path_density : {"uniform", "adaptive"}
            With ``joint``: where on the path the gradients go. ``"adaptive"``
            spends 28 pilot gradients per example (on top of ``nt_samples``) to find where IG's
            contributions are large, then samples there with weights that keep
            the estimate unbiased (:func:`noisegrad.joint_integrated_gradients`):
            a median of 110 times fewer gradients on a transformer explained
            from a zero baseline; elsewhere as many, or up to twice as many on
            calls of under 200 gradients (benchmarks/PATH_DENSITY.md).
        sampler : {"iid", "antithetic", "qmc", "lhs"}
            How the noise is drawn (:class:`noisegrad.sampling.samplers.NoiseSampler`):
            independently (Captum's behaviour, the default), in antithetic
            pairs ε, −ε, from randomised Sobol points, or as a Latin
            hypercube. All are unbiased for the mean, reproducible with
            ``seed`` and independent of the chunk size. Measured in
            benchmarks/SAMPLERS.md: antithetic pairs reach i.i.d.'s error with
            about half the samples for signed SmoothGrad, the Latin hypercube
            with 0.4–0.6 of them for SmoothGrad of absolute gradients and
            SmoothGrad²; none beats i.i.d. reliably for VarGrad. With
            ``return_stderr``, QMC and LHS designs are split into 4
            independently randomised replicates (the units of the standard
            error), which costs them some of that gain; so is QMC with
            ``nt_samples="auto"``. LHS with ``"auto"`` draws blocks of 4
            samples, each an independently randomised hypercube of 4 strata
            (every dimension stratified within a block; the blocks are the
            units of the standard error, dealt into 8 groups).
        return_stderr : bool
            Return a :class:`noisegrad.SmoothedAttribution` with the
            Monte-Carlo standard error of every element and, per example,
            ``‖stderr‖ / ‖attribution‖``, from the same samples (no extra
            forward or backward). For SmoothGrad with i.i.d. noise it is the
            textbook standard error of a mean, ``√(M2 / (n (n − 1)))``;
            otherwise the delete-one-group jackknife over the sampler's
            independent units (8 groups of i.i.d. samples, of antithetic
            pairs or, with ``nt_samples="auto"``, of LHS blocks; otherwise
            the 4 randomised replicates of QMC / LHS). Needs 2
            independent units (3 for VarGrad). Its degrees of freedom are in
            ``.dof`` and ``.interval(level)`` gives Student-t intervals. With
            ``joint=``, also the delta's standard error (``delta_stderr``).
        tol : float, optional
            With ``nt_samples="auto"``: the relative standard error to reach
            (default 0.05). Refused with an int ``nt_samples``.
        max_samples : int, optional
            With ``nt_samples="auto"``: the most samples any example gets
            (default 1024). Refused with an int ``nt_samples``.
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
            ``k`` of each example does not depend on ``nt_samples_batch_size``
            nor on the other examples of the batch (see ``example_ids``).
        generator : torch.Generator, optional
            Alternative to ``seed``: one integer is drawn from it per call.
        example_ids : sequence of int or integer tensor, optional
            One id per example (default: its position in ``inputs``). Every
            random number of an example (its noise, drawn baselines, the
            joint path points) is keyed by the seed, its id, the sample and
            the element's position within the example, so
            ``attribute(x[i:i+1], example_ids=[i], seed=s)`` gives example
            ``i`` exactly the noise it gets in ``attribute(x, seed=s)``,
            in any batch, chunk, process or device. Give ids to split a data
            set across batches or processes without changing its results.
        noise_layer : nn.Module or str, optional
            Add the noise to this module's output (a module of the model, or
            its dotted name) instead of to the inputs: the inputs, which may
            then be integer token ids, are repeated per copy and never
            perturbed, and a forward hook, removed on return or on an
            exception, adds each copy's noise (keyed by example and by the
            element's position, so padding after a token does not change its
            noise). ``stdevs`` then describes the module's output: a float, a
            tensor broadcasting to it (``(hidden,)`` per feature), or
            ``relative(...)`` of each example's clean output. Layer
            IntegratedGradients on that module perturbs the inputs' layer
            values, not the baselines' (as Captum's NoiseTunnel perturbs
            inputs, not baselines); every other method sees the noise in
            every forward, each copy's own noise repeated over a path
            method's steps. One extra forward of the clean batch, without
            gradients, measures the module's output (its shape, and σ for
            ``relative(...)``) before the noisy copies run. Not with
            ``joint``.
        outputs : sequence of int, optional
            Explain several output columns at once instead of one ``target``:
            every result gets a last dimension of size K (attributions
            ``(batch, ..., K)``, deltas and relative standard errors
            ``(batch, K)``), equal to K calls with ``target=k`` and the same
            seed. For Saliency, InputXGradient, IntegratedGradients,
            LayerGradientXActivation and LayerIntegratedGradients (one layer,
            no ``grad_kwargs``) each chunk runs one forward (IG: one per step
            batch) and the K gradients are taken together
            (batched vector-Jacobian products); other methods run once per
            output (also with ``objective``: its targets are then ``k``).
            With ``"auto"`` (``nt_samples`` or ``weight_noise(draws=...)``)
            an example stops when every one of its outputs reached ``tol``
            (``converged`` is per example, one value for its K outputs).
            Not with ``target``, ``joint`` or ``draw_baseline_from_distrib``.
        objective : callable, optional
            Explain a score of your own instead of a model output:
            ``g(model, inputs, targets)`` returns one score per example, a
            tensor of shape ``(rows,)`` (a regression output, the summed
            logits of a segmentation mask's pixels, the margin between two
            classes; Xplique's ``operator``). ``model`` is the forward
            function with ``additional_forward_args`` bound (call it as the
            model: ``model(x)``, or ``model(x1, x2)`` for tuple inputs);
            ``inputs`` are the forward's rows (noisy copies, path points) in
            the form of ``inputs``; ``targets`` is ``target`` with one row per
            forward row (an int or tuple repeated for every example; index,
            one-hot or weight rows, masks as given), or None. Every wrapped
            method works with it; a score of another shape is refused at the
            first forward, before anything is merged.
        times_input : {None, "clean", "noisy"}
            Multiply each noisy copy's attribution by an input before the
            statistic is taken: ``"clean"`` by the clean input x, so
            SmoothGrad gives mean(∇f(x+ε)) ⊙ x (innsight's SmoothGrad×Input);
            ``"noisy"`` by the copy's noisy input, mean((x+ε) ⊙ ∇f(x+ε)),
            which is Captum's ``NoiseTunnel(InputXGradient)``. For methods
            that do not multiply by the inputs themselves (Saliency,
            GuidedBackprop, ...), and not with a layer or ``noise_layer``.
            SmoothGrad² and VarGrad square the products (mean((∇f ⊙ x)²)).
        channel_reducer : {None, "mean", "sum", "max", "min", "abs-sum"}
            Combine the channels (dimension 1) of image attributions
            ``(batch, C, H, W)`` into ``(batch, H, W)`` maps, *after*
            smoothing (:func:`noisegrad.reduce_channels`); other tensors
            are left as they are. The standard error of a reduced map is not
            known from the channels' (their covariance is not kept): reduced
            tensors get ``stderr`` None, and ``relative_stderr`` stays that
            of the channels' attributions.
        noise_mask : Tensor, optional
            With ``noise_layer``: a ``(batch, ...)`` tensor aligned with the
            leading dimensions of the module's output (the attention mask for
            a ``(batch, tokens, hidden)`` embedding); where it is 0 or False,
            no noise (padding, special tokens), and ``relative(...)`` is
            measured over the rest.
        weight_noise : noisegrad.weight_noise(...), optional
            Smooth over noisy copies of the model's weights too (NoiseGrad;
            with input noise, FusionGrad; Bykov et al. 2022): each of the
            spec's ``draws`` weight draws attributes ``nt_samples`` noisy
            copies of the inputs, and ``nt_type`` is taken over all
            ``draws × nt_samples`` attributions (``nt_samples=1, stdevs=0``
            for NoiseGrad alone; token ids are then accepted). The noisy
            weights go into a private copy of the model, to which the forward
            function is pointed (the model itself, its bound method, a
            function, lambda or partial reaching it through globals, closures,
            arguments or attributes); the user's module is never written nor
            run during the call, and a forward of it in the calling thread is
            an error (the noise could not reach the model), as is a forward
            function that holds the model's parameters itself. A ``global``
            the forward function assigns changes a copy of its globals.
            Modules whose state changes in training mode (spectral_norm's
            power iteration, BatchNorm's statistics) carry it from draw to
            draw in the copy: call ``model.eval()``. Standard errors
            and ``"auto"`` (``weight_noise(draws="auto")``, which adds weight
            draws) count whole weight draws as the independent units, since
            the samples of one draw share its model. Chunk sizes count
            samples of all draws and are rounded to whole weight draws (or
            to an equal part of one), and the returned ``nt_samples`` counts
            samples, ``draws × nt_samples``.
        delta_reduction : {"mean", "none"}
            With ``return_convergence_delta=True``: ``"mean"`` returns one delta
            per example, the mean over its noisy copies; ``"none"`` returns the
            per-copy deltas in Captum's shape and order (chunk, example, copy).
        show_progress : bool
            Draw a progress bar (tqdm, on stderr) of the samples drawn per
            example, with their rate and the time left, as Captum's
            perturbation methods do; with ``nt_samples="auto"`` its total is
            ``max_samples`` and it closes when every example has converged.
            The wrapped method's own ``show_progress`` is not passed on.
        **kwargs
            Passed to the wrapped method's ``attribute`` (``target``,
            ``baselines``, ``additional_forward_args``, ``feature_mask``,
            ``return_convergence_delta``, ...), expanded per copy as Captum does.
            ``target`` may also be one-hot rows ``(batch, n_outputs)`` (Xplique's
            targets), read as one index per example.

        Returns
        -------
        attributions, or (attributions, delta)
            Attributions shaped like the wrapped method's (a tensor or tuple),
            in its dtype; ``delta`` when ``return_convergence_delta=True``.
        """
        request = self._checked(locals())  # the first statement: locals() holds the arguments, by name, only
        return _reduced(self._run(request, show_progress), request)

    def check_arguments(self, inputs: TensorOrTuple, *args: Any, **kwargs: Any) -> None:
        """Check the arguments of ``attribute(inputs, *args, **kwargs)`` as it does, without running anything.

        Raises the ``TypeError`` or ``ValueError`` that :meth:`attribute`
        would raise for these arguments before its first forward pass, and
        returns None if it would accept them: a call to be made later (at
        every snapshot of a training monitor, say) can be refused when it is
        set up. Errors that only the model's forward reveals (a target beyond
        its outputs) are not found. Nothing is drawn: the global RNGs and a
        ``generator`` are left as they were.

        Examples
        --------
        >>> from captum.attr import Saliency
        >>> nt = NoiseTunnel(Saliency(torch.nn.Linear(3, 2)))
        >>> nt.check_arguments(torch.rand(2, 3), nt_samples=4, target=1)
        >>> nt.check_arguments(torch.rand(2, 3), nt_type="smoothgrad2", target=1)
        Traceback (most recent call last):
        ...
        ValueError: nt_type must be one of ('smoothgrad', 'smoothgrad_sq', 'vargrad'), got 'smoothgrad2'
        """
        bound = inspect.signature(self.attribute).bind(inputs, *args, **kwargs)
        bound.apply_defaults()
        generator = bound.arguments["generator"]
        saved = generator.get_state() if isinstance(generator, torch.Generator) else None
        try:
            with preserved_global_rngs():  # the unseeded call's base seed is drawn, and given back
                _check_row_budget(self.attribution_method, self._checked(bound.arguments))
        finally:
            if saved is not None:
                generator.set_state(saved)

    def _checked(self, arguments: Dict[str, Any]) -> Request:
        """The request of a call of :meth:`attribute`, checked, from its arguments by name (``kwargs``: the
        wrapped method's own)."""
        a = arguments
        check_show_progress(a["show_progress"])
        return check_request(
            self.attribution_method, a["inputs"], a["nt_type"], a["nt_samples"], a["nt_samples_batch_size"],
            a["stdevs"], a["draw_baseline_from_distrib"], a["max_batch_rows"], a["memory_budget"], a["joint"],
            a["sampler"], a["return_stderr"], a["tol"], a["max_samples"], a["seed"], a["generator"],
            a["delta_reduction"], dict(a["kwargs"]), accepted=self._accepted_keywords, example_ids=a["example_ids"],
            noise_layer=a["noise_layer"], noise_mask=a["noise_mask"], outputs=a["outputs"],
            weight_noise=a["weight_noise"], objective=a["objective"], times_input=a["times_input"],
            channel_reducer=a["channel_reducer"], path_density=a["path_density"],
        )

    def _run(self, request: Request, show_progress: bool = False) -> Any:
        """guard → estimator → plan → run → finish, for a checked request: once per output if the method cannot batch
        them, and again on contiguous copies if the call fails on channels-last ones (:mod:`noisegrad._layout`)."""
        method = self.attribution_method
        if request.outputs is not None and (request.objective is not None or not _captum.batches_outputs(method, request.kwargs)):
            # one run per output, with the same noise; the highest index first, so that one beyond the model
            # fails at its first forward, before any other output ran (indices are >= 0 and distinct)
            runs = {}
            for k in sorted(request.outputs, reverse=True):
                try:
                    runs[k] = self._run(dataclasses.replace(request, outputs=None,
                                                            kwargs=dict(request.kwargs, target=k)), show_progress)
                except ValueError as error:  # name the argument the user gave, not the target of one run
                    raise ValueError(f"outputs={list(request.outputs)}, output {k}: {error}") from error
            return _stack_outputs([runs[k] for k in request.outputs])
        channels_last = _layout.channels_last(request.inputs, method.forward_func) and request.noise_layer is None
        try:
            return self._run_once(request, show_progress, channels_last)
        except _ChannelsLastFailed:
            pass
        # the first chunk failed on channels-last copies (a .view of an activation, a check of its own): contiguous
        # ones, outside the handler, so that their error, if any, stands alone as the user's; kept if they work
        result = self._run_once(request, show_progress, channels_last=False)
        _layout.keep_contiguous(method.forward_func)
        return result

    def _run_once(self, request: Request, show_progress: bool, channels_last: bool) -> Any:
        """guard → estimator → plan → run → finish, for one output (or every output of a method that batches them)."""
        method = self.attribution_method
        global_seed = request.seeds.derived(0) if request.seeded else None
        with contextlib.ExitStack() as stack:
            if request.weights is None:
                stack.enter_context(guarded(method, request.device, global_seed))
            else:  # only the private copy runs, and only it is guarded: the user's module is never written
                stack.enter_context(refusing_to_run(request.weights.root))
                stack.enter_context(seeded_global_rng(global_seed, request.device))
            estimator = _estimator(method, request, channels_last)
            forward_func = self.forward_func
            if request.weights is not None:  # the measuring forward too runs on the copy
                stack.enter_context(preserved_modules([estimator.perturbation.model]))
                forward_func = estimator.method.forward_func
            plan = _plan(estimator, request, forward_func)
            tally = _tally(estimator, request)
            first = _first_check(estimator.perturbation.sampler)
            rule = StoppingRule(request.batch, request.tol, request.limit, first, per_output=request.outputs is not None,
                                unit=_stopping_unit(estimator.perturbation.sampler)) if request.auto else None
            try:
                if not show_progress:  # a disabled tqdm bar still costs tens of microseconds per call
                    run(estimator, plan, tally, request.nt_type, rule)
                else:
                    with progress_bar(request.limit, "NoiseTunnel", unit="sample", enabled=True) as bar:
                        run(estimator, plan, tally, request.nt_type, rule, progress=bar.update)
            except Exception as error:
                if channels_last and not tally.attributions:  # not one chunk went through: maybe the layout
                    raise _ChannelsLastFailed() from error
                raise
        return _finish(request, estimator, tally, rule)

    def attribute_future(self) -> None:
        """Not implemented, as in Captum."""
        raise NotImplementedError("attribute_future is not implemented for NoiseTunnel")


class _ChannelsLastFailed(Exception):
    """The first chunk of channels-last copies failed, before anything was merged: the call may work on contiguous
    ones (:mod:`noisegrad._layout`)."""


#: Samples per chunk in nt_samples="auto" mode unless a chunk size or budget is given.
_AUTO_MODE_CHUNK = 64
#: The first convergence check: by then every standard-error group holds a unit (2 i.i.d. samples or 1 antithetic
#: pair in each of 8 groups; a Latin hypercube block of 4 in each makes it 32). At 16 instead of 32 the median achieved error stays within 25 % of tol
#: (tests/test_convergence.py), and a call that needs about 10 samples is not made to draw 32
#: (benchmarks/TIME_TO_ACCURACY.md, the transformer); with few features more inputs end above 1.5 × tol (3.5–7 %
#: instead of 1.5–3 % of those stopping at the first check, measured on 2–5 feature MLPs).
_AUTO_MIN_SAMPLES = 16
#: Designs whose standard error has fewer groups (QMC: 4 replicates, 3 degrees of freedom) first check here, with
#: 8 points per replicate: at 4 their tail above 1.5 × tol grew from 1 % to 6 %.
_AUTO_MIN_SAMPLES_FEW_GROUPS = 32


def _check_row_budget(method: Attribution, request: Request) -> None:
    """The ValueError :func:`_plan` raises for a ``max_batch_rows`` below one noisy copy, without building the
    estimator; a ``memory_budget`` or "auto" chunk needs a forward to be turned into rows, so it is not checked."""
    if request.max_batch_rows is None or request.memory_budget is not None or request.batch_size is not None:
        return
    if request.joint:  # one row per copy, never split
        rows_per_copy, splits_itself = 1, 0
    else:
        rows_per_copy, splits_itself = _captum.rows_per_copy(method, request.kwargs), _captum.rows_per_split_copy(method)
    max_rows = request.max_batch_rows
    internal_batch_size = request.kwargs.get("internal_batch_size")
    if internal_batch_size is not None:  # as ChunkPlan.choose: the user's own split caps the forwards
        max_rows = min(max_rows, internal_batch_size)
    chunk_for_rows(max_rows, request.batch, rows_per_copy, request.limit, splits_itself)


def _first_check(sampler: NoiseSampler) -> int:
    """Samples before the first check of ``nt_samples="auto"``: every standard-error group holds a unit.

    Latin hypercube blocks are the exception: 16 samples, 4 blocks (3 degrees of freedom), not 8 blocks (32
    samples), which made the rows that Captum finishes with about 10 samples draw twice the antithetic pairs' 16;
    at 16 the achieved errors stay at those of antithetic pairs (benchmarks/AUTO_LHS.md).
    """
    if sampler.block is not None:
        return max(_AUTO_MIN_SAMPLES, 4 * sampler.unit_size)
    if sampler.standard_error_groups() < 8:
        return max(_AUTO_MIN_SAMPLES_FEW_GROUPS, 8 * sampler.unit_size)
    return max(_AUTO_MIN_SAMPLES, 8 * sampler.unit_size)


def _stopping_unit(sampler: NoiseSampler) -> int:
    """Checks of ``nt_samples="auto"`` come after whole Latin hypercube blocks, whose stratification a partial
    block would lose; other samplers' stops stay where they were."""
    return sampler.unit_size if sampler.block is not None else 1


def _estimator(method: Attribution, request: Request, channels_last: bool = False) -> Any:
    """The estimator of the request, with its input noise (channels-last copies if ``channels_last``)."""
    replicates = DEFAULT_REPLICATES if request.needs_groups else 1
    # "auto": a Latin hypercube cannot know its sample count, so it comes in blocks of independent hypercubes
    sampler = NoiseSampler(request.sampler, request.seeds, request.limit, replicates, blocks=request.auto)
    if request.noise_layer is not None:
        # layer IG attributing to the noise layer itself perturbs the inputs' layer values only (Captum perturbs
        # inputs, not baselines); in every other case each copy is the model with its noise at the layer
        own = _captum.evaluates_layer_at_baselines(method) and _captum.attributes_to(
            method, request.noise_layer, bool(request.kwargs.get("attribute_to_layer_input", False)))
        noise: Any = LayerNoise(request.inputs, request.noise_layer, request.layer_stdevs, sampler, request.example_ids,
                                request.noise_mask, only_own_forwards=own)
        extra = request.kwargs.get("additional_forward_args")
        with torch.random.fork_rng(devices=_cuda_devices(request.inputs)):  # a dropout in training mode draws nothing
            noise.measure(lambda inputs: _gradients.run_forward(method.forward_func, inputs, None, extra))
    else:
        noise = InputNoise(request.inputs, request.sigmas, sampler, request.example_ids, channels_last)
    if request.weights is not None:
        noise = WeightNoise(noise, request.weights, request.seeds)
    if request.joint:
        kwargs = request.kwargs
        if request.objective is not None:  # the method's forward returns the objective's scores
            method, kwargs = with_objective(method, request.objective, kwargs, request.inputs, request.is_inputs_tuple)
        return JointEstimator(method, noise, kwargs, request.is_inputs_tuple, request.return_delta,
                              request.limit, request.seeds, request.stratify, request.path_density == "adaptive")
    sample_seed: Optional[Callable[[int], int]] = None
    if request.seeded and _captum.draws_from_global_rng(method):
        seeds = request.seeds
        sample_seed = lambda sample: seeds(stream(Purpose.GLOBAL_RNG), sample) & (2**63 - 1)  # noqa: E731
    baseline_seed = request.seeds.base_seed if request.draw_baseline_from_distrib else None
    return NestedEstimator(method, noise, request.kwargs, request.is_inputs_tuple, request.return_delta,
                           baseline_seed, sample_seed, request.outputs, request.times_input, request.objective)


def _stack_outputs(runs: list) -> Any:
    """The results of one run per output, each value stacked along a new last dimension (as ``outputs=`` gives)."""

    def stack(values: list) -> Any:
        first = values[0]
        if isinstance(first, Tensor):
            return torch.stack(values, dim=-1)
        if isinstance(first, (tuple, list)):
            return type(first)(stack(list(parts)) for parts in zip(*values))
        if first is None or all(v == first for v in values):
            return first
        return torch.tensor(values).unsqueeze(0)

    first = runs[0]
    if isinstance(first, SmoothedAttribution):
        fields = {name: stack([getattr(r, name) for r in runs]) for name in RESULT_FIELDS}
        return SmoothedAttribution(**fields)
    return stack(runs)


def _reduced(out: Any, request: Request) -> Any:
    """The images' channels combined after smoothing (``channel_reducer=``); a result records it and the outputs."""
    reducer, per_output = request.channel_reducer, request.outputs is not None

    def reduce(value: Any) -> Any:
        if isinstance(value, Tensor):
            return reduce_channels(value, reducer, per_output)
        return type(value)(reduce(v) for v in value)

    def errors(value: Any, stderr: Any) -> Any:  # no standard error where channels were combined
        if isinstance(value, Tensor):
            return None if reduce(value) is not value else stderr
        return type(value)(errors(v, e) for v, e in zip(value, stderr))

    if isinstance(out, SmoothedAttribution):
        fields = dict(zip(RESULT_FIELDS, out._field_values()), outputs=request.outputs, channel_reducer=reducer)
        fields.update(attributions=reduce(out.attributions), stderr=errors(out.attributions, out.stderr))
        return SmoothedAttribution(**fields)
    if reducer is None:
        return out
    return (reduce(out[0]), out[1]) if request.return_delta else reduce(out)


def _cuda_devices(inputs: Tuple[Tensor, ...]) -> list:
    return sorted({x.device.index or 0 for x in inputs if x.device.type == "cuda"})


def _plan(estimator: Any, request: Request, forward_func: Callable[..., Any]) -> ChunkPlan:
    """The chunk size: fixed, all at once, "auto", or from a row or memory budget."""
    inputs = request.inputs

    def measure() -> int:
        per_row = activation_bytes_per_row(forward_func, inputs, request.kwargs.get("additional_forward_args"))
        per_row = per_row if per_row is not None else 4 * sum(x[:1].numel() * x.element_size() for x in inputs)
        per_row *= getattr(estimator, "gradients_per_row", 1)  # outputs=: K gradients held per forward row
        # the weight draws a chunk holds count as rows too (their share of a sample, spread over its rows)
        extra = getattr(estimator.perturbation, "bytes_per_sample", 0)
        return per_row + -(-extra // (request.batch * estimator.rows_per_copy))

    plan, internal_batch_size = ChunkPlan.choose(
        request.limit, request.batch, request.device, request.batch_size, request.max_batch_rows,
        request.memory_budget, estimator.rows_per_copy, estimator.splits_itself, measure,
        request.kwargs.get("internal_batch_size"), unit=request.weights.draw_size if request.weights else 1,
        per_copy=request.weights is None,  # weight draws' stacked parameters grow with a chunk's samples
    )
    if internal_batch_size is not None:
        estimator.set_internal_batch_size(internal_batch_size)
    if request.auto and request.batch_size is None and request.max_batch_rows is None and request.memory_budget is None:
        plan.resize(min(plan.chunk, _AUTO_MODE_CHUNK))
    return plan


def _tally(estimator: Any, request: Request) -> Tally:
    """The statistics the request needs: grouped when standard errors or stopping need them."""
    sampler = estimator.perturbation.sampler
    # i.i.d. SmoothGrad (nested) keeps M2 too: its textbook standard error has all n − 1 degrees of freedom.
    textbook = sampler.kind == "iid" and not request.joint
    return Tally(
        groups=sampler.standard_error_groups() if request.needs_groups else 1,
        unit_size=sampler.unit_size,
        track_m2=request.needs_m2 or (request.needs_groups and textbook),
        textbook_mean=textbook,
        delta_reduction=request.delta_reduction if request.return_delta else None,
        # the joint estimator's stratified path points: neighbouring groups hold neighbouring strata
        collapsed_mean=request.joint and request.stratify and sampler.kind in ("iid", "antithetic"),
        delta_stderr=request.joint,
    )


def _finish(request: Request, estimator: Any, tally: Tally, rule: Optional[StoppingRule]) -> Any:
    """The result in the form asked for: attributions, (attributions, delta), or with standard errors."""
    if rule is not None:
        values, errors, used, dof, converged, delta = rule.results()
        if not bool(converged.all()):
            missed = int((~converged).sum())
            warnings.warn(
                f'nt_samples="auto": {missed} of {request.batch} inputs did not reach tol={request.tol} within '
                f"max_samples={request.limit} samples; result.converged marks them",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        cast = [v.to(d) for v, d in zip(values, tally.dtypes)]
        return SmoothedAttribution(
            estimator.format(tuple(cast)), estimator.format(tuple(e.to(d) for e, d in zip(errors, tally.dtypes))),
            relative_stderr(errors, values, per_output=request.outputs is not None), used,
            None if delta is None else delta.to(tally.delta_dtype), dof, converged,
        )
    values = [v.to(d) for v, d in zip(tally.values(request.nt_type), tally.dtypes)]
    result = estimator.format(tuple(values))
    delta = tally.delta() if request.return_delta else None
    if not request.return_stderr:
        return (result, delta) if request.return_delta else result
    errors, dof = tally.stderrs(request.nt_type)
    errors = [e.to(d) for e, d in zip(errors, tally.dtypes)]
    return SmoothedAttribution(
        result, estimator.format(tuple(errors)),
        relative_stderr(errors, values, per_output=request.outputs is not None), request.limit, delta, dof,
        delta_stderr=tally.delta_stderr(),
    )

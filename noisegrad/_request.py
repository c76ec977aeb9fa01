"""Every argument of a call checked once, before any forward pass, into one frozen request."""

import numbers
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Optional, Tuple, Union

import torch
from captum.attr import Attribution
from torch import Tensor, nn

from noisegrad import _captum
from noisegrad._explained import (
    check_auto_outputs,
    one_hot_as_indices,
    validate_channel_reducer,
    validate_outputs,
    validate_times_input,
)
from noisegrad._validate import (
    accepted_keywords,
    validate_auto,
    validate_baselines,
    validate_counts,
    validate_delta,
    validate_differentiable_inputs,
    validate_feature_mask,
    validate_grad_mode,
    validate_inputs,
    validate_keywords,
    validate_method_arguments,
    validate_example_ids,
    validate_seed,
    validate_stderr_units,
    validate_target,
)
from noisegrad.expand import validate_kwargs
from noisegrad.objective import Objective, check_objective, objective_targets
from noisegrad._state import modules_of
from noisegrad.perturb.inputs import Relative, StdevsType, resolve_stdevs
from noisegrad.perturb.layer import resolve_layer, token_mask
from noisegrad.perturb.weights import CheckedWeights, check_weight_noise, no_input_noise
from noisegrad.estimators.path_density import PATH_DENSITIES
from noisegrad.sampling.samplers import SAMPLERS
from noisegrad.sampling.seeding import SampleSeeds
from noisegrad.stats.smoothing import validate_nt_type

__all__ = ["Request", "check_request"]


def validate_layer_stdevs(stdevs: Any) -> None:
    """With ``noise_layer``, ``stdevs`` is one value for the layer's output: a number, a tensor or ``relative(...)``."""
    if isinstance(stdevs, (Relative, Tensor)):
        return
    if isinstance(stdevs, bool) or not isinstance(stdevs, numbers.Real):
        raise TypeError(f"with noise_layer, stdevs must be a float, a tensor that broadcasts to the layer's output, "
                        f"or noisegrad.relative(...), got {type(stdevs).__name__}")
    if not stdevs >= 0 or stdevs == float("inf"):
        raise ValueError(f"stdevs must be finite and >= 0, got {stdevs}")

#: nt_samples="auto" defaults: the relative standard error to reach, and the most samples per example.
DEFAULT_TOL = 0.05
DEFAULT_MAX_SAMPLES = 1024


@dataclass(frozen=True)
class Request:
    """One call's arguments, checked and in one internal form."""

    inputs: Tuple[Tensor, ...]
    is_inputs_tuple: bool
    nt_type: str
    needs_m2: bool
    auto: bool
    limit: int  # nt_samples, or max_samples with "auto"
    tol: float
    batch_size: Union[int, str, None]
    max_batch_rows: Optional[int]
    memory_budget: Optional[int]
    sampler: str
    joint: bool
    stratify: bool
    path_density: str  # the joint estimator's α: "uniform", or "adaptive" (a pilot fits where to sample)
    return_stderr: bool
    return_delta: bool
    delta_reduction: str
    draw_baseline_from_distrib: bool
    sigmas: Tuple[Tensor, ...]
    seeds: SampleSeeds
    seeded: bool
    kwargs: Dict[str, Any]
    example_ids: Tensor  # int64, one per example: they key the noise
    noise_layer: Optional[nn.Module] = None  # noise at this module's output instead of on the inputs
    noise_mask: Optional[Tensor] = None  # with noise_layer: which (leading) elements of its output get noise
    layer_stdevs: Any = None  # with noise_layer: stdevs as given, for the layer's output
    weights: Optional[CheckedWeights] = None  # weight_noise=: samples are draw_size input draws per weight draw
    outputs: Optional[Tuple[int, ...]] = None  # several output columns at once: results get a last dimension K
    objective: Optional[Objective] = None  # g(model, inputs, targets): the score explained instead of an output
    times_input: Optional[str] = None  # "clean" / "noisy": each noisy attribution times the (noisy) input
    channel_reducer: Optional[str] = None  # images' channels combined after smoothing

    @property
    def device(self) -> torch.device:
        return self.inputs[0].device

    @property
    def batch(self) -> int:
        return self.inputs[0].shape[0]

    @property
    def needs_groups(self) -> bool:
        """Whether the samples are kept in independent groups (for standard errors or stopping)."""
        return self.return_stderr or self.auto


def check_request(
    method: Attribution,
    inputs: Any,
    nt_type: Any,
    nt_samples: Any,
    nt_samples_batch_size: Any,
    stdevs: StdevsType,
    draw_baseline_from_distrib: bool,
    max_batch_rows: Any,
    memory_budget: Any,
    joint: Any,
    sampler: Any,
    return_stderr: bool,
    tol: Any,
    max_samples: Any,
    seed: Any,
    generator: Any,
    delta_reduction: Any,
    kwargs: Dict[str, Any],
    stratify: bool = True,
    accepted: Optional[FrozenSet[str]] = None,
    example_ids: Any = None,
    noise_layer: Any = None,
    noise_mask: Any = None,
    weight_noise: Any = None,
    outputs: Any = None,
    objective: Any = None,
    times_input: Any = None,
    channel_reducer: Any = None,
    path_density: Any = "uniform",
) -> Request:
    """Check every argument (raising ``ValueError`` / ``TypeError`` that names it) and build the request.

    The one random draw a call makes without a seed (the call's base seed,
    from the global RNG or ``generator``) comes last, after every check.
    ``accepted``: the keywords the method's ``attribute`` takes, if known
    (:func:`noisegrad._validate.accepted_keywords`, slow to recompute).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    is_joint = joint is not False
    if is_joint:
        if joint is not True and joint not in SAMPLERS[1:]:
            raise ValueError(f'joint must be False, True, "antithetic", "qmc" or "lhs", got {joint!r}')
        if sampler != "iid":
            raise ValueError(
                f'sampler={sampler!r} applies to the nested estimator; with joint sampling choose the noise '
                'with joint=True (i.i.d.) or joint="antithetic" / "qmc" / "lhs"'
            )
        sampler = "iid" if joint is True else joint
    if not isinstance(path_density, str) or path_density not in PATH_DENSITIES:
        raise ValueError(f"path_density must be one of {PATH_DENSITIES}, got {path_density!r}")
    if path_density != "uniform" and not is_joint:
        raise ValueError(f"path_density={path_density!r} applies to joint sampling (joint=True, \"antithetic\", "
                         "\"qmc\" or \"lhs\"): the nested estimator integrates the path with n_steps fixed points")
    for name, flag in (("draw_baseline_from_distrib", draw_baseline_from_distrib), ("return_stderr", return_stderr)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if noise_layer is None and noise_mask is not None:
        raise ValueError("noise_mask applies to noise at a layer; give noise_layer= too (e.g. the embedding module)")
    if noise_layer is not None and is_joint:
        raise ValueError("joint sampling draws noise on the inputs; noise_layer= needs the nested estimator "
                         "(joint=False)")
    # token ids: repeated, never perturbed, when the noise goes on a layer or only on the weights (NoiseGrad)
    inputs_tuple = validate_inputs(inputs, discrete=noise_layer is not None
                                   or weight_noise is not None and no_input_noise(stdevs))
    validate_differentiable_inputs(method, inputs_tuple)
    outputs = validate_outputs(outputs, kwargs, is_joint, draw_baseline_from_distrib, delta_reduction)
    objective = check_objective(objective)
    auto_given = ('nt_samples="auto"' if nt_samples == "auto" else
                  'weight_noise(draws="auto")' if getattr(weight_noise, "draws", None) == "auto" else None)
    check_auto_outputs(outputs, auto_given, "an objective" if objective is not None else
                       None if _captum.batches_outputs(method, kwargs) else type(method).__name__)
    times_input = validate_times_input(times_input, method, noise_layer, is_joint)
    channel_reducer = validate_channel_reducer(channel_reducer)
    validate_grad_mode(method)
    nt_type, needs_m2 = validate_nt_type(nt_type)
    weights = None
    if weight_noise is not None:  # nt_samples counts the input draws of each weight draw
        weights = check_weight_noise(weight_noise, method, nt_samples, sampler, is_joint, noise_layer, return_stderr)
    auto = isinstance(nt_samples, str) and nt_samples == "auto" if weights is None else weights.auto
    return_delta = bool(kwargs.pop("return_convergence_delta", False))
    if is_joint:
        _check_joint(method, nt_type, auto, sampler, nt_samples, draw_baseline_from_distrib, delta_reduction, kwargs)
    nt_samples, nt_samples_batch_size, max_batch_rows, memory_budget = validate_counts(
        nt_samples, nt_samples_batch_size, max_batch_rows, memory_budget
    )
    if not auto and (tol is not None or max_samples is not None):
        given = ", ".join(f"{name}={value!r}" for name, value in (("tol", tol), ("max_samples", max_samples))
                          if value is not None)
        verb = "apply" if tol is not None and max_samples is not None else "applies"
        if weights is not None:
            raise ValueError(f'{given} {verb} only to weight_noise(draws="auto") (adding weight draws until '
                             f"converged); with draws={weights.spec.draws!r} every example gets exactly that many")
        raise ValueError(f'{given} {verb} only to nt_samples="auto": pass nt_samples="auto" to stop when converged '
                         f"(now nt_samples={nt_samples!r}, so every example gets exactly that many samples)")
    if auto:
        tol = DEFAULT_TOL if tol is None else tol
        max_samples = validate_auto(tol, DEFAULT_MAX_SAMPLES if max_samples is None else max_samples,
                                    delta_reduction)
    seed = validate_seed(seed, generator)
    validate_delta(return_delta, method, delta_reduction)
    limit = max_samples if auto else nt_samples
    # with "auto", max_samples must leave room for a standard error: stopping is decided by it
    if weights is None:
        validate_stderr_units(return_stderr or auto, nt_type, sampler, limit, auto)
    else:
        limit = weights.limit(max_samples if auto else None, nt_type, return_stderr or auto)
    validate_keywords(method, accepted if accepted is not None else accepted_keywords(method), kwargs)
    if objective is not None:  # the objective reads target as it likes: it only needs a row per example
        objective_targets(kwargs.get("target"), inputs_tuple[0].shape[0], inputs_tuple[0].device)
    else:
        if kwargs.get("target") is not None:
            kwargs["target"] = one_hot_as_indices(kwargs["target"], inputs_tuple[0].shape[0])
        validate_target(kwargs.get("target"))
    validate_method_arguments(method, kwargs)
    validate_kwargs(kwargs, inputs_tuple, draw_baseline_from_distrib, _captum.takes_baseline_distribution(method))
    validate_baselines(kwargs.get("baselines"), inputs_tuple)
    kwargs = validate_feature_mask(kwargs, inputs_tuple)
    layer, sigmas = None, ()
    if noise_layer is not None and _captum.repeats_examples_in_place(method):
        raise ValueError(f"noise_layer= is not available with {type(method).__name__}, which repeats each example in "
                         "consecutive rows of its forward; smooth Saliency, InputXGradient, IntegratedGradients, "
                         "DeepLift or a layer method instead")
    if isinstance(noise_layer, str) and not noise_layer:
        raise ValueError("noise_layer='' names the whole model (noise on its outputs changes no gradient); "
                         "name one of its modules")
    if noise_layer is not None:
        layer = resolve_layer(noise_layer, tuple(modules_of(method.forward_func)))
        validate_layer_stdevs(stdevs)  # its shape is checked against the layer's output by LayerNoise.measure
    else:
        sigmas = resolve_stdevs(stdevs, inputs_tuple)
        if weights is not None:
            # a method that draws per sample (GradientShap, a baseline drawn per copy) makes its samples differ
            weights.check_input_noise(sigmas, draw_baseline_from_distrib or _captum.draws_from_global_rng(method))
    ids = validate_example_ids(example_ids, inputs_tuple[0].shape[0], inputs_tuple[0].device)
    seeded = seed is not None or generator is not None
    return Request(
        inputs=inputs_tuple, is_inputs_tuple=isinstance(inputs, tuple), nt_type=nt_type, needs_m2=needs_m2,
        auto=auto, limit=limit, tol=float(tol) if auto else DEFAULT_TOL, batch_size=nt_samples_batch_size, max_batch_rows=max_batch_rows,
        memory_budget=memory_budget, sampler=sampler, joint=is_joint, stratify=stratify, path_density=path_density,
        return_stderr=bool(return_stderr), return_delta=return_delta, delta_reduction=delta_reduction,
        draw_baseline_from_distrib=bool(draw_baseline_from_distrib), sigmas=sigmas,
        seeds=SampleSeeds.from_arguments(seed, generator), seeded=seeded, kwargs=kwargs, example_ids=ids,
        noise_layer=layer, noise_mask=token_mask(noise_mask, inputs_tuple[0].shape[0]), layer_stdevs=stdevs,
        weights=weights,
        outputs=outputs, objective=objective, times_input=times_input, channel_reducer=channel_reducer,
    )


def _check_joint(
    method: Attribution, nt_type: str, auto: bool, sampler: str, nt_samples: Any,
    draw_baseline_from_distrib: bool, delta_reduction: Any, kwargs: Dict[str, Any],
) -> None:
    """What joint sampling of (noise, path point) cannot do, said before anything runs."""
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    if not isinstance(method, (IntegratedGradients, LayerIntegratedGradients)):
        raise TypeError(
            "joint sampling of noise and path is defined for IntegratedGradients and LayerIntegratedGradients, "
            f"got {type(method).__name__}"
        )
    if nt_type != "smoothgrad":
        raise ValueError(
            f"nt_type={nt_type!r} is not available with joint sampling: SmoothGrad² and VarGrad are statistics "
            "of per-noise-draw IG values, and a joint sample evaluates one path point per noise draw. Use "
            "nt_type='smoothgrad', or the nested estimator (joint=False) for smoothgrad_sq / vargrad"
        )
    if auto:
        raise ValueError('nt_samples="auto" is not available with joint sampling: give an int nt_samples '
                         "(return_stderr=True reports the error it reaches)")
    if sampler == "antithetic" and isinstance(nt_samples, numbers.Integral) and not isinstance(nt_samples, bool) and nt_samples % 2:
        raise ValueError(f'sampler="antithetic" pairs ε with −ε, so nt_samples must be even, got {nt_samples}')
    unsupported = {
        "draw_baseline_from_distrib": draw_baseline_from_distrib is not False,
        'delta_reduction="none"': delta_reduction != "mean",
    }
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise ValueError(
            f"joint sampling does not support {', '.join(named)}: a joint sample draws its own baseline path "
            "point and has no per-copy IG value or delta"
        )
    nested = [name for name in ("n_steps", "method", "internal_batch_size") if name in kwargs]
    if nested:
        raise TypeError(
            f"{', '.join(map(repr, nested))} belong(s) to the nested estimator; with joint sampling each of "
            "the nt_samples samples is one gradient at a random path point, so nt_samples alone sets the cost"
        )

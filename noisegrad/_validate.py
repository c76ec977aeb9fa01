"""Checks at the door: every bad argument is named before any forward pass."""

import inspect
import numbers
import operator
from typing import Any, Dict, FrozenSet, Iterable, Optional, Tuple

import numpy as np
import torch
from captum.attr import Attribution, GradientAttribution, LayerAttribution
from torch import Tensor

from noisegrad._captum import APPROXIMATION_METHODS, RIEMANN_METHODS, is_path_method, path_points
from noisegrad.stats.deltas import DELTA_REDUCTIONS
from noisegrad.sampling.samplers import AUTO_BLOCK, independent_units, units_for_stderr


def as_int(name: str, value: object, least: Optional[int] = 1, extra: str = "") -> int:
    """``value`` as a Python int of at least ``least`` (``None``: any int), else an error naming ``name``.

    Any integer type is accepted (numpy's too, as Captum accepts them);
    bools and floats are not, even integral ones.

    Examples
    --------
    >>> import numpy as np
    >>> as_int("nt_samples", np.int64(8))
    8
    """
    what = "an int" if least is None else "a positive int" if least == 1 else f"an int >= {least}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {what}{extra}, got {value!r} ({type(value).__name__})")
    count = operator.index(value)
    if least is not None and count < least:
        raise ValueError(f"{name} must be {what}{extra}, got {count}")
    return count


def validate_inputs(inputs: object, discrete: bool = False) -> Tuple[Tensor, ...]:
    """``inputs`` as a tuple of tensors sharing their first (batch) dimension: floating point, unless ``discrete``.

    ``discrete``: the noise goes on a layer (``noise_layer=``) or on the
    weights only, so inputs of any dtype (token ids) are repeated, never
    perturbed.
    """
    items = inputs if isinstance(inputs, tuple) else (inputs,)
    if not items:
        raise ValueError("inputs is an empty tuple; give at least one tensor")
    for i, x in enumerate(items):
        if not isinstance(x, Tensor):
            raise TypeError(f"inputs must be a tensor or a tuple of tensors, got {type(x).__name__} at position {i}")
        if not discrete and not (x.is_floating_point() and not x.is_complex()):
            raise TypeError(
                f"input {i} has dtype {x.dtype}; Gaussian noise can only be added to floating-point inputs. "
                "For token ids or other discrete inputs, add the noise to the embedding's output instead: "
                "noise_layer=model.embeddings (any module of the model, or its dotted name; for a Hugging Face "
                "model, model.get_input_embeddings()); or, for noise on the weights only (NoiseGrad), "
                "weight_noise=... with stdevs=0"
            )
        if x.dim() == 0:
            raise ValueError(f"input {i} is a 0-dim tensor; dimension 0 must index the examples of the batch")
    batch = items[0].shape[0]
    sizes = [x.shape[0] for x in items]
    if any(size != batch for size in sizes):
        raise ValueError(f"the input tensors must share their first (batch) dimension, got sizes {sizes}")
    if batch == 0:
        raise ValueError("inputs hold no examples (batch dimension is 0)")
    return items


def validate_counts(
    nt_samples: object, nt_samples_batch_size: object, max_batch_rows: object, memory_budget: object
) -> Tuple[Any, Any, Optional[int], Optional[int]]:
    """The four counts, with every integer as a Python int (``"auto"`` and ``None`` kept where allowed).

    A misspelt ``"auto"`` (``"Auto"``, ``" auto"``) is a ValueError saying how it is spelt; other wrong types
    are TypeErrors.
    """
    nt_samples = count_or_auto("nt_samples", nt_samples)
    if nt_samples_batch_size is not None:
        nt_samples_batch_size = count_or_auto("nt_samples_batch_size", nt_samples_batch_size, ', "auto" or None')
    budgets = []
    for name, value in (("max_batch_rows", max_batch_rows), ("memory_budget", memory_budget)):
        if value is not None:
            value = as_int(name, value, extra=" or None")
            if isinstance(nt_samples_batch_size, int):
                raise ValueError(
                    f"give nt_samples_batch_size={nt_samples_batch_size} or {name}={value}, not both "
                    '(with a budget, nt_samples_batch_size may be None or "auto")'
                )
        budgets.append(value)
    return nt_samples, nt_samples_batch_size, budgets[0], budgets[1]


def count_or_auto(name: str, value: object, allowed: str = ' or "auto"') -> Any:
    """``value`` as a positive Python int, or ``"auto"``; a misspelt ``"auto"`` is a ValueError saying how it is spelt.

    Examples
    --------
    >>> count_or_auto("nt_samples", "auto"), count_or_auto("nt_samples", 8)
    ('auto', 8)
    >>> count_or_auto("nt_samples", "Auto")
    Traceback (most recent call last):
    ...
    ValueError: nt_samples must be a positive int or "auto", got 'Auto' (spelt "auto", lower case)
    """
    if isinstance(value, str) and value == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().lower() == "auto":
        raise ValueError(f'{name} must be a positive int{allowed}, got {value!r} (spelt "auto", lower case)')
    return as_int(name, value, extra=allowed)


def validate_tol(tol: object) -> None:
    """``tol`` of ``nt_samples="auto"``: a relative standard error strictly between 0 and 1.

    1 or more (an error as large as the attribution) is refused: it is almost always a percentage
    (``tol=5`` for 5 %), which would stop every example at the first check.

    Examples
    --------
    >>> validate_tol(0.05)
    >>> validate_tol(5)
    Traceback (most recent call last):
    ...
    ValueError: tol must be a relative standard error between 0 and 1 (0.05 for 5 %), got 5

    Any real number type is accepted (numpy's, ``Fraction``); anything else (a string, a tensor, a bool) is a
    TypeError naming its type, whose value may well read as in range.
    """
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a number between 0 and 1 (0.05 for 5 %), got {tol!r} ({type(tol).__name__})")
    if not 0 < tol < 1:
        raise ValueError(f"tol must be a relative standard error between 0 and 1 (0.05 for 5 %), got {tol!r}")


def validate_auto(tol: object, max_samples: object, delta_reduction: str) -> int:
    """The arguments of nt_samples="auto"; returns ``max_samples`` as a Python int."""
    validate_tol(tol)
    max_samples = as_int("max_samples", max_samples)
    if delta_reduction != "mean":
        raise ValueError('nt_samples="auto" returns deltas averaged per input only (delta_reduction="mean"): '
                         "inputs stop after different numbers of samples")
    return max_samples


def validate_seed(seed: object, generator: object) -> Optional[int]:
    """``seed`` as a Python int (or None), checked against ``generator``."""
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return None if seed is None else as_int("seed", seed, least=None, extra=" or None")


def validate_example_ids(example_ids: object, batch: int, device: torch.device) -> Tensor:
    """``example_ids`` as a 1-D int64 tensor on ``device``, one id per example; by default the positions.

    An example's id keys its noise, so the same id gets the same noise in any
    batch. Accepts an integer tensor or array, a range, or a sequence of ints.
    """
    if example_ids is None:
        return torch.arange(batch, device=device)
    given = type(example_ids).__name__
    if isinstance(example_ids, np.ndarray):
        if example_ids.dtype.kind not in "iu":
            raise TypeError(f"example_ids must hold integers, got a numpy array of dtype {example_ids.dtype}")
        if example_ids.dtype.kind == "u" and example_ids.size and int(example_ids.max()) >= 2**63:
            raise ValueError("example_ids must fit in int64, got a value of at least 2**63")
        example_ids = torch.from_numpy(example_ids.astype(np.int64))
    if isinstance(example_ids, Tensor):
        if example_ids.is_floating_point() or example_ids.is_complex() or example_ids.dtype == torch.bool:
            raise TypeError(f"example_ids must hold integers, got a tensor of dtype {example_ids.dtype}")
        ids = example_ids.detach().to(device=device, dtype=torch.int64)
    elif isinstance(example_ids, (range, list, tuple)):
        values = list(example_ids)
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
                raise TypeError(f"example_ids must hold integers, got {type(value).__name__} {value!r}")
            if not -(2**63) <= int(value) < 2**63:
                raise ValueError(f"example_ids must fit in int64, got {int(value)}")
        ids = torch.tensor([int(v) for v in values], dtype=torch.int64, device=device)
    else:
        raise TypeError(f"example_ids must be a sequence, range, array or tensor of integers, got {given}")
    if ids.dim() != 1 or ids.shape[0] != batch:
        raise ValueError(
            f"example_ids must hold one id per example: shape ({batch},), got shape {tuple(ids.shape)}"
        )
    return ids


def validate_target(target: object) -> None:
    """What can be told of ``target`` without a forward pass: its type, fractions, negative per-example indices.

    Whether it is in range needs the model's number of outputs, which the
    first forward pass gives (:func:`noisegrad._call.call_wrapped`).
    """
    if target is None:
        return
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must hold integer indices, got a tensor of dtype {target.dtype}")
        if target.numel() > 1:
            if target.dtype not in (torch.int32, torch.int64):
                raise TypeError(
                    f"target is a tensor of dtype {target.dtype}; one target per example is gathered from the "
                    "model's outputs, which needs torch.int64 (or torch.int32) indices"
                )
            if target.dim() != 1:
                raise ValueError(
                    f"target is a tensor of shape {tuple(target.shape)}; with more than one element it must be "
                    "1-dimensional, one index per example"
                )
            _validate_per_example_targets(target.tolist())
        return
    if isinstance(target, list):
        if all(isinstance(entry, tuple) for entry in target):
            for entry in target:
                _validate_index(entry)
            return
        if not all(_is_int(entry) for entry in target):
            wrong = next(entry for entry in target if not _is_int(entry))
            raise TypeError(
                "target as a list must hold one int (or one tuple of ints) per example, got "
                f"{wrong!r} ({type(wrong).__name__})"
            )
        _validate_per_example_targets(target)
        return
    _validate_index(target)


def _is_int(value: object) -> bool:
    """Captum selects targets with ``isinstance(value, int)``: numpy integers and bools do not count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_index(target: object) -> None:
    """An int, or a tuple of indices and slices, that indexes each example's outputs."""
    # A tuple indexes the output tensor directly, which takes any integer; a bare target must be an int.
    valid = all(map(_is_index, target)) if isinstance(target, tuple) else _is_int(target)
    if not valid:
        hint = "; pass int(target)" if _is_index(target) and not isinstance(target, Tensor) else ""
        raise TypeError(
            "target must be an int, a tuple of ints, a list with one int per example or an integer tensor, "
            f"got {target!r} ({type(target).__name__}){hint}"
        )


def _is_index(value: object) -> bool:
    """An integer of any type (not a bool) or a slice: what indexes one dimension of a tensor."""
    if isinstance(value, slice):
        return True
    if isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _validate_per_example_targets(targets: list) -> None:
    """One index per example is gathered from the outputs, and a gather takes no negative index."""
    negative = [(i, t) for i, t in enumerate(targets) if t < 0]
    if negative:
        position, value = negative[0]
        raise ValueError(
            f"target holds {value} at position {position}; with one target per example every entry must be "
            ">= 0 (they are gathered from the model's outputs, which takes no negative index)"
        )


def validate_method_arguments(method: Attribution, kwargs: Dict[str, Any]) -> None:
    """A path method's ``method`` (the integral's approximation) and ``n_steps``, as given or defaulted; its
    ``internal_batch_size`` if given."""
    if not is_path_method(method):
        return
    parameters = inspect.signature(method.attribute).parameters
    defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    approximation = kwargs.get("method", defaults.get("method"))
    if ("method" in kwargs or "method" in defaults) and approximation not in APPROXIMATION_METHODS:
        error = ValueError if isinstance(approximation, str) else TypeError
        raise error(f"method must be one of {APPROXIMATION_METHODS}, got {approximation!r}")
    if kwargs.get("internal_batch_size") is not None:  # Captum takes 0 or 2.5 silently, and fails deep inside on 30.0
        as_int("internal_batch_size", kwargs["internal_batch_size"])
    if "n_steps" not in kwargs and "n_steps" not in defaults:
        return
    n_steps = as_int("n_steps", kwargs.get("n_steps", defaults.get("n_steps")))
    # A Riemann sum needs two points on the path, Gauss-Legendre quadrature one.
    least = 2 - path_points(method, 0) if approximation in RIEMANN_METHODS else 1
    if n_steps < least:
        raise ValueError(
            f"n_steps must be at least {least} with method={approximation!r} (a Riemann sum needs two points "
            f"on the path), got {n_steps}"
        )


def validate_feature_mask(kwargs: Dict[str, Any], inputs: Tuple[Tensor, ...]) -> Dict[str, Any]:
    """``kwargs`` with a ``feature_mask`` of one tensor per input, each broadcasting to its input.

    A mask with fewer dimensions than its input gets leading dimensions of
    size 1 (the same mask under broadcasting), so that its first dimension
    says whether it holds one mask per example, which is what the noisy
    copies expand. The caller's dict is not modified.
    """
    mask = kwargs.get("feature_mask")
    if mask is None:
        return kwargs
    masks = mask if isinstance(mask, tuple) else (mask,)
    if len(masks) != len(inputs):
        raise ValueError(
            f"feature_mask has {len(masks)} entries but there are {len(inputs)} input tensors; give one mask "
            "per input tensor"
        )
    shaped = []
    for i, (m, x) in enumerate(zip(masks, inputs)):
        if not isinstance(m, Tensor):
            raise TypeError(f"feature_mask for input {i} must be a tensor, got {type(m).__name__}")
        if not broadcasts_to(m.shape, x.shape):
            raise ValueError(
                f"feature_mask for input {i} has shape {tuple(m.shape)}, which does not broadcast to the input's "
                f"{tuple(x.shape)}: it must match the input, or have size 1 where it is shared (its first "
                "dimension is 1 or the batch size)"
            )
        _validate_device("feature_mask", i, m, x)
        shaped.append(m.reshape((1,) * (x.dim() - m.dim()) + tuple(m.shape)))
    return dict(kwargs, feature_mask=tuple(shaped) if isinstance(mask, tuple) else shaped[0])


def validate_baselines(baselines: object, inputs: Tuple[Tensor, ...]) -> None:
    """Baseline tensors on the inputs' devices, in dtypes that do not change the inputs' dtypes.

    Their shapes and number are checked by :func:`noisegrad.expand.validate_kwargs`.
    """
    if baselines is None or callable(baselines):
        return
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    for i, (b, x) in enumerate(zip(items, inputs)):
        if not isinstance(b, Tensor):
            continue
        _validate_device("baselines", i, b, x)
        if torch.promote_types(b.dtype, x.dtype) != x.dtype:
            raise TypeError(
                f"baselines for input {i} has dtype {b.dtype}, which would make the model see "
                f"{torch.promote_types(b.dtype, x.dtype)} rows for the {x.dtype} input; give baselines of dtype "
                f"{x.dtype} (baselines.to({x.dtype}))"
            )


def _validate_device(name: str, index: int, value: Tensor, x: Tensor) -> None:
    if value.dim() > 0 and value.device != x.device:
        raise ValueError(
            f"{name} for input {index} is on {value.device} but the input is on {x.device}; move it with "
            f".to({str(x.device)!r})"
        )


def broadcasts_to(shape: Tuple[int, ...], target: Tuple[int, ...]) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` without changing it."""
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def validate_grad_mode(method: Attribution) -> None:
    """A gradient method cannot run under ``torch.inference_mode()``; under ``torch.no_grad()`` it can."""
    if torch.is_inference_mode_enabled() and isinstance(method, GradientAttribution):
        raise RuntimeError(
            f"{type(method).__name__} takes gradients, and no gradient can be taken under torch.inference_mode(): "
            "call attribute outside inference mode (under torch.no_grad() is fine: gradients are enabled "
            "where they are needed)"
        )


def validate_differentiable_inputs(method: Attribution, inputs: Tuple[Tensor, ...]) -> None:
    """An input-gradient method needs floating-point inputs: token ids (with ``noise_layer=``) have no gradient.

    Refused here, naming the way out, instead of autograd's "One of the
    differentiated Tensors does not require grad" at the first backward.
    """
    if not isinstance(method, GradientAttribution) or isinstance(method, LayerAttribution):
        return
    for i, x in enumerate(inputs):
        if not x.is_floating_point():
            raise TypeError(
                f"input {i} has dtype {x.dtype}, and {type(method).__name__} takes gradients with respect to its "
                f"inputs, which {x.dtype} values do not have: attribute the embedding's output with a layer method "
                "instead, e.g. LayerIntegratedGradients(model, model.embeddings) or "
                "LayerGradientXActivation(model, model.embeddings), with noise_layer= that module"
            )


def validate_stderr_units(return_stderr: bool, nt_type: str, sampler: str, nt_samples: int, auto: bool = False) -> None:
    """A standard error needs independent units (samples, antithetic pairs, replicates or blocks) to compare.

    The joint estimator's stratified standard error compares two neighbouring
    strata, one unit each, so it needs the same 2 units as its unstratified one.
    With ``auto`` a Latin hypercube comes in blocks (:data:`noisegrad.sampling.samplers.AUTO_BLOCK`).
    """
    if not return_stderr:
        return
    needed, units = units_for_stderr(nt_type), independent_units(sampler, nt_samples, blocks=auto)
    if units < needed:
        asked, count = ('nt_samples="auto"', "max_samples") if auto else ("return_stderr=True", "nt_samples")
        blocks = f" (hypercubes of {AUTO_BLOCK} samples)" if auto and sampler == "lhs" else ""
        raise ValueError(
            f"{asked} with nt_type={nt_type!r} needs at least {needed} independent units of samples; "
            f"sampler={sampler!r}{blocks} with {count}={nt_samples} has {units}"
        )


def validate_delta(return_delta: bool, method: Attribution, delta_reduction: object) -> None:
    if delta_reduction not in DELTA_REDUCTIONS:
        raise ValueError(f"delta_reduction must be one of {DELTA_REDUCTIONS}, got {delta_reduction!r}")
    if return_delta and not method.has_convergence_delta():
        raise ValueError(
            f"return_convergence_delta=True, but {type(method).__name__} has no convergence delta "
            "(methods with one include IntegratedGradients, DeepLift, DeepLiftShap and GradientShap)"
        )


def accepted_keywords(method: Attribution) -> Optional[FrozenSet[str]]:
    """The keyword arguments the wrapped method's ``attribute`` takes; ``None`` if it takes any."""
    try:
        parameters = inspect.signature(method.attribute).parameters
    except (TypeError, ValueError):  # a builtin or C extension: let the method itself judge
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return frozenset(name for name in parameters if name != "inputs")


def validate_keywords(method: Attribution, accepted: Optional[FrozenSet[str]], kwargs: Dict[str, Any]) -> None:
    """Reject keyword arguments the wrapped method's ``attribute`` does not take."""
    unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
    if unknown:
        raise TypeError(
            f"{type(method).__name__}.attribute() does not take {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(sorted(accepted))}{noise_hint(unknown)}"
        )


def noise_hint(names: Iterable[str]) -> str:
    """Where the noise level goes, if any of ``names`` (keywords given where they do not belong) is a name for it.

    Examples
    --------
    >>> noise_hint(["n_steps"])
    ''
    >>> noise_hint(["sigma"])[:50]
    '; that is not how the noise is given: give it as s'
    """
    return f"; that is not how the noise is given: {_WHERE_NOISE_GOES}" if set(names) & _NOISE_NAMES else ""


#: Where the noise level is given, for a keyword of :data:`_NOISE_NAMES` given where it does not belong.
_WHERE_NOISE_GOES = (
    "give it as stdevs= to NoiseTunnel and the front-ends (σ itself, or relative(f): f times the range of each "
    "example's values); where a SmoothingConfig decides the call (an explainer, its set_kwargs, the monitor's keyword "
    "arguments, a config= of the monitor or attribute_dataset) as its noise= (σ itself) or noise_level= (the f of "
    "relative(f), with relative_to='std' for relative(f, of='std'))"
)
#: Names users give the noise level elsewhere (NoiseTunnel's stdevs, where a configuration has fields instead;
#: SmoothingConfig, Vertex AI, PAIR saliency, zennit, innsight).
_NOISE_NAMES = frozenset({"stdevs", "noise", "noise_level", "feature_noise", "feature_noise_sigma", "sigma", "stdev", "std",
                          "stddev", "stddevs", "noise_sigma", "noise_std", "noise_stdev", "noise_scale",
                          "stdev_spread"})

"""What a call explains and in which form, checked at the door: several outputs, an objective, targets as
indices or one-hot rows, times-input and a channel reduction."""

import numbers
from typing import Any, Dict, Optional, Tuple

from captum.attr import Attribution, LayerAttribution
from torch import Tensor

from noisegrad.reducers import CHANNEL_REDUCERS

__all__ = ["TIMES_INPUT", "validate_outputs", "one_hot_as_indices", "times_input_choice", "validate_times_input",
           "validate_channel_reducer"]

#: ``times_input=`` choices: each noisy attribution times the clean input x (innsight's SmoothGrad×Input), or
#: times its noisy input x + ε (Captum's NoiseTunnel over InputXGradient).
TIMES_INPUT = ("clean", "noisy")


def validate_outputs(
    outputs: Any, kwargs: Dict[str, Any], joint: bool, draw_baseline_from_distrib: bool, delta_reduction: Any
) -> Optional[Tuple[int, ...]]:
    """``outputs`` (several output columns explained at once) as a tuple of distinct ints, or None."""
    if outputs is None:
        return None
    if isinstance(outputs, Tensor):
        outputs = outputs.tolist()
    if isinstance(outputs, (str, bytes)) or not hasattr(outputs, "__iter__"):
        raise TypeError(f"outputs= must be a sequence of output indices, got {type(outputs).__name__}")
    values = list(outputs)
    if not values or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0 for v in values):
        raise ValueError(f"outputs= must be a non-empty sequence of output indices >= 0, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"outputs= has repeated indices: {values!r}")
    if kwargs.get("target") is not None:
        raise ValueError("give target= (one output per example) or outputs= (several outputs for every example), "
                         "not both")
    if joint:
        raise ValueError("outputs= is not available with joint sampling yet; use the nested estimator (joint=False)")
    if draw_baseline_from_distrib:
        raise ValueError("outputs= with draw_baseline_from_distrib is not supported: the K outputs of a copy must "
                         "share its baseline")
    if delta_reduction == "none" and kwargs.get("return_convergence_delta"):
        raise ValueError('outputs= returns deltas per example and output; delta_reduction="none" is not supported')
    return tuple(int(v) for v in values)


def check_auto_outputs(outputs: Optional[Tuple[int, ...]], auto_given: Optional[str], run_per_output: Optional[str]
                       ) -> None:
    """Refuse ``outputs=`` with "auto" (``auto_given``) when ``run_per_output`` (what runs once per output) is set."""
    if outputs is not None and auto_given and run_per_output:
        raise ValueError(f"outputs= with {auto_given} needs a method that takes all outputs in one pass "
                         "(Saliency, InputXGradient, IntegratedGradients, their layer forms on one layer, without "
                         f"objective=); with {run_per_output} it runs once per output, and each run would stop on its "
                         "own")


def one_hot_as_indices(target: Any, batch: int) -> Any:
    """A ``(batch, n_outputs)`` tensor of one-hot rows (Xplique's targets) as one index per example; else ``target``.

    Captum has no meaning for a 2-dimensional target tensor, so it is read as
    one-hot rows; rows that are not one-hot (weights, several ones) are
    refused, pointing at ``objective=`` for weighted outputs.

    Examples
    --------
    >>> import torch
    >>> one_hot_as_indices(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), 2).tolist()
    [2, 0]
    """
    if not isinstance(target, Tensor) or target.dim() != 2:
        return target
    if target.shape[0] != batch:
        raise ValueError(f"target as one-hot rows needs one row per example ({batch}), got shape "
                         f"{tuple(target.shape)}")
    if target.shape[1] == 1:  # a column of labels, not one-hot rows of a one-output model (they would all be 1)
        raise ValueError(f"target has shape {tuple(target.shape)}: a 2-dimensional target is read as one-hot rows, "
                         "and rows of one output select nothing; for one index per example give target.reshape(-1)")
    ones = target == 1
    if not bool(((target == 0) | ones).all()) or not bool((ones.sum(dim=1) == 1).all()):
        raise ValueError("a 2-dimensional target is read as one-hot rows (one 1 per row, 0 elsewhere); to weight "
                         "several outputs, give objective=lambda model, x, y: (model(x) * y).sum(-1) and pass the "
                         "rows as target")
    return ones.long().argmax(dim=1)


def times_input_choice(times_input: Any) -> Optional[str]:
    """``times_input`` as None, ``"clean"`` or ``"noisy"`` (``False`` is None; ``True`` is refused as ambiguous)."""
    if times_input is None or times_input is False:
        return None
    if times_input is True:
        raise ValueError('times_input=True is ambiguous: "clean" multiplies each noisy gradient by the clean input '
                         '(innsight\'s SmoothGrad×Input, mean(∇f(x+ε)) ⊙ x), "noisy" by its noisy input (Captum\'s '
                         "NoiseTunnel over InputXGradient, mean((x+ε) ⊙ ∇f(x+ε)))")
    if times_input not in TIMES_INPUT:
        raise ValueError(f"times_input must be None, 'clean' or 'noisy', got {times_input!r}")
    return str(times_input)


def validate_times_input(
    times_input: Any, method: Attribution, noise_layer: Any, joint: bool
) -> Optional[str]:
    """``times_input`` as None, ``"clean"`` or ``"noisy"``; refused where attributions are not the inputs' shape."""
    times_input = times_input_choice(times_input)
    if times_input is None:
        return None
    if isinstance(method, LayerAttribution) or noise_layer is not None:
        raise ValueError("times_input multiplies attributions of the inputs by the inputs; it does not apply to a "
                         "layer's attributions or to noise at a layer (noise_layer=)")
    if method.multiplies_by_inputs:
        raise ValueError(f"{type(method).__name__} already multiplies by the inputs (multiplies_by_inputs=True); "
                         "times_input is for gradient methods such as Saliency")
    if joint:
        raise ValueError("times_input is not available with joint sampling, which is IntegratedGradients (already "
                         "times the input)")
    return times_input


def validate_channel_reducer(reducer: Any) -> Optional[str]:
    """``channel_reducer`` as one of :data:`~noisegrad.reducers.CHANNEL_REDUCERS` or None."""
    if reducer is not None and reducer not in CHANNEL_REDUCERS:
        raise ValueError(f"channel_reducer must be one of {CHANNEL_REDUCERS} or None, got {reducer!r}")
    return reducer

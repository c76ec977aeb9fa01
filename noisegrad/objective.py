"""Custom objectives: explain any score g(model, inputs, targets), one per example, instead of a model output.

A classifier's logit is one objective among many: a regression output, the
summed logits of a segmentation mask's pixels, the margin between two
classes. ``objective=g`` on ``NoiseTunnel.attribute`` (and the front-ends,
explainers and :class:`~noisegrad.SmoothingConfig`) explains ``g`` with any
Captum method: the method is given a forward function that returns g's
scores, and ``target`` reaches ``g`` as its third argument, one row per
forward row, carried as the last additional forward argument so that every
method expands it exactly as it expands its inputs (noisy copies, IG's path
steps, DeepLift's baseline rows). This is Xplique's ``operator``
g(f, x, y) with our argument names.
"""

import numbers
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from captum.attr import Attribution
from torch import Tensor, nn

__all__ = ["Objective", "check_objective", "objective_targets", "with_objective"]

#: g(model, inputs, targets) → one score per example (a tensor of shape ``(rows,)``).
Objective = Callable[[Callable[..., Any], Any, Optional[Tensor]], Tensor]


def check_objective(objective: Any) -> Optional[Objective]:
    """``objective`` if it is None or callable; ``TypeError`` naming it otherwise."""
    if objective is not None and not callable(objective):
        raise TypeError(f"objective must be a function g(model, inputs, targets) returning one score per example, "
                        f"got {type(objective).__name__}")
    return objective


def objective_targets(target: Any, batch: int, device: torch.device) -> Optional[Tensor]:
    """``target`` as the objective sees it: None, or a tensor whose first dimension indexes the examples.

    An int (or a one-element tensor without one row per example) is every
    example's target, a tuple an index into multi-dimensional outputs for
    every example; a list has one entry per example; a tensor with a row per
    example (indices, one-hot or weight rows, masks, a ``(batch, 1)``
    regression target also when the batch is 1) is passed as it is.

    Examples
    --------
    >>> objective_targets(3, 2, torch.device("cpu")).tolist()
    [3, 3]
    >>> objective_targets([(0, 1), (2, 3)], 2, torch.device("cpu")).tolist()
    [[0, 1], [2, 3]]
    >>> objective_targets(torch.eye(3)[[2, 0]], 2, torch.device("cpu")).shape
    torch.Size([2, 3])
    >>> objective_targets(torch.tensor([[0.5]]), 1, torch.device("cpu")).shape
    torch.Size([1, 1])
    """
    if target is None:
        return None
    if isinstance(target, Tensor):
        if target.dim() > 0 and target.shape[0] == batch:
            return target.to(device)
        if target.numel() == 1:
            return target.reshape(()).to(device).expand(batch).clone()
        raise ValueError(f"with objective=, target must be one value for every example or a tensor with one row "
                         f"per example ({batch}); got a tensor of shape {tuple(target.shape)}")
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return torch.full((batch,), int(target), dtype=torch.int64, device=device)
    if isinstance(target, tuple):
        return torch.tensor([list(target)] * batch, dtype=torch.int64, device=device)
    if isinstance(target, list):
        if len(target) != batch:
            raise ValueError(f"with objective=, a target list needs one entry per example ({batch}), "
                             f"got {len(target)}")
        return torch.tensor([list(t) if isinstance(t, tuple) else t for t in target], device=device)
    raise TypeError(f"with objective=, target must be an int, a tuple, a list or a tensor, got {type(target).__name__}")


class _ObjectiveModel(nn.Module):
    """The model a method sees: the objective's scores, its targets the last additional argument.

    A module holding the user's model, so that methods that hook the model
    itself (DeepLift's paired forward, GuidedBackprop's ReLUs) reach it.
    """

    def __init__(self, forward: Callable[..., Any], objective: Objective, n_inputs: int, n_extra: int,
                 inputs_tuple: bool) -> None:
        super().__init__()
        self.forward_func, self.objective = forward, objective
        self.n_inputs, self.n_extra, self.inputs_tuple = n_inputs, n_extra, inputs_tuple

    def forward(self, *args: Any) -> Tensor:
        inputs = args[: self.n_inputs]
        extra = args[self.n_inputs: self.n_inputs + self.n_extra]
        targets = args[self.n_inputs + self.n_extra]
        forward = self.forward_func

        def model(*tensors: Any) -> Any:
            return forward(*tensors, *extra)

        scores = self.objective(model, inputs if self.inputs_tuple else inputs[0], targets)
        rows = inputs[0].shape[0]
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (rows,):
            got = f"shape {tuple(scores.shape)}" if isinstance(scores, Tensor) else f"a {type(scores).__name__}"
            hint = "; for a (rows, 1) score, return score.squeeze(-1)" if got == f"shape ({rows}, 1)" else ""
            raise ValueError(f"objective must return one score per example: a tensor of shape ({rows},) for a "
                             f"forward of {rows} rows, got {got}{hint}; targets holds one entry per row (select "
                             "with logits.gather(1, targets[:, None]).squeeze(1), not logits[:, targets])")
        if torch.is_grad_enabled() and any(x.requires_grad for x in inputs) and not scores.requires_grad:
            raise ValueError("objective returned a score that does not depend on the inputs through autograd (it was "
                             "detached, or made by argmax, round or an integer conversion), so it has no gradient; "
                             "return a differentiable function of model(inputs)")
        return scores


def with_objective(method: Attribution, objective: Objective, kwargs: Dict[str, Any], inputs: Tuple[Tensor, ...],
                   inputs_tuple: bool) -> Tuple[Attribution, Dict[str, Any]]:
    """A shallow copy of ``method`` whose forward returns ``objective``'s scores, and the kwargs to call it with.

    ``target`` leaves the kwargs and becomes the last additional forward
    argument (:func:`objective_targets`); the user's method is not modified.
    """
    import copy

    extra = kwargs.get("additional_forward_args")
    extra = () if extra is None else (extra if isinstance(extra, tuple) else (extra,))
    targets = objective_targets(kwargs.get("target"), inputs[0].shape[0], inputs[0].device)
    twin = copy.copy(method)
    wrapped = _ObjectiveModel(method.forward_func, objective, len(inputs), len(extra), inputs_tuple)
    if getattr(method, "model", None) is method.forward_func:  # DeepLift, GuidedBackprop: hooks on the model
        twin.model = wrapped
    twin.forward_func = wrapped
    call = {k: v for k, v in kwargs.items() if k != "target"}
    call["additional_forward_args"] = extra + (targets,)
    return twin, call

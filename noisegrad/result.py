"""What a call with standard errors returns: the smoothed attribution, its error, and how far to trust it."""

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

from torch import Tensor

__all__ = ["SmoothedAttribution"]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]


@dataclass
class SmoothedAttribution:
    """A smoothed attribution with its Monte-Carlo standard error.

    Attributes
    ----------
    attributions : Tensor or tuple of Tensor
        As ``NoiseTunnel.attribute`` returns them.
    stderr : Tensor or tuple of Tensor
        The standard error of every element, same shapes.
    relative_stderr : Tensor
        Per example, ``‖stderr‖ / ‖attributions‖`` (all tensors together), shape ``(batch,)``.
    nt_samples : int or Tensor
        Noisy samples used (per example in ``nt_samples="auto"`` mode).
    delta : Tensor, optional
        The averaged convergence delta per example, if it was asked for.
    dof : int or Tensor
        Degrees of freedom of the standard error (per example with
        ``nt_samples="auto"``): ``n − 1`` for i.i.d. SmoothGrad's textbook
        error, ``groups − 1`` for the jackknife (7 with 8 groups, 3 with 4
        QMC / LHS replicates). :meth:`interval` uses them.
    converged : Tensor, optional
        With ``nt_samples="auto"``: per example, whether ``tol`` was reached
        (``False`` where ``max_samples`` stopped it first).
    delta_stderr : Tensor, optional
        The joint estimator's standard error of ``delta``.

    Examples
    --------
    >>> import torch
    >>> result = SmoothedAttribution(torch.ones(1, 2), torch.full((1, 2), 0.1), torch.tensor([0.1]), 16, dof=15)
    >>> low, high = result.interval(0.95)
    >>> [round(v, 3) for v in high[0].tolist()]
    [1.213, 1.213]
    """

    attributions: TensorOrTuple
    stderr: TensorOrTuple
    relative_stderr: Tensor
    nt_samples: Union[int, Tensor]
    delta: Optional[Tensor] = None
    dof: Union[int, Tensor, None] = None
    converged: Optional[Tensor] = None
    delta_stderr: Optional[Tensor] = None

    def __repr__(self) -> str:
        """Shapes and the per-example summaries, not every element."""
        def describe(value: Any) -> str:
            if isinstance(value, Tensor):
                return f"Tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
            if isinstance(value, (tuple, list)):
                inner = ", ".join(describe(v) for v in value)
                return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
            return repr(value)

        def short(value: Any) -> str:
            if isinstance(value, Tensor) and value.numel() <= 8:
                return repr([round(v, 4) if isinstance(v, float) else v for v in value.tolist()])
            return describe(value)

        parts = [f"attributions={describe(self.attributions)}", f"stderr={describe(self.stderr)}",
                 f"relative_stderr={short(self.relative_stderr)}", f"nt_samples={short(self.nt_samples)}",
                 f"dof={short(self.dof)}"]
        parts += [f"{name}={short(getattr(self, name))}" for name in ("delta", "converged", "delta_stderr")
                  if getattr(self, name) is not None]
        return f"SmoothedAttribution({', '.join(parts)})"

    def interval(self, level: float = 0.95) -> Tuple[TensorOrTuple, TensorOrTuple]:
        """A two-sided confidence interval per element: ``attribution ± t · stderr``.

        ``t`` is Student's t quantile at ``(1 + level) / 2`` with :attr:`dof`
        degrees of freedom (with few groups, 1.96 covers only 84–90 %).
        """
        if isinstance(self.attributions, list):
            raise ValueError("intervals of a list of layers: take each layer's attributions and stderr")
        return interval(self.attributions, self.stderr, self.dof, level)


def interval(attributions: TensorOrTuple, stderr: TensorOrTuple, dof: Any, level: float) -> Tuple[Any, Any]:
    """``attributions ± t_{(1+level)/2, dof} · stderr`` in the form of ``attributions``."""
    from noisegrad.stats.student_t import interval_halfwidth_factor

    if dof is None:
        raise ValueError("an interval needs the degrees of freedom of the standard error (dof)")
    factor = interval_halfwidth_factor(level, dof)
    values, errors = _as_list(attributions), _as_list(stderr)
    lows, highs = [], []
    for value, error in zip(values, errors):
        scale = factor
        if isinstance(factor, Tensor) and factor.dim() == 1:  # one per example
            scale = factor.to(error.dtype).reshape((-1,) + (1,) * (error.dim() - 1))
        lows.append(value - scale * error)
        highs.append(value + scale * error)
    if isinstance(attributions, tuple):
        return tuple(lows), tuple(highs)
    return lows[0], highs[0]


def _as_list(value: TensorOrTuple) -> List[Tensor]:
    return list(value) if isinstance(value, tuple) else [value]

"""How a noise-tunnel estimate settles as samples grow: nested seeded runs and their error measures.

With a fixed ``seed`` the noise of sample ``k`` does not depend on
``nt_samples``, so the runs at ``nt_samples = 1, 4, 16, 64`` are nested: each
estimate uses the first ``N`` samples of one longer run. Two measures come out:

* **relative change** between successive estimates,
  ``‖A_N − A_prev‖₂ / ‖A_N‖₂`` per input (computed from the nested runs
  alone; undefined for the first count);
* **relative standard error** of the ``N``-sample estimate,
  ``‖SE_N‖₂ / ‖A_N‖₂`` per input, with ``SE_N`` the per-feature standard
  error, estimated in one of two ways (``stderr=``):

  - ``"return_stderr"`` (noisegrad's ``NoiseTunnel``): the run's own
    ``return_stderr=True`` standard error, a jackknife over groups of its
    samples. Costs no extra gradients; undefined for ``N = 1`` (``N < 3``
    for VarGrad; for antithetic noise, count pairs). QMC and LHS noise then runs as four
    randomised replicates, as ``return_stderr`` makes it.
  - ``"repeats"`` (any tunnel, Captum's included): the run is repeated with
    ``repeats − 1`` further seeds, and ``SE_N`` is the standard deviation
    (``ddof=1``) of the ``N``-sample estimates across the repeats. Costs
    ``repeats`` runs per count.
"""

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

from noisegrad.sampling.samplers import independent_units, units_for_stderr
from noisegrad.tunnel import NoiseTunnel
from noisegrad.viz._arrays import as_array

__all__ = ["ConvergenceRun", "measure_convergence", "STDERR_METHODS"]

#: ``stderr`` options of :func:`measure_convergence`.
STDERR_METHODS = ("auto", "return_stderr", "repeats", None)

_RESERVED = ("nt_type", "nt_samples", "seed", "generator")


@dataclass
class ConvergenceRun:
    """Nested estimates at increasing sample counts, and how much they still move.

    Attributes
    ----------
    sample_counts : tuple of int
        ``K`` increasing ``nt_samples`` values.
    estimates : numpy.ndarray
        ``(K, batch, ...)``: the attribution at each count.
    relative_change : numpy.ndarray
        ``(K, batch)``: ``‖A_k − A_{k−1}‖₂ / ‖A_k‖₂``; NaN for ``k = 0``.
    relative_stderr : numpy.ndarray or None
        ``(K, batch)``: ``‖SE_k‖₂ / ‖A_k‖₂``; NaN where undefined.
    stderr_method : str or None
        How ``relative_stderr`` was estimated (see the module docstring), or
        ``"given"`` when standard errors were passed in.
    nt_type : str
    deltas : numpy.ndarray or None
        ``(K, batch)`` averaged convergence deltas, when they were asked for.
    dof : numpy.ndarray or None
        ``(K,)`` degrees of freedom of each count's standard error (NaN
        where there is none), for confidence intervals.
    """

    sample_counts: Tuple[int, ...]
    estimates: np.ndarray
    relative_change: np.ndarray
    relative_stderr: Optional[np.ndarray]
    stderr_method: Optional[str]
    nt_type: str = "smoothgrad"
    deltas: Optional[np.ndarray] = None
    dof: Optional[np.ndarray] = None

    @classmethod
    def from_estimates(
        cls,
        sample_counts: Sequence[int],
        estimates: Sequence[object],
        stderr: Optional[Sequence[object]] = None,
        nt_type: str = "smoothgrad",
        deltas: Optional[Sequence[object]] = None,
    ) -> "ConvergenceRun":
        """Build a run from estimates you computed (and, e.g. from ``return_stderr``, their standard errors).

        Parameters
        ----------
        sample_counts : sequence of int
            Increasing sample counts.
        estimates : sequence of tensor or array
            One ``(batch, ...)`` attribution per count.
        stderr : sequence of tensor or array, optional
            Per-feature standard errors shaped like ``estimates``.
        nt_type : str
        deltas : sequence of tensor or array, optional
            One ``(batch,)`` delta per count.

        Examples
        --------
        >>> run = ConvergenceRun.from_estimates([1, 4], [np.ones((2, 3)), np.full((2, 3), 2.0)],
        ...                                     stderr=[np.ones((2, 3)), np.full((2, 3), 0.5)])
        >>> run.relative_change[1].tolist(), run.relative_stderr[:, 0].tolist()
        ([0.5, 0.5], [1.0, 0.25])
        """
        counts = validate_sample_counts(sample_counts)
        stack = np.stack([as_array(e, "estimates") for e in estimates])
        if stack.shape[0] != len(counts) or stack.ndim < 2:
            raise ValueError(
                f"estimates must be {len(counts)} arrays of shape (batch, ...), one per sample count; "
                f"got an array of shape {stack.shape}"
            )
        relative_stderr = None
        if stderr is not None:
            errors = np.stack([as_array(e, "stderr", allow_nan=True) for e in stderr])
            if errors.shape != stack.shape:
                raise ValueError(f"stderr must be shaped like estimates {stack.shape}, got {errors.shape}")
            relative_stderr = _relative(errors, stack)
        delta_stack = None if deltas is None else np.stack([as_array(d, "deltas").reshape(-1) for d in deltas])
        return cls(counts, stack, _relative_change(stack), relative_stderr, None if stderr is None else "given",
                   nt_type, delta_stack)


def validate_sample_counts(sample_counts: object) -> Tuple[int, ...]:
    """Strictly increasing positive ints."""
    try:
        counts = tuple(sample_counts)  # type: ignore[arg-type]
    except TypeError:
        counts = ()
    if (
        not counts
        or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in counts)
        or any(b <= a for a, b in zip(counts, counts[1:]))
    ):
        raise ValueError(f"sample_counts must be strictly increasing positive ints, e.g. (1, 4, 16, 64), got {sample_counts!r}")
    return tuple(int(n) for n in counts)


def measure_convergence(
    nt: Any,
    inputs: torch.Tensor,
    *,
    sample_counts: Sequence[int] = (1, 4, 16, 64),
    nt_type: str = "smoothgrad",
    stderr: Optional[str] = "auto",
    repeats: int = 4,
    seed: int = 0,
    **attribute_kwargs: Any,
) -> ConvergenceRun:
    """Run ``nt.attribute`` at each of ``sample_counts`` with one seed and measure how the estimate settles.

    Parameters
    ----------
    nt : noisegrad.NoiseTunnel
    inputs : torch.Tensor
        One input tensor ``(batch, ...)`` (for tuple inputs, measure one tensor at a time).
    sample_counts : sequence of int
        Strictly increasing ``nt_samples`` values; the runs are nested (see the module docstring).
    nt_type : {"smoothgrad", "smoothgrad_sq", "vargrad"}
    stderr : {"auto", "return_stderr", "repeats", None}
        How to estimate the relative standard error: ``"auto"`` is
        ``"return_stderr"`` for noisegrad's ``NoiseTunnel`` and ``"repeats"``
        for other tunnels; ``None`` skips it (only the relative change is
        computed).
    repeats : int
        Runs per count for ``stderr="repeats"`` (≥ 2), with seeds ``seed``, ``seed + 1``, ...
    seed : int
        Seed of the nested runs.
    **attribute_kwargs
        Passed to ``nt.attribute`` (``target``, ``stdevs``,
        ``nt_samples_batch_size``, ``return_convergence_delta=True``, ...).

    Returns
    -------
    ConvergenceRun

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from noisegrad import NoiseTunnel
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> run = measure_convergence(NoiseTunnel(Saliency(model)), torch.rand(3, 4), sample_counts=(4, 16, 64),
    ...                           stdevs=0.5, target=0, abs=False)
    >>> run.estimates.shape, run.relative_stderr.shape, run.stderr_method
    ((3, 3, 4), (3, 3), 'return_stderr')
    >>> bool((run.relative_stderr[2] < run.relative_stderr[0]).all())  # 16× the samples: about ¼ of the error
    True
    """
    counts = validate_sample_counts(sample_counts)
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be one torch.Tensor (batch, ...), got {type(inputs).__name__}")
    clash = [k for k in _RESERVED if k in attribute_kwargs]
    if clash:
        raise ValueError(f"{clash} are set by measure_convergence (sample_counts=, nt_type=, seed=); remove them")
    if attribute_kwargs.get("weight_noise") is not None:
        raise ValueError(
            "measure_convergence steps nt_samples, which with weight_noise= counts the input draws of each weight "
            "draw while the weight draws stay fixed, so its curve would not show the error falling with the draws; "
            'for an estimate that stops when converged, give weight_noise(draws="auto") and tol= to attribute'
        )
    if stderr not in STDERR_METHODS:
        raise ValueError(f"stderr must be one of {STDERR_METHODS}, got {stderr!r}")
    own_stderr = isinstance(nt, NoiseTunnel)
    if stderr == "auto":
        stderr = "return_stderr" if own_stderr else "repeats"
    if stderr == "return_stderr" and not own_stderr:
        raise ValueError(f"stderr='return_stderr' needs noisegrad.NoiseTunnel, got {type(nt).__name__}: "
                         "use stderr='repeats'")
    if stderr == "repeats" and (isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2):
        raise ValueError(f"repeats must be an int >= 2 for stderr='repeats', got {repeats!r}")
    with_delta = bool(attribute_kwargs.get("return_convergence_delta", False))
    quiet = {k: v for k, v in attribute_kwargs.items() if k != "return_convergence_delta"}

    def run(n: int, kind: str, run_seed: int, kwargs: dict) -> Any:
        return nt.attribute(inputs, nt_type=kind, nt_samples=n, seed=run_seed, **kwargs)

    estimates, deltas, errors, dofs = [], [], [], []
    for n in counts:
        units = independent_units(attribute_kwargs.get("sampler", "iid"), n)
        with_own_stderr = stderr == "return_stderr" and units >= units_for_stderr(nt_type)
        out = run(n, nt_type, seed, dict(attribute_kwargs, return_stderr=True) if with_own_stderr else attribute_kwargs)
        if with_own_stderr:
            errors.append(as_array(out.stderr, "stderr"))
            dofs.append(float(np.max(as_array(out.dof, "dof"))))
            out = (out.attributions, out.delta) if with_delta else out.attributions
        if with_delta:
            out, delta = out
            deltas.append(as_array(delta, "delta").reshape(-1))
        estimates.append(as_array(out, "attributions"))
        if stderr == "return_stderr" and not with_own_stderr:
            errors.append(np.full_like(estimates[-1], np.nan))
            dofs.append(np.nan)
        elif stderr == "repeats":
            dofs.append(float(repeats - 1))
            others = [as_array(run(n, nt_type, seed + r, quiet), "attributions") for r in range(1, repeats)]
            errors.append(np.std(np.stack([estimates[-1]] + others), axis=0, ddof=1))
    stack = np.stack(estimates)
    return ConvergenceRun(
        counts, stack, _relative_change(stack), None if stderr is None else _relative(np.stack(errors), stack),
        stderr, nt_type, np.stack(deltas) if with_delta else None, np.asarray(dofs) if dofs else None,
    )


def _norms(values: np.ndarray) -> np.ndarray:
    """L2 norm of each example: ``(K, batch, ...)`` → ``(K, batch)``."""
    return np.sqrt((values.reshape(values.shape[0], values.shape[1], -1) ** 2).sum(axis=2))


def _relative(numerator: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    top, bottom = _norms(numerator), _norms(estimates)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)


def _relative_change(estimates: np.ndarray) -> np.ndarray:
    change = np.full(estimates.shape[:2], np.nan)
    if len(estimates) > 1:
        change[1:] = _relative(np.diff(estimates, axis=0), estimates[1:])
    return change

"""One-call SmoothGrad, SmoothGrad² and VarGrad of a model's gradient, with the best measured defaults.

``NoiseTunnel`` keeps Captum's defaults for drop-in parity (i.i.d. noise,
an absolute σ of 1.0, 5 samples). These functions choose for the user instead:
noise relative to each example's range (15 %, the SmoothGrad paper's 10–20 %),
50 samples (where the paper sees diminishing returns), a chunk size from the
model's memory per row, and the sampler that needed the fewest samples for the
same error in ``benchmarks/SAMPLERS.md`` (16 examples × 8 seeds, on a CNN and
an MLP): a Latin hypercube for every statistic. With ``weight_noise(draws="auto")``,
which cannot spread a hypercube over independent weight draws, or
``return_stderr=True``, whose standard error would rest on the hypercube's 4
replicates (3 degrees of freedom), they take the best sampler without that
limit instead (:data:`FALLBACK_SAMPLER`): antithetic pairs for the SmoothGrads,
i.i.d. noise for VarGrad, for which antithetic pairs are worse than i.i.d.
noise. With ``nt_samples="auto"`` a hypercube comes as independent blocks of 4
samples, which keeps less of its gain; they take it where it needed fewer
samples than the fallback for the same error on the time-to-accuracy workloads
(:data:`AUTO_SAMPLER`, ``benchmarks/AUTO_LHS.md``)."""

import numbers
from typing import Any, Callable, Dict, Optional, Union

from captum.attr import Saliency
from torch import Tensor

from noisegrad.perturb.inputs import Relative, StdevsType, relative
from noisegrad.result import SmoothedAttribution
from noisegrad.tunnel import NoiseTunnel, TensorOrTuple

__all__ = ["smoothgrad", "smoothgrad_sq", "vargrad", "BEST_SAMPLER", "FALLBACK_SAMPLER", "AUTO_SAMPLER"]

#: (nt_type, absolute gradients?) → the sampler front-ends use by default (benchmarks/SAMPLERS.md).
BEST_SAMPLER = {
    ("smoothgrad", False): "lhs",
    ("smoothgrad", True): "lhs",
    ("smoothgrad_sq", False): "lhs",
    ("smoothgrad_sq", True): "lhs",
    ("vargrad", False): "lhs",
    ("vargrad", True): "lhs",
}

#: nt_type → the sampler instead of a Latin hypercube with ``weight_noise(draws="auto")`` or ``return_stderr=True``.
FALLBACK_SAMPLER = {"smoothgrad": "antithetic", "smoothgrad_sq": "antithetic", "vargrad": "iid"}

#: (nt_type, absolute gradients?) → the sampler with ``nt_samples="auto"``: Latin hypercubes in blocks of 4 where
#: they needed fewer samples than :data:`FALLBACK_SAMPLER` for the same error (benchmarks/AUTO_LHS.md), else that.
AUTO_SAMPLER = {
    ("smoothgrad", False): "antithetic",
    ("smoothgrad", True): "lhs",
    ("smoothgrad_sq", False): "lhs",
    ("smoothgrad_sq", True): "lhs",
    ("vargrad", False): "iid",
    ("vargrad", True): "iid",
}


def _smooth(
    nt_type: str,
    model: Callable[..., Tensor],
    inputs: TensorOrTuple,
    target: Any,
    nt_samples: Union[int, str],
    stdevs: Optional[StdevsType],
    absolute: bool,
    sampler: Optional[str],
    kwargs: Dict[str, Any],
) -> Any:
    _check_keywords(nt_type, kwargs)
    kwargs.setdefault("nt_samples_batch_size", "auto")
    if sampler is None:
        weight_draws_until_converged = getattr(kwargs.get("weight_noise"), "draws", None) == "auto"
        if nt_samples == "auto" and not weight_draws_until_converged:
            sampler = AUTO_SAMPLER[(nt_type, absolute)]
        else:
            sampler = BEST_SAMPLER[(nt_type, absolute)]
            if sampler == "lhs" and (weight_draws_until_converged or kwargs.get("return_stderr")):
                # one hypercube cannot span independent weight draws, and its standard error only has 4 replicates
                # (3 degrees of freedom); antithetic pairs come close for the SmoothGrads and give 8 groups (7)
                sampler = FALLBACK_SAMPLER[nt_type]
    stdevs = relative(0.15) if stdevs is None else stdevs
    out = NoiseTunnel(Saliency(model)).attribute(
        inputs,
        nt_type=nt_type,
        nt_samples=nt_samples,
        stdevs=stdevs,
        sampler=sampler,
        target=target,
        abs=absolute,
        **kwargs,
    )
    if isinstance(out, SmoothedAttribution):  # what the call was, the sampler it chose included (saved with it)
        # JSON values (numpy integers, which the tunnel takes, as ints); an unseeded or generator call: seed None
        out.config = {"nt_type": nt_type, "absolute": bool(absolute), "sampler": sampler,
                      "nt_samples": nt_samples if nt_samples == "auto" else int(nt_samples),
                      "stdevs": _noise_record(stdevs), "seed": _json_number(kwargs.get("seed"), int)}
        out.config.update({k: _json_number(kwargs[k], t) for k, t in (("tol", float), ("max_samples", int))
                           if k in kwargs})
    return out


def _noise_record(stdevs: StdevsType) -> Any:
    """``stdevs`` as JSON: a number, ``{"relative": fraction, "of": ...}``, a list of those (one per input), or a
    note that it was a tensor of several values."""
    if isinstance(stdevs, tuple):
        return [_noise_record(s) for s in stdevs]
    if isinstance(stdevs, Relative):
        return {"relative": float(stdevs.fraction), "of": stdevs.of}
    if isinstance(stdevs, Tensor) and stdevs.dim() == 0:
        stdevs = stdevs.item()  # once per call, after the attributions
    if isinstance(stdevs, numbers.Real) and not isinstance(stdevs, bool):
        return float(stdevs)
    return "per feature (not recorded)"


def _json_number(value: Any, kind: type) -> Any:
    return kind(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None


def smoothgrad(
    model: Callable[..., Tensor],
    inputs: TensorOrTuple,
    target: Any = None,
    nt_samples: Union[int, str] = 50,
    stdevs: Optional[StdevsType] = None,
    absolute: bool = False,
    sampler: Optional[str] = None,
    **kwargs: Any,
) -> Any:
    """SmoothGrad: the mean gradient over noisy copies (Smilkov et al. 2017).

    Parameters
    ----------
    model : callable
        The model (or any forward function); ``target`` selects its output.
    inputs : Tensor or tuple of Tensor
    target : int, tuple, list or Tensor, optional
        As in Captum.
    nt_samples : int or "auto"
        Noisy copies per example; ``"auto"`` stops each example at a relative
        standard error of ``tol`` (default 0.05).
    stdevs : optional
        Anything ``NoiseTunnel.attribute`` accepts; default ``relative(0.15)``.
    absolute : bool
        Average ``|∇f|`` instead of ``∇f`` (Captum's Saliency default).
    sampler : str, optional
        Default: the measured best for this statistic (:data:`BEST_SAMPLER`;
        :data:`FALLBACK_SAMPLER` instead of a Latin hypercube with
        ``weight_noise(draws="auto")`` or ``return_stderr=True``, whose
        standard error would rest on only 4 replicates; with
        ``nt_samples="auto"``, :data:`AUTO_SAMPLER`).
    **kwargs
        Passed to ``NoiseTunnel.attribute`` (``seed``, ``return_stderr``,
        ``additional_forward_args``, ``nt_samples_batch_size``, ...), also
        ``outputs=[...]`` (several outputs at once: a last dimension K),
        ``objective=g`` (explain g(model, inputs, targets) instead of an
        output), ``times_input="clean"`` / ``"noisy"`` (innsight's
        SmoothGrad×Input / Captum's NoiseTunnel over InputXGradient) and
        ``channel_reducer="mean"`` (image channels combined after smoothing).
        ``target`` may also be one-hot rows ``(batch, n_outputs)``.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> smoothgrad(model, torch.rand(2, 4), target=1, seed=0).shape
    torch.Size([2, 4])
    >>> smoothgrad(model, torch.rand(2, 4), outputs=[0, 2], times_input="clean", seed=0).shape
    torch.Size([2, 4, 2])
    """
    return _smooth("smoothgrad", model, inputs, target, nt_samples, stdevs, absolute, sampler, kwargs)


def smoothgrad_sq(
    model: Callable[..., Tensor],
    inputs: TensorOrTuple,
    target: Any = None,
    nt_samples: Union[int, str] = 50,
    stdevs: Optional[StdevsType] = None,
    sampler: Optional[str] = None,
    **kwargs: Any,
) -> Any:
    """SmoothGrad² / SquareGrad: the mean squared gradient over noisy copies (Hooker et al. 2019).

    Parameters are those of :func:`smoothgrad` but ``absolute`` (the square of ``|∇f|`` is that of
    ``∇f``); the result is unsigned.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> bool((smoothgrad_sq(model, torch.rand(2, 4), target=1, seed=0) >= 0).all())
    True
    """
    return _smooth("smoothgrad_sq", model, inputs, target, nt_samples, stdevs, False, sampler, kwargs)


def vargrad(
    model: Callable[..., Tensor],
    inputs: TensorOrTuple,
    target: Any = None,
    nt_samples: Union[int, str] = 50,
    stdevs: Optional[StdevsType] = None,
    sampler: Optional[str] = None,
    **kwargs: Any,
) -> Any:
    """VarGrad: the variance of the gradient over noisy copies (Adebayo et al. 2018).

    Parameters are those of :func:`smoothgrad` but ``absolute``: this is the variance of the signed
    gradient, as in the paper, whereas ``NoiseTunnel(Saliency(model))`` with ``nt_type="vargrad"`` takes
    that of ``|∇f|`` (Saliency's default ``abs=True``). The result is unsigned.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> vargrad(model, torch.rand(2, 4), target=1, seed=0).shape
    torch.Size([2, 4])
    """
    return _smooth("vargrad", model, inputs, target, nt_samples, stdevs, False, sampler, kwargs)


#: The front-ends without ``absolute=`` (neither it nor Saliency's ``abs=``), and why.
_WITHOUT_ABSOLUTE = {
    "smoothgrad_sq": "the square of |∇f| is that of ∇f",
    "vargrad": "it is the variance of the signed gradient; for that of |∇f|, "
               'NoiseTunnel(Saliency(model)).attribute(x, nt_type="vargrad", abs=True)',
}


def _check_keywords(name: str, kwargs: Dict[str, Any]) -> None:
    """Refuse, naming front-end ``name``, the keywords it sets itself or has not."""
    if "nt_type" in kwargs:
        raise TypeError(f"{name}() takes no nt_type= (it is nt_type={name!r}); got nt_type={kwargs['nt_type']!r}: "
                        "call that front-end, or NoiseTunnel(Saliency(model)).attribute(x, nt_type=...)")
    why = _WITHOUT_ABSOLUTE.get(name)
    for key in ("absolute", "abs") if why else ():
        if key in kwargs:
            raise TypeError(f"{name}() takes no {key}= ({why}); got {key}={kwargs[key]!r}")
    if "abs" in kwargs:
        raise TypeError(f"{name}() takes absolute=True / False (signed gradients by default, as the SmoothGrad "
                        "paper), not Saliency's abs=")

"""Noise on the input tensors: its specification (absolute, per input, per feature, relative) and the noisy copies."""

import contextlib
import math
import numbers
from typing import Any, ContextManager, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from noisegrad._layout import in_layout
from noisegrad.sampling.samplers import NoiseSampler
from noisegrad.sampling.seeding import SampleSeeds

__all__ = ["relative", "Relative", "resolve_stdevs", "noisy_copies", "InputNoise", "is_per_example"]

_RELATIVE_TO = ("range", "std")


class Relative:
    """Noise whose standard deviation is a fraction of each example's spread.

    Create it with :func:`relative`.
    """

    def __init__(self, fraction: float, of: str = "range") -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
            raise TypeError(f"relative(fraction=...) must be a real number, got {type(fraction).__name__}")
        if not math.isfinite(_as_float(fraction)) or fraction < 0:
            raise ValueError(f"relative(fraction=...) must be finite and >= 0, got {fraction}")
        if of not in _RELATIVE_TO:
            raise ValueError(f"relative(of=...) must be one of {_RELATIVE_TO}, got {of!r}")
        self.fraction = float(fraction)
        self.of = of

    def sigma(self, x: Tensor, where: Optional[Tensor] = None) -> Tensor:
        """σ of each example of ``x``, shaped ``(batch, 1, ..., 1)`` to broadcast over it.

        ``where``: a boolean tensor broadcasting to ``x``; the spread is taken
        over its True elements only (e.g. the real tokens of a padded batch).
        An example with none gets σ = 0.
        """
        x = x.detach()
        if where is None:
            flat = x.reshape(x.shape[0], -1)
            if self.of == "range":
                spread = flat.amax(dim=1) - flat.amin(dim=1)
            else:
                spread = flat.std(dim=1, correction=0)
        else:
            keep = where.expand_as(x).reshape(x.shape[0], -1)
            flat = x.reshape(x.shape[0], -1)
            count = keep.sum(dim=1).clamp(min=1).to(x.dtype)
            if self.of == "range":
                low = torch.where(keep, flat, torch.full_like(flat, float("inf"))).amin(dim=1)
                high = torch.where(keep, flat, torch.full_like(flat, float("-inf"))).amax(dim=1)
                spread = torch.where(keep.any(dim=1), high - low, torch.zeros_like(low))
            else:
                mean = torch.where(keep, flat, torch.zeros_like(flat)).sum(dim=1) / count
                centred = torch.where(keep, flat - mean.unsqueeze(1), torch.zeros_like(flat))
                spread = (centred.pow(2).sum(dim=1) / count).sqrt()
        return (self.fraction * spread).reshape((x.shape[0],) + (1,) * (x.dim() - 1))

    def __repr__(self) -> str:
        return f"relative({self.fraction}, of={self.of!r})"


def relative(fraction: float, of: str = "range") -> Relative:
    """Noise level relative to the data, for ``NoiseTunnel.attribute(stdevs=...)``.

    ``relative(0.15, of="range")`` gives every example the standard deviation
    ``0.15 · (max − min)`` of its own values (the SmoothGrad paper's "noise
    level", PAIR's ``stdev_spread``, zennit's ``noise_level``); ``of="std"``
    uses ``0.15 ·`` the example's (population) standard deviation, the unit of
    Vertex AI's advice of 10–20 %. The spread is taken over all non-batch
    dimensions of each input tensor separately. An example whose values are
    all equal gets no noise.

    Parameters
    ----------
    fraction : float
        Finite and >= 0.
    of : {"range", "std"}
        The spread the fraction is taken of.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0, 2.0], [1.0, 1.5]])
    >>> relative(0.1).sigma(x)
    tensor([[0.2000],
            [0.0500]])
    """
    return Relative(fraction, of)


StdevsType = Union[float, Relative, Tensor, Sequence[Union[float, Relative, Tensor]]]


def resolve_stdevs(stdevs: StdevsType, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """Turn any accepted form of ``stdevs`` into one σ tensor per input.

    Each σ has the input's dtype and device and broadcasts to the input's
    shape. Raises ``TypeError``/``ValueError`` naming ``stdevs`` for anything
    else, for negative or non-finite values, and for a tuple of the wrong
    length.

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(2, 3)
    >>> resolve_stdevs(0.5, (x,))
    (tensor(0.5000),)
    >>> resolve_stdevs(torch.tensor([0.0, 1.0, 2.0]), (x,))[0]
    tensor([0., 1., 2.])
    """
    if isinstance(stdevs, (tuple, list)):
        if len(stdevs) != len(inputs):
            raise ValueError(
                f"stdevs has {len(stdevs)} entries but there are {len(inputs)} input tensors; "
                "give one entry per input, or a single value for all"
            )
        per_input = tuple(stdevs)
    else:
        per_input = (stdevs,) * len(inputs)
    return tuple(_one_sigma(s, x, i) for i, (s, x) in enumerate(zip(per_input, inputs)))


def _one_sigma(stdev: object, x: Tensor, index: int) -> Tensor:
    """σ for input ``index``, checked where its values are: a number in Python, a tensor on its own device.

    A number or a CPU tensor is checked without reading the inputs' device (no
    host synchronisation on a GPU); σ relative to inputs on a GPU, or a σ
    tensor the user put there, is read once.
    """
    if isinstance(stdev, Relative):
        return _checked(stdev.sigma(x), index, f"{stdev!r} times the input's spread")
    if isinstance(stdev, Tensor):
        if stdev.is_complex() or stdev.dtype == torch.bool:
            raise TypeError(f"stdevs for input {index} must be a real tensor, got dtype {stdev.dtype}")
        try:
            shape = torch.broadcast_shapes(stdev.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"stdevs for input {index} has shape {tuple(stdev.shape)}, which does not broadcast "
                f"to the input's shape {tuple(x.shape)}"
            )
        return _checked(stdev.detach().to(dtype=x.dtype), index, "stdevs", given=stdev).to(device=x.device)
    if isinstance(stdev, bool) or not isinstance(stdev, numbers.Real):
        raise TypeError(
            f"stdevs for input {index} must be a float, a tensor or noisegrad.relative(...), "
            f"got {type(stdev).__name__}"
        )
    value = _as_float(stdev)
    largest = torch.finfo(x.dtype).max if x.is_floating_point() else math.inf
    if not (math.isfinite(value) and 0 <= value <= largest):  # nor what would overflow the input's dtype
        shown = f"{stdev} (beyond {x.dtype}'s largest, {largest})" if math.isfinite(value) and value > 0 else value
        raise ValueError(f"stdevs for input {index} must be finite and >= 0; stdevs gave 1 invalid value(s), "
                         f"e.g. {shown}")
    return torch.tensor(value, dtype=x.dtype, device=x.device)


def _as_float(value: numbers.Real) -> float:
    """``float(value)``, or ±inf for a real too large for a float (a huge int or Fraction raises OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _checked(sigma: Tensor, index: int, source: str, given: Optional[Tensor] = None) -> Tensor:
    """``sigma`` if all finite and >= 0; ``given``: the tensor it was converted from, shown in the error."""
    if not bool((torch.isfinite(sigma) & (sigma >= 0)).all()):
        raise ValueError(f"stdevs for input {index} must be finite and >= 0; {source} gave "
                         f"{_describe(sigma, given)}")
    return sigma


def _describe(sigma: Tensor, given: Optional[Tensor] = None) -> str:
    bad = ~(torch.isfinite(sigma) & (sigma >= 0))
    first = bad.flatten().nonzero()[0, 0]
    if given is None:
        return f"{int(bad.sum())} invalid value(s), e.g. {sigma.flatten()[first].item()}"
    value = given.detach().broadcast_to(sigma.shape).flatten()[first].item()
    beyond = f" (beyond {sigma.dtype}'s largest, {torch.finfo(sigma.dtype).max})" if sigma.dtype != given.dtype and \
        math.isfinite(value) and value > 0 else ""
    return f"{int(bad.sum())} invalid value(s), e.g. {value}{beyond}"


def noisy_copies(
    x: Tensor,
    sigma: Tensor,
    sample_ids: range,
    draws: Union[SampleSeeds, NoiseSampler],
    input_index: int = 0,
    example_ids: Optional[Tensor] = None,
) -> Tensor:
    """``x`` repeated once per sample id, plus Gaussian noise: rows are sample-major.

    Row ``j * batch + i`` is example ``i`` with the noise of sample
    ``sample_ids[j]``. That noise comes from ``draws`` (a
    :class:`~noisegrad.sampling.samplers.NoiseSampler`, or :class:`SampleSeeds` for
    i.i.d. draws) straight into a contiguous slice of the output, in ``x``'s
    dtype and device; it depends on the seed, the input's index, the
    example's id (``example_ids[i]``, by default ``i``) and the sample id, not
    on the chunk or the batch, and the output is the only tensor of the
    expanded size (σ is never materialised at that size).

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(2, 3)
    >>> whole = noisy_copies(x, torch.tensor(1.0), range(0, 4), SampleSeeds(0))
    >>> tail = noisy_copies(x, torch.tensor(1.0), range(2, 4), SampleSeeds(0))
    >>> torch.equal(whole[4:], tail)
    True
    >>> alone = noisy_copies(x[1:], torch.tensor(1.0), range(0, 4), SampleSeeds(0), example_ids=torch.tensor([1]))
    >>> torch.equal(whole.view(4, 2, 3)[:, 1], alone)
    True
    """
    sampler = draws if isinstance(draws, NoiseSampler) else NoiseSampler("iid", draws, nt_samples=len(sample_ids))
    if example_ids is None:
        example_ids = torch.arange(x.shape[0], device=x.device)
    if not x.is_floating_point():  # token ids, which only noise elsewhere (a layer, the weights) accompanies
        return x.detach().repeat((len(sample_ids),) + (1,) * (x.dim() - 1))
    with torch.no_grad():
        x = x.detach()
        copies = torch.empty((len(sample_ids),) + tuple(x.shape), dtype=x.dtype, device=x.device)
        sampler.fill(copies, sample_ids, example_ids, input_index)
        copies.mul_(sigma).add_(x)
    return copies.view((-1,) + tuple(x.shape[1:]))


def is_per_example(sigma: Tensor, x: Tensor) -> bool:
    """Whether σ has one row per example of ``x``, told by its declared shape, not by a length coincidence.

    A σ with as many dimensions as ``x`` aligns its first dimension with the
    batch (broadcasting aligns trailing dimensions), so it is per example when
    that dimension is the batch size; a σ with fewer dimensions is per
    feature, whatever its length.

    Examples
    --------
    >>> x = torch.zeros(3, 3)
    >>> is_per_example(torch.ones(3), x), is_per_example(torch.ones(3, 1), x), is_per_example(torch.ones(1, 3), x)
    (False, True, False)
    """
    return sigma.dim() == x.dim() and sigma.dim() > 0 and sigma.shape[0] == x.shape[0]


class InputNoise:
    """The perturbation of SmoothGrad: Gaussian noise added to every input tensor.

    The input perturbation of :mod:`noisegrad.perturb`: ``rows(sample_ids)``
    gives a chunk's noisy inputs, sample-major; ``select(keep)`` drops the
    examples that have left the batch; ``applied()`` is the context the
    wrapped call runs in (nothing to install for input noise).

    Parameters
    ----------
    inputs : tuple of Tensor
    sigmas : tuple of Tensor
        One σ per input (:func:`resolve_stdevs`).
    sampler : NoiseSampler
        The draws; input tensor ``t`` has the ``t``-th input stream.
    example_ids : Tensor, optional
        The examples' ids (int64, on the inputs' device), which key their
        noise; by default their positions.
    channels_last : bool
        Give float32 image batches on the CPU as channels-last copies
        (:mod:`noisegrad._layout`); the values are the same.

    Examples
    --------
    >>> x = torch.zeros(2, 3)
    >>> noise = InputNoise((x,), (torch.tensor(1.0),), NoiseSampler("iid", SampleSeeds(0), 4))
    >>> [t.shape for t in noise.rows(range(0, 4))]
    [torch.Size([8, 3])]
    """

    def __init__(
        self,
        inputs: Tuple[Tensor, ...],
        sigmas: Tuple[Tensor, ...],
        sampler: NoiseSampler,
        example_ids: Optional[Tensor] = None,
        channels_last: bool = False,
    ) -> None:
        self.inputs, self.sigmas, self.sampler = inputs, sigmas, sampler
        self.example_ids = torch.arange(inputs[0].shape[0], device=inputs[0].device) if example_ids is None else example_ids
        self.channels_last = channels_last

    def rows(self, sample_ids: range) -> Tuple[Tensor, ...]:
        rows = tuple(
            noisy_copies(x, sigma, sample_ids, self.sampler, index, self.example_ids)
            for index, (x, sigma) in enumerate(zip(self.inputs, self.sigmas))
        )
        return tuple(in_layout(r) for r in rows) if self.channels_last else rows

    def select(self, keep: Tensor) -> None:
        self.sigmas = tuple(s[keep] if is_per_example(s, x) else s for s, x in zip(self.sigmas, self.inputs))
        self.inputs = tuple(x[keep] for x in self.inputs)
        self.example_ids = self.example_ids[keep.to(self.example_ids.device)]

    def prepare(self, method: Any) -> Any:
        """The wrapped method as the estimator should call it: unchanged for input noise."""
        return method

    def applied(self) -> ContextManager[None]:
        return contextlib.nullcontext()

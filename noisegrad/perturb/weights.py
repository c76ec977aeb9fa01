"""Noise on the model's weights: NoiseGrad, and with input noise too, FusionGrad.

A call with ``weight_noise=`` smooths the attribution over ``M`` noisy copies
of the model's weights (weight draws), each with ``N = nt_samples`` noisy
copies of the inputs: sample ``k`` is input draw ``k mod N`` of weight draw
``k div N``, and the statistics (mean, mean of squares, variance) are taken
over all ``M × N`` samples. The noisy weights go into a private copy of the
model (:mod:`noisegrad.perturb._model_copy`); the user's module is never
written, not even for the duration of a call. What the noise is, and on which
parameters: :mod:`noisegrad.perturb.weight_spec`.
"""

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from captum.attr import Attribution
from torch import Tensor, nn

from noisegrad import _captum
from noisegrad._caller import user_stacklevel
from noisegrad._validate import as_int
from noisegrad.perturb._draws_forward import DrawsForward, vmap_refusal
from noisegrad.perturb._model_copy import model_root, private_copy, redirect_method, refuse_scripted
from noisegrad.perturb.weight_spec import (DEFAULT_MODULES, WeightNoiseSpec, noise_name, select_parameters,
                                           weight_draws)
from noisegrad.sampling.samplers import units_for_stderr
from noisegrad.sampling.seeding import SampleSeeds

__all__ = ["CheckedWeights", "check_weight_noise", "no_input_noise", "DrawUnits", "WeightNoise",
           "STACKED_MOST_BYTES"]

#: A chunk's weight draws that are looped over are stacked (one call, the loop inside the forward) up to this many
#: bytes of perturbed parameters, and made and run one call per draw above it, to bound memory.
STACKED_MOST_BYTES = 64 * 2**20


@dataclass(frozen=True)
class CheckedWeights:
    """``weight_noise=`` checked against the call: the spec, the model, the chosen parameters and the draws' size."""

    spec: WeightNoiseSpec
    root: nn.Module
    names: Tuple[str, ...]
    draw_size: int  # input draws per weight draw (nt_samples)
    forward_only: bool  # several weight draws can share one call of the method

    @property
    def auto(self) -> bool:
        return self.spec.draws == "auto"

    def limit(self, max_samples: Optional[int], nt_type: str, needs_stderr: bool) -> int:
        """The call's samples, ``M × N`` (or ``max_samples`` in whole draws), checked for a standard error."""
        if max_samples is None:
            draws = int(self.spec.draws)
        else:
            draws = max_samples // self.draw_size
            if draws < 1:
                raise ValueError(f"max_samples={max_samples} is smaller than one weight draw's "
                                 f"nt_samples={self.draw_size} input draws")
        units = (draws + 1) // 2 if self.spec.sampler == "antithetic" else draws
        # VarGrad: the delete-one jackknife of a variance over 3 units is 3/4 of it whatever the data; 4 carry information
        needed = units_for_stderr(nt_type) + (nt_type == "vargrad")
        if needs_stderr and units < needed:
            raise ValueError(
                f"a standard error of nt_type={nt_type!r} with weight noise needs at least {needed} independent "
                f"weight draws ({'antithetic pairs' if self.spec.sampler == 'antithetic' else 'draws'}): the "
                f"samples of one weight draw share its model, so they are not independent; got {units}"
            )
        return draws * self.draw_size

    def check_input_noise(self, sigmas: Tuple[Tensor, ...], samples_differ: bool) -> None:
        """Refuse ``nt_samples > 1`` identical input draws per weight draw (``samples_differ``: the method draws
        something of its own per sample, as GradientShap and ``draw_baseline_from_distrib`` do)."""
        if self.draw_size > 1 and not samples_differ and all(not bool(s.any()) for s in sigmas):
            raise ValueError(
                f"with weight_noise and no input noise (stdevs=0) the nt_samples={self.draw_size} input draws of "
                "each weight draw are identical; give nt_samples=1 (NoiseGrad), or input noise (FusionGrad)"
            )


def check_weight_noise(spec: Any, method: Attribution, nt_samples: Any, sampler: str, joint: bool,
                       noise_layer: Any, return_stderr: bool) -> CheckedWeights:
    """``weight_noise=`` and what it needs of the other arguments, before any forward pass."""
    if not isinstance(spec, WeightNoiseSpec):
        raise TypeError(f"weight_noise must be made by noisegrad.weight_noise(...), got {type(spec).__name__}")
    needs_groups = return_stderr or spec.draws == "auto"
    if isinstance(nt_samples, str) and nt_samples == "auto":
        raise ValueError('with weight_noise, nt_samples counts the input draws of each weight draw; to add weight '
                         'draws until converged, give weight_noise(draws="auto") and an int nt_samples')
    draw_size = as_int("nt_samples", nt_samples)
    if joint:
        raise ValueError("joint sampling of (noise, path point) does not take weight_noise; use joint=False")
    if noise_layer is not None:
        raise ValueError("noise_layer= and weight_noise= cannot be combined yet; choose one (token ids take "
                         "weight_noise with stdevs=0: NoiseGrad)")
    if sampler == "antithetic" and draw_size % 2:
        raise ValueError(f'sampler="antithetic" pairs the input draws of each weight draw, so nt_samples must be '
                         f"even, got {draw_size}")
    if sampler in ("qmc", "lhs") and needs_groups:
        raise ValueError(f"sampler={sampler!r} spreads one design over all weight draws, which makes them dependent: "
                         'standard errors and "auto" need sampler="iid" or "antithetic" with weight_noise')
    root = model_root(method)
    refuse_scripted(root)
    forward_only = _captum.calls_model_as_black_box(method)
    refusal = vmap_refusal(root)
    if spec.batched is True and forward_only and refusal is not None:
        raise ValueError(f"weight_noise(batched=True): torch.func.vmap cannot run {refusal}; give batched=\"auto\" "
                         "or False, which loop over the weight draws")
    names = select_parameters(root, spec.filter)
    if spec.filter is None:
        _warn_parametrized(root)
    if not names:
        some = ", ".join(name for name, _ in list(root.named_parameters())[:6]) or "none"
        raise ValueError(f"weight_noise(filter={spec.filter!r}) chooses no floating-point parameter of "
                         f"{type(root).__name__} (its parameters include: {some})")
    return CheckedWeights(spec, root, names, draw_size, forward_only)


def _warn_parametrized(root: nn.Module) -> None:
    """The default filter takes no weight of a parametrized layer (weight_norm, spectral_norm): say so, and how."""
    held = [f"{name}.{local}" if name else local
            for name, module in root.named_modules()
            for local, _ in module.named_parameters(recurse=False)
            if isinstance(module, DEFAULT_MODULES) and local.startswith("weight_")  # old style: weight_g, weight_orig
            or f".{name}".endswith(".parametrizations.weight") and local.startswith("original")]
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        warnings.warn(
            f"weight_noise: the default filter perturbs the `weight` parameter of linear maps, and the weights of "
            f"parametrized layers (weight_norm, spectral_norm) are computed from other parameters, so they get no "
            f"noise: {shown}. Name the parameters to perturb with filter=, e.g. a glob pattern "
            f"(\"*.original*\", \"*.weight_v\") or a callable (name, module) -> bool",
            UserWarning, stacklevel=user_stacklevel(),
        )


def no_input_noise(stdevs: Any) -> bool:
    """Whether ``stdevs`` is zero for every input (a number, a tensor, or a tuple of these; ``relative`` is not).

    Examples
    --------
    >>> no_input_noise(0.0), no_input_noise((0, torch.zeros(3))), no_input_noise(0.1)
    (True, True, False)
    """
    if isinstance(stdevs, (tuple, list)):
        return all(no_input_noise(s) for s in stdevs)
    if isinstance(stdevs, Tensor):
        return not bool(stdevs.any())
    return isinstance(stdevs, (int, float)) and not isinstance(stdevs, bool) and stdevs == 0


class DrawUnits:
    """The independent units of a call with weight noise, for the statistics: whole weight draws (or pairs of them).

    The samples of one weight draw share its model, so they are not
    independent of each other; the weight draws are. Standard errors are
    therefore the jackknife over groups of whole draws.
    """

    kind = "weights"  # not "iid": no textbook standard error over single samples
    block = None  # not Latin hypercube blocks (their first check and stops: noisegrad.tunnel)

    def __init__(self, draw_size: int, sampler: str) -> None:
        self.unit_size = draw_size * (2 if sampler == "antithetic" else 1)

    def standard_error_groups(self, default: int = 8) -> int:
        return default


class WeightNoise:
    """The perturbation of NoiseGrad / FusionGrad: the inner perturbation's rows, and weights noisy per draw.

    Implements the perturbation protocol of :mod:`noisegrad.perturb`
    (``rows``, ``select``, ``prepare``, ``applied``, and ``calls``: how a chunk
    is split into calls of the wrapped method).

    Parameters
    ----------
    inner : InputNoise
        The input noise (``stdevs``) of each sample.
    weights : CheckedWeights
    seeds : SampleSeeds
    """

    def __init__(self, inner: Any, weights: CheckedWeights, seeds: SampleSeeds) -> None:
        self.inner, self.weights, self.seed = inner, weights, seeds.base_seed
        self.spec, self.draw_size = weights.spec, weights.draw_size
        self.sampler = DrawUnits(weights.draw_size, weights.spec.sampler)
        self.model: Optional[nn.Module] = None
        self._clean: Dict[str, Tensor] = {}
        self._parameters: Dict[str, nn.Parameter] = {}
        self._forward: Optional[DrawsForward] = None
        self._sample_ids: Optional[range] = None
        self._stacked: Optional[Dict[str, Tensor]] = None
        self.bytes_per_sample = 0
        self.rows_per_copy = 1  # forward rows of one sample of one example; set by the estimator
        self._installed: Optional[int] = None  # the weight draw whose values the copy holds
        if weights.forward_only:
            chosen = set(weights.names)
            per_draw = sum(p.numel() * p.element_size() for n, p in weights.root.named_parameters() if n in chosen)
            self.bytes_per_sample = -(-per_draw // weights.draw_size)

    @property
    def inputs(self) -> Tuple[Tensor, ...]:
        return self.inner.inputs

    @property
    def example_ids(self) -> Tensor:
        return self.inner.example_ids

    def draws_of(self, sample_ids: range) -> range:
        """The weight draws the samples ``sample_ids`` belong to."""
        return range(sample_ids.start // self.draw_size, (sample_ids.stop - 1) // self.draw_size + 1)

    def rows(self, sample_ids: range) -> Tuple[Tensor, ...]:
        self._sample_ids = sample_ids
        return self.inner.rows(sample_ids)

    def select(self, keep: Tensor) -> None:
        self.inner.select(keep)

    def calls(self, sample_ids: range) -> Tuple[range, ...]:
        """The chunk as the wrapped method is called on it: whole if one vmapped forward holds its draws, else per draw.

        Where the draws are looped over, one call holds all of the chunk's
        draws' parameters and loops inside the forward (the faster loop); above
        :data:`STACKED_MOST_BYTES` of them, a call per draw holds one draw's
        parameters at a time instead (slower: each is a whole call of the
        wrapped method; benchmarks/WEIGHTS.md).
        """
        draws = self.draws_of(sample_ids)
        whole_draws = sample_ids.start % self.draw_size == 0 and len(sample_ids) % self.draw_size == 0
        rows_per_draw = len(sample_ids) // len(draws) * self.inputs[0].shape[0] * self.rows_per_copy
        stacked_bytes = len(draws) * self.draw_size * self.bytes_per_sample
        if len(draws) == 1 or (self._forward is not None and whole_draws and (
                self._forward.batches(rows_per_draw, self.inputs[0].device) or stacked_bytes <= STACKED_MOST_BYTES)):
            return (sample_ids,)
        return tuple(range(max(sample_ids.start, d * self.draw_size), min(sample_ids.stop, (d + 1) * self.draw_size))
                     for d in draws)

    def prepare(self, method: Attribution) -> Attribution:
        """The wrapped method (the caller's own shallow copy) pointed at a private copy of the model."""
        self.model, swap = private_copy(self.weights.root)
        redirect_method(method, swap, [self.weights.root])
        in_copy = dict(self.model.named_parameters())
        self._parameters = {name: in_copy[name] for name in self.weights.names}
        # the copy's clean values: installing a draw rebinds the parameter's data, these tensors stay as they are
        self._clean = {name: p.detach() for name, p in self._parameters.items()}
        if self.weights.forward_only:
            self._forward = DrawsForward(self.model, method.forward_func, self.spec.batched)
            method.forward_func = self._dispatching(method.forward_func)
        return method

    def _dispatching(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if self._stacked is None:  # one weight draw: installed in the copy
                return call(*args, **kwargs)
            assert self._forward is not None and self._sample_ids is not None
            copies = len(self._sample_ids) * self.inputs[0].shape[0]
            return self._forward(self._stacked, copies, args, kwargs)

        forward.__wrapped__ = call  # type: ignore[attr-defined]  (Captum reads the forward function's signature)
        return forward

    def draw(self, draw_ids: range) -> Dict[str, Tensor]:
        """Every perturbed parameter's values in weight draws ``draw_ids``, stacked along a new first dimension."""
        spec = self.spec
        root = self.weights.root
        return {name: weight_draws(clean, noise_name(root, name), draw_ids, self.seed, spec.sigma, spec.mode,
                                   spec.sampler)
                for name, clean in self._clean.items()}

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The chunk's weight draws for one call of the method: installed in the copy, or stacked for the forward."""
        assert self._sample_ids is not None
        draws = self.draws_of(self._sample_ids)
        with self.inner.applied():
            if len(draws) == 1:
                if self._installed != draws.start:  # the chunks of one draw make it once
                    self._installed = None
                    values = self.draw(draws)
                    with torch.no_grad():
                        for name, parameter in self._parameters.items():
                            parameter.data = values[name][0]
                    self._installed = draws.start
            else:
                self._stacked = self.draw(draws)
            try:
                yield
            finally:
                self._stacked = None

"""Noise on the model's weights, specified: how much, of which kind, on which parameters, drawn how.

References
----------
K. Bykov, A. Hedström, S. Nakajima, M. M.-C. Höhne (2022), "NoiseGrad —
Enhancing Explanations by Introducing Stochasticity to Model Weights", AAAI
(arXiv:2106.10185). Their reference code
(github.com/understandable-machine-intelligence-lab/NoiseGrad) multiplies
every parameter by N(1, 0.2²) and averages 25 draws for NoiseGrad, 10 weight
draws × 10 input draws (input σ = 0.4, absolute) for FusionGrad.
"""

import fnmatch
import hashlib
import inspect
import numbers
import sys
from typing import Callable, Dict, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from noisegrad.sampling.keyed import row_keys, standard_normal
from noisegrad.sampling.streams import Purpose, stream

__all__ = ["WeightNoiseSpec", "weight_noise", "parameter_filter", "select_parameters", "parameter_key", "noise_name",
           "weight_draws", "WEIGHT_MODES", "WEIGHT_SAMPLERS", "DEFAULT_MODULES"]

WEIGHT_MODES = ("multiplicative", "additive")
WEIGHT_SAMPLERS = ("iid", "antithetic")
#: The modules whose ``weight`` is perturbed by default: the linear maps of a network, not its normalisation layers.
DEFAULT_MODULES = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")

FilterType = Union[None, type, Tuple[type, ...], str, Sequence[str], Callable[[str, nn.Module], bool]]


class WeightNoiseSpec:
    """How the model's weights are perturbed; made by :func:`weight_noise`, validated when made."""

    def __init__(self, sigma: float = 0.2, mode: str = "multiplicative", draws: Union[int, str] = 25,
                 filter: FilterType = None, sampler: str = "iid", batched: Union[bool, str] = "auto") -> None:
        # compared, not converted: float() of a huge int raises OverflowError, and NaN fails every comparison
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 <= sigma <= sys.float_info.max:
            raise ValueError(f"weight_noise(sigma=...) must be a finite number >= 0, got {sigma!r}")
        if mode not in WEIGHT_MODES:
            raise ValueError(f"weight_noise(mode=...) must be one of {WEIGHT_MODES}, got {mode!r}")
        if not (draws == "auto" if isinstance(draws, str) else
                isinstance(draws, numbers.Integral) and not isinstance(draws, bool) and draws >= 1):
            raise ValueError(f'weight_noise(draws=...) must be a positive int or "auto", got {draws!r}')
        if sampler not in WEIGHT_SAMPLERS:
            raise ValueError(f"weight_noise(sampler=...) must be one of {WEIGHT_SAMPLERS}, got {sampler!r}")
        if not (batched is True or batched is False or isinstance(batched, str) and batched == "auto"):
            raise ValueError(f'weight_noise(batched=...) must be "auto", True or False, got {batched!r}')
        self.sigma, self.mode, self.sampler, self.batched = float(sigma), mode, sampler, batched
        self.draws: Union[int, str] = draws if isinstance(draws, str) else int(draws)
        parameter_filter(filter)  # refused now, not at the call
        self.filter = tuple(filter) if isinstance(filter, list) else filter

    def chosen(self, model: nn.Module) -> Tuple[str, ...]:
        """The names of the parameters of ``model`` this spec perturbs (to check a ``filter`` before a call).

        Examples
        --------
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
        >>> weight_noise(0.2).chosen(model), weight_noise(0.2, filter="2.*").chosen(model)
        (('0.weight', '2.weight'), ('2.weight', '2.bias'))
        """
        return select_parameters(model, self.filter)

    def __repr__(self) -> str:
        shown = "" if self.filter is None else f", filter={self.filter!r}"
        return (f"weight_noise(sigma={self.sigma}, mode={self.mode!r}, draws={self.draws!r}{shown}, "
                f"sampler={self.sampler!r}, batched={self.batched!r})")


def weight_noise(sigma: float = 0.2, mode: str = "multiplicative", draws: Union[int, str] = 25,
                 filter: FilterType = None, sampler: str = "iid",
                 batched: Union[bool, str] = "auto") -> WeightNoiseSpec:
    """Noise on the model's weights, for ``NoiseTunnel.attribute(weight_noise=...)``: NoiseGrad and FusionGrad.

    Each of ``draws`` weight draws is a copy of the model whose chosen
    weights are perturbed; each draw attributes ``nt_samples`` noisy copies
    of the inputs (``stdevs``), and the ``nt_type`` statistic is taken over
    all ``draws × nt_samples`` attributions. NoiseGrad (Bykov et al. 2022)
    is ``nt_samples=1, stdevs=0``; FusionGrad adds input noise.

    Parameters
    ----------
    sigma : float
        σ_w. ``"multiplicative"``: each weight is multiplied by a draw of
        N(1, σ_w²) (the paper's choice); ``"additive"``: a draw of N(0, σ_w²)
        is added (note: the reference code's additive option adds N(1, σ_w²)).
        Default 0.2, the reference code's; the paper proposes choosing σ_w
        by a heuristic on the model instead of tuning it per explanation.
    mode : {"multiplicative", "additive"}
    draws : int or "auto"
        Weight draws ``M`` (default 25, the paper's NoiseGrad). ``"auto"``:
        draws are added until the relative standard error of every example
        is at most ``tol`` (``max_samples`` caps the total ``M × N``).
    filter
        Which parameters get noise. ``None`` (default): the ``weight`` of every
        ``Linear``, ``Bilinear`` and convolution (and the projection weights
        of ``MultiheadAttention``), not biases nor normalisation layers (the
        reference code perturbs every parameter: ``filter="*"``). A module
        class or tuple of classes: the ``weight`` of those modules. A string
        or sequence of strings: glob patterns on qualified parameter names
        (``"features.*.weight"``). A callable ``(name, module) -> bool``
        given each parameter's qualified name and the module that holds it.
        The weight of a parametrized layer (``weight_norm``,
        ``spectral_norm``) is computed from other parameters, which the
        default does not choose: a warning names them (e.g. give
        ``"*.original1"`` for weight_norm's direction).
    sampler : {"iid", "antithetic"}
        ``"antithetic"`` pairs draw ``2j`` (noise ε) with ``2j + 1`` (−ε).
    batched : "auto", True or False
        How the several weight draws of a chunk are evaluated:
        ``torch.func.vmap`` over stacked parameter sets in one forward
        (True; an error if vmap cannot run the model), a call of the method
        per draw, with one draw's parameters made at a time (False), or
        whichever was measured faster ("auto", the default: on a CPU, vmap
        while a forward holds at most 8 rows per draw for models with
        convolutions, 128 for the others, and a call per draw beyond, where
        vmap's grouped convolutions and batched products lose; vmap on other
        devices, not measured; a call per draw for models vmap cannot run,
        for models with ``nn.MultiheadAttention``, whose fused kernel under
        vmap has no backward, and for models with hooks of the user's, which
        would see vmap's batched tensors; benchmarks/WEIGHTS.md). The
        results are the same up to float rounding. Only methods that call the model as a black box
        (Saliency, InputXGradient, IntegratedGradients, FeatureAblation,
        Occlusion) run several draws per forward; the others (layer and
        neuron methods, DeepLift, GuidedBackprop, GradientShap, ...)
        attribute one weight draw per call.

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from noisegrad import NoiseTunnel, weight_noise
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> x = torch.rand(2, 4)
    >>> noisegrad_map = NoiseTunnel(Saliency(model)).attribute(        # NoiseGrad: 16 noisy models
    ...     x, nt_samples=1, stdevs=0.0, target=0, weight_noise=weight_noise(0.2, draws=16), seed=0)
    >>> fusiongrad_map = NoiseTunnel(Saliency(model)).attribute(       # FusionGrad: 8 models x 4 noisy inputs
    ...     x, nt_samples=4, stdevs=0.1, target=0, weight_noise=weight_noise(0.2, draws=8), seed=0)
    >>> noisegrad_map.shape, fusiongrad_map.shape
    (torch.Size([2, 4]), torch.Size([2, 4]))
    """
    return WeightNoiseSpec(sigma, mode, draws, filter, sampler, batched)


def parameter_filter(filter: FilterType) -> Callable[[str, nn.Module], bool]:
    """``weight_noise(filter=...)`` as a predicate ``(qualified name, module holding it) -> bool``.

    Examples
    --------
    >>> chooses = parameter_filter(["head.*"])
    >>> chooses("head.bias", nn.Linear(2, 2)), chooses("body.weight", nn.Linear(2, 2))
    (True, False)
    """
    if filter is None:
        return _linear_maps
    if isinstance(filter, str):
        filter = (filter,)
    if isinstance(filter, type):
        filter = (filter,)
    if isinstance(filter, (list, tuple)) and filter and all(isinstance(p, str) for p in filter):
        patterns = tuple(filter)
        return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)
    if isinstance(filter, tuple) and filter and all(isinstance(t, type) and issubclass(t, nn.Module) for t in filter):
        kinds = filter
        return lambda name, module: name.rsplit(".", 1)[-1] == "weight" and isinstance(module, kinds)
    if isinstance(filter, nn.Module):
        raise TypeError(f"weight_noise(filter=...) takes a module class, not a module: got the {type(filter).__name__} "
                        f"instance; give its class, or the qualified names of its parameters as glob patterns "
                        f"(e.g. \"0.*\" for the submodule named 0)")
    if callable(filter) and not isinstance(filter, type):
        try:
            inspect.signature(filter).bind("name", nn.Identity())
        except TypeError:
            raise TypeError(f"weight_noise(filter=...) as a callable is called as filter(name, module) -> bool, "
                            f"and {filter!r} cannot take those two arguments") from None
        except ValueError:  # no signature to inspect (some builtins): it is called as it is
            pass
        return filter
    raise TypeError(
        "weight_noise(filter=...) must be None, a module class or tuple of classes, a glob pattern or sequence of "
        f"patterns on parameter names, or a callable (name, module) -> bool, got {filter!r}"
    )


def _linear_maps(name: str, module: nn.Module) -> bool:
    """The default: the weights of a network's linear maps, not biases, not normalisation layers."""
    local = name.rsplit(".", 1)[-1]
    if isinstance(module, nn.MultiheadAttention):
        return local in _ATTENTION_WEIGHTS
    return local == "weight" and isinstance(module, DEFAULT_MODULES)


def select_parameters(model: nn.Module, filter: FilterType = None) -> Tuple[str, ...]:
    """The qualified names of the floating-point parameters ``filter`` chooses, in ``named_parameters`` order.

    A parameter shared by several modules (tied weights) is listed once, under
    its first name, and chosen if any of its names is.

    Examples
    --------
    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 1))
    >>> select_parameters(model)
    ('0.weight', '3.weight')
    >>> select_parameters(model, "*")
    ('0.weight', '0.bias', '1.weight', '1.bias', '3.weight', '3.bias')
    >>> select_parameters(model, nn.BatchNorm2d)
    ('1.weight',)
    """
    chooses = parameter_filter(filter)
    first_name: Dict[int, str] = {}
    chosen = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        for local, parameter in module.named_parameters(recurse=False):
            name = f"{module_name}.{local}" if module_name else local
            first_name.setdefault(id(parameter), name)
            if parameter.is_floating_point() and chooses(name, module):
                chosen.add(id(parameter))
    return tuple(name for name, parameter in model.named_parameters() if id(parameter) in chosen
                 and first_name[id(parameter)] == name)


def noise_name(root: nn.Module, name: str) -> str:
    """The name that keys a parameter's noise: its qualified name without the prefixes wrappers add.

    ``nn.DataParallel`` / ``DistributedDataParallel`` (``module.``) and
    ``torch.compile`` (``_orig_mod.``) hold the same network under another
    name; its noise under a seed stays the same.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> noise_name(nn.DataParallel(net), "module.0.weight"), noise_name(net, "0.weight")
    ('0.weight', '0.weight')
    """
    module = root
    while True:
        inner = _WRAPPED.get(type(module).__name__) if type(module).__module__.startswith("torch.") else None
        if inner is None or not name.startswith(inner + "."):
            return name
        name, module = name[len(inner) + 1:], getattr(module, inner)


#: Wrappers of torch's that hold the user's network as an attribute: their class name → that attribute.
_WRAPPED = {"DataParallel": "module", "DistributedDataParallel": "module", "OptimizedModule": "_orig_mod"}


def parameter_key(name: str) -> int:
    """A parameter's key for its noise: 64 bits of a hash of its qualified name (signed, as an int64).

    Keyed by name, a parameter's noise does not change when the filter adds or
    drops other parameters.

    Examples
    --------
    >>> parameter_key("0.weight") == parameter_key("0.weight") != parameter_key("1.weight")
    True
    """
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little", signed=True)


def weight_draws(clean: Tensor, name: str, draw_ids: range, seed: int, sigma: float, mode: str = "multiplicative",
                 sampler: str = "iid") -> Tensor:
    """The values of parameter ``name`` in weight draws ``draw_ids``: shape ``(len(draw_ids),) + clean.shape``.

    The standard normal ε of draw ``m`` at an element depends on the seed,
    the parameter's name, ``m`` (the pair ``m // 2`` for antithetic draws,
    with ε negated for odd ``m``) and the element's position only, never on
    the chunk; draws are made in the parameter's dtype and on its device.
    ``"multiplicative"``: ``clean · (1 + σ ε)``; ``"additive"``: ``clean + σ ε``.

    Examples
    --------
    >>> w = torch.ones(2, 3)
    >>> all_four = weight_draws(w, "0.weight", range(0, 4), seed=0, sigma=0.2)
    >>> torch.equal(all_four[2:], weight_draws(w, "0.weight", range(2, 4), seed=0, sigma=0.2))
    True
    """
    clean = clean.detach()
    units = torch.arange(draw_ids.start, draw_ids.stop, device=clean.device)
    if sampler == "antithetic":
        units = units // 2
    keys = row_keys(seed, stream(Purpose.WEIGHT_NOISE), torch.tensor([parameter_key(name)], device=clean.device),
                    units)
    noise = torch.empty((len(draw_ids), 1) + tuple(clean.shape), dtype=clean.dtype, device=clean.device)
    standard_normal(keys, tuple(clean.shape), noise)
    noise = noise.squeeze(1)
    if sampler == "antithetic":
        noise[(1 - draw_ids.start) % 2 :: 2].neg_()  # the odd draws: the second halves of their pairs
    noise.mul_(sigma)
    return noise.add_(1).mul_(clean) if mode == "multiplicative" else noise.add_(clean)

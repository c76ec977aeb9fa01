"""Everything a smoothing call needs, in one validated, JSON-able configuration.

:class:`SmoothingConfig` describes the noise (absolute, per named feature, or
relative to each example or to the whole data tensor), the sample count, the
sampler, the chunking, the seed, the computation dtype and the layer that
receives the noise. It checks itself on construction, round-trips through
``to_dict``/``to_json``, lists what a tuner may search (``get_tunables``), and
has constructors that take the parameter names of Vertex AI, innsight,
pnpxai and Xplique with their defaults and ranges (``docs/migration.md``).
"""

import dataclasses
import difflib
import json
import numbers
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from noisegrad._explained import (
    check_auto_outputs,
    times_input_choice,
    validate_channel_reducer,
    validate_outputs,
)
from noisegrad._foreign_configs import from_innsight, from_pnpxai, from_vertex, from_xplique
from noisegrad._validate import as_int, count_or_auto, noise_hint, validate_tol
from noisegrad.objective import check_objective
from noisegrad.perturb.inputs import Relative, relative
from noisegrad.sampling.samplers import SAMPLERS
from noisegrad.stats.smoothing import NT_TYPES

__all__ = ["SmoothingConfig", "DTYPES"]

#: Computation dtypes: innsight's names and torch's.
DTYPES = {"float": torch.float32, "float32": torch.float32, "double": torch.float64, "float64": torch.float64}
_RELATIVE_TO = ("range", "std")
_SCOPES = ("example", "data")
FeatureKey = Union[str, int]


def _positive_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` as a Python int of at least ``low`` (the tunnel's own integer check)."""
    count = as_int(name, value, least=None)
    if count < low:
        raise ValueError(f"{name} must be >= {low}, got {count}")
    return count


def _sigma(name: str, value: Any) -> float:
    if isinstance(value, Relative):  # NoiseTunnel's stdevs form: the configuration names its parts
        raise TypeError(f"{name} must be a number, got {value!r}: {_sigma_hint(name, value)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not 0 <= value <= sys.float_info.max:  # compared, not converted: float() of a huge int overflows
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


def _sigma_hint(name: str, value: Relative) -> str:
    """What ``relative(f)`` given to the noise field ``name`` should have been (any other name: ``feature_noise``)."""
    return _RELATIVE_HINTS.get(name, _FEATURE_HINT).format(fraction=value.fraction, of=value.of)


#: What a ``relative(f)`` given to a noise field should have been, by field (any other: a ``feature_noise`` entry).
_RELATIVE_HINTS = {
    "noise": "noise is σ itself; for a σ that is a fraction of the inputs' spread give noise_level={fraction} with "
             "relative_to={of!r} (in SmoothingConfig(...), or config.replace(...), which keeps the other fields)",
    "noise_level": "noise_level is the fraction itself: give noise_level={fraction} (with relative_to={of!r} in "
                   "SmoothingConfig(...) or config.replace(...))",
}
_FEATURE_HINT = ("feature_noise takes an absolute σ per feature; a σ that is a fraction of the spread applies to every "
                 "feature: noise_level={fraction} with relative_to={of!r} (SmoothingConfig(...) or "
                 "config.replace(...))")


#: The fields :meth:`SmoothingConfig.call_kwargs` passes to ``NoiseTunnel.attribute`` under their own names: always,
#: and when not None (``stdevs`` comes from the noise fields).
_ALWAYS_PASSED = ("nt_type", "nt_samples", "sampler", "nt_samples_batch_size", "seed", "return_stderr")
_PASSED_WHEN_SET = ("tol", "max_samples", "max_batch_rows", "memory_budget", "noise_layer", "outputs", "objective",
                    "times_input", "channel_reducer")


@dataclasses.dataclass(frozen=True)
class SmoothingConfig:
    """A smoothing call's settings, checked on construction.

    Parameters
    ----------
    nt_type : {"smoothgrad", "smoothgrad_sq", "vargrad"}
    nt_samples : int or "auto"
        Noisy copies per example; ``"auto"`` stops each example once its
        relative standard error reaches ``tol`` (at most ``max_samples``).
    noise : float, optional
        One absolute σ for every feature (Vertex AI's ``noise_sigma``,
        Xplique's ``noise``).
    feature_noise : mapping or sequence of (feature, σ) pairs, optional
        σ per feature, by name (with ``feature_names``) or by index along
        dimension 1 of the input (a column of a table, a channel of an
        image); features not listed get no noise, as Vertex AI's
        ``feature_noise_sigma``.
    feature_names : sequence of str, optional
        The names of dimension 1's entries, for ``feature_noise`` by name.
    noise_level : float, optional
        σ as a fraction of the spread of the data: of each example
        (``scope="example"``, the SmoothGrad paper's reading) or of the whole
        input tensor (``scope="data"``, innsight's). Default 0.15 when no
        other noise is given. With ``scope="data"`` σ depends on the batch
        passed, so an example's noise then depends on its batch: split a
        data set with ``scope="example"`` or an absolute ``noise``.
    relative_to : {"range", "std"}
        The spread ``noise_level`` is a fraction of.
    scope : {"example", "data"}
    sampler : {"iid", "antithetic", "qmc", "lhs"}
    tol, max_samples : optional
        For ``nt_samples="auto"`` only.
    nt_samples_batch_size : int, "auto" or None
    max_batch_rows, memory_budget : int, optional
    seed : int, optional
    dtype : {"float", "double", "float32", "float64"}, optional
        Compute in this dtype, on a copy of the model (the user's is never
        changed); default: the model's own.
    noise_layer : str, optional
        Dotted name of the module whose output gets the noise instead of the
        inputs (``NoiseTunnel.attribute``'s ``noise_layer``).
    return_stderr : bool
        Estimate standard errors from the same samples (no extra gradients).
    outputs : sequence of int, optional
        Explain these output columns at once (``NoiseTunnel.attribute``'s
        ``outputs``): results get a last dimension K.
    objective : callable, optional
        ``g(model, inputs, targets)`` → one score per example, explained
        instead of a model output (Xplique's ``operator``). A function is not
        JSON: ``to_dict`` writes its name, and ``from_dict`` asks for the
        function again.
    times_input : {None, "clean", "noisy"}
        Each noisy attribution times the clean input (innsight's
        SmoothGrad×Input) or times its noisy input (Captum's NoiseTunnel over
        InputXGradient).
    channel_reducer : {None, "mean", "sum", "max", "min", "abs-sum"}
        Image channels combined after smoothing (Xplique's ``reducer``).

    Examples
    --------
    >>> config = SmoothingConfig(nt_samples=16, noise_level=0.2, seed=0)
    >>> SmoothingConfig.from_json(config.to_json()) == config
    True
    >>> SmoothingConfig(noise=0.1, noise_level=0.2)
    Traceback (most recent call last):
    ...
    ValueError: give one noise specification, got noise= and noise_level=
    """

    nt_type: str = "smoothgrad"
    nt_samples: Union[int, str] = 50
    noise: Optional[float] = None
    feature_noise: Optional[Tuple[Tuple[FeatureKey, float], ...]] = None
    feature_names: Optional[Tuple[str, ...]] = None
    noise_level: Optional[float] = None
    relative_to: str = "range"
    scope: str = "example"
    sampler: str = "iid"
    tol: Optional[float] = None
    max_samples: Optional[int] = None
    nt_samples_batch_size: Union[int, str, None] = "auto"
    max_batch_rows: Optional[int] = None
    memory_budget: Optional[int] = None
    seed: Optional[int] = None
    dtype: Optional[str] = None
    noise_layer: Optional[str] = None
    return_stderr: bool = True
    outputs: Optional[Tuple[int, ...]] = None
    objective: Optional[Callable[..., Any]] = None
    times_input: Optional[str] = None
    channel_reducer: Optional[str] = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.outputs is not None:
            set_(self, "outputs", validate_outputs(self.outputs, {}, False, False, "mean"))
        if isinstance(self.objective, str):
            raise ValueError(f"objective={self.objective!r} names a function (a configuration read from a dict or "
                             "JSON keeps only its name, and never imports code): pass the function itself, e.g. "
                             "SmoothingConfig.from_dict({**values, 'objective': g})")
        check_objective(self.objective)
        check_auto_outputs(self.outputs, 'nt_samples="auto"' if self.nt_samples == "auto" else None,
                           "an objective" if self.objective is not None else None)
        set_(self, "times_input", times_input_choice(self.times_input))
        validate_channel_reducer(self.channel_reducer)
        if self.nt_type not in NT_TYPES:
            raise ValueError(f"nt_type must be one of {tuple(NT_TYPES)}, got {self.nt_type!r}")
        set_(self, "nt_samples", count_or_auto("nt_samples", self.nt_samples))
        if self.nt_samples != "auto" and (self.tol is not None or self.max_samples is not None):
            raise ValueError('tol and max_samples apply to nt_samples="auto" only')
        if self.tol is not None:
            validate_tol(self.tol)
        if self.max_samples is not None:
            set_(self, "max_samples", _positive_int("max_samples", self.max_samples, low=2))
        given = [name for name in ("noise", "feature_noise", "noise_level") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one noise specification, got {'= and '.join(given)}=")
        if self.noise is not None:
            set_(self, "noise", _sigma("noise", self.noise))
        if self.noise_level is not None:
            set_(self, "noise_level", _sigma("noise_level", self.noise_level))
        if self.relative_to not in _RELATIVE_TO:
            raise ValueError(f"relative_to must be one of {_RELATIVE_TO}, got {self.relative_to!r}")
        if self.scope not in _SCOPES:
            raise ValueError(f"scope must be one of {_SCOPES}, got {self.scope!r}")
        if self.feature_names is not None:
            names = tuple(self.feature_names)
            if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
                raise ValueError("feature_names must be distinct strings")
            set_(self, "feature_names", names)
        if self.feature_noise is not None:
            set_(self, "feature_noise", self._checked_feature_noise(self.feature_noise))
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.nt_samples_batch_size is not None:
            set_(self, "nt_samples_batch_size", count_or_auto("nt_samples_batch_size", self.nt_samples_batch_size,
                                                              ', "auto" or None'))
        for name in ("max_batch_rows", "memory_budget"):
            if getattr(self, name) is not None:
                set_(self, name, _positive_int(name, getattr(self, name)))
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
                raise TypeError(f"seed must be an int or None, got {self.seed!r}")
            set_(self, "seed", int(self.seed))
        if self.tol is not None:
            set_(self, "tol", float(self.tol))
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)} or None, got {self.dtype!r}")
        if self.noise_layer is not None and (self.feature_noise is not None or
                                             (self.noise is None and self.scope == "data")):
            raise ValueError("with noise_layer, give noise= (absolute) or noise_level with scope='example' (measured "
                             "on each example's output of that layer); feature_noise and scope='data' describe the "
                             "inputs, which are not perturbed")
        if self.noise_layer is not None and not isinstance(self.noise_layer, str):
            raise TypeError("noise_layer in a configuration is the module's dotted name (a str), so that it can be "
                            f"saved; got {type(self.noise_layer).__name__}")
        if not isinstance(self.return_stderr, bool):
            raise TypeError(f"return_stderr must be True or False, got {self.return_stderr!r}")

    def _checked_feature_noise(self, value: Any) -> Tuple[Tuple[FeatureKey, float], ...]:
        if not isinstance(value, Mapping) and not (isinstance(value, (list, tuple))
                                                   and all(isinstance(p, (list, tuple)) for p in value)):
            hint = f"; {_sigma_hint('feature_noise', value)}" if isinstance(value, Relative) else ""
            raise TypeError(f"feature_noise takes {{feature: σ}} or (feature, σ) pairs, got {value!r}{hint}")
        pairs = list(value.items()) if isinstance(value, Mapping) else [tuple(p) for p in value]
        checked: List[Tuple[FeatureKey, float]] = []
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"feature_noise entries must be (feature, sigma) pairs, got {pair!r}")
            key, sigma = pair
            if isinstance(key, str):
                if self.feature_names is None:
                    raise ValueError(f"feature_noise names feature {key!r}; give feature_names= to say which "
                                     "index each name is")
                if key not in self.feature_names:
                    raise ValueError(f"feature_noise names an unknown feature {key!r}; feature_names are "
                                     f"{list(self.feature_names)}")
            elif isinstance(key, bool) or not isinstance(key, numbers.Integral) or key < 0:
                raise TypeError(f"feature_noise keys must be feature names or indices >= 0, got {key!r}")
            checked.append((key if isinstance(key, str) else int(key), _sigma(f"feature_noise[{key!r}]", sigma)))
        return tuple(checked)

    # ------------------------------------------------------------------ the noise for NoiseTunnel.attribute

    def stdevs(self, inputs: Union[Tensor, Tuple[Tensor, ...]]) -> Any:
        """``stdevs=`` for ``NoiseTunnel.attribute`` on ``inputs``: a float, a σ tensor, or ``relative(...)``.

        Examples
        --------
        >>> x = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
        >>> SmoothingConfig(noise_level=0.5, scope="data").stdevs(x)
        1.5
        >>> SmoothingConfig(feature_noise={1: 0.2}).stdevs(x)
        tensor([0.0000, 0.2000])
        """
        if self.noise is not None:
            return self.noise
        if self.feature_noise is not None:
            return self._feature_sigma(inputs)
        level = 0.15 if self.noise_level is None else self.noise_level
        if self.scope == "example":
            return relative(level, of=self.relative_to)
        tensors = inputs if isinstance(inputs, tuple) else (inputs,)
        per_input = []
        for x in tensors:
            data = x.detach().double()
            spread = data.max() - data.min() if self.relative_to == "range" else data.std(correction=0)
            per_input.append(level * float(spread))
        return per_input[0] if len(per_input) == 1 else tuple(per_input)

    def _feature_sigma(self, inputs: Union[Tensor, Tuple[Tensor, ...]]) -> Tensor:
        if isinstance(inputs, tuple):
            raise ValueError("feature_noise describes one input tensor's features; with several input tensors give "
                             "NoiseTunnel.attribute a tuple of σ tensors instead")
        x = inputs
        if x.dim() < 2:
            raise ValueError(f"feature_noise needs inputs with a feature dimension 1, got shape {tuple(x.shape)}")
        features = x.shape[1]
        if self.feature_names is not None and len(self.feature_names) != features:
            raise ValueError(f"feature_names has {len(self.feature_names)} names but the input has {features} "
                             "features along dimension 1")
        sigma = torch.zeros(features, dtype=x.dtype, device=x.device)
        for key, value in self.feature_noise or ():
            index = self.feature_names.index(key) if isinstance(key, str) else key  # type: ignore[union-attr]
            if index >= features:
                raise ValueError(f"feature_noise names feature index {index}, but the input has {features}")
            sigma[index] = value
        return sigma.reshape((features,) + (1,) * (x.dim() - 2))

    @classmethod
    def decided(cls, arguments: Mapping[str, Any], where: str, recorded_in: str = "result.config") -> None:
        """``TypeError`` if ``arguments`` (for ``NoiseTunnel.attribute``, given ``where``) hold any that a
        configuration decides: the ``NoiseTunnel.attribute`` arguments of :meth:`call_kwargs` (``stdevs`` from its
        noise fields) and ``generator`` (its ``seed``).

        A result records its configuration (``result.config``; a monitor's in ``monitor.config``, named by
        ``recorded_in``); such an argument given beside it would go unrecorded, or collide with the configuration's
        own.

        Examples
        --------
        >>> SmoothingConfig.decided({"n_steps": 16}, "method_kwargs")  # the method's own: fine
        >>> SmoothingConfig.decided({"generator": None}, "method_kwargs")
        Traceback (most recent call last):
        ...
        TypeError: method_kwargs got ['generator'], which the configuration decides ...
        """
        decided = sorted(set(arguments) & set(_ALWAYS_PASSED + _PASSED_WHEN_SET + ("stdevs", "generator")))
        if decided:
            fields = {"stdevs": "noise= (σ itself), noise_level= (the f of relative(f), with relative_to='std' for "
                                "relative(f, of='std')) or feature_noise= ({feature: σ})",
                      "generator": "seed= (a generator's state cannot be recorded)"}
            raise TypeError(f"{where} got {decided}, which the configuration decides (recorded in {recorded_in}): "
                            "set its fields instead, "
                            + "".join(f"for {name} {fields[name]}, " for name in decided if name in fields)
                            + "in SmoothingConfig(...), config.replace(...), an explainer's set_kwargs(...) or a "
                            "monitor's keyword arguments")

    def call_kwargs(self, inputs: Union[Tensor, Tuple[Tensor, ...]]) -> Dict[str, Any]:
        """The keyword arguments of ``NoiseTunnel.attribute`` this configuration stands for (not ``dtype``)."""
        kwargs: Dict[str, Any] = {name: getattr(self, name) for name in _ALWAYS_PASSED}
        kwargs["stdevs"] = self.stdevs(inputs)
        for name in _PASSED_WHEN_SET:
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        if self.nt_samples == "auto":
            kwargs.pop("return_stderr")  # "auto" always returns them
        return kwargs

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> Dict[str, Any]:
        """A dict of plain Python values (JSON-able); ``from_dict`` inverts it.

        An ``objective`` is written as its name (``module.qualname``), for the
        record: ``from_dict`` refuses it until the function is given again.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.objective is not None:
            out["objective"] = f"{getattr(self.objective, '__module__', '?')}." \
                               f"{getattr(self.objective, '__qualname__', type(self.objective).__name__)}"
        if self.outputs is not None:
            out["outputs"] = list(self.outputs)
        if self.feature_noise is not None:
            out["feature_noise"] = [list(pair) for pair in self.feature_noise]
        if self.feature_names is not None:
            out["feature_names"] = list(self.feature_names)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SmoothingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SmoothingConfig fields {unknown}; known: {sorted(known)}")
        values = dict(values)
        for name in ("feature_noise", "feature_names", "outputs"):
            if values.get(name) is not None:
                values[name] = tuple(tuple(v) if isinstance(v, list) else v for v in values[name])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SmoothingConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "SmoothingConfig":
        """A copy with some fields changed, checked again.

        Setting one noise specification clears the others.
        """
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:  # dataclasses.replace would say only "__init__() got an unexpected keyword argument"
            close = [match for name in unknown for match in difflib.get_close_matches(name, self.__dataclass_fields__, 1)]
            hint = noise_hint(unknown) or (f"; did you mean {close[0]}=?" if close else "")
            raise TypeError(f"SmoothingConfig has no field {', '.join(map(repr, unknown))}{hint}")
        noise_fields = {"noise", "feature_noise", "noise_level"}
        if noise_fields & set(changes):
            changes = {**{name: None for name in noise_fields}, **changes}
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ tuning

    def get_tunables(self) -> Dict[str, Dict[str, Any]]:
        """What a tuner may search, with types and ranges (as pnpxai's ``get_tunables``).

        The noise's entry is the specification in use: ``noise_level``
        (relative, 0.01–0.5 of the spread) or ``noise`` (absolute, 0.01–1.0,
        for inputs scaled to about unit range). ``nt_samples`` is tunable
        when it is a fixed count.

        Examples
        --------
        >>> sorted(SmoothingConfig().get_tunables())
        ['noise_level', 'nt_samples', 'sampler']
        """
        tunables: Dict[str, Dict[str, Any]] = {}
        if self.feature_noise is None:
            if self.noise is not None:
                tunables["noise"] = {"type": "float", "low": 0.01, "high": 1.0, "log": True}
            else:
                tunables["noise_level"] = {"type": "float", "low": 0.01, "high": 0.5, "log": True}
        if self.nt_samples != "auto":
            tunables["nt_samples"] = {"type": "int", "low": 4, "high": 256, "log": True}
        tunables["sampler"] = {"type": "categorical", "choices": list(SAMPLERS)}
        return tunables

    # other libraries' parameter names (noisegrad/_foreign_configs.py)
    from_vertex = classmethod(from_vertex)
    from_innsight = classmethod(from_innsight)
    from_pnpxai = classmethod(from_pnpxai)
    from_xplique = classmethod(from_xplique)

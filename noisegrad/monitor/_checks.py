"""What the monitor checks when it is built, without a forward pass: a mistake should stop the run before training
starts, not at the first snapshot, hours in."""

import dataclasses
import difflib
import inspect
from typing import Any, Dict, Iterable, List, Tuple

from captum.attr import Attribution
from torch import Tensor, nn

from noisegrad.config import SmoothingConfig
from noisegrad.tunnel import NoiseTunnel

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(SmoothingConfig))


def smoothing_fields(fields: Dict[str, Any], method: Attribution, behind: List[nn.Module],
                     monitor_arguments: Iterable[str]) -> Dict[str, Any]:
    """The monitor's ``**config_fields`` checked: each a field of :class:`SmoothingConfig`, ``noise_layer`` as the
    dotted name of a module behind ``method``."""
    for name in fields:
        if name not in _CONFIG_FIELDS:
            raise TypeError(_unexpected(name, method, monitor_arguments))
    layer = fields.get("noise_layer")
    if isinstance(layer, nn.Module):
        names = [name for root in behind for name, module in root.named_modules() if module is layer]
        if not names:
            raise ValueError(f"noise_layer ({type(layer).__name__}) is not a submodule of the model behind method "
                             f"({', '.join(type(m).__name__ for m in behind) or 'none found'})")
        fields = dict(fields, noise_layer=names[0])
    return fields


def _unexpected(name: str, method: Attribution, monitor_arguments: Iterable[str]) -> str:
    """Why ``name=`` is not a keyword argument of the monitor, and the closest one that is."""
    theirs = set(inspect.signature(method.attribute).parameters)
    passed_on = (set(inspect.signature(NoiseTunnel.attribute).parameters) | theirs) - _CONFIG_FIELDS - {
        "self", "inputs", "target"}
    if name in passed_on:
        owner = f"{type(method).__name__}.attribute" if name in theirs else "NoiseTunnel.attribute"
        return f"{name}= is an argument of {owner}, not of the monitor: give attribute_kwargs={{{name!r}: ...}}"
    close = difflib.get_close_matches(name, sorted(_CONFIG_FIELDS | passed_on | set(monitor_arguments)), n=1)
    hint = ""
    if close:
        hint = (f"did you mean attribute_kwargs={{{close[0]!r}: ...}}? " if close[0] in passed_on
                else f"did you mean {close[0]}=? ")
    return (f"unexpected keyword argument {name!r}: {hint}The monitor takes its own arguments, the fields of "
            f"noisegrad.SmoothingConfig (nt_type, nt_samples, noise_level, ...), and, in attribute_kwargs=, "
            f"arguments for {type(method).__name__}.attribute")


def check_required_arguments(method: Attribution, given: Dict[str, Any]) -> None:
    """Refuse a call that lacks an argument the method's ``attribute`` requires (GradientShap's ``baselines``)."""
    signature = inspect.signature(method.attribute)
    missing = [name for name, parameter in signature.parameters.items()
               if parameter.default is parameter.empty and name not in ("inputs", *given)
               and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)]
    if missing:
        raise TypeError(f"{type(method).__name__}.attribute needs {', '.join(missing)}: give "
                        f"attribute_kwargs={{{', '.join(f'{name!r}: ...' for name in missing)}}}")


def check_probe_dtype(probe: Tuple[Tensor, ...], models: List[nn.Module]) -> None:
    """Refuse a floating-point probe in another dtype than the model's parameters (snapshots run autocast off)."""
    dtypes = {p.dtype for model in models for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) != 1:
        return  # no parameters, or mixed: nothing to compare with
    (wanted,) = dtypes
    for i, x in enumerate(probe):
        if x.is_floating_point() and x.dtype != wanted:
            where = "inputs" if len(probe) == 1 else f"inputs[{i}]"
            raise TypeError(f"the probe ({where}) is {x.dtype} and the model's parameters are {wanted}: give "
                            f"{where}.to({wanted}) (snapshots run in the model's own precision, autocast off)")


def check_same_model(model: nn.Module, behind: List[nn.Module], method: Attribution) -> None:
    """Refuse a method built on another model than the one being trained: its maps would never change."""
    trained = {id(p) for p in model.parameters()}
    theirs = [p for m in behind for p in m.parameters()]
    if theirs and not any(id(p) in trained for p in theirs):
        raise ValueError(f"the model being trained ({type(model).__name__}) shares no parameter with the model behind "
                         f"method ({', '.join(type(m).__name__ for m in behind)}): the maps would not follow the "
                         f"training; build the method on the model being trained, e.g. "
                         f"{type(method).__name__}(model)")

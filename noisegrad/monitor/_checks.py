"""What the monitor checks when it is built, without a forward pass: a mistake should stop the run before training
starts, not at the first snapshot, hours in."""

import dataclasses
import difflib
import inspect
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from captum.attr import Attribution, LayerAttribution
from torch import Tensor, nn

from noisegrad._validate import noise_hint
from noisegrad.config import SmoothingConfig
from noisegrad.monitor.metrics import zero_one
from noisegrad.reducers import reduce_channels
from noisegrad.tunnel import NoiseTunnel

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(SmoothingConfig))


def refuse_decided(attribute_kwargs: Any, fields: Mapping[str, Any]) -> None:
    """``TypeError`` for what the monitor would run with but not record in ``monitor.config``: what the
    configuration decides in ``attribute_kwargs`` (``nt_samples``, ``outputs``, ...), ``stdevs=`` or ``generator=``
    among the monitor's keywords (``fields``), and what the monitor sets itself (``target``, ``inputs``, standard
    errors)."""
    if attribute_kwargs is not None and not isinstance(attribute_kwargs, Mapping):
        raise TypeError(f"attribute_kwargs must be a dict of argument names and values, got "
                        f"{type(attribute_kwargs).__name__}")
    given = attribute_kwargs or {}
    for name in ("target", "inputs"):
        if name in given:
            raise TypeError(f"attribute_kwargs may not set {name!r}: the monitor sets it (give it to the monitor)")
    if "return_stderr" in given or fields.get("return_stderr") is False:
        raise TypeError("the monitor always takes standard errors, from the same samples (they cost nothing): leave "
                        "return_stderr out")
    SmoothingConfig.decided(given, "attribute_kwargs", recorded_in="monitor.config")
    SmoothingConfig.decided({name: fields[name] for name in ("stdevs", "generator") if name in fields}, "the monitor",
                            recorded_in="monitor.config")


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
    if noise_hint([name]):  # another library's name for the noise: difflib would suggest noise_mask
        return f"unexpected keyword argument {name!r}{noise_hint([name])}"
    theirs = set(inspect.signature(method.attribute).parameters)
    passed_on = (set(inspect.signature(NoiseTunnel.attribute).parameters) | theirs) - _CONFIG_FIELDS - {
        "self", "inputs", "target", "stdevs", "generator"}
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


def check_probe_finite(probe: Tuple[Tensor, ...]) -> None:
    """Refuse a probe with NaN or infinite values: its noise scale and every map would be NaN (the error came from
    the noise scale, naming ``stdevs`` the monitor's user never gave)."""
    for i, x in enumerate(probe):
        if x.is_floating_point():
            bad = ~x.isfinite()
            if bool(bad.any()):
                where = "inputs" if len(probe) == 1 else f"inputs[{i}]"
                examples = bad.reshape(x.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
                raise ValueError(f"the probe ({where}) holds {int(bad.sum())} NaN or infinite value(s), in examples "
                                 f"{examples[:5]}{' ...' if len(examples) > 5 else ''}: give a finite probe batch")


def check_same_model(model: nn.Module, behind: List[nn.Module], method: Attribution) -> None:
    """Refuse a method built on another model than the one being trained: its maps would never change."""
    trained = {id(p) for p in model.parameters()}
    theirs = [p for m in behind for p in m.parameters()]
    if theirs and not any(id(p) in trained for p in theirs):
        raise ValueError(f"the model being trained ({type(model).__name__}) shares no parameter with the model behind "
                         f"method ({', '.join(type(m).__name__ for m in behind)}): the maps would not follow the "
                         f"training; build the method on the model being trained, e.g. "
                         f"{type(method).__name__}(model)")


def checked_masks(masks: Any, probe: Tuple[Tensor, ...], method: Attribution,
                  call: Dict[str, Any]) -> Optional[Tuple[Tensor, ...]]:
    """Masks as a tuple of bool tensors, one per input (per layer output for a layer method); for input attributions
    each must broadcast to the attributions of its input as ``call`` (the monitor's ``NoiseTunnel.attribute``
    arguments) shapes them: ``channel_reducer=`` combines an image's channels, ``outputs=`` adds a last dimension."""
    if masks is None:
        return None
    given = tuple(masks) if isinstance(masks, (tuple, list)) else (masks,)
    if not all(isinstance(m, Tensor) for m in given):
        raise TypeError(f"masks must be a tensor or a tuple of tensors, got {type(masks).__name__}")
    given = tuple(zero_one(mask, f"masks[{i}]") for i, mask in enumerate(given))
    batch = probe[0].shape[0]
    if isinstance(method, LayerAttribution):  # their shapes are checked against the layer's at the first snapshot
        for i, mask in enumerate(given):
            if mask.dim() == 0 or mask.shape[0] != batch:
                raise ValueError(f"masks[{i}] of shape {tuple(mask.shape)} must be shaped like the layer's "
                                 f"attributions, (probe size {batch}, ...), with size 1 where it is the same for all")
        return given
    if len(given) != len(probe):
        raise ValueError(f"masks must have one tensor per input ({len(probe)}), got {len(given)}")
    outputs, reducer = call.get("outputs"), call.get("channel_reducer")
    for i, (mask, x) in enumerate(zip(given, probe)):
        shape = tuple(reduce_channels(x.new_empty(x.shape + ((len(outputs),) if outputs is not None else ()),
                                                   device="meta"), reducer, per_output=outputs is not None).shape)
        if mask.dim() != len(shape) or mask.shape[0] != batch or not _broadcasts(mask.shape, shape):
            raise ValueError(f"masks[{i}] of shape {tuple(mask.shape)} must broadcast to "
                             f"{_shaped(i, mask, x, shape, reducer, outputs)}")
    return given


def _shaped(i: int, mask: Tensor, x: Tensor, shape: Tuple[int, ...], reducer: Any, outputs: Any) -> str:
    """The end of the error for ``masks[i]``: the attributions' shape, what made it, and the mask that fits."""
    reduced = len(shape) < x.dim() + (outputs is not None)
    made = [f"channel_reducer={reducer!r} combines its channels"] if reduced else []
    made += [f"outputs={list(outputs)} adds a last dimension of {len(outputs)}"] if outputs is not None else []
    if not made:
        return f"the probe input's shape {shape}, with the same batch size"
    fits = []
    if reduced and mask.dim() > 1 and mask.shape[1] == 1:
        fits.append(("[:, 0]", mask[:, 0]))
    if outputs is not None:
        fits += [(f"{index}[..., None]", fit[..., None]) for index, fit in [("", mask), *fits]]
    hint = next((f"; give masks[{i}]{index}" for index, fit in fits
                 if fit.dim() == len(shape) and _broadcasts(fit.shape, shape)), "")
    return (f"the attributions' shape {shape}, with the same batch size (the probe input is {tuple(x.shape)}; "
            f"{' and '.join(made)}){hint}")


def _broadcasts(shape: Sequence[int], to: Sequence[int]) -> bool:
    return all(a == b or a == 1 for a, b in zip(shape, to))


def checked_tokens(tokens: Any, probe: Tuple[Tensor, ...]) -> Optional[List[List[str]]]:
    """Each probe example's tokens, as many as its tokens dimension (the probe's dimension 1) or fewer (padding is
    left out of the figure): a text figure drawn at a snapshot must not fail."""
    if tokens is None:
        return None
    batch = probe[0].shape[0]
    if isinstance(tokens, str) or any(isinstance(row, str) for row in tokens):
        raise TypeError("tokens must be one sequence of str per probe example (a list of lists), got a str where a "
                        "sequence of tokens belongs")
    rows = [list(row) for row in tokens]
    if len(rows) != batch or not all(isinstance(t, str) for row in rows for t in row):
        raise ValueError(f"tokens must be one sequence of str per probe example ({batch}), got {len(rows)} rows")
    most = probe[0].shape[1] if probe[0].dim() > 1 else None
    longer = [i for i, row in enumerate(rows) if most is not None and len(row) > most]
    if longer:
        raise ValueError(f"tokens[{longer[0]}] has {len(rows[longer[0]])} tokens and the probe "
                         f"{tuple(probe[0].shape)} has {most} per example: give at most {most} (padding may be left out)")
    return rows


def checked_feature_names(names: Any, probe: Tuple[Tensor, ...], method: Attribution) -> Optional[List[str]]:
    """Feature names label a tabular figure: one per column of a (batch, features) probe (a layer's: unchecked)."""
    if names is None or isinstance(method, LayerAttribution):
        return None if names is None else list(names)
    if len(probe) != 1 or probe[0].dim() != 2:
        raise ValueError(f"feature_names are for a tabular probe, (batch, features); the probe is "
                         f"{', '.join(str(tuple(x.shape)) for x in probe)}")
    names = list(names)
    if len(names) != probe[0].shape[1]:
        raise ValueError(f"feature_names must name the probe's {probe[0].shape[1]} features, got {len(names)}")
    return names

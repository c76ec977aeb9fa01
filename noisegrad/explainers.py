"""Model in, explanation out: SmoothGrad, SquareGrad, VarGrad, and any Captum method smoothed by a configuration.

These classes hold a model, a Captum method class and a
:class:`~noisegrad.config.SmoothingConfig`; ``attribute(batch, target)``
returns a :class:`~noisegrad.SmoothedAttribution` carrying the attributions,
the standard errors, the delta (for methods that have one), the samples used
and the configuration. Batches may come as a data loader gives them (dicts or
tuples): extractors pick the forward arguments out of them, as pnpxai's do.
"""

import copy
import inspect
from typing import Any, Callable, Dict, Optional, Type, Union

import torch
from captum.attr import Attribution, LayerAttribution, LayerGradientXActivation, Saliency
from torch import Tensor, nn

from noisegrad._validate import noise_hint
from noisegrad.config import DTYPES, SmoothingConfig
from noisegrad.tunnel import NoiseTunnel

__all__ = ["Smoothed", "SmoothGrad", "SquareGrad", "VarGrad"]

Extractor = Callable[[Any], Any]


class Smoothed:
    """Any Captum attribution method, smoothed: a model in, a :class:`~noisegrad.SmoothedAttribution` out.

    Parameters
    ----------
    model : nn.Module or callable
        Called as ``model(*inputs, *additional_forward_args)``.
    method : Captum Attribution class
        E.g. ``Saliency``, ``IntegratedGradients``, ``InputXGradient``, or a
        layer method (``LayerIntegratedGradients``), which attributes to
        ``layer``.
    config : SmoothingConfig, optional
        Default: ``SmoothingConfig()`` with the class's ``nt_type``.
    layer : nn.Module or str, optional
        The module that receives the noise (its output), as pnpxai's
        ``layer=``; a layer method also attributes to it.
    forward_arg_extractor : callable, optional
        ``batch → inputs`` (a tensor or tuple of tensors) to attribute.
    additional_forward_arg_extractor : callable, optional
        ``batch → additional_forward_args`` passed to the model after the inputs.
    method_kwargs : dict, optional
        Arguments of the method's ``attribute`` (``n_steps``, ``baselines``, ``abs``, ...).
    **config_fields
        Fields of :class:`~noisegrad.config.SmoothingConfig` to change
        (``nt_samples=``, ``noise_level=``, ``seed=``, ``outputs=``,
        ``objective=``, ``times_input=``, ``channel_reducer=``, ...).

    Examples
    --------
    >>> from captum.attr import IntegratedGradients
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> explainer = Smoothed(model, IntegratedGradients, nt_samples=8, seed=0, method_kwargs={"n_steps": 16})
    >>> result = explainer.attribute(torch.rand(2, 4), target=1)
    >>> result.attributions.shape, result.delta.shape
    (torch.Size([2, 4]), torch.Size([2]))
    """

    nt_type = "smoothgrad"

    def __init__(
        self,
        model: Union[nn.Module, Callable[..., Tensor]],
        method: Type[Attribution] = Saliency,
        config: Optional[SmoothingConfig] = None,
        *,
        layer: Union[nn.Module, str, None] = None,
        forward_arg_extractor: Optional[Extractor] = None,
        additional_forward_arg_extractor: Optional[Extractor] = None,
        method_kwargs: Optional[Dict[str, Any]] = None,
        **config_fields: Any,
    ) -> None:
        if not (isinstance(method, type) and issubclass(method, Attribution)):
            raise TypeError(f"method must be a Captum Attribution class (e.g. captum.attr.Saliency), got {method!r}")
        if config is not None and not isinstance(config, SmoothingConfig):
            raise TypeError(f"config must be a noisegrad.SmoothingConfig, got {type(config).__name__}")
        if layer is None and issubclass(method, LayerAttribution):
            raise ValueError(f"{method.__name__} attributes to a layer: give layer= (the module, or its name)")
        for name, extractor in (("forward_arg_extractor", forward_arg_extractor),
                                ("additional_forward_arg_extractor", additional_forward_arg_extractor)):
            if extractor is not None and not callable(extractor):
                raise TypeError(f"{name} must be callable (batch → arguments), got {type(extractor).__name__}")
        self.model, self.method = model, method
        self.forward_arg_extractor = forward_arg_extractor
        self.additional_forward_arg_extractor = additional_forward_arg_extractor
        self.method_kwargs = dict(method_kwargs or {})
        SmoothingConfig.decided(self.method_kwargs, "method_kwargs")
        base = config if config is not None else SmoothingConfig(nt_type=self.nt_type)
        if layer is not None:
            config_fields["noise_layer"] = _layer_name(model, layer)
        self.config = base.replace(**config_fields) if config_fields else base

    def attribute(self, batch: Any, target: Any = None, **kwargs: Any) -> Any:
        """Explain a batch: the smoothed attributions of its inputs, as a :class:`~noisegrad.SmoothedAttribution`.

        ``kwargs`` go to ``NoiseTunnel.attribute`` (``example_ids``,
        ``noise_mask``, ``baselines``, ...), after ``method_kwargs``.
        ``target`` is Captum's, or one-hot rows ``(batch, n_outputs)``; with
        the configuration's ``objective`` it is that function's third
        argument; with its ``outputs`` it is left out.
        """
        SmoothingConfig.decided(dict(self.method_kwargs, **kwargs), f"{type(self).__name__}.attribute")
        inputs = self.forward_arg_extractor(batch) if self.forward_arg_extractor is not None else batch
        if self.additional_forward_arg_extractor is not None:
            if "additional_forward_args" in kwargs:
                raise TypeError("additional_forward_args comes from additional_forward_arg_extractor; give one")
            extra = self.additional_forward_arg_extractor(batch)
            kwargs["additional_forward_args"] = tuple(extra) if isinstance(extra, list) else extra
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        model = self.model
        if self.config.dtype is not None:
            dtype = DTYPES[self.config.dtype]
            model = _model_in(model, dtype)
            inputs = _cast(inputs, dtype)
            for name in ("additional_forward_args", "baselines"):
                if name in kwargs:
                    kwargs[name] = _cast(kwargs[name], dtype)
        method = self._method(model)
        call = dict(self.method_kwargs, **kwargs)
        if method.has_convergence_delta():
            call.setdefault("return_convergence_delta", True)
        out = NoiseTunnel(method).attribute(inputs, target=target, **self.config.call_kwargs(inputs), **call)
        return _with_config(out, self.config, bool(call.get("return_convergence_delta")))

    __call__ = attribute

    def _method(self, model: Any) -> Attribution:
        if issubclass(self.method, LayerAttribution):
            assert self.config.noise_layer is not None
            return self.method(model, _submodule(model, self.config.noise_layer), **self._layer_method_options())
        return self.method(model)

    def _layer_method_options(self) -> Dict[str, Any]:
        return {}

    def get_tunables(self) -> Dict[str, Dict[str, Any]]:
        """What a tuner may search, with ranges: :meth:`SmoothingConfig.get_tunables`."""
        return self.config.get_tunables()

    def copy(self) -> "Smoothed":
        """An independent explainer with the same model, method, configuration, extractors and arguments."""
        twin = copy.copy(self)
        twin.method_kwargs = dict(self.method_kwargs)
        return twin

    def set_kwargs(self, **changes: Any) -> "Smoothed":
        """Change configuration fields (checked again) or the method's arguments; returns ``self``.

        Examples
        --------
        >>> explainer = SmoothGrad(torch.nn.Linear(3, 2)).set_kwargs(nt_samples=8, noise_level=0.3)
        >>> explainer.config.nt_samples, explainer.config.noise_level
        (8, 0.3)
        """
        if "n_iter" in changes:  # pnpxai's name for the sample count
            changes["nt_samples"] = changes.pop("n_iter")
        fields = {name: changes.pop(name) for name in list(changes) if name in SmoothingConfig.__dataclass_fields__}
        SmoothingConfig.decided(changes, "set_kwargs")  # before the method's names: stdevs= and generator= get hints
        accepted = inspect.signature(self.method.attribute).parameters
        unknown = sorted(name for name in changes if name not in accepted)
        if unknown:
            raise ValueError(f"set_kwargs got {unknown}: neither SmoothingConfig fields "
                             f"({sorted(SmoothingConfig.__dataclass_fields__)}) nor arguments of "
                             f"{self.method.__name__}.attribute{noise_hint(unknown)}")
        if fields:
            self.config = self.config.replace(**fields)
        self.method_kwargs.update(changes)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.method.__name__}, {self.config!r})"


class _GradientSmoothing(Smoothed):
    """Smoothing of the plain gradient: Saliency (signed unless ``absolute``), or the layer gradient with ``layer``.

    The class decides ``nt_type``, so one configuration serves all three.
    """

    def __init__(
        self,
        model: Union[nn.Module, Callable[..., Tensor]],
        config: Optional[SmoothingConfig] = None,
        *,
        absolute: bool = False,
        layer: Union[nn.Module, str, None] = None,
        forward_arg_extractor: Optional[Extractor] = None,
        additional_forward_arg_extractor: Optional[Extractor] = None,
        **config_fields: Any,
    ) -> None:
        if layer is None and config is not None:
            layer = config.noise_layer  # noise at a layer (pnpxai's layer=): the gradient there
        method = LayerGradientXActivation if layer is not None else Saliency
        method_kwargs = {} if layer is not None else {"abs": absolute}
        if layer is not None and absolute:
            raise ValueError("absolute=True applies to input gradients (Saliency), not to a layer's gradient")
        super().__init__(model, method, config, layer=layer, forward_arg_extractor=forward_arg_extractor,
                         additional_forward_arg_extractor=additional_forward_arg_extractor,
                         method_kwargs=method_kwargs, nt_type=self.nt_type, **config_fields)

    def _layer_method_options(self) -> Dict[str, Any]:
        return {"multiply_by_inputs": False}  # the layer's gradient


class SmoothGrad(_GradientSmoothing):
    """SmoothGrad: the mean gradient over noisy copies (signed, as in the paper; ``absolute=True`` for |∇f|).

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> SmoothGrad(model, nt_samples=8, seed=0).attribute(torch.rand(2, 4), target=0).attributions.shape
    torch.Size([2, 4])
    """

    nt_type = "smoothgrad"


class SquareGrad(_GradientSmoothing):
    """SquareGrad (SmoothGrad²): the mean squared gradient over noisy copies.

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> bool((SquareGrad(model, nt_samples=8, seed=0).attribute(torch.rand(2, 4), target=0).attributions >= 0).all())
    True
    """

    nt_type = "smoothgrad_sq"


class VarGrad(_GradientSmoothing):
    """VarGrad: the variance of the gradient over noisy copies.

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> VarGrad(model, nt_samples=8, seed=0).attribute(torch.rand(2, 4), target=0).attributions.shape
    torch.Size([2, 4])
    """

    nt_type = "vargrad"


def _layer_name(model: Any, layer: Union[nn.Module, str]) -> str:
    """The dotted name of ``layer`` in ``model`` (a configuration stores names, so that it can be saved)."""
    if isinstance(layer, str):
        _submodule(model, layer)
        return layer
    if not isinstance(model, nn.Module):
        raise TypeError("layer= as a module needs the model to be an nn.Module to find its name; give its name")
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ValueError(f"layer ({type(layer).__name__}) is not a submodule of the model")


def _submodule(model: Any, name: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"layer={name!r} needs the model to be an nn.Module, got {type(model).__name__}")
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"layer={name!r} names no submodule of the model") from None


def _model_in(model: Any, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` in ``dtype``: the user's model and its parameters stay as they are."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"dtype= computes on a copy of the model, which needs an nn.Module, got {type(model).__name__}")
    twin = copy.deepcopy(model)
    return twin.to(dtype)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """Floating-point tensors in ``value`` (a tensor, or a tuple or list of them) cast to ``dtype``."""
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _with_config(out: Any, config: SmoothingConfig, wants_delta: bool) -> Any:
    """The call's result as a SmoothedAttribution holding the configuration (without errors if none were asked)."""
    from noisegrad.result import SmoothedAttribution

    if not isinstance(out, SmoothedAttribution):
        attributions, delta = out if wants_delta else (out, None)
        out = SmoothedAttribution(attributions, None, None, config.nt_samples, delta, outputs=config.outputs,
                                  channel_reducer=config.channel_reducer)
    out.config = config.to_dict()
    return out

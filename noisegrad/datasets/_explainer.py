"""What a data-set run calls for each batch: a configured explainer, or a Captum method with a configuration.

Both become one call ``explain(batch, target, example_ids) → SmoothedAttribution``, plus what the manifest needs to
recognise the same computation again (the method and its own state, its arguments, the configuration, the forward
function, the extractors, the target, a fingerprint of the model's weights) and the model's forward for
``target="pred"``.
"""

import hashlib
from typing import Any, Dict, Optional

import torch
from captum.attr import Attribution
from torch import Tensor

from noisegrad._state import modules_of, preserved_modules, seeded_global_rng
from noisegrad.config import SmoothingConfig
from noisegrad.datasets._batches import inputs_of, label_of
from noisegrad.datasets._identity import describe, method_state
from noisegrad.datasets._shard_file import as_numpy
from noisegrad.explainers import Smoothed, _with_config
from noisegrad.tunnel import NoiseTunnel

__all__ = ["BatchExplainer", "TARGETS", "check_target", "model_fingerprint"]

#: target= names: each example's label (the second element of the example), or the model's top output.
TARGETS = ("label", "pred")

#: Configuration fields that change how the work is split, not its result (beyond float rounding).
_SPLITTING = ("nt_samples_batch_size", "max_batch_rows", "memory_budget")


class BatchExplainer:
    """``explainer`` (a :class:`~noisegrad.Smoothed`), or ``method`` (a Captum ``Attribution`` or ``NoiseTunnel``)
    with ``config`` and ``method_kwargs``, as one call per batch."""

    def __init__(self, explainer: Any, config: Optional[SmoothingConfig], method_kwargs: Optional[Dict[str, Any]],
                 target: Any) -> None:
        if isinstance(explainer, Smoothed):
            if config is not None or method_kwargs:
                raise TypeError("config= and method_kwargs= are for a Captum method; a Smoothed explainer has its own "
                                "(explainer.config, explainer.method_kwargs): change them with set_kwargs(...)")
            self.config, self.method_kwargs = explainer.config, dict(explainer.method_kwargs)
            SmoothingConfig.decided(self.method_kwargs, "explainer.method_kwargs")
            self.method_name, self.model = explainer.method.__name__, explainer.model
            self.method_state: Any = {"explainer": type(explainer).__qualname__,
                                      "options": describe(explainer._layer_method_options())}
            self.extractors = explainer.forward_arg_extractor, explainer.additional_forward_arg_extractor
        elif isinstance(explainer, Attribution):
            if config is not None and not isinstance(config, SmoothingConfig):
                raise TypeError(f"config must be a noisegrad.SmoothingConfig, got {type(config).__name__}")
            self.config = config if config is not None else SmoothingConfig()
            if self.config.dtype is not None:
                raise ValueError("config.dtype computes on a converted copy of the model, which needs the model: "
                                 "give a Smoothed explainer (e.g. Smoothed(model, Saliency, config))")
            self.tunnel = explainer if isinstance(explainer, NoiseTunnel) else NoiseTunnel(explainer)
            self.method_kwargs = dict(method_kwargs or {})
            SmoothingConfig.decided(self.method_kwargs, "method_kwargs")
            self.method_name = type(self.tunnel.attribution_method).__name__
            self.model = self.tunnel.forward_func
            self.method_state = method_state(self.tunnel.attribution_method, self.model)
            self.extractors = None, None
        else:
            raise TypeError("method_or_config must be a Smoothed explainer (noisegrad.SmoothGrad(model, config), "
                            "Smoothed(model, IntegratedGradients, config), ...) or a Captum Attribution with config=; "
                            f"got {type(explainer).__name__}")
        if self.config.scope == "data":
            raise ValueError("config.scope='data' takes σ from the whole batch, so an example's noise would depend on "
                             "its batch: a data set needs scope='example' or an absolute noise=")
        if "example_ids" in self.method_kwargs or "target" in self.method_kwargs:
            raise TypeError("method_kwargs must not hold example_ids or target: attribute_dataset sets the ids to the "
                            "examples' indices, and takes target= itself")
        self.explainer = explainer
        self.target = target
        self.memory_budget: Optional[int] = None  # the run's, when nt_samples_batch_size="auto" (set_memory_budget)

    def identity(self, seed: Optional[int]) -> Dict[str, Any]:
        """What the result depends on (so a run into a folder made otherwise can be told apart)."""
        config = {k: v for k, v in self.config.to_dict().items() if k not in _SPLITTING}
        config["seed"] = seed
        return {"method": self.method_name, "method_state": self.method_state,
                "method_kwargs": describe(self.method_kwargs), "config": config, "target": describe(self.target),
                "model": model_fingerprint(self.model), "forward": describe(self.model),
                "forward_arg_extractor": describe(self.extractors[0]),
                "additional_forward_arg_extractor": describe(self.extractors[1])}

    def wants_memory_budget(self) -> bool:
        """Whether the chunking is sized from free memory at each call (``nt_samples_batch_size="auto"`` without
        a ``memory_budget``): a run then fixes one budget, so that every call, rank and resume chunks alike."""
        return self.config.nt_samples_batch_size == "auto" and self.config.memory_budget is None

    def _run_config(self, seed: int) -> Dict[str, Any]:
        """The configuration fields a run sets: the folder's seed, and the run's memory budget."""
        fields: Dict[str, Any] = {"seed": seed}
        if self.memory_budget is not None and self.wants_memory_budget():
            fields["memory_budget"] = self.memory_budget
        return fields

    def __call__(self, batch: Any, target: Any, ids: Tensor, seed: int) -> Any:
        fields = self._run_config(seed)
        if isinstance(self.explainer, Smoothed):
            explainer = self.explainer.copy().set_kwargs(**fields)
            given = batch if explainer.forward_arg_extractor is not None else inputs_of(batch)
            return explainer.attribute(given, target=target, example_ids=ids)
        inputs = inputs_of(batch)
        call = dict(self.config.replace(**fields).call_kwargs(inputs), **self.method_kwargs)
        wants_delta = self.tunnel.has_convergence_delta()
        if wants_delta:
            call.setdefault("return_convergence_delta", True)
        out = self.tunnel.attribute(inputs, target=target, example_ids=ids, **call)
        return _with_config(out, self.config.replace(**fields), bool(call.get("return_convergence_delta")))

    def batch_target(self, batch: Any, ids: Tensor, seed: int) -> Any:
        """The ``target`` of a batch (already on the model's device) whose examples are ``ids``."""
        target = self.target
        if isinstance(target, str) and target == "label":
            return label_of(batch)
        if isinstance(target, str):  # "pred"
            outputs = self._predict(batch, ids.device, seed)
            if not isinstance(outputs, Tensor) or outputs.dim() != 2:
                raise ValueError("target='pred' needs a model that returns (batch, outputs); it returned "
                                 f"{tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__}")
            return outputs.argmax(dim=1)
        if callable(target):
            return target(batch)
        if isinstance(target, Tensor):  # one target per example of the data set
            return target.to(ids.device)[ids]
        return target

    def _predict(self, batch: Any, device: torch.device, seed: int) -> Any:
        """The model's outputs on the batch as the method sees it (its extractors, its additional forward
        arguments), guarded as the method's call is: no gradient, the model's state and the global RNGs restored."""
        forward_extractor, extra_extractor = self.extractors
        inputs = forward_extractor(batch) if forward_extractor is not None else inputs_of(batch)
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        extra = extra_extractor(batch) if extra_extractor is not None else self.method_kwargs.get(
            "additional_forward_args")
        extra = tuple(extra) if isinstance(extra, (tuple, list)) else (() if extra is None else (extra,))
        with preserved_modules(modules_of(self.model)), seeded_global_rng(seed, device), torch.no_grad():
            return self.model(*inputs, *extra)


def check_target(target: Any, examples: int) -> None:
    """``target=`` before any work: None, an int, 'label', 'pred', a function of the batch, or one int per example
    of the data set (a tensor of ``examples`` integers)."""
    if target is None or callable(target) or (isinstance(target, str) and target in TARGETS):
        return
    if isinstance(target, Tensor):
        if target.shape != (examples,) or target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(f"target as a tensor holds one class index per example of the data set: integers of "
                             f"shape ({examples},), got {target.dtype} of shape {tuple(target.shape)}")
        return
    if isinstance(target, str):
        raise TypeError(f"target must be one of the names {TARGETS}, got {target!r}; or give None, an int, a function of the "
                         "batch or a tensor of one index per example")
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise TypeError(f"target must be None, an int >= 0, one of {TARGETS}, a function of the batch or a tensor of "
                        f"one index per example, got {target!r}")


def model_fingerprint(model: Any) -> Optional[str]:
    """SHA-256 of the names, dtypes, shapes and values of the parameters and buffers of the modules ``model``
    reaches; None if it reaches none (a plain function)."""
    modules = modules_of(model)
    if not modules:
        return None
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            if isinstance(tensor, Tensor):
                digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(as_numpy(tensor).tobytes())
    return digest.hexdigest()


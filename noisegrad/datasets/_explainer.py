"""What a data-set run calls for each batch: a configured explainer, or a Captum method with a configuration.

Both become one call ``explain(batch, target, example_ids) → SmoothedAttribution``, plus what the manifest needs to
recognise the same computation again (the method, its arguments, the configuration, a fingerprint of the model's
weights) and the model's forward for ``target="pred"``.
"""

import hashlib
from typing import Any, Dict, Optional

import torch
from captum.attr import Attribution
from torch import Tensor

from noisegrad._state import modules_of
from noisegrad.config import SmoothingConfig
from noisegrad.datasets._batches import inputs_of, label_of
from noisegrad.datasets._manifest import describe
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
            self.method_name, self.model = explainer.method.__name__, explainer.model
        elif isinstance(explainer, Attribution):
            if config is not None and not isinstance(config, SmoothingConfig):
                raise TypeError(f"config must be a noisegrad.SmoothingConfig, got {type(config).__name__}")
            self.config = config if config is not None else SmoothingConfig()
            if self.config.dtype is not None:
                raise ValueError("config.dtype computes on a converted copy of the model, which needs the model: "
                                 "give a Smoothed explainer (e.g. Smoothed(model, Saliency, config))")
            self.tunnel = explainer if isinstance(explainer, NoiseTunnel) else NoiseTunnel(explainer)
            self.method_kwargs = dict(method_kwargs or {})
            self.method_name = type(self.tunnel.attribution_method).__name__
            self.model = self.tunnel.forward_func
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

    def identity(self, seed: Optional[int]) -> Dict[str, Any]:
        """What the result depends on (so a run into a folder made otherwise can be told apart)."""
        config = {k: v for k, v in self.config.to_dict().items() if k not in _SPLITTING}
        config["seed"] = seed
        return {"method": self.method_name, "method_kwargs": describe(self.method_kwargs), "config": config,
                "target": describe(self.target), "model": model_fingerprint(self.model)}

    def __call__(self, batch: Any, target: Any, ids: Tensor, seed: int) -> Any:
        if isinstance(self.explainer, Smoothed):
            explainer = self.explainer
            if self.config.seed != seed:  # the folder's seed, chosen on its first run
                explainer = explainer.copy().set_kwargs(seed=seed)
            given = batch if explainer.forward_arg_extractor is not None else inputs_of(batch)
            return explainer.attribute(given, target=target, example_ids=ids)
        inputs = inputs_of(batch)
        call = dict(self.config.replace(seed=seed).call_kwargs(inputs), **self.method_kwargs)
        wants_delta = self.tunnel.has_convergence_delta()
        if wants_delta:
            call.setdefault("return_convergence_delta", True)
        out = self.tunnel.attribute(inputs, target=target, example_ids=ids, **call)
        return _with_config(out, self.config.replace(seed=seed), bool(call.get("return_convergence_delta")))

    def batch_target(self, batch: Any) -> Any:
        """The ``target`` of a batch (already on the model's device)."""
        target = self.target
        if isinstance(target, str) and target == "label":
            return label_of(batch)
        if isinstance(target, str):  # "pred"
            inputs = self.explainer.forward_arg_extractor(batch) if getattr(
                self.explainer, "forward_arg_extractor", None) is not None else inputs_of(batch)
            with torch.no_grad():
                outputs = self.model(*(inputs if isinstance(inputs, tuple) else (inputs,)))
            if not isinstance(outputs, Tensor) or outputs.dim() != 2:
                raise ValueError("target='pred' needs a model that returns (batch, outputs); it returned "
                                 f"{tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__}")
            return outputs.argmax(dim=1)
        if callable(target):
            return target(batch)
        return target


def check_target(target: Any) -> None:
    """``target=`` before any work: None, an int, 'label', 'pred' or a function of the batch."""
    if target is None or callable(target) or (isinstance(target, str) and target in TARGETS):
        return
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise TypeError(f"target must be None, an int, one of {TARGETS} or a function of the batch, got {target!r}")


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


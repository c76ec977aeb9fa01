"""Noise at a module's output: smoothing for token ids and for any hidden layer.

The inputs are repeated once per noisy copy and never perturbed (they may be
integer token ids); a forward hook on the chosen module adds each copy's
noise to the module's output while the wrapped method runs, and is removed
when it returns or raises.
"""

import contextlib
import threading
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from noisegrad.perturb.inputs import Relative, StdevsType, is_per_example, resolve_stdevs
from noisegrad.sampling.samplers import NoiseSampler
from noisegrad.sampling.streams import LAYER_OUTPUT

__all__ = ["LayerNoise", "resolve_layer", "token_mask"]


def resolve_layer(noise_layer: Union[nn.Module, str], modules: Tuple[nn.Module, ...]) -> nn.Module:
    """``noise_layer`` as a module: itself, or the submodule of that dotted name in one of the model's ``modules``.

    Examples
    --------
    >>> model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    >>> resolve_layer("0", (model,)) is model[0]
    True
    """
    if isinstance(noise_layer, nn.Module):
        if isinstance(noise_layer, torch.jit.ScriptModule):
            raise TypeError("noise_layer is a TorchScript module, which takes no Python forward hooks; give a module "
                            "of an eager (Python) model")
        return noise_layer
    if not isinstance(noise_layer, str):
        raise TypeError(f"noise_layer must be an nn.Module of the model or its dotted name, got "
                        f"{type(noise_layer).__name__}")
    for module in modules:
        try:
            return module.get_submodule(noise_layer)
        except AttributeError:
            continue
    if not modules:
        raise ValueError(f"noise_layer={noise_layer!r} is a name, but no nn.Module was found behind the forward "
                         "function to look it up in; give the module itself, e.g. noise_layer=model.embeddings")
    embeddings = [name for m in modules for name, sub in m.named_modules() if isinstance(sub, nn.Embedding)]
    children = [name for m in modules for name, _ in m.named_children()]
    raise ValueError(f"noise_layer={noise_layer!r} names no submodule of the model; its embeddings: "
                     f"{embeddings[:6] or 'none'}, its top-level modules: {children[:12]}")


def token_mask(mask: Any, batch: int) -> Optional[Tensor]:
    """``noise_mask`` checked: a tensor with one row per example whose nonzero entries get noise."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"noise_mask must be a tensor (e.g. the attention mask), got {type(mask).__name__}")
    if mask.is_complex() or mask.dim() == 0 or mask.shape[0] != batch:
        raise ValueError(f"noise_mask must have one row per example: shape ({batch}, ...), got "
                         f"{tuple(mask.shape)} of dtype {mask.dtype}")
    return mask.detach() != 0


class LayerNoise:
    """The perturbation of noise at a layer: repeated inputs, and noise added to ``module``'s output.

    Implements the perturbation protocol of :mod:`noisegrad.perturb`
    (``rows``, ``select``, ``applied``) like
    :class:`~noisegrad.perturb.inputs.InputNoise`.

    Parameters
    ----------
    inputs : tuple of Tensor
        Any dtype: they are repeated, never perturbed.
    module : nn.Module
        Its output (a tensor whose dimension 0 indexes the rows of a forward)
        gets the noise.
    stdevs
        As ``NoiseTunnel.attribute``'s ``stdevs``, for the module's output of
        one example: a float, a tensor that broadcasts to the output (e.g.
        ``(hidden,)`` per feature, ``(batch, 1, 1)`` per example), or
        :func:`~noisegrad.perturb.inputs.relative`, measured on each
        example's clean output over its masked-in elements.
    sampler : NoiseSampler
    example_ids : Tensor
    mask : Tensor, optional
        Boolean, shape ``(batch, ...)`` aligned with the output's leading
        dimensions (``(batch, tokens)`` for a ``(batch, tokens, hidden)``
        embedding): elements where it is False get no noise.
    only_own_forwards : bool
        Add noise only in forwards of the rows this perturbation made (the
        wrapped method's forward function is watched by :meth:`watch`), not
        in forwards of baselines: for methods that evaluate the layer at the
        inputs and at the baselines separately (LayerIntegratedGradients).
        Otherwise every forward through the module gets the noise, each
        copy's repeated over forwards with a multiple of the chunk's rows (a
        path method's steps).
    """

    def __init__(
        self,
        inputs: Tuple[Tensor, ...],
        module: nn.Module,
        stdevs: StdevsType,
        sampler: NoiseSampler,
        example_ids: Tensor,
        mask: Optional[Tensor] = None,
        only_own_forwards: bool = False,
    ) -> None:
        self.inputs, self.module, self.stdevs, self.sampler = inputs, module, stdevs, sampler
        self.example_ids, self.mask, self.only_own_forwards = example_ids, mask, only_own_forwards
        self.sigma: Optional[Tensor] = None
        self._sigma_per_example = False
        self._chunk: Optional[range] = None
        self._rows: Tuple[Tensor, ...] = ()
        self._noise: Optional[Tensor] = None
        self._owner = threading.get_ident()
        self._own_forward = threading.local()
        self.noisy_forwards = 0

    def measure(self, forward: Callable[[Tuple[Tensor, ...]], Any]) -> None:
        """Run ``forward`` on the clean inputs once (no gradients) to learn the output's shape, σ and mask.

        Checks ``stdevs`` and ``noise_mask`` against the output of one example
        and measures relative σ on each example's clean output.
        """
        captured = []

        def capture(_module: nn.Module, _args: Any, output: Any) -> None:
            if threading.get_ident() == self._owner:  # not another thread's forward through a shared model
                captured.append(output)

        handle = self.module.register_forward_hook(capture)
        try:
            with torch.no_grad():
                forward(self.inputs)
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"noise_layer ({type(self.module).__name__}) was not run by the model's forward")
        clean = captured[0]
        if not isinstance(clean, Tensor) or not clean.is_floating_point() or clean.dim() == 0:
            kind = type(clean).__name__ if not isinstance(clean, Tensor) else f"tensor of dtype {clean.dtype}"
            raise TypeError(f"noise_layer's output must be one floating-point tensor with a batch dimension, "
                            f"got a {kind}")
        batch = self.inputs[0].shape[0]
        if clean.shape[0] != batch:
            raise ValueError(f"noise_layer's output has {clean.shape[0]} rows for a batch of {batch}: noise is "
                             "added per example, so dimension 0 of the output must index the examples")
        if self.mask is not None:
            if tuple(self.mask.shape) != tuple(clean.shape[: self.mask.dim()]):
                raise ValueError(f"noise_mask has shape {tuple(self.mask.shape)}, which does not match the leading "
                                 f"dimensions of noise_layer's output {tuple(clean.shape)}")
            self.mask = self.mask.to(clean.device).reshape(
                tuple(self.mask.shape) + (1,) * (clean.dim() - self.mask.dim())
            )
        self.sigma = self._sigma(clean)
        self._sigma_per_example = is_per_example(self.sigma, clean)

    def _sigma(self, clean: Tensor) -> Tensor:
        if isinstance(self.stdevs, Relative) and self.mask is not None:
            return self.stdevs.sigma(clean, where=self.mask)
        try:
            sigma, = resolve_stdevs(self.stdevs, (clean,))
        except ValueError as error:
            raise ValueError(f"{error} (noise_layer's output has shape {tuple(clean.shape)})") from None
        return sigma

    def rows(self, sample_ids: range) -> Tuple[Tensor, ...]:
        n = len(sample_ids)
        self._chunk, self._noise = sample_ids, None
        self._rows = tuple(x.unsqueeze(0).expand((n,) + tuple(x.shape)).reshape((-1,) + tuple(x.shape[1:]))
                           for x in self.inputs)
        return self._rows

    def select(self, keep: Tensor) -> None:
        assert self.sigma is not None
        if self._sigma_per_example:
            self.sigma = self.sigma[keep.to(self.sigma.device)]
        if self.mask is not None:
            self.mask = self.mask[keep.to(self.mask.device)]
        self.inputs = tuple(x[keep.to(x.device)] for x in self.inputs)
        self.example_ids = self.example_ids[keep.to(self.example_ids.device)]

    def prepare(self, method: Any) -> Any:
        """The wrapped method (a copy of the user's) with its forward function watched, if ``only_own_forwards``."""
        if self.only_own_forwards:
            method.forward_func = self.watch(method.forward_func)
        return method

    def watch(self, forward_func: Callable[..., Any]) -> Callable[..., Any]:
        """``forward_func``, noting whether each call runs on this perturbation's own rows (for ``only_own_forwards``)."""

        def watched(*args: Any, **kwargs: Any) -> Any:
            own = bool(self._rows) and all(
                any(a is r for a in args) for r in self._rows
            )
            previous = getattr(self._own_forward, "value", False)
            self._own_forward.value = own
            try:
                return forward_func(*args, **kwargs)
            finally:
                self._own_forward.value = previous

        return watched

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The forward hook, for one call of the wrapped method; that call must have put noise somewhere."""
        before = self.noisy_forwards
        handle = self.module.register_forward_hook(self._add_noise)
        try:
            yield
        finally:
            handle.remove()
        if self.noisy_forwards == before:
            raise RuntimeError(
                f"the wrapped method ran no forward through noise_layer ({type(self.module).__name__}) on the noisy "
                "copies, so nothing would be smoothed; check that the module is part of the model the method calls"
            )

    def _add_noise(self, _module: nn.Module, _args: Any, output: Any) -> Any:
        if threading.get_ident() != self._owner or self._chunk is None:
            return None  # another thread's forward through a shared model: not ours to perturb
        if self.only_own_forwards and not getattr(self._own_forward, "value", False):
            return None
        copies = len(self._chunk) * self.inputs[0].shape[0]
        if not isinstance(output, Tensor) or output.shape[0] % copies:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"noise_layer's output in a forward of this chunk is {shape}: noise can be added per noisy copy only "
                f"to a tensor whose rows are a multiple of the chunk's {copies} copies (a path method that splits "
                "its steps with internal_batch_size cannot be smoothed at a layer; leave internal_batch_size unset)"
            )
        noise = self._chunk_noise(output)
        if tuple(noise.shape[1:]) != tuple(output.shape[1:]):
            raise ValueError(
                f"noise_layer ({type(self.module).__name__}) gave outputs of shapes {tuple(noise.shape[1:])} and "
                f"{tuple(output.shape[1:])} per row in one chunk: a module that runs more than once per forward "
                "(a shared activation) cannot be the noise layer; give one that runs once"
            )
        repeats = output.shape[0] // copies
        if repeats > 1:
            noise = noise.unsqueeze(0).expand((repeats,) + tuple(noise.shape)).reshape(output.shape)
        self.noisy_forwards += 1
        return output + noise

    def _chunk_noise(self, output: Tensor) -> Tensor:
        """The chunk's noise (σ and mask applied), sample-major, made once per chunk in the output's dtype."""
        if self._noise is None or self._noise.dtype != output.dtype or self._noise.device != output.device:
            assert self._chunk is not None and self.sigma is not None
            shape = tuple(output.shape[1:])
            batch = self.inputs[0].shape[0]
            noise = torch.empty((len(self._chunk), batch) + shape, dtype=output.dtype, device=output.device)
            self.sampler.fill(noise, self._chunk, self.example_ids.to(output.device), LAYER_OUTPUT)
            noise.mul_(self.sigma.to(output.dtype))
            if self.mask is not None:
                noise.mul_(self.mask)
            self._noise = noise.reshape((-1,) + shape)
        return self._noise

"""Expanding the wrapped method's arguments to a chunk of noisy copies, as Captum expands them."""

import numbers
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from noisegrad._validate import broadcasts_to
from noisegrad.sampling.keyed import row_keys, uniform
from noisegrad.sampling.streams import Purpose, stream

__all__ = ["expand_kwargs", "ChunkKwargs", "select_examples", "validate_kwargs"]


def expand_kwargs(
    kwargs: Dict[str, Any],
    inputs: Tuple[Tensor, ...],
    sample_ids: range,
    baseline_draw: Optional[Tuple[int, Tensor]] = None,
    baseline_distribution: bool = False,
) -> Dict[str, Any]:
    """A new kwargs dict whose per-example arguments are repeated for each sample of a chunk.

    Rows are sample-major (all examples for the chunk's first sample, then
    all for the next), matching :func:`noisegrad.perturb.inputs.noisy_copies`. Which
    arguments are repeated follows Captum's rules:

    * ``target``: a list or a tensor with more than one element is repeated
      per sample; an int, a tuple or a one-element tensor is left alone.
    * ``additional_forward_args``: every tensor with at least one dimension is
      repeated along dim 0; anything else is passed as is.
    * ``feature_mask``: tensors whose first dimension exceeds 1 are repeated.
    * ``baselines``: tensors with one row per example (and more than one
      example) are repeated, unless they are a distribution the method
      samples or averages over (``baseline_distribution``: GradientShap,
      DeepLiftShap), which is passed as it is whatever its number of rows.
      With ``baseline_draw`` (``draw_baseline_from_distrib``: the call's
      base seed and the running examples' ids), every (sample, example) row
      instead gets a baseline row drawn uniformly from the baseline tensor,
      keyed by the sample and the example's id, so an example's draw does
      not depend on which others run.

    The caller's dict and its values are never modified.

    Examples
    --------
    >>> x = torch.zeros(2, 3)
    >>> expand_kwargs({"target": [3, 5]}, (x,), range(0, 2))
    {'target': [3, 5, 3, 5]}
    """
    n = len(sample_ids)
    out = dict(kwargs)
    if "target" in out:
        out["target"] = _expand_target(out["target"], n)
    if out.get("additional_forward_args") is not None:
        extra = out["additional_forward_args"]
        extra = extra if isinstance(extra, tuple) else (extra,)
        out["additional_forward_args"] = tuple(
            _tile(a, n) if isinstance(a, Tensor) and a.dim() > 0 else a for a in extra
        )
    if out.get("feature_mask") is not None:
        out["feature_mask"] = _map_tensors(
            out["feature_mask"], lambda m, _: _tile(m, n) if m.shape[0] > 1 else m, inputs
        )
    if out.get("baselines") is not None and not callable(out["baselines"]):
        if baseline_draw is None and not baseline_distribution:
            out["baselines"] = _map_tensors(
                out["baselines"],
                lambda b, x: _tile(b, n) if b.shape[0] == x.shape[0] and b.shape[0] > 1 else b,
                inputs,
            )
        elif baseline_draw is not None:
            seed, example_ids = baseline_draw

            def drawn(b: Tensor, _x: Tensor, input_index: int) -> Tensor:
                return b[_drawn_rows(b.shape[0], sample_ids, seed, input_index, example_ids).to(b.device)]

            out["baselines"] = _map_tensors(out["baselines"], drawn, inputs, with_index=True)
    return out


class ChunkKwargs:
    """:func:`expand_kwargs` per chunk, reusing one expansion for all chunks of a size.

    Drawn baselines (``baseline_draw``) differ per sample, so they are expanded afresh.
    """

    def __init__(
        self,
        kwargs: Dict[str, Any],
        inputs: Tuple[Tensor, ...],
        baseline_draw: Optional[Tuple[int, Tensor]] = None,
        baseline_distribution: bool = False,
    ) -> None:
        self.kwargs, self.inputs, self.baseline_draw = kwargs, inputs, baseline_draw
        self.baseline_distribution = baseline_distribution
        self._by_size: Dict[int, Dict[str, Any]] = {}

    def for_chunk(self, sample_ids: range) -> Dict[str, Any]:
        if self.baseline_draw is not None:
            return expand_kwargs(self.kwargs, self.inputs, sample_ids, self.baseline_draw)
        if len(sample_ids) not in self._by_size:
            self._by_size[len(sample_ids)] = expand_kwargs(
                self.kwargs, self.inputs, sample_ids, baseline_distribution=self.baseline_distribution
            )
        return self._by_size[len(sample_ids)]


def select_examples(
    kwargs: Dict[str, Any], batch: int, examples: Tensor, baseline_distribution: bool = False
) -> Dict[str, Any]:
    """A new kwargs dict holding only some examples' per-example arguments.

    Per-example means: a ``target`` list or multi-element tensor, and tensors
    of ``additional_forward_args``, ``baselines`` and ``feature_mask`` whose
    first dimension is the batch (and larger than 1); everything else applies
    to all examples and is kept. With ``baseline_distribution`` the baselines
    are a distribution (any number of rows), never one row per example.
    """
    rows = examples.tolist()

    def pick(value: Any) -> Any:
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch and batch > 1:
            return value[examples.to(value.device)]
        return value

    out = dict(kwargs)
    target = out.get("target")
    if isinstance(target, list):
        out["target"] = [target[i] for i in rows]
    elif isinstance(target, Tensor) and target.numel() > 1:
        out["target"] = target[examples.to(target.device)]
    for name in ("additional_forward_args", "feature_mask") + (() if baseline_distribution else ("baselines",)):
        value = out.get(name)
        if isinstance(value, tuple):
            out[name] = tuple(pick(v) for v in value)
        elif value is not None and not callable(value):
            out[name] = pick(value)
    return out


def _tile(value: Tensor, n: int) -> Tensor:
    return value.repeat((n,) + (1,) * (value.dim() - 1))


def _expand_target(target: Any, n: int) -> Any:
    if isinstance(target, list):
        return target * n
    if isinstance(target, Tensor) and target.numel() > 1:
        return _tile(target, n)
    return target


def _map_tensors(value: Any, fn: Any, inputs: Tuple[Tensor, ...], with_index: bool = False) -> Any:
    """Apply ``fn`` to the tensors of a tensor-or-tuple argument, keeping its form."""
    items = value if isinstance(value, tuple) else (value,)
    mapped = tuple(
        (fn(v, x, i) if with_index else fn(v, x)) if isinstance(v, Tensor) else v
        for i, (v, x) in enumerate(zip(items, inputs))
    )
    return mapped if isinstance(value, tuple) else mapped[0]


def _drawn_rows(n_rows: int, sample_ids: range, seed: int, input_index: int, example_ids: Tensor) -> Tensor:
    """A uniformly drawn row index per (sample, example), sample-major, keyed by the sample and the example's id."""
    units = torch.arange(sample_ids.start, sample_ids.stop, device=example_ids.device)
    keys = row_keys(seed, stream(Purpose.BASELINE_ROW, input_index), example_ids, units)
    return uniform(keys).mul_(n_rows).long().clamp_(max=n_rows - 1).reshape(-1)


def validate_kwargs(
    kwargs: Dict[str, Any],
    inputs: Tuple[Tensor, ...],
    draw_baseline_from_distrib: bool,
    baselines_are_a_distribution: bool = False,
) -> None:
    """Check the per-example arguments against the batch before any forward pass.

    ``baselines_are_a_distribution``: the wrapped method samples from its
    baselines (GradientShap, DeepLiftShap), so any number of rows is valid and
    rows that are not one per example are passed on unchanged.
    """
    batch = inputs[0].shape[0]
    target = kwargs.get("target")
    if isinstance(target, list) and len(target) != batch:
        raise ValueError(f"target is a list of {len(target)} entries but the batch has {batch} examples")
    if isinstance(target, Tensor) and target.numel() > 1 and target.shape[0] != batch:
        raise ValueError(
            f"target is a tensor of shape {tuple(target.shape)}; with more than one element its "
            f"first dimension must equal the batch size {batch}"
        )
    baselines = kwargs.get("baselines")
    if baselines is None or callable(baselines):
        return
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(items) != len(inputs):
        raise ValueError(f"baselines has {len(items)} entries but there are {len(inputs)} input tensors")
    for i, (b, x) in enumerate(zip(items, inputs)):
        if isinstance(b, bool) or not isinstance(b, (Tensor, numbers.Real)):
            raise TypeError(f"baselines for input {i} must be a tensor or a number, got {type(b).__name__}")
        if not isinstance(b, Tensor):
            continue
        if draw_baseline_from_distrib or baselines_are_a_distribution:
            if b.dim() == 0 or b.shape[0] == 0 or b.shape[1:] != x.shape[1:]:
                why = "draw_baseline_from_distrib=True" if draw_baseline_from_distrib else "a baseline distribution"
                raise ValueError(
                    f"with {why}, baselines for input {i} must be a non-empty "
                    f"stack of examples shaped like the input's {tuple(x.shape[1:])}, got {tuple(b.shape)}"
                )
        elif b.shape != x.shape and (b.dim() == 0 or b.shape[0] != 1 or not broadcasts_to(b.shape, x.shape)):
            raise ValueError(
                f"baselines for input {i} has shape {tuple(b.shape)}; it must match the input's "
                f"{tuple(x.shape)}, or have a first dimension of 1 and broadcast to it"
            )

"""What ``explain`` reads: the ``--inputs`` file, the model's outputs on it, and ``--target``."""

from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from noisegrad.app.errors import ExplainError

__all__ = ["load_inputs", "parse_target", "forward_of", "model_outputs"]


def load_inputs(path_text: str, discrete: bool = False,
                joint: bool = False) -> Tuple[Tuple[Tensor, ...], Optional[List[str]], bool]:
    """The ``--inputs`` file as (tensors, keyword names or None, was a single tensor).

    ``discrete``: the noise goes on a layer (``--noise-layer``), so integer and
    boolean tensors (token ids, masks) are accepted. ``joint``: ``--joint``,
    which adds its noise to the inputs and cannot take ``--noise-layer``; the
    error for integer inputs says to leave it out.

    Raises
    ------
    ExplainError
        If the file is missing, is not loadable with ``weights_only=True``, or
        does not hold tensors with one common batch size, floating point unless ``discrete``.
    """
    path = Path(path_text)
    if not path.is_file():
        raise ExplainError(f"--inputs '{path}': no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExplainError(f"--inputs '{path}' cannot be read with torch.load(weights_only=True) (only tensors, "
                           f"tuples and dicts of tensors are accepted; no pickled objects): {first}") from err
    names: Optional[List[str]] = None
    single = isinstance(data, Tensor)
    if single:
        tensors = (data,)
    elif isinstance(data, (tuple, list)):
        tensors = tuple(data)
    elif isinstance(data, dict):
        names, tensors = [str(k) for k in data], tuple(data.values())
    else:
        raise ExplainError(f"--inputs '{path}' holds a {type(data).__name__}; expected a tensor, a tuple of tensors "
                           "or a dict of tensors")
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise ExplainError(f"--inputs '{path}' must hold only tensors (got {[type(t).__name__ for t in tensors]})")
    if any(t.is_complex() for t in tensors):
        raise ExplainError(f"--inputs '{path}': complex tensors cannot be explained (got "
                           f"{[str(t.dtype) for t in tensors]})")
    if not (discrete or all(t.is_floating_point() for t in tensors)):
        layer = "add the noise at the embedding layer instead with --noise-layer NAME (a package.module:function model)"
        raise ExplainError(f"--inputs '{path}': every input tensor must be floating point to add noise and take "
                           f"gradients (got {[str(t.dtype) for t in tensors]}); "
                           + (f"--joint adds its noise to the inputs, so for integer inputs such as token ids run "
                              f"without --joint and {layer}" if joint else
                              f"for integer inputs such as token ids, {layer}"))
    if any(t.dim() == 0 for t in tensors) or len({t.shape[0] for t in tensors}) != 1:
        raise ExplainError(f"--inputs '{path}': every tensor needs the same batch size as its first dimension "
                           f"(got shapes {[tuple(t.shape) for t in tensors]})")
    if tensors[0].shape[0] == 0:
        raise ExplainError(f"--inputs '{path}' holds no examples: its tensors have 0 rows "
                           f"(shapes {[tuple(t.shape) for t in tensors]})")
    return tensors, names, single


def parse_target(text: str, outputs: Tensor) -> Optional[Tensor]:
    """``--target`` → Captum's ``target`` for a batch whose model outputs are ``outputs``.

    Examples
    --------
    >>> parse_target("pred", torch.tensor([[0.1, 0.9], [0.8, 0.2]])).tolist()
    [1, 0]
    >>> parse_target("1,0", torch.zeros(2, 3)).tolist()
    [1, 0]
    """
    batch = outputs.shape[0]
    if text == "none":
        if outputs.dim() > 1 and outputs[0].numel() != 1:
            raise ExplainError(f"--target none needs one output value per example; the model returns shape "
                               f"{tuple(outputs.shape)}: give an output index or 'pred'")
        return None
    if outputs.dim() != 2:
        raise ExplainError(f"--target {text}: the model's output has shape {tuple(outputs.shape)}; an output index "
                           "needs (batch, outputs) (use 'none' for one value per example)")
    if text == "pred":
        return outputs.argmax(dim=1)
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ExplainError(f"--target {text!r}: expected an int, comma-separated ints, 'pred' or 'none'") from None
    if len(values) not in (1, batch):
        raise ExplainError(f"--target {text!r}: give one index or {batch} (one per example), not {len(values)}")
    bad = [v for v in values if not 0 <= v < outputs.shape[1]]
    if bad:
        raise ExplainError(f"--target {text!r}: indices {bad} out of range for {outputs.shape[1]} outputs")
    return torch.tensor(values * batch if len(values) == 1 else values)


def forward_of(model: Callable[..., Any], names: Optional[Sequence[str]]) -> Callable[..., Any]:
    """The forward function Captum sees: positional tensors, bound to keyword names when the inputs were a dict.

    A TorchScript module is wrapped in a plain function too: it refuses the
    forward hooks that ``nt_samples_batch_size="auto"`` uses to measure activations.
    """
    if names is None and not isinstance(model, torch.jit.ScriptModule):
        return model
    if names is None:
        return lambda *tensors: model(*tensors)

    def forward(*tensors: Tensor) -> Any:
        return model(**dict(zip(names, tensors)))

    return forward


def model_outputs(model: Callable[..., Any], inputs: Tuple[Tensor, ...], names: Optional[Sequence[str]]) -> Tensor:
    try:
        with torch.no_grad():
            out = forward_of(model, names)(*inputs)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExplainError(f"the model failed on the inputs {[tuple(t.shape) for t in inputs]}: "
                           f"{type(err).__name__}: {first}") from err
    if not isinstance(out, Tensor):
        raise ExplainError(f"the model returned {type(out).__name__}; it must return one tensor (batch, outputs)")
    return out

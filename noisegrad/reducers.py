"""From attributions to fewer numbers: one score per token of a hidden layer, one map per image over its channels."""

from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["token_scores", "TOKEN_REDUCTIONS", "reduce_channels", "CHANNEL_REDUCERS"]

TOKEN_REDUCTIONS = ("sum", "l2")
#: How :func:`reduce_channels` combines an image's channels (Xplique's reducers, and the sum of magnitudes).
CHANNEL_REDUCERS = ("mean", "sum", "max", "min", "abs-sum")


def token_scores(
    attributions: Any, reduce: str = "sum", mask: Optional[Tensor] = None, per_output: bool = False
) -> Tensor:
    """One score per token from attributions shaped ``(batch, tokens, hidden, ...)``.

    Parameters
    ----------
    attributions : Tensor or SmoothedAttribution
        E.g. layer attributions of an embedding (``noise_layer=`` smoothing).
    reduce : {"sum", "l2"}
        ``"sum"``: the signed sum over every dimension after the tokens'. For
        methods that are complete (IntegratedGradients, gradient × input at a
        linear layer), it is the token's share of the change in the output,
        so scores add up to that change. ``"l2"``: the Euclidean norm over
        those dimensions — how much attribution the token carries, unsigned.
        On the text task of ``docs/text.md``, ``"sum"`` found the deciding
        tokens far better than ``"l2"`` for gradient × activation and
        Integrated Gradients; ``"l2"`` suits plain gradients, whose sum over
        the hidden dimension has no meaning of its own.
    mask : Tensor, optional
        ``(batch, tokens)``; tokens where it is 0 or False score 0 (padding).
    per_output : bool
        The last dimension indexes outputs (``outputs=``): keep it, and score
        each output separately, ``(batch, tokens, K)``.

    Returns
    -------
    Tensor
        ``(batch, tokens)`` (or ``(batch, tokens, K)``), in the attributions' dtype, for
        :func:`noisegrad.viz.plot_token_attr` or
        :func:`noisegrad.viz.token_attr_html` (one row each).

    Examples
    --------
    >>> attr = torch.tensor([[[1.0, -3.0], [0.5, 0.5]]])
    >>> token_scores(attr), token_scores(attr, "l2", mask=torch.tensor([[1, 0]]))
    (tensor([[-2.,  1.]]), tensor([[3.1623, 0.0000]]))
    """
    tensor = getattr(attributions, "attributions", attributions)
    if isinstance(tensor, tuple):
        raise TypeError("token_scores takes one attribution tensor; for several inputs or layers, pass each one")
    if not isinstance(tensor, Tensor) or tensor.dim() < 2:
        shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ValueError(f"attributions must be a tensor shaped (batch, tokens, ...), got {shape}")
    if reduce not in TOKEN_REDUCTIONS:
        raise ValueError(f"reduce must be one of {TOKEN_REDUCTIONS}, got {reduce!r}")
    outputs = getattr(attributions, "outputs", None)
    if outputs is not None and not per_output:
        raise ValueError(f"the result holds {len(outputs)} outputs (outputs={list(outputs)}) in its last dimension, "
                         "which a token's score would add together: give per_output=True, or one output's "
                         "attributions, result.attributions[..., k]")
    if per_output and tensor.dim() < 3:
        raise ValueError(f"per_output=True needs attributions shaped (batch, tokens, ..., K), as outputs= gives "
                         f"them; got {tuple(tensor.shape)}")
    shape = (tensor.shape[0], tensor.shape[1], -1) + ((tensor.shape[-1],) if per_output else ())
    flat = tensor.detach().reshape(shape)
    scores = flat.sum(dim=2) if reduce == "sum" else torch.linalg.vector_norm(flat, dim=2)
    if mask is not None:
        if tuple(mask.shape) != tuple(scores.shape[:2]):
            raise ValueError(f"mask must have shape {tuple(scores.shape[:2])} (batch, tokens), got {tuple(mask.shape)}")
        keep = (mask != 0).to(device=scores.device, dtype=scores.dtype)
        scores = scores * (keep.unsqueeze(-1) if per_output else keep)
    return scores


def reduce_channels(attributions: Any, reducer: Optional[str], per_output: bool = False) -> Tensor:
    """An image attribution ``(batch, C, H, W)`` reduced over its channels to ``(batch, H, W)``.

    Applied to a smoothed result, this reduces *after* smoothing: the
    channels' SmoothGrad (or SmoothGrad², VarGrad) is taken first, then
    combined, so ``"abs-sum"`` of SmoothGrad is Σ_c |mean(∇f)_c|, not the
    mean of Σ_c |∇f_c|. Tensors with fewer than three dimensions after the
    batch (tabular rows, ``(batch, H, W)`` greyscale maps) are not images
    and are returned as they are, as Xplique's reducer applies to images
    only; more than three, e.g. ``(batch, C, T, H, W)``, reduce dimension 1
    too.

    Parameters
    ----------
    attributions : Tensor or SmoothedAttribution
        Channels in dimension 1 (torch's layout); of a result, its attributions.
    reducer : {"mean", "sum", "max", "min", "abs-sum"} or None
        ``None`` returns the attributions as they are.
    per_output : bool
        The last dimension indexes outputs (``outputs=``) and is not one of
        the image's; a result made with ``outputs=`` says so itself.

    Examples
    --------
    >>> attr = torch.tensor([[[[1.0]], [[-3.0]]]])  # one image, 2 channels, 1 × 1 pixel
    >>> [reduce_channels(attr, r).item() for r in ("mean", "sum", "max", "min", "abs-sum")]
    [-1.0, -2.0, 1.0, -3.0, 4.0]
    """
    per_output = per_output or getattr(attributions, "outputs", None) is not None
    attributions = getattr(attributions, "attributions", attributions)
    if reducer is None:
        return attributions
    if reducer not in CHANNEL_REDUCERS:
        raise ValueError(f"channel_reducer must be one of {CHANNEL_REDUCERS} or None, got {reducer!r}")
    if attributions.dim() - (1 if per_output else 0) < 4:
        return attributions
    if reducer == "mean":
        return attributions.mean(dim=1)
    if reducer == "sum":
        return attributions.sum(dim=1)
    if reducer == "abs-sum":
        return attributions.abs().sum(dim=1)
    return attributions.amax(dim=1) if reducer == "max" else attributions.amin(dim=1)

"""What ``explain`` writes: ``attributions.pt`` and the figures."""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from noisegrad.app import explain_layer
from noisegrad.app.explain_options import MAX_FIGURE_EXAMPLES

__all__ = ["Explanation", "save_outputs"]


@dataclass
class Explanation:
    """What :func:`explain` computed."""

    attributions: Tuple[Tensor, ...]
    target: Optional[Tensor]
    delta: Optional[Tensor]
    relative_stderr: Optional[Tuple[Optional[Tensor], ...]]  # with --reduce: the channels', before combining
    seconds: float
    stderr: Optional[Tuple[Optional[Tensor], ...]] = None
    token_scores: Optional[Tensor] = None  # --noise-layer: (batch, tokens[, K]), when the layer has a row per token
    tokens: Optional[Tensor] = None  # the token ids those scores belong to
    token_mask: Optional[Tensor] = None  # the --noise-mask input: tokens not drawn where it is 0
    outputs: Optional[List[int]] = None  # --targets: the outputs the attributions' last dimension holds
    nt_samples: Optional[Tensor] = None  # --samples auto: (batch,) noisy copies each example used
    converged: Optional[Tensor] = None  # --samples auto: (batch,) whether each example reached --tol


def save_outputs(out_dir: Path, result: Explanation, names: Optional[Sequence[str]], single: bool,
                 inputs: Tuple[Tensor, ...], args: argparse.Namespace,
                 vocab: Optional[List[str]] = None) -> List[Path]:
    """Write ``attributions.pt`` and the figures; returns the written paths."""
    labels = list(names) if names is not None else [f"input{k}" for k in range(len(inputs))]
    layered = args.noise_layer is not None

    def layout(tensors: Tuple[Tensor, ...]) -> Any:
        if single or layered:  # a layer method attributes one tensor: the layer's output
            return tensors[0]
        return dict(zip(labels, tensors)) if names is not None else tensors

    options = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in vars(args).items()
               if k not in ("command",)}
    payload: Dict[str, Any] = {"attributions": layout(result.attributions), "target": result.target,
                               "options": options}
    if result.delta is not None:
        payload["delta"] = result.delta
    if result.stderr is not None:
        payload["stderr"] = layout(result.stderr)
    if result.relative_stderr is not None:
        payload["relative_stderr"] = layout(result.relative_stderr)
    if result.nt_samples is not None:
        payload["nt_samples"] = result.nt_samples
    if result.converged is not None:
        payload["converged"] = result.converged
    if result.token_scores is not None:
        payload["token_scores"] = result.token_scores
    if result.outputs is not None:
        payload["outputs"] = list(result.outputs)
    written = [out_dir / "attributions.pt"]
    torch.save(payload, written[0])
    if args.no_figures:
        return written
    if result.token_scores is not None:
        written += explain_layer.token_figures(out_dir, result, vocab, _title(args), args, MAX_FIGURE_EXAMPLES)
    elif layered:  # a layer without one row per token: drawn by its shape, with nothing to blend with
        written += _figures(out_dir, "", result.attributions[0], None, args, result.outputs)
    else:
        for label, attr, x in zip(labels, result.attributions, inputs):
            written += _figures(out_dir, label if len(labels) > 1 else "", attr, x, args, result.outputs)
    return written


def _figures(out_dir: Path, label: str, attr: Tensor, x: Optional[Tensor], args: argparse.Namespace,
             outputs: Optional[List[int]]) -> List[Path]:
    """One figure of ``attr``, or with ``--targets`` one per output (``..._output<k>.png``)."""
    if outputs is None:
        path = _figure(out_dir, label, attr, x, args)
        return [] if path is None else [path]
    paths = [_figure(out_dir, label, attr[..., j], x, args, output=k) for j, k in enumerate(outputs)]
    return [p for p in paths if p is not None]


def _title(args: argparse.Namespace) -> str:
    return f"{args.method} + {args.nt_type}" if args.nt_type != "none" else args.method


def _figure(out_dir: Path, label: str, attr: Tensor, x: Optional[Tensor], args: argparse.Namespace,
            output: Optional[int] = None) -> Optional[Path]:
    from noisegrad import viz

    title = _title(args) + ("" if output is None else f", output {output}")
    suffix = (f"_{label}" if label else "") + ("" if output is None else f"_output{output}")
    n = min(attr.shape[0], MAX_FIGURE_EXAMPLES)
    if attr.dim() in (3, 4):  # images (N, C, H, W) or (N, H, W)
        path = out_dir / f"attributions{suffix}.png"
        blend = x is not None and attr.dim() == 4 and attr.shape[1] in (1, 3)
        viz.plot_image_attr_grid(attr[:n], x[:n] if blend else None, method="blended_heat_map" if blend else "heat_map",
                                 titles=[f"example {i}" for i in range(n)], suptitle=f"{title}{' ' + label if label else ''}",
                                 save=path)
        return path
    if attr.dim() == 2:  # features (N, F): one bar chart per example, side by side
        path = out_dir / f"attributions{suffix}.png"
        from noisegrad.viz._canvas import new_figure, save_figure

        fig = new_figure((4.2 * min(n, 4), 0.25 * min(attr.shape[1], 20) + 1.5))
        axes = fig.subplots(1, min(n, 4), squeeze=False)[0]
        for i, ax in enumerate(axes):
            viz.plot_feature_attr(attr[i], max_features=20, title=f"example {i}", ax=ax)
        fig.suptitle(f"{title}{' ' + label if label else ''}")
        save_figure(fig, path)
        return path
    return None

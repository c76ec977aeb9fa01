"""The ``python -m noisegrad demo``: noise-smoothed attributions on shapes whose true pixels are known.

Everything is offline and seeded. The tiny CNN shipped with the package
(``noisegrad/app/data/demo_cnn.pt``, trained by ``scripts/train_demo_model.py``,
loaded with ``weights_only=True``) names the shape in freshly generated 16×16
images (see :mod:`noisegrad.app.shapes`); Saliency, SmoothGrad, SmoothGrad²,
VarGrad and IntegratedGradients + SmoothGrad explain a few of them, each map is
scored by the share of its attribution mass on the true shape pixels, and each
noise-tunnel estimate comes with its Monte-Carlo standard error from the same
run (``return_stderr=True``, no extra gradients: the standard error of a mean
of ``N`` samples for the SmoothGrads, a jackknife over groups of the samples
for SmoothGrad² and VarGrad). The relative standard error of an image is
``‖SE‖₂ / ‖attribution‖₂``; the table shows its mean over the images.

Examples
--------
>>> from noisegrad.app.demo import run_demo
>>> result = run_demo("demo/", samples=4, print_fn=None)  # doctest: +SKIP
>>> [row.method for row in result.rows]  # doctest: +SKIP
['Saliency', 'SmoothGrad', 'SmoothGrad²', 'VarGrad', 'IG + SmoothGrad']
"""

import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import Tensor, nn

import noisegrad
from noisegrad._progress import progress_bar
from noisegrad.app.output import DemoOutputError, output_folder, prepare_output_dir  # noqa: F401  (re-exported)
from noisegrad.app.shapes import (  # noqa: F401  (re-exported: the demo's data and model)
    IMAGE_SIZE, SHAPES, accuracy, load_demo_model, make_cnn, make_shapes, mask_mass_fraction, test_generator,
    torch_threads, train_cnn,
)
from noisegrad.sampling.samplers import units_for_stderr

__all__ = [
    "SHAPES",
    "METHODS",
    "IMAGE_SIZE",
    "DemoOutputError",
    "MethodResult",
    "DemoResult",
    "prepare_output_dir",
    "make_shapes",
    "make_cnn",
    "train_cnn",
    "accuracy",
    "mask_mass_fraction",
    "attribute_all",
    "format_table",
    "figure_size",
    "draw_figure",
    "save_figure",
    "save_summary",
    "run_demo",
]

#: Column titles of the figure, in order after the input column.
METHODS = ("Saliency", "SmoothGrad", "SmoothGrad²", "VarGrad", "IG + SmoothGrad")

#: Which maps are signed (shown with a diverging colour map centred on 0).
_SIGNED = {"Saliency": False, "SmoothGrad": True, "SmoothGrad²": False, "VarGrad": False, "IG + SmoothGrad": True}

PrintFn = Optional[Callable[[str], None]]


@dataclass
class MethodResult:
    """One row of the demo's table.

    Attributes
    ----------
    method : str
        Display name of the attribution method.
    time_s : float
        Wall time of the attribution call for all demo images, in seconds
        (standard error included: it costs no extra gradients).
    samples : int
        Noisy copies per image (1 for plain Saliency).
    mean_abs_delta : float or None
        Mean over the images of |averaged convergence delta| (IntegratedGradients only).
    rel_stderr : float or None
        Mean over the images of ``‖SE‖₂ / ‖attribution‖₂`` (None for Saliency,
        which has no noise, and with fewer than 2 samples, 3 for VarGrad).
    mask_mass : float
        Share of the attribution mass (sum of |attr|) on the ground-truth mask,
        averaged over the images; a uniform map scores the mask's area fraction.
    """

    method: str
    time_s: float
    samples: int
    mean_abs_delta: Optional[float]
    rel_stderr: Optional[float]
    mask_mass: float
    attributions: Optional[Tensor] = field(default=None, repr=False)


@dataclass
class DemoResult:
    """Everything the demo computed and where it wrote it.

    Attributes
    ----------
    rows : list of MethodResult
        One per method, in the order of :data:`METHODS`.
    accuracy : float
        Accuracy of the shipped CNN on freshly generated held-out images.
    mask_area : float
        Mean fraction of the image covered by the mask (the score of a uniform map).
    figure_path, summary_path : pathlib.Path
        The written comparison figure and summary.
    total_time_s : float
        Wall time of the whole demo.
    """

    rows: List[MethodResult]
    accuracy: float
    mask_area: float
    figure_path: Path
    summary_path: Path
    total_time_s: float


# --------------------------------------------------------------------------- attributions


def _timed(fn: Callable[[], object]) -> Tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def attribute_all(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    samples: int = 32,
    noise: float = 0.15,
    seed: int = 0,
    ig_steps: int = 50,
    batch_size: Optional[int] = 8,
    progress: Optional[Any] = None,
) -> List[MethodResult]:
    """Run the five methods of the demo on ``images`` (target: the true label), score them, estimate their errors.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, in eval mode.
    images, labels, masks : Tensor
        Images to explain, their classes and ground-truth masks.
    samples : int
        ``nt_samples`` of the noise-tunnel methods (≥ 2 for a standard error).
    noise : float
        Noise level relative to each image's range (``noisegrad.relative(noise)``).
    seed : int
        ``seed=`` of every noise-tunnel call.
    ig_steps : int
        ``n_steps`` of IntegratedGradients (per noisy copy).
    batch_size : int or None
        ``nt_samples_batch_size``.
    progress : tqdm bar, optional
        Advanced by the gradient evaluations per image of each call
        (:func:`work_units` in total).

    Returns
    -------
    list of MethodResult
        One per entry of :data:`METHODS`, with the attributions attached.
    """
    target = labels.tolist()
    saliency = noisegrad.NoiseTunnel(Saliency(model))
    ig = noisegrad.NoiseTunnel(IntegratedGradients(model))

    def smooth(nt, nt_type: str, **extra):
        return nt.attribute(images, nt_type=nt_type, nt_samples=samples, nt_samples_batch_size=batch_size,
                            stdevs=noisegrad.relative(noise), seed=seed, target=target,
                            return_stderr=samples >= units_for_stderr(nt_type), **extra)

    calls: Dict[str, Callable[[], object]] = {
        "Saliency": lambda: Saliency(model).attribute(images.clone().requires_grad_(), target=target),
        "SmoothGrad": lambda: smooth(saliency, "smoothgrad", abs=False),
        "SmoothGrad²": lambda: smooth(saliency, "smoothgrad_sq", abs=False),
        "VarGrad": lambda: smooth(saliency, "vargrad", abs=False),
        "IG + SmoothGrad": lambda: smooth(ig, "smoothgrad", return_convergence_delta=True, n_steps=ig_steps),
    }
    rows = []
    for name in METHODS:
        out, seconds = _timed(calls[name])
        _advance(progress, _gradients(name, samples, ig_steps), name)
        delta, rel = None, None
        if isinstance(out, noisegrad.SmoothedAttribution):
            out, delta_tensor, rel = out.attributions, out.delta, float(out.relative_stderr.nanmean())
        elif isinstance(out, tuple):
            out, delta_tensor = out
        else:
            delta_tensor = None
        if delta_tensor is not None:
            delta = float(delta_tensor.abs().mean())
        rows.append(MethodResult(
            method=name, time_s=seconds, samples=1 if name == "Saliency" else samples, mean_abs_delta=delta,
            rel_stderr=rel, mask_mass=mask_mass_fraction(out, masks), attributions=out.detach(),
        ))
    return rows


def _gradients(method: str, samples: int, ig_steps: int) -> int:
    """Gradient evaluations per image of one method's call."""
    if method == "Saliency":
        return 1
    return samples * ig_steps if method == "IG + SmoothGrad" else samples


def work_units(samples: int, ig_steps: int) -> int:
    """Gradient evaluations per image of :func:`attribute_all` (the progress bar's total)."""
    return sum(_gradients(method, samples, ig_steps) for method in METHODS)


def _advance(progress: Optional[Any], amount: int, note: str) -> None:
    if progress is not None:
        progress.set_postfix_str(note, refresh=False)
        progress.update(amount)


# --------------------------------------------------------------------------- reporting


def format_table(rows: List[MethodResult], mask_area: float) -> str:
    """The demo's results as a plain-text table, with how the errors were computed and the uniform-map baseline."""
    header = f"{'method':<16} {'time (s)':>8} {'samples':>7} {'mean |delta|':>12} {'rel. SE':>8} {'mass on mask':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        delta = "-" if r.mean_abs_delta is None else f"{r.mean_abs_delta:.4f}"
        rel = "0" if r.method == "Saliency" else ("-" if r.rel_stderr is None else f"{r.rel_stderr:.3f}")
        lines.append(f"{r.method:<16} {r.time_s:>8.3f} {r.samples:>7d} {delta:>12} {rel:>8} {r.mask_mass:>12.3f}")
    lines += [
        "mean |delta|: IG's completeness gap, averaged over the noisy copies, then |.| averaged over the images.",
        "rel. SE: ||standard error||_2 / ||attribution||_2 per image, averaged over the images; the Monte-Carlo",
        "  standard error of the same run (return_stderr=True): that of a mean of N samples for the SmoothGrads,",
        "  a jackknife over groups of the samples for SmoothGrad² and VarGrad; Saliency, one gradient without noise,",
        "  has no Monte-Carlo error (0).",
        f"mass on mask: share of sum |attr| on the true shape pixels; a uniform map scores {mask_area:.3f}.",
    ]
    return "\n".join(lines)


def figure_size(n_images: int, panel_inches: float = 1.9) -> Tuple[float, float]:
    """Figure width and height in inches for ``n_images`` rows and ``1 + len(METHODS)`` columns.

    The extra height holds the title and the colour bars under the columns.
    """
    return panel_inches * (1 + len(METHODS)), panel_inches * n_images + 1.3


#: Colour of the ground-truth outline: lime is visible on the grey input, on white, on red and blue and on inferno.
_OUTLINE = "lime"


def draw_figure(images: Tensor, labels: Tensor, masks: Tensor, rows: List[MethodResult], dpi: int = 100):
    """The comparison figure: one row per image, the input then one column per method.

    Every panel outlines the ground-truth pixels. Each map is divided by its
    own largest |value| (stated under it, with its share of the attribution
    mass on the shape), so that a faint map still shows where its mass lies;
    the colour bar under each column reads in those units: −1 … 1 for signed
    maps (red/blue, centred on zero), 0 … 1 for unsigned ones. Uses the Agg
    canvas directly, so pyplot's global backend is not touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = images.shape[0]
    fig = Figure(figsize=figure_size(n), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1 + len(rows), squeeze=False)
    names = list(SHAPES)
    for i in range(n):
        _show_input(axes[i, 0], images[i, 0], masks[i, 0], names[int(labels[i])], title=i == 0)
    for j, row in enumerate(rows, start=1):
        signed = _SIGNED[row.method]
        for i in range(n):
            attr = row.attributions[i : i + 1]
            shown, peak = _show_map(axes[i, j], attr[0, 0], signed)
            axes[i, j].add_collection(_mask_outline(masks[i, 0].numpy()))
            axes[i, j].set_xlabel(f"max {peak:.3g} · on shape {mask_mass_fraction(attr, masks[i : i + 1]):.2f}",
                                  fontsize=8)
        axes[0, j].set_title(row.method, fontsize=10)
        bar = fig.colorbar(shown, ax=axes[:, j], location="bottom", shrink=0.8, aspect=12, pad=0.01)
        bar.set_ticks([-1, 0, 1] if signed else [0, 0.5, 1])
        bar.set_label("value / map's max |value|", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle("noisegrad demo: where does the attribution go?\n"
                 "green outline: the true shape's pixels; under each map: its max |value| and its share of "
                 "Σ|attribution| on the shape", fontsize=10)
    return fig


def save_figure(
    path: Path, images: Tensor, labels: Tensor, masks: Tensor, rows: List[MethodResult], dpi: int = 100
) -> Path:
    """Write :func:`draw_figure`'s comparison figure to ``path``."""
    draw_figure(images, labels, masks, rows, dpi).savefig(path, dpi=dpi)
    return path


def _show_input(ax, image: Tensor, mask: Tensor, name: str, title: bool) -> None:
    ax.imshow(image.numpy(), cmap="gray", interpolation="nearest")
    ax.add_collection(_mask_outline(mask.numpy()))
    ax.set_ylabel(f"true class: {name}", fontsize=9)
    if title:
        ax.set_title("Input", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _mask_outline(mask: np.ndarray):
    """The pixel edges between mask and non-mask pixels, as a line collection in image coordinates."""
    from matplotlib.collections import LineCollection

    padded = np.pad(mask.astype(bool), 1)
    segments = []
    for r, c in zip(*np.nonzero(mask)):
        if not padded[r, c + 1]:  # above
            segments.append([(c - 0.5, r - 0.5), (c + 0.5, r - 0.5)])
        if not padded[r + 2, c + 1]:  # below
            segments.append([(c - 0.5, r + 0.5), (c + 0.5, r + 0.5)])
        if not padded[r + 1, c]:  # left
            segments.append([(c - 0.5, r - 0.5), (c - 0.5, r + 0.5)])
        if not padded[r + 1, c + 2]:  # right
            segments.append([(c + 0.5, r - 0.5), (c + 0.5, r + 0.5)])
    return LineCollection(segments, colors=_OUTLINE, linewidths=1.2, label="true shape")


def _show_map(ax, attr: Tensor, signed: bool):
    """Draw ``attr`` divided by its largest |value|; returns the image (for a colour bar) and that largest value."""
    values = attr.double().numpy()
    peak = float(np.abs(values).max())
    scaled = values / (peak or 1.0)
    if signed:
        shown = ax.imshow(scaled, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    else:
        shown = ax.imshow(np.abs(scaled), cmap="inferno", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return shown, peak


def save_summary(out_dir: Path, rows: List[MethodResult], meta: Dict[str, object]) -> Path:
    """Write ``summary.csv`` (one row per method) and ``summary.json`` (the rows plus ``meta``).

    Returns
    -------
    pathlib.Path
        The CSV file.
    """
    table = [{k: v for k, v in asdict(r).items() if k != "attributions"} for r in rows]
    csv_path = out_dir / "summary.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        for entry in table:
            writer.writerow({k: ("" if v is None else v) for k, v in entry.items()})
    with open(out_dir / "summary.json", "w", encoding="utf-8") as f:
        json.dump({**meta, "methods": table}, f, indent=2, ensure_ascii=False)
    return csv_path


# --------------------------------------------------------------------------- the whole demo


def run_demo(
    out: Union[str, os.PathLike] = "demo/",
    samples: int = 32,
    noise: float = 0.15,
    seed: int = 0,
    n_test: int = 1000,
    n_images: int = 4,
    ig_steps: int = 50,
    weights: Union[str, os.PathLike, None] = None,
    print_fn: PrintFn = print,
    progress: Optional[bool] = None,
    threads: Optional[int] = 1,
) -> DemoResult:
    """Load the shipped CNN, attribute ``n_images`` fresh test images, print and save the results.

    Parameters
    ----------
    out : str or path-like
        Output folder (created if needed); checked before anything else, removed again if the demo
        created it and fails before writing to it.
    samples : int
        ``nt_samples`` of the noise-tunnel methods.
    noise : float
        Noise level relative to each image's range.
    seed : int
        Seeds the test images and the noise (the training images are never drawn).
    n_test : int
        Fresh images on which the CNN's accuracy is checked.
    n_images : int
        Test images explained and drawn (the first of each class come first).
    ig_steps : int
        IntegratedGradients' ``n_steps``.
    weights : str or path-like, optional
        Another weights file from ``scripts/train_demo_model.py``; default: the shipped one.
    print_fn : callable or None
        Where messages and the table go; ``None`` for silence.
    progress : bool, optional
        Draw a progress bar on stderr; default: when stderr is a terminal.
    threads : int or None
        torch's intra-op threads while the demo runs (restored afterwards);
        ``None`` keeps the current setting. The default, 1, is the robust
        choice for this tiny model: on busy cores more threads wait on each other.

    Returns
    -------
    DemoResult

    Raises
    ------
    DemoOutputError
        If ``out`` cannot be used as the output folder.
    FileNotFoundError, DemoWeightsError
        If the weights file is missing or is not the demo CNN's (see :func:`load_demo_model`).
        Whatever fails, a folder the demo created for ``out`` is removed again while it is empty.
    """
    start = time.perf_counter()
    with output_folder(out) as out_dir, torch_threads(threads):
        say = print_fn or (lambda _msg: None)
        model = load_demo_model(weights)
        test_x, test_y, test_m = make_shapes(n_test, test_generator(seed))
        acc = accuracy(model, test_x, test_y)
        say(f"Loaded the shipped tiny CNN ({sum(p.numel() for p in model.parameters())} parameters); "
            f"accuracy {acc:.1%} on {n_test} freshly generated 16x16 images ({', '.join(SHAPES)})")

        pick = _pick_images(test_y, n_images)
        x, y, m = test_x[pick], test_y[pick], test_m[pick]
        say(f"Attributing {len(pick)} test images (nt_samples={samples}, stdevs=relative({noise}), "
            f"IG n_steps={ig_steps}, seed={seed})...")
        bar = progress_bar(work_units(samples, ig_steps), "gradients per image", unit="grad", stream=sys.stderr,
                           enabled=progress)
        with bar:
            rows = attribute_all(model, x, y, m, samples=samples, noise=noise, seed=seed, ig_steps=ig_steps,
                                 progress=bar)
        mask_area = float(m.float().mean())
        say("")
        say(format_table(rows, mask_area))

        figure_path = save_figure(out_dir / "comparison.png", x, y, m, rows)
        total = time.perf_counter() - start
        meta = {
            "options": {"samples": samples, "noise": noise, "seed": seed, "n_test": n_test,
                        "n_images": len(pick), "ig_steps": ig_steps, "threads": torch.get_num_threads(),
                        "weights": str(weights) if weights is not None else "shipped"},
            "accuracy": acc,
            "mask_area_fraction": mask_area,
            "stderr": "relative: ||SE||_2/||attribution||_2 per image, mean over images; the Monte-Carlo "
                      "standard error of the same run (return_stderr=True): of a mean of N samples for the "
                      "SmoothGrads, a jackknife over groups of samples for SmoothGrad² and VarGrad",
            "total_time_s": total,
        }
        summary_path = save_summary(out_dir, rows, meta)
        say(f"\nWrote {figure_path}, {summary_path} and summary.json (total {total:.1f} s)")
        return DemoResult(rows, acc, mask_area, figure_path, summary_path, total)


def _pick_images(labels: Tensor, n: int) -> List[int]:
    """Indices of ``n`` images: the first of each class in turn, then the next ones in order."""
    order: List[int] = []
    for c in range(len(SHAPES)):
        hits = (labels == c).nonzero().flatten()
        if len(hits):
            order.append(int(hits[0]))
    order += [i for i in range(len(labels)) if i not in order]
    return order[: min(n, len(labels))]

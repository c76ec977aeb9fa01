"""The ``python -m noisegrad demo``: noise-smoothed attributions on shapes whose true pixels are known.

Everything is generated here, offline and seeded: 1×16×16 grayscale images of
background noise with one small bright shape (a square, a plus or an ×, all
nine pixels, so brightness alone does not tell the class) at a random place.
The shape's pixels are the ground-truth mask. A tiny CNN learns to name the
shape in a few seconds; Saliency, SmoothGrad, SmoothGrad², VarGrad and
IntegratedGradients + SmoothGrad then explain a few test images, and each map
is scored by the share of its attribution mass that falls on the mask.

Examples
--------
>>> from noisegrad.demo import run_demo
>>> result = run_demo("demo/", train_steps=50, samples=4, print_fn=None)  # doctest: +SKIP
>>> [row.method for row in result.rows]  # doctest: +SKIP
['Saliency', 'SmoothGrad', 'SmoothGrad²', 'VarGrad', 'IG + SmoothGrad']
"""

import contextlib
import csv
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import Tensor, nn

import noisegrad

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
    "save_figure",
    "save_summary",
    "run_demo",
]

IMAGE_SIZE = 16

#: Class names and their 5×5 stencils (1 = shape pixel); every shape has 9 pixels.
SHAPES: Dict[str, np.ndarray] = {
    "square": np.pad(np.ones((3, 3)), 1),
    "plus": np.array(
        [[0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0]], dtype=float
    ),
    "cross": np.eye(5) + np.fliplr(np.eye(5)) - np.diag([0, 0, 1, 0, 0]),
}

#: Column titles of the figure, in order after the input column.
METHODS = ("Saliency", "SmoothGrad", "SmoothGrad²", "VarGrad", "IG + SmoothGrad")

#: Which maps are signed (shown with a diverging colour map centred on 0).
_SIGNED = {"Saliency": False, "SmoothGrad": True, "SmoothGrad²": False, "VarGrad": False, "IG + SmoothGrad": True}

PrintFn = Optional[Callable[[str], None]]


class DemoOutputError(OSError):
    """The output folder cannot be used (it is a file, or cannot be created or written)."""


@dataclass
class MethodResult:
    """One row of the demo's table.

    Attributes
    ----------
    method : str
        Display name of the attribution method.
    time_s : float
        Wall time of the attribution call for all demo images, in seconds.
    samples : int
        Noisy copies per image (1 for plain Saliency).
    mean_abs_delta : float or None
        Mean |convergence delta| over the images (IntegratedGradients only).
    mask_mass : float
        Share of the attribution mass (sum of |attr|) on the ground-truth mask,
        averaged over the images; a uniform map scores the mask's area fraction.
    """

    method: str
    time_s: float
    samples: int
    mean_abs_delta: Optional[float]
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
        Test accuracy of the trained CNN.
    mask_area : float
        Mean fraction of the image covered by the mask (the score of a uniform map).
    figure_path, summary_path : pathlib.Path
        The written comparison figure and summary.
    train_time_s, total_time_s : float
        Wall times of training and of the whole demo.
    """

    rows: List[MethodResult]
    accuracy: float
    mask_area: float
    figure_path: Path
    summary_path: Path
    train_time_s: float
    total_time_s: float


# --------------------------------------------------------------------------- output folder


def prepare_output_dir(out: Union[str, os.PathLike]) -> Path:
    """Create ``out`` if needed and check that files can be written in it.

    Called before any training so that a bad ``--out`` fails at once.

    Parameters
    ----------
    out : str or path-like
        The output folder.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    DemoOutputError
        If ``out`` exists and is not a directory, cannot be created, or is not writable.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise DemoOutputError(f"output folder '{path}' exists and is not a directory; give a folder with --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise DemoOutputError(f"cannot write to output folder '{path}': {reason}") from err
    return path


# --------------------------------------------------------------------------- data and model


def make_shapes(
    n: int, generator: torch.Generator, noise_std: float = 0.25, size: int = IMAGE_SIZE
) -> Tuple[Tensor, Tensor, Tensor]:
    """Random images of background noise plus one shape each, with labels and ground-truth masks.

    Parameters
    ----------
    n : int
        Number of images.
    generator : torch.Generator
        Source of all randomness (shape, position, noise).
    noise_std : float
        Standard deviation of the Gaussian background; the shape adds 1.0.
    size : int
        Image height and width.

    Returns
    -------
    images : Tensor
        ``(n, 1, size, size)`` float32.
    labels : Tensor
        ``(n,)`` int64, indices into :data:`SHAPES`.
    masks : Tensor
        ``(n, 1, size, size)`` bool, True on the shape's pixels.

    Examples
    --------
    >>> x, y, m = make_shapes(3, torch.Generator().manual_seed(0))
    >>> x.shape, y.shape, m.sum(dim=(1, 2, 3)).tolist()
    (torch.Size([3, 1, 16, 16]), torch.Size([3]), [9, 9, 9])
    """
    stencils = torch.tensor(np.stack(list(SHAPES.values())), dtype=torch.bool)
    k = stencils.shape[-1]
    labels = torch.randint(len(SHAPES), (n,), generator=generator)
    rows = torch.randint(size - k + 1, (n,), generator=generator)
    cols = torch.randint(size - k + 1, (n,), generator=generator)
    masks = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for i in range(n):
        r, c = int(rows[i]), int(cols[i])
        masks[i, 0, r : r + k, c : c + k] = stencils[labels[i]]
    images = noise_std * torch.randn(n, 1, size, size, generator=generator) + masks.float()
    return images, labels, masks


def make_cnn(classes: int = len(SHAPES)) -> nn.Sequential:
    """A tiny CNN with global max pooling, so it can find a shape anywhere.

    Returns
    -------
    torch.nn.Sequential
        Maps ``(batch, 1, H, W)`` images to ``(batch, classes)`` logits.
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    )


def train_cnn(
    images: Tensor, labels: Tensor, steps: int = 400, batch_size: int = 64, lr: float = 3e-3, seed: int = 0
) -> nn.Sequential:
    """Train :func:`make_cnn` with Adam on ``images``; the global RNG state is left as it was.

    Parameters
    ----------
    images, labels : Tensor
        Training data from :func:`make_shapes`.
    steps : int
        Optimiser steps (minibatches drawn with replacement).
    batch_size : int
        Minibatch size.
    lr : float
        Adam learning rate.
    seed : int
        Seeds the weights and the minibatch draws (``torch.manual_seed``).

    Returns
    -------
    torch.nn.Sequential
        The trained model, in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_cnn()
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(steps, 1))
        model.train()
        for _ in range(steps):
            batch = torch.randint(images.shape[0], (batch_size,))
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` whose predicted class is ``labels``."""
    with torch.no_grad():
        return float((model(images).argmax(dim=1) == labels).float().mean())


# --------------------------------------------------------------------------- attributions


def mask_mass_fraction(attributions: Tensor, masks: Tensor) -> float:
    """Share of the attribution mass on the ground-truth mask, averaged over the images.

    Parameters
    ----------
    attributions : Tensor
        ``(n, ...)`` attributions (signed or not; their absolute values are used).
    masks : Tensor
        Boolean masks shaped like ``attributions``.

    Returns
    -------
    float
        mean over images of ``sum(|attr| on mask) / sum(|attr|)``; an image
        with no attribution at all counts as 0.

    Examples
    --------
    >>> a = torch.tensor([[3.0, -1.0, 0.0, 0.0]])
    >>> mask_mass_fraction(a, torch.tensor([[True, False, False, False]]))
    0.75
    """
    mass = attributions.detach().abs().double().flatten(1)
    on_mask = (mass * masks.flatten(1)).sum(dim=1)
    total = mass.sum(dim=1)
    share = torch.where(total > 0, on_mask / total.clamp_min(1e-300), torch.zeros_like(total))
    return float(share.mean())


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
) -> List[MethodResult]:
    """Run the five methods of the demo on ``images`` (target: the true label) and score them.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, in eval mode.
    images, labels, masks : Tensor
        Images to explain, their classes and ground-truth masks.
    samples : int
        ``nt_samples`` of the noise-tunnel methods.
    noise : float
        Noise level relative to each image's range (``noisegrad.relative(noise)``).
    seed : int
        ``seed=`` of every noise-tunnel call.
    ig_steps : int
        ``n_steps`` of IntegratedGradients (per noisy copy).
    batch_size : int or None
        ``nt_samples_batch_size``.

    Returns
    -------
    list of MethodResult
        One per entry of :data:`METHODS`, with the attributions attached.
    """
    target = labels.tolist()
    stdevs = noisegrad.relative(noise)
    saliency = noisegrad.NoiseTunnel(Saliency(model))
    smooth = dict(nt_samples=samples, nt_samples_batch_size=batch_size, stdevs=stdevs, seed=seed, target=target)
    calls: Dict[str, Callable[[], object]] = {
        "Saliency": lambda: Saliency(model).attribute(images.clone().requires_grad_(), target=target),
        "SmoothGrad": lambda: saliency.attribute(images, nt_type="smoothgrad", abs=False, **smooth),
        "SmoothGrad²": lambda: saliency.attribute(images, nt_type="smoothgrad_sq", abs=False, **smooth),
        "VarGrad": lambda: saliency.attribute(images, nt_type="vargrad", abs=False, **smooth),
        "IG + SmoothGrad": lambda: noisegrad.NoiseTunnel(IntegratedGradients(model)).attribute(
            images, nt_type="smoothgrad", n_steps=ig_steps, return_convergence_delta=True, **smooth
        ),
    }
    rows = []
    for name in METHODS:
        out, seconds = _timed(calls[name])
        delta = None
        if isinstance(out, tuple):
            out, delta_tensor = out
            delta = float(delta_tensor.abs().mean())
        rows.append(
            MethodResult(
                method=name,
                time_s=seconds,
                samples=1 if name == "Saliency" else samples,
                mean_abs_delta=delta,
                mask_mass=mask_mass_fraction(out, masks),
                attributions=out.detach(),
            )
        )
    return rows


# --------------------------------------------------------------------------- reporting


def format_table(rows: List[MethodResult], mask_area: float) -> str:
    """The demo's results as a plain-text table, with the uniform-map baseline underneath."""
    header = f"{'method':<16} {'time (s)':>8} {'samples':>7} {'mean |delta|':>12} {'mass on mask':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        delta = "-" if r.mean_abs_delta is None else f"{r.mean_abs_delta:.4f}"
        lines.append(f"{r.method:<16} {r.time_s:>8.3f} {r.samples:>7d} {delta:>12} {r.mask_mass:>12.3f}")
    lines.append(f"(a uniform map puts {mask_area:.3f} of its mass on the mask: the mask's share of the image)")
    return "\n".join(lines)


def figure_size(n_images: int, panel_inches: float = 1.9) -> Tuple[float, float]:
    """Figure width and height in inches for ``n_images`` rows and ``1 + len(METHODS)`` columns."""
    return panel_inches * (1 + len(METHODS)), panel_inches * n_images + 0.6


def save_figure(
    path: Path, images: Tensor, labels: Tensor, masks: Tensor, rows: List[MethodResult], dpi: int = 100
) -> Path:
    """Write the comparison figure: one row per image, the input then one column per method.

    The input panel outlines the ground-truth mask in green; signed maps use a
    red/blue colour map centred on zero, unsigned ones a sequential map, each
    scaled to its own maximum. Every panel is labelled with its mass on the mask.
    Uses the Agg canvas directly, so pyplot's global backend is not touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = images.shape[0]
    fig = Figure(figsize=figure_size(n), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1 + len(rows), squeeze=False)
    names = list(SHAPES)
    for i in range(n):
        _show_input(axes[i, 0], images[i, 0], masks[i, 0], names[int(labels[i])], title=i == 0)
        for j, row in enumerate(rows, start=1):
            attr = row.attributions[i : i + 1]
            _show_map(axes[i, j], attr[0, 0], _SIGNED[row.method])
            axes[i, j].set_xlabel(f"on mask {mask_mass_fraction(attr, masks[i : i + 1]):.2f}", fontsize=8)
            if i == 0:
                axes[i, j].set_title(row.method, fontsize=10)
    fig.suptitle("noisegrad demo: where does the attribution go? (green outline = true shape pixels)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=dpi)
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
    return LineCollection(segments, colors="lime", linewidths=1.2)


def _show_map(ax, attr: Tensor, signed: bool) -> None:
    values = attr.double().numpy()
    scale = float(np.abs(values).max()) or 1.0
    if signed:
        ax.imshow(values, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
    else:
        ax.imshow(np.abs(values), cmap="inferno", vmin=0.0, vmax=scale, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


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
    n_train: int = 4096,
    train_steps: int = 400,
    n_test: int = 1000,
    n_images: int = 4,
    ig_steps: int = 50,
    print_fn: PrintFn = print,
    threads: Optional[int] = 1,
) -> DemoResult:
    """Generate data, train the CNN, attribute ``n_images`` test images, print and save the results.

    Parameters
    ----------
    out : str or path-like
        Output folder (created if needed); checked before anything else.
    samples : int
        ``nt_samples`` of the noise-tunnel methods.
    noise : float
        Noise level relative to each image's range.
    seed : int
        Seeds the data, the training and the noise.
    n_train, train_steps, n_test : int
        Training set size, optimiser steps and test set size.
    n_images : int
        Test images explained and drawn (the first of each class come first).
    ig_steps : int
        IntegratedGradients' ``n_steps``.
    print_fn : callable or None
        Where progress and the table go; ``None`` for silence.
    threads : int or None
        torch's intra-op threads while the demo runs (restored afterwards);
        ``None`` keeps the current setting. The default, 1, is the robust
        choice for this tiny model: a second thread saves about a third of
        the time on an idle machine, but on busy cores the threads wait on
        each other and the demo runs several times slower.

    Returns
    -------
    DemoResult

    Raises
    ------
    DemoOutputError
        If ``out`` cannot be used as the output folder.
    """
    start = time.perf_counter()
    out_dir = prepare_output_dir(out)
    with _torch_threads(threads):
        say = print_fn or (lambda _msg: None)
        generator = torch.Generator().manual_seed(seed)
        train_x, train_y, _ = make_shapes(n_train, generator)
        test_x, test_y, test_m = make_shapes(n_test, generator)

        say(f"Training a tiny CNN on {n_train} generated 16x16 images ({', '.join(SHAPES)}) for {train_steps} steps...")
        model, train_time = _timed(lambda: train_cnn(train_x, train_y, steps=train_steps, seed=seed))
        acc = accuracy(model, test_x, test_y)
        say(f"  trained in {train_time:.1f} s; test accuracy {acc:.1%} on {n_test} images")

        pick = _pick_images(test_y, n_images)
        x, y, m = test_x[pick], test_y[pick], test_m[pick]
        say(f"Attributing {len(pick)} test images (nt_samples={samples}, stdevs=relative({noise}), seed={seed})...")
        rows = attribute_all(model, x, y, m, samples=samples, noise=noise, seed=seed, ig_steps=ig_steps)
        mask_area = float(m.float().mean())
        say("")
        say(format_table(rows, mask_area))

        figure_path = save_figure(out_dir / "comparison.png", x, y, m, rows)
        total = time.perf_counter() - start
        meta = {
            "options": {"samples": samples, "noise": noise, "seed": seed, "train_steps": train_steps,
                        "n_train": n_train, "n_images": len(pick), "ig_steps": ig_steps,
                        "threads": torch.get_num_threads()},
            "accuracy": acc,
            "mask_area_fraction": mask_area,
            "train_time_s": train_time,
            "total_time_s": total,
        }
        summary_path = save_summary(out_dir, rows, meta)
        say(f"\nWrote {figure_path}, {summary_path} and summary.json (total {total:.1f} s)")
        return DemoResult(rows, acc, mask_area, figure_path, summary_path, train_time, total)


@contextlib.contextmanager
def _torch_threads(threads: Optional[int]) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)``, then restore the previous count."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _pick_images(labels: Tensor, n: int) -> List[int]:
    """Indices of ``n`` images: the first of each class in turn, then the next ones in order."""
    order: List[int] = []
    for c in range(len(SHAPES)):
        hits = (labels == c).nonzero().flatten()
        if len(hits):
            order.append(int(hits[0]))
    order += [i for i in range(len(labels)) if i not in order]
    return order[: min(n, len(labels))]

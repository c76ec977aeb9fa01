"""Generated shapes whose true pixels are known, the tiny CNN that names them, and its shipped weights.

The images are 1×16×16 grayscale: background noise with one small bright
shape (a square, a plus or an ×, all nine pixels, so brightness alone does not
tell the class) at a random place. The shape's pixels are the ground-truth
mask, which makes the quality of an attribution measurable
(:func:`mask_mass_fraction`).

The CNN in ``noisegrad/app/data/demo_cnn.pt`` was trained by
:func:`train_demo_model` with the recipe :data:`TRAINING` (run
``python scripts/train_demo_model.py`` to reproduce it); :func:`load_demo_model`
loads it with ``torch.load(..., weights_only=True)``. Training data come from
:data:`TRAIN_DATA_SEED`; :func:`test_generator` gives generators that never
produce the training images.

Examples
--------
>>> model = load_demo_model()
>>> x, y, m = make_shapes(200, test_generator(0))
>>> accuracy(model, x, y) > 0.95
True
"""

import contextlib
import platform
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from noisegrad.monitor.metrics import mask_share

__all__ = [
    "IMAGE_SIZE",
    "SHAPES",
    "TRAINING",
    "TRAIN_DATA_SEED",
    "WEIGHTS_PATH",
    "make_shapes",
    "test_generator",
    "make_cnn",
    "train_cnn",
    "train_demo_model",
    "save_demo_model",
    "load_demo_model",
    "DemoWeightsError",
    "accuracy",
    "mask_mass_fraction",
    "torch_threads",
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

#: Seed of the generator that makes the training images.
TRAIN_DATA_SEED = 0

#: The recipe of the shipped weights (keyword arguments of :func:`train_demo_model`).
TRAINING = {"n_train": 8192, "steps": 1500, "batch_size": 64, "lr": 3e-3, "seed": 0}

#: The shipped weights (package data).
WEIGHTS_PATH = Path(__file__).resolve().parent / "data" / "demo_cnn.pt"

_FORMAT = "noisegrad-demo-cnn/1"


# --------------------------------------------------------------------------- data


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


def test_generator(seed: int = 0) -> torch.Generator:
    """A generator for held-out images: seeded apart from :data:`TRAIN_DATA_SEED` for every ``seed >= 0``.

    Examples
    --------
    >>> bool((make_shapes(2, test_generator(0))[0] != make_shapes(2, test_generator(1))[0]).any())
    True
    """
    return torch.Generator().manual_seed(1_000_003 + int(seed))


test_generator.__test__ = False  # not a pytest test, despite its name


# --------------------------------------------------------------------------- model and training


def make_cnn(classes: int = len(SHAPES)) -> nn.Sequential:
    """A tiny CNN with global max pooling, so it can find a shape anywhere (about 14 k parameters).

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
    """Train :func:`make_cnn` with Adam (one-cycle schedule); the global RNG state is left as it was.

    Parameters
    ----------
    images, labels : Tensor
        Training data from :func:`make_shapes`.
    steps : int
        Optimiser steps (minibatches drawn with replacement).
    batch_size : int
        Minibatch size.
    lr : float
        Peak Adam learning rate.
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


def train_demo_model(
    n_train: int = TRAINING["n_train"],
    steps: int = TRAINING["steps"],
    batch_size: int = TRAINING["batch_size"],
    lr: float = TRAINING["lr"],
    seed: int = TRAINING["seed"],
) -> nn.Sequential:
    """Train the demo's CNN from scratch with the shipped recipe (defaults: :data:`TRAINING`).

    Deterministic on a given machine when run with one thread (see
    :func:`torch_threads`); on another CPU the weights may differ in the last
    bits, the accuracy does not.
    """
    images, labels, _ = make_shapes(n_train, torch.Generator().manual_seed(TRAIN_DATA_SEED))
    return train_cnn(images, labels, steps=steps, batch_size=batch_size, lr=lr, seed=seed)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` whose predicted class is ``labels``."""
    with torch.no_grad():
        return float((model(images).argmax(dim=1) == labels).float().mean())


# --------------------------------------------------------------------------- shipped weights


def save_demo_model(model: nn.Module, path: Union[str, Path], info: Optional[Dict[str, object]] = None) -> Path:
    """Write ``model``'s state_dict (float32, contiguous) and plain-data ``info`` to ``path``.

    The file holds only tensors, strings and numbers, so
    ``torch.load(path, weights_only=True)`` reads it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": _FORMAT, "torch": str(torch.__version__), "python": platform.python_version(), **(info or {})}
    torch.save({"format": _FORMAT, "state_dict": state, "info": meta}, path)
    return path


class DemoWeightsError(ValueError):
    """A weights file that is not the demo CNN's: unreadable, not written by :func:`save_demo_model`, or for
    another network. The message starts with the file's name in quotes."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"'{path}' {reason}")
        self.path = path


def load_demo_model(path: Union[str, Path, None] = None) -> nn.Sequential:
    """The shipped (or a given) demo CNN, in eval mode, loaded with ``weights_only=True``.

    Parameters
    ----------
    path : str or path-like, optional
        A file written by :func:`save_demo_model`; default :data:`WEIGHTS_PATH`.

    Raises
    ------
    FileNotFoundError
        If the file is missing (e.g. package data left out of an install).
    DemoWeightsError
        If the file cannot be read with ``weights_only=True``, was not written by :func:`save_demo_model`,
        or its tensors do not fit :func:`make_cnn`.
    """
    path = Path(WEIGHTS_PATH if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(
            f"demo weights '{path}' not found; reinstall noisegrad or run 'python scripts/train_demo_model.py'"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports a bad file in many ways, some advising an unsafe weights_only=False
        raise DemoWeightsError(path, f"is not a torch.save file of tensors: torch.load(weights_only=True) fails "
                                     f"with {type(err).__name__}") from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise DemoWeightsError(path, f"is not a noisegrad demo-CNN weights file (expected format {_FORMAT!r}, "
                                     "as written by scripts/train_demo_model.py)")
    model = make_cnn()
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, AttributeError, RuntimeError) as err:
        raise DemoWeightsError(path, f"does not fit the demo CNN: {_first_line(err)}") from err
    return model.eval()


def _first_line(err: BaseException) -> str:
    """The informative line of an exception's message (load_state_dict's first line is only a header)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def demo_model_info(path: Union[str, Path, None] = None) -> Dict[str, object]:
    """The training information stored with the weights (recipe, accuracy, torch version)."""
    payload = torch.load(Path(WEIGHTS_PATH if path is None else path), map_location="cpu", weights_only=True)
    return dict(payload.get("info", {}))


# --------------------------------------------------------------------------- scoring


def mask_mass_fraction(attributions: Tensor, masks: Tensor, reduce: bool = True) -> Union[float, Tensor]:
    """Share of the attribution mass on the ground-truth mask.

    Parameters
    ----------
    attributions : Tensor
        ``(n, ...)`` attributions (signed or not; their absolute values are used).
    masks : Tensor
        Boolean masks shaped like ``attributions``.
    reduce : bool
        Average over the images (a float) or return one share per image (a float64 tensor).

    Returns
    -------
    float or Tensor
        ``sum(|attr| on mask) / sum(|attr|)`` per image; an image with no
        attribution at all counts as 0.

    Examples
    --------
    >>> a = torch.tensor([[3.0, -1.0, 0.0, 0.0]])
    >>> mask_mass_fraction(a, torch.tensor([[True, False, False, False]]))
    0.75
    """
    share = mask_share(attributions, masks)
    return float(share.mean()) if reduce else share


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)``, then restore the previous count (``None``: no change)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

"""Figures that never touch pyplot: an Agg canvas per figure, saving by file extension, pixels as arrays."""

import io
import os
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, FigureBase

__all__ = [
    "FORMATS", "NotebookFigure", "Plot", "new_figure", "figure_and_axes", "root_figure", "save_figure",
    "figure_to_array",
]

#: File formats ``save=`` writes, chosen by the file's extension.
FORMATS = ("png", "svg", "pdf")

PathLike = Union[str, "os.PathLike[str]"]


class NotebookFigure(Figure):
    """A headless figure that a notebook draws inline, with no ``%matplotlib`` set-up and no pyplot.

    Jupyter, JupyterLab and VS Code ask the value of a cell (and anything
    given to ``display``) for ``_repr_png_``; outside a notebook nothing
    calls it, so the figure stays a plain headless Agg figure.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", facecolor="white")
        return buffer.getvalue()


class Plot(tuple):
    """``(fig, ax)`` as every ``plot_*`` returns it: unpacks as a tuple, and a notebook draws it as its figure.

    Examples
    --------
    >>> fig, ax = Plot(new_figure((2, 2)), None)
    >>> isinstance(fig, NotebookFigure)
    True
    """

    def __new__(cls, fig: FigureBase, ax: Any) -> "Plot":
        return super().__new__(cls, (fig, ax))

    @property
    def fig(self) -> FigureBase:
        return self[0]

    @property
    def ax(self) -> Any:
        return self[1]

    def _repr_png_(self) -> Optional[bytes]:
        figure = root_figure(self[0])
        # A figure of the user's own (``ax=`` from pyplot) is shown by their backend already: no second copy.
        return figure._repr_png_() if isinstance(figure, NotebookFigure) else None


def new_figure(figsize: Tuple[float, float], dpi: float = 100, layout: Optional[str] = "constrained") -> Figure:
    """A figure with its own Agg canvas and constrained layout (labels are never clipped), drawn inline in notebooks;
    ``layout=None`` for a figure that places everything itself."""
    fig = NotebookFigure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_and_axes(ax: Optional[Axes], figsize: Tuple[float, float]) -> Tuple[FigureBase, Axes]:
    """``ax`` and its figure, or a new figure of ``figsize`` inches with one axes."""
    if ax is None:
        fig = new_figure(figsize)
        return fig, fig.add_subplot()
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax.figure, ax


def root_figure(fig: FigureBase) -> Figure:
    """The top-level figure of a figure or subfigure (the one that is drawn and saved)."""
    return fig.figure  # a Figure's .figure is itself, a SubFigure's is its root


def save_figure(fig: FigureBase, path: Optional[PathLike], dpi: Optional[float] = None) -> Optional[Path]:
    """Write ``fig`` to ``path`` as PNG, SVG or PDF (by extension); nothing if ``path`` is None.

    Examples
    --------
    >>> fig = new_figure((2, 2))
    >>> save_figure(fig, "figure.jpeg")
    Traceback (most recent call last):
    ...
    ValueError: save must be a path ending in one of ('png', 'svg', 'pdf'), got 'figure.jpeg'
    """
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save must be a file path (str or os.PathLike) or None, got {type(path).__name__}")
    target = Path(path)
    if target.suffix.lower().lstrip(".") not in FORMATS:
        raise ValueError(f"save must be a path ending in one of {FORMATS}, got {str(path)!r}")
    figure = root_figure(fig)
    figure.savefig(target, dpi=dpi if dpi is not None else "figure", facecolor="white")
    return target


def figure_to_array(fig: FigureBase) -> np.ndarray:
    """Render ``fig`` (headless) and return its pixels as an ``(H, W, 3)`` uint8 RGB array.

    Handy for tests, for ``SummaryWriter.add_image(..., dataformats="HWC")`` or
    for composing figures yourself.

    Examples
    --------
    >>> fig = new_figure((2, 1), dpi=50)
    >>> figure_to_array(fig).shape
    (50, 100, 3)
    """
    figure = root_figure(fig)
    if not isinstance(figure.canvas, FigureCanvasAgg):  # e.g. a bare Figure(): give it a headless canvas
        FigureCanvasAgg(figure)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()

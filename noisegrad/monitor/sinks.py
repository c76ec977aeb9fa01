"""Where a monitor's records go: a folder of PNGs and JSON lines, or a TensorBoard ``SummaryWriter``.

A sink is any object with ``scalars(step, values)``, ``figure(step, name,
fig)``, ``histogram(step, name, values)`` and ``flush()``; the monitor calls
them once per snapshot, in that order.
"""

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
from torch import Tensor

__all__ = ["FolderSink", "TensorBoardSink", "METRICS_FILE", "HISTOGRAMS_FILE", "HISTOGRAM_BINS"]

#: The folder sink's files: one JSON object per line, per snapshot.
METRICS_FILE = "metrics.jsonl"
HISTOGRAMS_FILE = "histograms.jsonl"
#: Bins of the folder sink's histograms (TensorBoard chooses its own).
HISTOGRAM_BINS = 30


def _json_value(value: Any) -> Any:
    """A JSON-able number: NaN and infinities become null (pandas reads them back as NaN)."""
    if value is None:
        return None
    value = float(value) if not isinstance(value, int) else value
    return value if isinstance(value, int) or math.isfinite(value) else None


def _file_name(name: str) -> str:
    """``name`` as one file name: every run of characters other than letters, digits, ``.``, ``-`` and ``_`` (path
    separators, spaces) becomes ``_``, so that ``probe/saliency`` or ``../x`` stays inside the folder."""
    return re.sub(r"[^\w.-]+", "_", name)


class FolderSink:
    """Records in a folder: ``metrics.jsonl`` (scalars), ``histograms.jsonl`` and ``maps/<name>_<step>.png``
    (``name`` with anything but letters, digits, ``.``, ``-`` and ``_`` made ``_``: ``probe/saliency`` is
    ``probe_saliency``).

    Files are appended to (a resumed run continues them; a new run wants a
    new folder) and closed after every write, so they can be read while
    training runs::

        rows = [json.loads(line) for line in open("monitor/metrics.jsonl")]   # or, with pandas installed
        frame = pandas.read_json("monitor/metrics.jsonl", lines=True)          # (noisegrad does not need it)

    Examples
    --------
    >>> import tempfile, torch
    >>> folder = FolderSink(tempfile.mkdtemp())
    >>> folder.scalars(5, {"gini": 0.25, "spearman_first": float("nan")})
    >>> folder.histogram(5, "values", torch.tensor([0.0, 1.0]))
    >>> (folder.path / "metrics.jsonl").read_text()
    '{"step": 5, "gini": 0.25, "spearman_first": null}\\n'
    """

    def __init__(self, path: Union[str, Path]) -> None:
        if not isinstance(path, (str, Path)):
            raise TypeError(f"log_dir must be a str or a pathlib.Path, got {type(path).__name__}")
        self.path = Path(path)
        (self.path / "maps").mkdir(parents=True, exist_ok=True)

    def _append(self, name: str, row: Dict[str, Any]) -> None:
        with open(self.path / name, "a", encoding="utf-8") as file:
            file.write(json.dumps(row) + "\n")

    def scalars(self, step: int, values: Dict[str, Optional[float]]) -> None:
        self._append(METRICS_FILE, {"step": step, **{k: _json_value(v) for k, v in values.items()}})

    def figure(self, step: int, name: str, fig: Any) -> None:
        from noisegrad.viz._canvas import save_figure

        save_figure(fig, self.path / "maps" / f"{_file_name(name)}_{step:08d}.png")

    def histogram(self, step: int, name: str, values: Tensor) -> None:
        data = values.detach().double().cpu().numpy().ravel()
        data = data[np.isfinite(data)]
        counts, edges = np.histogram(data, bins=HISTOGRAM_BINS) if data.size else (np.zeros(0), np.zeros(0))
        self._append(HISTOGRAMS_FILE, {"step": step, "name": name, "edges": edges.tolist(),
                                       "counts": counts.astype(int).tolist()})

    def flush(self) -> None:
        pass  # every write is closed already

    def __repr__(self) -> str:
        return f"FolderSink({str(self.path)!r})"


class TensorBoardSink:
    """Records through a TensorBoard ``SummaryWriter`` (or anything with its ``add_scalar``, ``add_image`` and
    ``add_histogram``): scalars and histograms under ``<tag>/<name>``, figures as images.

    noisegrad never imports TensorBoard: ``pip install noisegrad[tensorboard]``
    installs it for ``torch.utils.tensorboard.SummaryWriter``. Figures are
    rendered to pixels here (``add_image``), so matplotlib's pyplot, which
    ``add_figure`` would load, stays out.
    """

    def __init__(self, writer: Any, tag: str = "attribution") -> None:
        needed = ("add_scalar", "add_image", "add_histogram")
        missing = [name for name in needed if not callable(getattr(writer, name, None))]
        if missing:
            raise TypeError(f"writer must be a TensorBoard SummaryWriter (with add_scalar, add_image and "
                            f"add_histogram); {type(writer).__name__} has no {', '.join(missing)}")
        self.writer, self.tag = writer, tag

    def scalars(self, step: int, values: Dict[str, Optional[float]]) -> None:
        for name, value in values.items():
            if _json_value(value) is not None:  # a missing value is not a point to plot
                self.writer.add_scalar(f"{self.tag}/{name}", float(value), step)

    def figure(self, step: int, name: str, fig: Any) -> None:
        from noisegrad.viz import figure_to_array

        self.writer.add_image(f"{self.tag}/{name}", figure_to_array(fig), step, dataformats="HWC")

    def histogram(self, step: int, name: str, values: Tensor) -> None:
        data = values.detach().double().cpu().flatten()
        data = data[data.isfinite()]
        if data.numel():  # TensorBoard refuses an empty histogram
            self.writer.add_histogram(f"{self.tag}/{name}", data.numpy(), step)

    def flush(self) -> None:
        flush = getattr(self.writer, "flush", None)
        if callable(flush):
            flush()

    def __repr__(self) -> str:
        return f"TensorBoardSink({type(self.writer).__name__}, tag={self.tag!r})"

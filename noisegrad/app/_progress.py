"""A small text progress bar on stderr for the command line (no dependency).

Drawn only when the stream is a terminal (and not ``quiet``), redrawn at most
ten times a second, and erased when the work is done so the table printed
afterwards stays clean.

Examples
--------
>>> import io
>>> with Progress(3, "work", stream=io.StringIO()) as bar:   # not a TTY: draws nothing
...     for _ in range(3):
...         bar.advance(note="step")
>>> bar.done
3
"""

import sys
import time
from typing import Optional, TextIO

__all__ = ["Progress", "render_bar"]


def render_bar(done: float, total: float, label: str, note: str = "", elapsed: float = 0.0, width: int = 24) -> str:
    """One line of the bar, e.g. ``"attributing [#######.....] 3/10  4.2 s  SmoothGrad"``.

    Examples
    --------
    >>> render_bar(1, 4, "work", width=8)
    'work [##......] 1/4  0.0 s'
    """
    fraction = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    filled = int(round(fraction * width))
    line = f"{label} [{'#' * filled}{'.' * (width - filled)}] {done:g}/{total:g}  {elapsed:.1f} s"
    return f"{line}  {note}" if note else line


class Progress:
    """A progress bar for ``total`` units of work.

    Parameters
    ----------
    total : float
        Units of work (steps, samples, gradient evaluations, ...).
    label : str
        Shown before the bar.
    stream : text stream, optional
        Default ``sys.stderr``.
    enabled : bool, optional
        Force drawing on or off; default: only when ``stream`` is a TTY.
    """

    def __init__(self, total: float, label: str, stream: Optional[TextIO] = None, enabled: Optional[bool] = None):
        self.total, self.label = total, label
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.done: float = 0
        self._start = time.perf_counter()
        self._last_draw = -1.0
        self._width = 0

    def advance(self, amount: float = 1, note: str = "") -> None:
        """Record ``amount`` more units done and redraw (throttled)."""
        self.done += amount
        self.draw(note, force=self.done >= self.total)

    def draw(self, note: str = "", force: bool = False) -> None:
        """Redraw the bar now (at most every 0.1 s unless ``force``)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        line = render_bar(self.done, self.total, self.label, note, now - self._start)
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """Erase the bar."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> "Progress":
        self.draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

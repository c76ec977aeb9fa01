"""Progress bars for long work (tqdm): rate and time left, drawn on a terminal, silent where nobody watches.

Examples
--------
>>> import io
>>> stream = io.StringIO()
>>> with progress_bar(3, "work", unit="step", stream=stream) as bar:   # not a terminal: draws nothing
...     bar.update(3)
>>> stream.getvalue()
''
"""

import sys
from typing import Any, Optional, TextIO

__all__ = ["progress_bar", "check_show_progress"]


def progress_bar(total: Optional[float], desc: str, unit: str = "it", enabled: Optional[bool] = None,
                 stream: Optional[TextIO] = None, initial: float = 0) -> Any:
    """A tqdm bar on ``stream`` (default stderr); ``enabled=None`` draws it only when the stream is a terminal.

    The bar is erased when closed (``leave=False``), so a table printed afterwards starts on a clean line.
    """
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    if enabled is None:
        isatty = getattr(stream, "isatty", None)
        enabled = bool(isatty and isatty())
    return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not enabled, leave=False,
                dynamic_ncols=True, initial=initial, mininterval=0.1)


def check_show_progress(value: object) -> None:
    """``show_progress`` must be a bool (before any work)."""
    if not isinstance(value, bool):
        raise TypeError(f"show_progress must be True or False, got {value!r}")

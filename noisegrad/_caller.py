"""Warnings that point at the user's line, however deep inside noisegrad they are raised."""

import os
import sys

__all__ = ["user_stacklevel"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` that names the first frame outside noisegrad.

    Called from the function that warns. Whether the user called
    ``NoiseTunnel.attribute`` or a front-end that calls it, the warning
    names their line, not one of ours.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level

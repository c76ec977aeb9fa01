"""Errors the command line reports as one line and exit status 2 (no traceback)."""

__all__ = ["ExplainError"]


class ExplainError(ValueError):
    """A bad argument or file given to ``explain``; the message names the option."""

"""Calling the wrapped method on a chunk: in the right grad mode, with its failures said in the user's terms."""

import contextlib
from typing import Any, Dict, Iterator

import torch

from noisegrad.plan import ChunkOutOfMemory

__all__ = ["call_wrapped", "chunk_failure_on_oom"]


@contextlib.contextmanager
def chunk_failure_on_oom() -> Iterator[None]:
    """Turn an out-of-memory error into :class:`ChunkOutOfMemory`: nothing of the chunk is merged yet, so it can be retried smaller."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        raise ChunkOutOfMemory(str(error)) from error


def call_wrapped(method: Any, inputs: Any, kwargs: Dict[str, Any]) -> Any:
    """``method.attribute(inputs, **kwargs)``, with no graph kept (gradient methods enable it themselves), as Captum."""
    with chunk_failure_on_oom(), torch.no_grad():
        return method.attribute(inputs, **kwargs)

"""The wrapped method's call: in the grad mode it needs, with its known failures explained."""

import contextlib
import functools
import operator
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import torch
from captum.attr import Attribution, GradientAttribution
from torch import Tensor, nn

from noisegrad._validate import accepted_keywords
from noisegrad.plan import ChunkOutOfMemory

__all__ = ["call_wrapped", "chunk_failure_on_oom"]


@contextlib.contextmanager
def chunk_failure_on_oom() -> Iterator[None]:
    """Turn an out-of-memory error into :class:`ChunkOutOfMemory`: nothing of the chunk is merged yet, so it can be retried smaller."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        raise ChunkOutOfMemory(str(error)) from error


def call_wrapped(method: Attribution, inputs: Any, kwargs: Dict[str, Any],
                 attribute: Optional[Callable[..., Any]] = None) -> Any:
    """``method.attribute(inputs, **kwargs)``, raising errors that name the argument at fault.

    ``attribute``: a function to call instead of ``method.attribute`` that
    evaluates ``method.forward_func`` (IntegratedGradients for several outputs).

    A gradient method runs with gradients enabled, whatever the caller's grad
    mode: Captum's enable them themselves, a user-written one may not. Any
    other method runs under ``torch.no_grad()``, so it builds no graph.

    Failures whose cause only the model's output shows are re-raised from
    the original error: a ``TypeError`` if the model returned something other
    than a tensor to a method that selects ``target`` from it, a
    ``ValueError`` if ``target`` does not fit the output. A
    ``torch.OutOfMemoryError`` becomes :class:`ChunkOutOfMemory`.
    """
    grad_mode = torch.enable_grad() if isinstance(method, GradientAttribution) else torch.no_grad()
    last = _LastOutput()
    try:
        with chunk_failure_on_oom(), grad_mode, _watched(method, last):
            return (attribute or method.attribute)(inputs, **kwargs)
    except ChunkOutOfMemory:
        raise
    except Exception as error:
        explained = _explained(error, method, kwargs.get("target"), last)
        if explained is None:
            raise
        raise explained from error


class _LastOutput:
    """The type and shape of what the model returned last; ``None`` while a forward runs.

    Only the description is kept: holding the output would keep it (and its graph) alive.
    """

    def __init__(self) -> None:
        self.kind: Optional[type] = None
        self.shape: Optional[torch.Size] = None
        self.description = ""

    def clear(self, *_: Any) -> None:
        self.kind, self.shape = None, None

    def record(self, output: Any) -> None:
        self.kind = type(output)
        self.shape = output.shape if isinstance(output, Tensor) else None
        if isinstance(output, dict):
            self.description = f"{self.kind.__name__} with keys {list(output)[:8]}"
        elif isinstance(output, (tuple, list)):
            kinds = ", ".join(type(item).__name__ for item in output[:8])
            self.description = f"{self.kind.__name__} of {len(output)} ({kinds})"
        else:
            self.description = self.kind.__name__


@contextlib.contextmanager
def _watched(method: Attribution, last: _LastOutput) -> Iterator[None]:
    """Record every output of the method's model in ``last``: by hooks on a module, else by a wrapper."""
    forward_func = method.forward_func
    if isinstance(forward_func, nn.Module) and not isinstance(forward_func, torch.jit.ScriptModule):
        # Methods such as DeepLift call their model directly, not through forward_func.
        handles = (
            forward_func.register_forward_pre_hook(last.clear),
            forward_func.register_forward_hook(lambda _module, _args, output: last.record(output)),
        )
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        return

    @functools.wraps(forward_func, updated=())  # Captum reads the signature
    def watched(*args: Any, **kwargs: Any) -> Any:
        last.clear()
        output = forward_func(*args, **kwargs)
        last.record(output)
        return output

    method.forward_func = watched  # on the estimator's own shallow copy of the method, never the user's
    try:
        yield
    finally:
        method.forward_func = forward_func


def _explained(error: Exception, method: Attribution, target: Any, last: _LastOutput) -> Optional[Exception]:
    """An error naming the argument at fault, if the last output explains ``error``; else None."""
    if last.kind is None:  # the model itself failed, or was never reached
        return None
    accepted = accepted_keywords(method)
    selects_target = accepted is None or "target" in accepted  # neuron and activation methods do not
    if not issubclass(last.kind, Tensor) and selects_target:
        return TypeError(
            f"the model returned a {last.description}; {type(method).__name__} needs a tensor with one row "
            "per example to select target from: wrap the model so that it returns that tensor, e.g. "
            "lambda *args: model(*args)[0] or lambda *args: model(*args)['logits']"
        )
    if last.shape is None or target is None or not isinstance(error, (IndexError, RuntimeError, AssertionError)):
        return None
    problem = _target_problem(target, tuple(last.shape[1:]))
    return ValueError(problem) if problem is not None else None


def _target_problem(target: Any, per_example: Sequence[int]) -> Optional[str]:
    """Why ``target`` cannot select from outputs of shape ``per_example`` (as Captum selects), or None."""
    if isinstance(target, Tensor):
        target = target.item() if target.numel() == 1 else target.tolist()
    if not isinstance(target, list):
        return _index_problem(target, per_example)
    if all(isinstance(entry, tuple) for entry in target):
        return next(filter(None, (_index_problem(entry, per_example) for entry in target)), None)
    if len(per_example) != 1:
        return (
            "a target per example needs a model output of shape (batch, outputs), but the model returns shape "
            f"{tuple(per_example)} per example"
        )
    beyond = [entry for entry in target if entry >= per_example[0]]
    if beyond:
        return (
            f"target holds {beyond[0]}, out of range: the model returns {per_example[0]} outputs per example, "
            f"so every entry must be in [0, {per_example[0] - 1}]"
        )
    return None


def _index_problem(target: Any, per_example: Sequence[int]) -> Optional[str]:
    """Why an int or tuple ``target`` cannot index an output of shape ``per_example``, or None."""
    index = target if isinstance(target, tuple) else (target,)
    if len(index) > len(per_example):
        if not per_example:
            return (
                f"target={target!r} selects an output, but the model returns a single value per example: "
                "give target=None"
            )
        return (
            f"target={target!r} has {len(index)} indices, but the model's output per example has shape "
            f"{tuple(per_example)}"
        )
    for entry, size in zip(index, per_example):
        entry = entry if isinstance(entry, slice) else operator.index(entry)
        if isinstance(entry, int) and not -size <= entry < size:
            if not isinstance(target, tuple):
                return (
                    f"target={entry} is out of range: the model returns {size} outputs per example, "
                    f"so target must be in [{-size}, {size - 1}]"
                )
            return (
                f"target={target!r} is out of range: its index {entry} selects from {size} entries "
                f"(the model's output per example has shape {tuple(per_example)})"
            )
    return None

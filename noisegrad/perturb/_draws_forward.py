"""One forward of several weight draws: each draw's rows through the model with that draw's parameters.

The rows of a forward are ``repeats`` blocks (a path method's steps, a
perturbation method's ablations) of the chunk's noisy copies, and within a
block the copies of one weight draw are contiguous (sample-major rows, and
the samples of a draw are consecutive). So the rows are a
``(repeats, draws, rows per draw)`` array: ``torch.func.vmap`` maps the
model over the draws' axis with stacked parameters, or, where vmap cannot
run the model, a loop calls it once per draw. Both go through
``torch.func.functional_call`` on the private copy of the model, never on
the user's module.
"""

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

__all__ = ["DrawsForward", "VMAP_MOST_ROWS", "vmap_refusal"]

#: On a CPU, vmap beats a loop over the draws only while each draw has few rows in a forward: its convolutions with a
#: weight per draw become grouped convolutions, slower than the plain ones from about 10 rows per draw on; its linear
#: layers become batched matrix products, faster up to about 128 rows (benchmarks/WEIGHTS.md, "vmap or a loop").
VMAP_MOST_ROWS = {"convolution": 8, "linear": 128}


def vmap_refusal(model: nn.Module) -> Optional[str]:
    """Why vmap over weight draws cannot run ``model`` with gradients, or None.

    Under vmap, ``nn.MultiheadAttention`` (and the Transformer layers built on
    it) take PyTorch's fused inference kernel, which has no backward: the
    error would only surface in the backward pass, outside the forward's
    fallback to the loop.
    """
    attention = next((name or type(m).__name__ for name, m in model.named_modules()
                      if isinstance(m, nn.MultiheadAttention)), None)
    return None if attention is None else f"nn.MultiheadAttention {attention!r} (its fused kernel has no backward)"


class _Forward(nn.Module):
    """The model copy as a submodule (so functional_call can swap its parameters) around the user's forward function."""

    def __init__(self, model: nn.Module, call: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        # not registered as a submodule even when it is the model itself: functional_call would swap its tensors
        # twice (once per name), and restore the second swap's batched tensors
        self.__dict__["call"] = call

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)


class DrawsForward:
    """Evaluate a forward function whose rows belong to several weight draws.

    Parameters
    ----------
    model : nn.Module
        The private copy of the user's model that ``call`` runs.
    call : callable
        The forward function, pointed at ``model``.
    batched : "auto", True or False
        True: ``torch.func.vmap``, an error if it cannot run the model.
        False: a loop over the draws. ``"auto"``: vmap where it is measured
        to be faster (:data:`VMAP_MOST_ROWS` rows per draw on a CPU, always
        on other devices), the loop otherwise and, after vmap's first failure
        (a model or operator it cannot batch), for the rest of the call; the
        loop always for models with attention (:func:`vmap_refusal`) or with
        hooks of the user's (they would see vmap's batched tensors).
    """

    def __init__(self, model: nn.Module, call: Callable[..., Any], batched: Any = "auto") -> None:
        self.holder = _Forward(model, call)
        self.batched = batched
        self.vmap_error: Optional[BaseException] = None
        has_convolution = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
        self.most_rows = VMAP_MOST_ROWS["convolution" if has_convolution else "linear"]
        self.loop_only = vmap_refusal(model) is not None or any(
            m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
            for m in model.modules())

    def batches(self, rows_per_draw: int, device: torch.device) -> bool:
        """Whether a forward of ``rows_per_draw`` rows per weight draw runs under vmap (else a loop over draws)."""
        if self.batched is True or self.batched is False:
            return self.batched
        return self.vmap_error is None and not self.loop_only and (device.type != "cpu"
                                                                   or rows_per_draw <= self.most_rows)

    def __call__(self, draws: Dict[str, Tensor], copies: int, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """The model's output on ``args``, whose rows are ``repeats`` blocks of ``copies`` rows.

        ``draws`` maps each perturbed parameter's name (in the model) to its
        values stacked along a new first dimension, one per weight draw.
        """
        first = next((a for a in args if isinstance(a, Tensor) and a.dim() > 0), None)
        count = next(iter(draws.values())).shape[0]
        if first is None or first.shape[0] % copies or copies % count:
            rows = None if first is None else first.shape[0]
            raise RuntimeError(
                f"a forward of {rows} rows for a chunk of {copies} noisy copies of {count} weight draws: the rows "
                "cannot be told apart by weight draw (the method's forwards must hold whole blocks of the copies)"
            )
        layout = (first.shape[0] // copies, count, copies // count)
        stacked = {f"model.{name}": values for name, values in draws.items()}
        if self.batches(layout[0] * layout[2], first.device):
            try:
                return self._mapped(stacked, layout, args, kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as error:  # noqa: BLE001  (whatever vmap cannot batch, the loop below can run)
                if self.batched is True:
                    raise RuntimeError(
                        f"weight_noise(batched=True): torch.func.vmap cannot run the model ({type(error).__name__}: "
                        f"{error}); batched=\"auto\" falls back to a loop over the weight draws"
                    ) from error
                self.vmap_error = error
        return self._looped(stacked, layout, args, kwargs)

    def _mapped(self, stacked: Dict[str, Tensor], layout: Tuple[int, int, int], args: Tuple[Any, ...],
                kwargs: Dict[str, Any]) -> Tensor:
        repeats, count, per_draw = layout
        rows = repeats * count * per_draw
        batched = [isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == rows for a in args]
        split = [a.reshape(layout + tuple(a.shape[1:])) if b else a for a, b in zip(args, batched)]

        def one_draw(parameters: Dict[str, Tensor], *draw_args: Any) -> Tensor:
            flat = tuple(a.reshape((repeats * per_draw,) + tuple(a.shape[2:])) if b else a
                         for a, b in zip(draw_args, batched))
            return self._checked(functional_call(self.holder, parameters, flat, kwargs), repeats, per_draw)

        dims = (0,) + tuple(1 if b else None for b in batched)
        out = vmap(one_draw, in_dims=dims, out_dims=1, randomness="different")(stacked, *split)
        return out.reshape((rows,) + tuple(out.shape[3:]))

    def _looped(self, stacked: Dict[str, Tensor], layout: Tuple[int, int, int], args: Tuple[Any, ...],
                kwargs: Dict[str, Any]) -> Tensor:
        repeats, count, per_draw = layout
        rows = repeats * count * per_draw
        batched = [isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == rows for a in args]
        outputs = []
        for draw in range(count):
            parameters = {name: values[draw] for name, values in stacked.items()}
            draw_args = tuple(
                a.reshape(layout + tuple(a.shape[1:]))[:, draw].reshape((repeats * per_draw,) + tuple(a.shape[1:]))
                if b else a
                for a, b in zip(args, batched)
            )
            output = functional_call(self.holder, parameters, draw_args, kwargs)
            outputs.append(self._checked(output, repeats, per_draw))
        out = torch.stack(outputs, dim=1)
        return out.reshape((rows,) + tuple(out.shape[3:]))

    @staticmethod
    def _checked(output: Any, repeats: int, per_draw: int) -> Tensor:
        """The output of one draw as ``(repeats, rows per draw, ...)``, or an error saying why it cannot be."""
        if not isinstance(output, Tensor) or output.dim() == 0 or output.shape[0] != repeats * per_draw:
            kind = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
            raise TypeError(
                f"with weight_noise the model must return one tensor with a row per input row, got {kind} for "
                f"{repeats * per_draw} rows; wrap the model so that it does, e.g. lambda *args: model(*args)[0]"
            )
        return output.reshape((repeats, per_draw) + tuple(output.shape[1:]))

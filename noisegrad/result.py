"""What a call with standard errors returns: the smoothed attribution, its error, and how far to trust it.

A :class:`SmoothedAttribution` is a ``torch.Tensor`` (its values are the
attributions) that carries the rest of the call's results as named fields, so
code written for the plain tensor keeps working when ``return_stderr=True`` is
added. It plots itself through :mod:`noisegrad.viz` (imported on first use)
and saves to a file that is read back bit for bit without unpickling.
"""

import copy
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["SmoothedAttribution"]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]
#: What ``attributions`` may be: one tensor, a tuple (one per input), or a list (one entry per layer).
Attributions = Union[Tensor, Tuple[Tensor, ...], List[Any]]

# The fields in the order of the positional arguments (as the dataclass had them); save/load writes each one.
FIELDS = ("attributions", "stderr", "relative_stderr", "nt_samples", "delta", "dof", "converged", "delta_stderr",
          "outputs", "channel_reducer")


class SmoothedAttribution(Tensor):
    """A smoothed attribution with its Monte-Carlo standard error; a tensor of the attributions.

    With one attribution tensor, the result *is* that tensor wherever a
    tensor is expected: indexing, arithmetic and comparisons, ``.shape``,
    ``.dtype``, ``.device``, ``.numpy()``, ``.detach()``, every tensor method,
    ``np.asarray(result)``, ``torch.as_tensor(result)`` and torch functions
    (``torch.sum``, ``torch.nn.functional.relu``, ``torch.allclose``,
    ``torch.testing.assert_close``), also inside tuples and lists passed to
    them (``torch.cat``). What these return is a plain tensor, computed from
    :attr:`attributions` (``__torch_function__`` unwraps the result). So code
    written for the tensor keeps working when ``return_stderr=True`` is added.
    ``torch.as_tensor`` is the exception torch allows no hook for: it returns
    its argument when it is already a tensor, so ``torch.as_tensor(result)`` is
    the result itself; :attr:`attributions` is the plain tensor.

    Attributions that are a tuple (several inputs) or a list (a list of
    layers) are not one tensor: every tensor operation on the result then
    raises ``TypeError`` naming :attr:`attributions`; take one with
    ``result.attributions[i]``. ``isinstance(result, torch.Tensor)`` is true in
    both cases.

    Iterating goes over the examples, as for a tensor, unless the result
    carries a convergence delta: then ``attr, delta = result`` (code written
    for Captum's pair) would silently unpack two examples, so it raises
    ``TypeError`` and points at :meth:`as_captum`.

    Attributes
    ----------
    attributions : Tensor, tuple of Tensor, or list
        As ``NoiseTunnel.attribute`` returns them (read-only: the result's own
        values are these). With ``outputs=[...]`` the last dimension indexes
        the K outputs; with ``channel_reducer=`` images are ``(batch, H, W)``.
    stderr : Tensor, tuple of Tensor, or list
        The standard error of every element, same shapes; None for a tensor
        whose channels ``channel_reducer`` combined (the channels'
        covariance, which it would need, is not kept).
    relative_stderr : Tensor
        Per example, ``‖stderr‖ / ‖attributions‖`` (all tensors together), shape ``(batch,)``;
        ``(batch, K)`` with ``outputs=``, one per output. Measured before any channel reduction.
    nt_samples : int or Tensor
        Noisy samples used (per example in ``nt_samples="auto"`` mode).
    delta : Tensor, optional
        The averaged convergence delta per example, if it was asked for.
    dof : int or Tensor
        Degrees of freedom of the standard error (per example with
        ``nt_samples="auto"``): ``n − 1`` for i.i.d. SmoothGrad's textbook
        error, ``groups − 1`` for the jackknife (7 with 8 groups, 3 with 4
        QMC / LHS replicates). :meth:`interval` uses them.
    converged : Tensor, optional
        With ``nt_samples="auto"``: per example, whether ``tol`` was reached
        (``False`` where ``max_samples`` stopped it first).
    delta_stderr : Tensor, optional
        The joint estimator's standard error of ``delta``.
    outputs : tuple of int, optional
        The output indices the last dimension holds (``outputs=``), in order.
    channel_reducer : str, optional
        How image channels were combined after smoothing (``channel_reducer=``).
    config : dict, optional
        A JSON-able description of the call (e.g. a configuration's
        ``to_dict()``); stored, saved and loaded as given.

    Examples
    --------
    >>> import torch
    >>> result = SmoothedAttribution(torch.ones(1, 2), torch.full((1, 2), 0.1), torch.tensor([0.1]), 16, dof=15)
    >>> low, high = result.interval(0.95)
    >>> [round(v, 3) for v in high[0].tolist()]
    [1.213, 1.213]
    >>> (result * 2 - torch.ones(1, 2)).tolist(), result.shape, type(torch.sum(result)).__name__
    ([[1.0, 1.0]], torch.Size([1, 2]), 'Tensor')
    >>> torch.testing.assert_close(result, torch.ones(1, 2))
    >>> result.stderr
    tensor([[0.1000, 0.1000]])
    """

    stderr: Attributions
    relative_stderr: Tensor
    nt_samples: Union[int, Tensor]
    delta: Optional[Tensor]
    dof: Union[int, Tensor, None]
    converged: Optional[Tensor]
    delta_stderr: Optional[Tensor]
    outputs: Optional[Tuple[int, ...]]
    channel_reducer: Optional[str]
    config: Optional[Dict[str, Any]]

    def __new__(cls, attributions: Attributions, *args: Any, **kwargs: Any) -> "SmoothedAttribution":
        # The tensor's own data aliases the attributions (or, for a tuple or list, is an empty meta tensor, so
        # that nothing reading it past __torch_function__ gets numbers); every operation reads the attributions.
        attributions = _plain(attributions)
        data = attributions if isinstance(attributions, Tensor) else torch.empty(0, device="meta")
        return Tensor._make_subclass(cls, data.detach(), False)

    def __init__(
        self,
        attributions: Attributions,
        stderr: Attributions,
        relative_stderr: Tensor,
        nt_samples: Union[int, Tensor],
        delta: Optional[Tensor] = None,
        dof: Union[int, Tensor, None] = None,
        converged: Optional[Tensor] = None,
        delta_stderr: Optional[Tensor] = None,
        outputs: Optional[Sequence[int]] = None,
        channel_reducer: Optional[str] = None,
        config: Optional[Dict[str, Any]] = None,
    ) -> None:
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict (e.g. a configuration's to_dict()) or None, "
                            f"got {type(config).__name__}")
        self._attributions = _plain(attributions)
        self.stderr, self.relative_stderr, self.nt_samples = stderr, relative_stderr, nt_samples
        self.delta, self.dof, self.converged, self.delta_stderr = delta, dof, converged, delta_stderr
        self.outputs = None if outputs is None else tuple(int(k) for k in outputs)
        self.channel_reducer = channel_reducer
        self.config = config

    @property
    def attributions(self) -> Attributions:
        """The smoothed attributions as the call returned them: a tensor, a tuple or a list."""
        return self._attributions

    # ------------------------------------------------------------------ the tensor it stands for

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: Sequence[Any] = (),
                           kwargs: Optional[Dict[str, Any]] = None) -> Any:
        """Run ``func`` on the attribution tensor: the result is a plain tensor, never a SmoothedAttribution."""
        try:
            args, kwargs = _plain(tuple(args)), _plain(kwargs or {})
        except TypeError as err:
            if getattr(func, "__name__", None) == "__get__":  # reading .shape, .dtype, ...: hasattr() says False
                raise AttributeError(str(err)) from None
            raise
        return func(*args, **kwargs)

    def _tensor(self) -> Tensor:
        """The attribution tensor itself (a plain ``torch.Tensor``); ``TypeError`` for a tuple or list."""
        if isinstance(self._attributions, Tensor):
            return self._attributions
        what = ("a tuple of {} attribution tensors (one per input)" if isinstance(self._attributions, tuple)
                else "a list of {} layers' attributions").format(len(self._attributions))
        raise TypeError(f"this SmoothedAttribution holds {what}, so it does not act as one tensor: "
                        "take one with result.attributions[i] (its error is result.stderr[i])")

    def __iter__(self) -> Any:
        if self.delta is not None:
            raise TypeError("this SmoothedAttribution carries a convergence delta, so `attr, delta = result` would "
                            "unpack two examples: use `attr, delta = result.as_captum()`, or iterate over "
                            "result.attributions for the examples")
        return iter(self._tensor())

    def __hash__(self) -> int:
        return id(self)

    def __format__(self, spec: str) -> str:
        return format(self._tensor(), spec) if spec else repr(self)

    def __deepcopy__(self, memo: Dict[int, Any]) -> "SmoothedAttribution":
        return type(self)(*copy.deepcopy(self._field_values(), memo), config=copy.deepcopy(self.config, memo))

    def __reduce_ex__(self, protocol: Any) -> Tuple[Any, ...]:
        # The whole result, not only the tensor (copy.copy and pickle would otherwise give the attributions alone).
        return _rebuild, (self._field_values(), self.config)

    def as_captum(self) -> Union[Attributions, Tuple[Attributions, Tensor]]:
        """What Captum's ``NoiseTunnel.attribute`` returns: ``(attributions, delta)``, or the attributions alone.

        The pair when the call asked for the convergence delta
        (``return_convergence_delta=True``), else the attributions, in their
        own form (a tensor, a tuple or a list). Plain tensors, not this object.

        Examples
        --------
        >>> import torch
        >>> result = SmoothedAttribution(torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2), 8, delta=torch.zeros(2))
        >>> attr, delta = result.as_captum()
        >>> type(attr).__name__, delta.shape
        ('Tensor', torch.Size([2]))
        """
        return self._attributions if self.delta is None else (self._attributions, self.delta)

    # ------------------------------------------------------------------ summaries and intervals

    def __repr__(self) -> str:
        """Shapes and the per-example summaries, not every element."""
        def describe(value: Any) -> str:
            if isinstance(value, Tensor):
                return f"Tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
            if isinstance(value, (tuple, list)):
                inner = ", ".join(describe(v) for v in value)
                return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
            return repr(value)

        def short(value: Any) -> str:
            if isinstance(value, Tensor) and value.numel() <= 8:
                return repr([round(v, 4) if isinstance(v, float) else v for v in value.tolist()])
            return describe(value)

        parts = [f"attributions={describe(self.attributions)}", f"stderr={describe(self.stderr)}",
                 f"relative_stderr={short(self.relative_stderr)}", f"nt_samples={short(self.nt_samples)}",
                 f"dof={short(self.dof)}"]
        parts += [f"{name}={short(getattr(self, name))}"
                  for name in ("delta", "converged", "delta_stderr", "outputs", "channel_reducer")
                  if getattr(self, name) is not None]
        if self.config is not None:
            parts.append(f"config={{{len(self.config)} keys}}")
        return f"SmoothedAttribution({', '.join(parts)})"

    def interval(self, level: float = 0.95) -> Tuple[TensorOrTuple, TensorOrTuple]:
        """A two-sided confidence interval per element: ``attribution ± t · stderr``.

        ``t`` is Student's t quantile at ``(1 + level) / 2`` with :attr:`dof`
        degrees of freedom (with few groups, 1.96 covers only 84–90 %).
        """
        if isinstance(self.attributions, list):
            raise ValueError("intervals of a list of layers: take each layer's attributions and stderr")
        if self.stderr is None or (isinstance(self.stderr, tuple) and any(e is None for e in self.stderr)):
            why = (f"channel_reducer={self.channel_reducer!r} combined the channels after smoothing"
                   if self.channel_reducer is not None else "the call did not estimate one")
            raise ValueError(f"no interval without a standard error: {why}")
        return interval(self.attributions, self.stderr, self.dof, level)

    # ------------------------------------------------------------------ files

    def save(self, path: Union[str, "os.PathLike[str]"], *, file_format: str = "auto") -> Path:
        """Write the result to ``path``, every field bit for bit, without pickle.

        Every tensor (attributions and standard errors, also as tuples or
        lists; the per-example summaries; ``delta``, ``converged``,
        ``delta_stderr``) is written with its dtype and bits, on the CPU;
        ints, floats and ``None`` fields and :attr:`config` as JSON.

        Parameters
        ----------
        path : str or path-like
        file_format : {"auto", "safetensors", "torch"}
            ``"safetensors"``: a safetensors file (needs the ``safetensors``
            package), the JSON in its metadata. ``"torch"``: ``torch.save`` of
            a dict of tensors and the JSON string, which
            ``torch.load(weights_only=True)`` reads. ``"auto"``: safetensors
            when it is installed, else torch.

        Returns
        -------
        Path
            The file written.

        Raises
        ------
        TypeError
            If :attr:`config` is not JSON-serialisable (JSON makes tuples lists).

        Examples
        --------
        >>> import tempfile, torch
        >>> result = SmoothedAttribution(torch.randn(2, 3, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64),
        ...                              torch.rand(2), 16, dof=15, config={"nt_type": "smoothgrad"})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     loaded = SmoothedAttribution.load(result.save(f"{folder}/result.safetensors"))
        >>> torch.equal(loaded.attributions, result.attributions), loaded.dof, loaded.config
        (True, 15, {'nt_type': 'smoothgrad'})
        """
        from noisegrad._result_io import save_result

        return save_result(path, dict(zip(FIELDS, self._field_values())), self.config, file_format)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], *, device: Union[str, torch.device] = "cpu",
             ) -> "SmoothedAttribution":
        """Read a result that :meth:`save` wrote, in either format; nothing in the file is unpickled.

        Parameters
        ----------
        path : str or path-like
        device : str or torch.device
            Where the tensors go (default: the CPU).

        Raises
        ------
        ValueError
            If the file is not a result that :meth:`save` wrote (a pickle, a
            ``torch.save`` file holding anything but tensors and strings, a
            different layout), before anything in it is run.
        ImportError
            If it is a safetensors file and ``safetensors`` is not installed.
        """
        from noisegrad._result_io import load_result

        fields, config = load_result(path, FIELDS, device)
        return cls(**fields, config=config)

    def _field_values(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, name) for name in FIELDS)

    # ------------------------------------------------------------------ figures

    def plot(
        self,
        *,
        kind: str = "auto",
        example: Optional[int] = None,
        index: Optional[int] = None,
        images: Optional[object] = None,
        feature_names: Optional[Sequence[str]] = None,
        tokens: Optional[Sequence[Any]] = None,
        level: Optional[float] = 0.95,
        output: Optional[int] = None,
        **options: Any,
    ) -> Any:
        """Draw the result with :mod:`noisegrad.viz`, as its shape suggests.

        * ``(batch, C, H, W)`` (or ``(batch, H, W, C)``) — ``"image"``: a grid
          of heat maps, one per example, titled with its relative standard
          error (:func:`~noisegrad.viz.plot_image_attr_grid`); one map with
          ``example=`` (:func:`~noisegrad.viz.plot_image_attr`).
        * ``(batch, features)`` — ``"features"``: bars with Student's t
          intervals at ``level`` (:func:`~noisegrad.viz.plot_feature_attr`),
          one panel per example, or one with ``example=``.
        * ``(batch, tokens, ...)`` with ``tokens=`` — ``"tokens"``: one example's
          tokens coloured by their score (:func:`noisegrad.token_scores`,
          summed over the hidden dimensions; :func:`~noisegrad.viz.plot_token_attr`).

        A ``(batch, A, B)`` result is images or tokens: pass ``kind=`` (or
        ``tokens=``), unless ``channel_reducer`` made it: then it is images.
        A result of several outputs (``outputs=``) draws one: ``output=``.

        Parameters
        ----------
        kind : {"auto", "image", "features", "tokens"}
        example : int, optional
            Draw this example only (needed for tokens when the batch has more than one).
        index : int, optional
            Which tensor of tuple (several inputs) or list (several layers) attributions to draw.
        images : Tensor or array, optional
            The batch of images, for ``method="blended_heat_map"`` and the others that draw on them.
        feature_names : sequence of str, optional
        tokens : sequence of str, or one such sequence per example
        level : float, optional
            The features' interval level; ``None`` for ± 1 standard error bars
            (also drawn when the result has no ``dof``; no bars where a
            standard error is NaN, as with one sample).
        output : int, optional
            With ``outputs=``: the output to draw, by its index in the model's
            outputs (one of :attr:`outputs`); may be left out when there is one.
        **options
            Passed on to the viz function (``method=``, ``sign=``, ``save=``, ``ax=`` for one panel, ...).

        Returns
        -------
        Plot
            ``(fig, ax)`` (``(fig, axes)`` for several panels), which a notebook draws inline.

        Examples
        --------
        >>> import torch
        >>> tabular = SmoothedAttribution(torch.randn(3, 4), torch.rand(3, 4) / 10, torch.rand(3), 16, dof=15)
        >>> fig, axes = tabular.plot(feature_names=["age", "income", "tenure", "debt"])
        >>> len(axes), axes[0].get_xlabel()
        (3, "attribution (bars: 95% interval, Student's t)")
        >>> images = SmoothedAttribution(torch.randn(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.rand(2), 16, dof=15)
        >>> fig, ax = images.plot(example=1, images=torch.rand(2, 3, 8, 8), method="blended_heat_map")
        >>> ax.get_title().startswith("example 1")
        True
        """
        from noisegrad._result_plot import plot_result

        attributions, stderr = self._part(index)
        relative = self.relative_stderr
        if self.outputs is not None:
            column = self._output_column(output)
            attributions = attributions[..., column]
            stderr = stderr[..., column] if isinstance(stderr, Tensor) else stderr
            relative = relative[..., column] if isinstance(relative, Tensor) and relative.dim() == 2 else relative
        elif output is not None:
            raise ValueError(f"output={output!r} chooses one of several outputs (outputs=); this result has one")
        if kind == "auto" and self.channel_reducer is not None and attributions.dim() == 3 and tokens is None:
            kind = "image"  # (batch, H, W): channels combined
        return plot_result(attributions, stderr, self.dof, relative, kind=kind, example=example,
                           images=images, feature_names=feature_names, tokens=tokens, level=level, options=options)

    def _output_column(self, output: Optional[int]) -> int:
        """Where ``output`` (a model output index) sits in the last dimension."""
        outputs = list(self.outputs or ())
        if output is None:
            if len(outputs) == 1:
                return 0
            raise ValueError(f"this result holds {len(outputs)} outputs (outputs={outputs}): choose one with "
                             "output=")
        if output not in outputs:
            raise ValueError(f"output={output!r} is not one of this result's outputs={outputs}")
        return outputs.index(output)

    def _part(self, index: Optional[int]) -> Tuple[Tensor, Any]:
        """The attribution tensor to draw and its standard error."""
        if isinstance(self._attributions, Tensor):
            if index not in (None, 0):
                raise ValueError(f"index chooses one of several attribution tensors; this result has one, "
                                 f"got index={index!r}")
            return self._attributions, self.stderr
        count = len(self._attributions)
        if index is None:
            raise ValueError(f"this result holds {count} attribution tensors: choose one with index=")
        if isinstance(index, bool) or not isinstance(index, int) or not -count <= index < count:
            raise ValueError(f"index must be an int in [0, {count}), got {index!r}")
        attributions, stderr = self._attributions[index], self.stderr[index]
        if not isinstance(attributions, Tensor):  # a layer of a list that itself has several tensors
            raise ValueError(f"attributions[{index}] is a {type(attributions).__name__}; draw its tensors with "
                             "noisegrad.viz directly")
        return attributions, stderr


# Tensor's own operators turn a TypeError into NotImplemented (so Python would say "unsupported operand"):
# these call the attribution tensor's operator directly, so a tuple or list result names .attributions instead.
_OPERATORS = (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift",
)


def _operator(name: str) -> Callable[..., Any]:
    def operator(self: SmoothedAttribution, other: Any) -> Any:
        return getattr(self._tensor(), name)(_plain(other))

    operator.__name__ = operator.__qualname__ = name
    return operator


for _name in [f"__{op}__" for op in _OPERATORS] + [f"__r{op}__" for op in _OPERATORS] + [
    "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
]:
    setattr(SmoothedAttribution, _name, _operator(_name))


def _rebuild(values: Tuple[Any, ...], config: Optional[Dict[str, Any]]) -> SmoothedAttribution:
    return SmoothedAttribution(*values, config=config)


# torch.save(result) (a checkpoint holding a result) reads back with torch.load's default weights_only=True: the only
# callable the file names is this constructor, which builds a result from tensors, numbers and a JSON-like dict.
torch.serialization.add_safe_globals([_rebuild])


def _plain(value: Any) -> Any:
    """``value`` with every SmoothedAttribution in it (also in tuples, lists, dicts) replaced by its tensor."""
    if isinstance(value, SmoothedAttribution):
        return value._tensor()
    if isinstance(value, (tuple, list)):
        items = [_plain(item) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # namedtuples too
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


# --------------------------------------------------------------------------- intervals


def interval(attributions: TensorOrTuple, stderr: TensorOrTuple, dof: Any, level: float) -> Tuple[Any, Any]:
    """``attributions ± t_{(1+level)/2, dof} · stderr`` in the form of ``attributions``."""
    from noisegrad.stats.student_t import interval_halfwidth_factor

    if dof is None:
        raise ValueError("an interval needs the degrees of freedom of the standard error (dof)")
    factor = interval_halfwidth_factor(level, dof)
    values, errors = _as_list(attributions), _as_list(stderr)
    lows, highs = [], []
    for value, error in zip(values, errors):
        scale = factor
        if isinstance(factor, Tensor) and factor.dim() == 1:  # one per example
            scale = factor.to(error.dtype).reshape((-1,) + (1,) * (error.dim() - 1))
        lows.append(value - scale * error)
        highs.append(value + scale * error)
    if isinstance(attributions, tuple):
        return tuple(lows), tuple(highs)
    return lows[0], highs[0]


def _as_list(value: TensorOrTuple) -> List[Tensor]:
    return list(value) if isinstance(value, tuple) else [value]

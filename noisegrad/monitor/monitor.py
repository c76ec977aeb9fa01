"""Watch what a model learns to look at while it trains: smoothed attributions of a fixed probe batch, every N steps.

The monitor never changes the training: each snapshot runs in eval mode with
autocast off, and leaves every module's mode, the parameters' ``requires_grad``
and ``.grad`` (the same tensors), the buffers and every global RNG as it found
them; its noise comes from its own seed, the same at every snapshot, so the
maps change only when the model does. Between snapshots ``step`` costs an
integer test.

A snapshot runs the model's forward (and backward) on the probe's noisy
copies: forward hooks and pre-hooks the user registered on it fire then too,
in eval mode, so a hook that collects activations or counts calls should tell
snapshots apart (e.g. by ``module.training``) or be removed while monitoring.
"""

import contextlib
import importlib
import inspect
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from captum.attr import Attribution, GradientAttribution, LayerAttribution
from torch import Tensor, nn

from noisegrad._caller import user_stacklevel
from noisegrad._state import modules_of
from noisegrad._validate import as_int, validate_inputs
from noisegrad.config import SmoothingConfig
from noisegrad.monitor._checks import (check_probe_dtype, check_probe_finite, check_required_arguments, check_same_model,
                                       checked_feature_names, checked_masks, checked_tokens, refuse_decided,
                                       smoothing_fields)
from noisegrad.monitor._untouched import local_method, training_untouched
from noisegrad.monitor.figures import figure_kind, snapshot_figure
from noisegrad.monitor.sinks import FolderSink, TensorBoardSink
from noisegrad.monitor.snapshot import Snapshot, summarise
from noisegrad.tunnel import NoiseTunnel

__all__ = ["AttributionMonitor", "MONITOR_DEFAULTS"]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]

#: The monitor's smoothing unless told otherwise: few samples (8 noisy copies of a probe of 8 examples cost about one
#: training step of a batch of 64 on the shapes CNN, so snapshots every 50 steps stay within 5 % of training:
#: benchmarks/MONITOR.md), antithetic pairs (the error of more i.i.d. samples; 4 groups for the standard error),
#: a fixed seed (the same noise at every snapshot, so that what changes between snapshots is the model), one chunk.
MONITOR_DEFAULTS = dict(nt_samples=8, sampler="antithetic", seed=0, nt_samples_batch_size=None)


class AttributionMonitor(contextlib.ContextDecorator):
    """Smoothed attributions of a fixed probe batch, computed every ``every`` training steps and recorded.

    Parameters
    ----------
    method : Captum Attribution, or an Attribution class
        What to smooth, e.g. ``Saliency(model)`` or ``IntegratedGradients``
        (a class needs ``model=``; a layer method, an instance). A model
        wrapped in ``DistributedDataParallel`` or ``DataParallel`` is run
        through its ``.module``, whose forward takes no part in collective
        communication: under DDP, call ``step`` on rank 0 only (or on every
        rank; each computes the same maps).
    inputs : Tensor or tuple of Tensor
        The probe batch (on the model's device), copied when the monitor is
        built, as are ``target`` and ``masks``: it stays as given for the
        whole training.
    target : optional
        As for ``NoiseTunnel.attribute`` (e.g. the probe's labels).
    masks : Tensor or tuple of Tensor, optional
        Ground truth, bool or 0/1, one per input, with the attributions'
        dimensions and each of their sizes or 1 (``(batch, 1, H, W)`` for
        images, ``(batch, tokens, 1)`` for a layer's ``(batch, tokens,
        hidden)``; with ``outputs=`` one more, last dimension,
        ``masks[..., None]``; with ``channel_reducer=`` none for an image's
        channels, ``masks[:, 0]``): adds ``mass_in_mask``, the share of
        attribution mass on it, averaged over the examples whose mask is not
        empty.
    model : nn.Module, optional
        The model being trained; by default the one behind ``method``. A
        method whose model shares no parameter with it is refused.
    every : int
        Steps between snapshots: one at every step divisible by it.
    figures_every : int
        Draw the maps at every ``figures_every``-th snapshot, the first
        included (8 probe images cost about 15 ms to draw and write, a
        tabular or text figure more); 0: never.
    writer : TensorBoard SummaryWriter, optional
        Record there (``pip install noisegrad[tensorboard]``).
    log_dir : str or Path, optional
        Record in this folder: ``metrics.jsonl``, ``histograms.jsonl``,
        ``maps/*.png``. The files are appended to, so that a resumed run
        continues them: a new run into the same folder adds its rows after
        the old ones (steps 0, 50, ..., 0, 50, ...); give each run its own.
    sinks : sequence, optional
        Other destinations (see :mod:`noisegrad.monitor.sinks`). With none of
        ``writer``, ``log_dir``, ``sinks`` the records are kept in
        :attr:`history` only.
    tokens : sequence of sequences of str, optional
        Each probe example's tokens, for text figures: at most as many as
        its tokens dimension (the probe's dimension 1); padding may be left out.
    feature_names : sequence of str, optional
        For tabular figures: one per column of a ``(batch, features)`` probe.
    tag : str
        Prefix of TensorBoard tags (as given) and name of the figures (in a
        folder, as one file name: ``probe/saliency`` is ``probe_saliency``).
    config : SmoothingConfig, optional
        The smoothing; default :data:`MONITOR_DEFAULTS` on ``SmoothingConfig()``
        (SmoothGrad, σ = 15 % of each example's range). A configuration
        without a seed gets seed 0: the monitor never draws from the global RNGs.
    attribute_kwargs : dict, optional
        More arguments for ``NoiseTunnel.attribute`` and the method's
        ``attribute`` (``baselines``, ``abs``, ``n_steps``,
        ``sliding_window_shapes``, ``additional_forward_args``,
        ``noise_mask``, ``joint``, ...); those the method requires are
        checked for when the monitor is built. What the configuration decides
        (``nt_samples``, ``stdevs``, ``seed``, ``outputs``, ...) is refused
        here: give it as a field below, so that ``monitor.config`` is what
        the snapshots run with.
    **config_fields
        Fields of the configuration to change: ``nt_type``, ``nt_samples``,
        ``noise``, ``noise_level``, ``sampler``, ``seed``, ``noise_layer`` (a
        module of the model, or its dotted name), ...

    The probe's dtype, the masks, the method's required arguments and its
    model (that it shares parameters with ``model``) are checked when the
    monitor is built, without a forward pass.

    Attributes
    ----------
    history : list of dict
        One row per snapshot: ``step``, the metrics, ``seconds``.
    first, last : Snapshot or None
    seconds : float
        Time spent in snapshots so far, recording included.

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> probe, labels = torch.rand(3, 4), torch.tensor([0, 1, 0])
    >>> monitor = AttributionMonitor(Saliency(model), probe, labels, every=2, masks=probe > 0.5)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for step in range(5):
    ...     _ = monitor.step(step)  # at the top of the loop: step k shows the model after k updates
    ...     loss = torch.nn.functional.cross_entropy(model(probe), labels)
    ...     optimizer.zero_grad(); loss.backward(); optimizer.step()
    >>> [row["step"] for row in monitor.history], sorted(monitor.history[-1])[:4]
    ([0, 2, 4], ['entropy', 'gini', 'mass_in_mask', 'nonfinite_share'])
    """

    def __init__(
        self,
        method: Union[Attribution, Type[Attribution]],
        inputs: TensorOrTuple,
        target: Any = None,
        *,
        masks: Optional[TensorOrTuple] = None,
        model: Optional[nn.Module] = None,
        every: int = 50,
        figures_every: int = 10,
        writer: Any = None,
        log_dir: Any = None,
        sinks: Sequence[Any] = (),
        tokens: Optional[Sequence[Sequence[str]]] = None,
        feature_names: Optional[Sequence[str]] = None,
        tag: str = "attribution",
        config: Optional[SmoothingConfig] = None,
        attribute_kwargs: Optional[Dict[str, Any]] = None,
        **config_fields: Any,
    ) -> None:
        refuse_decided(attribute_kwargs, config_fields)  # monitor.config is what every snapshot runs with
        self.method = _method(method, model)
        behind = modules_of(self.method.forward_func)
        if model is not None:
            check_same_model(model, behind, self.method)
        models = [model] if model is not None else behind
        if not models or not all(isinstance(m, nn.Module) for m in models):
            raise ValueError(f"the monitor found no torch.nn.Module behind {self.method.forward_func!r}: give "
                             "model= (the model being trained), so that its modes and state can be restored")
        self.models: List[nn.Module] = models

        if config is not None and not isinstance(config, SmoothingConfig):
            raise TypeError(f"config must be a noisegrad.SmoothingConfig, got {type(config).__name__}")
        if config is None:
            # joint sampling (SmoothGrad × IG) chooses its noise with joint= ("antithetic" too): the nested
            # estimator's default sampler is not for it, and was refused as if the user had asked for it
            joint = (attribute_kwargs or {}).get("joint") not in (None, False)
            config = SmoothingConfig().replace(**dict(MONITOR_DEFAULTS, **({"sampler": "iid"} if joint else {})))
        if config_fields:
            own = [name for name in inspect.signature(AttributionMonitor).parameters if name != "config_fields"]
            config = config.replace(**smoothing_fields(config_fields, self.method, behind, own))
        if config.seed is None:
            config = config.replace(seed=0)
        if config.dtype is not None:
            raise ValueError(f"the monitor attributes the model being trained, in its own dtype; got a configuration "
                             f"with dtype={config.dtype!r}")
        self._config = config.replace(return_stderr=True)  # standard errors come from the same samples, for free
        self.every = as_int("every", every)
        self.figures_every = as_int("figures_every", figures_every, least=0)
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"tag must be a non-empty str, got {tag!r}")
        if any(ord(c) < 32 or ord(c) == 127 for c in tag):
            raise ValueError(f"tag must be printable, without control characters, got {tag!r}")
        self.tag = tag

        discrete = self._config.noise_layer is not None
        # the probe, its labels and masks are copied: slices of a data set that the training changes in place
        # (normalised, augmented) would change the probe between snapshots, and the maps with it
        inputs, target = _kept(inputs), _kept(target)
        probe = validate_inputs(inputs, discrete=discrete)
        self.inputs = inputs
        check_probe_dtype(probe, self.models)
        check_probe_finite(probe)
        self.target = target
        self.tokens = checked_tokens(tokens, probe)
        self.feature_names = checked_feature_names(feature_names, probe, self.method)
        self._kwargs = dict(attribute_kwargs or {})
        if self.method.has_convergence_delta():
            self._kwargs.setdefault("return_convergence_delta", True)
        self._call = dict(self._config.call_kwargs(inputs), **self._kwargs)
        self._tunnel = NoiseTunnel(local_method(self.method))
        self._tunnel.check_arguments(inputs, target=target, **self._call)  # every argument, no forward
        check_required_arguments(self.method, self._call)
        self.masks = _kept(checked_masks(masks, probe, self.method, self._call))

        if not isinstance(sinks, (list, tuple)):
            raise TypeError(f"sinks must be a list or tuple of sinks, got {type(sinks).__name__} (for one sink, give "
                            f"sinks=[sink])")
        self.sinks: List[Any] = list(sinks)
        if writer is not None:
            self.sinks.append(TensorBoardSink(writer, tag))
        if log_dir is not None:
            self.sinks.append(FolderSink(log_dir))
        for sink in self.sinks:
            missing = [n for n in ("scalars", "figure", "histogram", "flush") if not callable(getattr(sink, n, None))]
            if missing:
                raise TypeError(f"sinks must have scalars, figure, histogram and flush; {sink!r} has no "
                                f"{', '.join(missing)}")
        if self.sinks and self.figures_every:
            # The drawing code is loaded now (about 20-90 ms, once per process): a broken matplotlib fails here,
            # before training starts, and the first snapshot does not pay for the import.
            importlib.import_module("noisegrad.viz")

        self.history: List[Dict[str, Any]] = []
        self.first: Optional[Snapshot] = None
        self.last: Optional[Snapshot] = None
        self.seconds = 0.0
        self._next_step = 0

    @property
    def config(self) -> SmoothingConfig:
        """The smoothing every snapshot runs with (read-only: the calls are checked against it when the monitor is
        built; for another, build another monitor)."""
        return self._config

    # ------------------------------------------------------------------ when

    def step(self, global_step: Optional[int] = None) -> Optional[Snapshot]:
        """Take a snapshot if ``global_step`` is a multiple of ``every``; otherwise do nothing.

        ``global_step`` defaults to the number of steps counted so far (one
        per call, per ``with monitor:`` block and per call of a function
        decorated with ``@monitor``). Returns the snapshot, or None.

        The snapshot shows the model as it is when ``step`` is called. Called
        before the update (at the top of the loop), step ``k`` is the model
        after ``k`` updates, step 0 the untrained one, as in the Lightning
        callback. Called after ``optimizer.step()`` (as ``with monitor:`` and
        ``@monitor`` do), step 0 is the model after one update; to record the
        untrained model too, call ``monitor.snapshot(0)`` before the loop:
        the counted steps then go on from 1 (so step ``k`` is again the model
        after ``k`` updates), and explicit ones should too, ``step(i + 1)``
        (a step recorded twice is warned about).
        """
        global_step = self._next_step if global_step is None else _checked_step(global_step)
        self._next_step = global_step + 1
        if global_step % self.every:
            return None
        return self.snapshot(global_step)

    def __enter__(self) -> "AttributionMonitor":
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        if exc_type is None:  # a failed training step is not a step
            self.step()
        return False

    # ------------------------------------------------------------------ what

    def snapshot(self, global_step: int) -> Snapshot:
        """Attribute the probe batch now, record it, and return it (whatever ``every`` says)."""
        global_step = _checked_step(global_step)
        if torch.is_inference_mode_enabled() and isinstance(self.method, GradientAttribution):
            raise RuntimeError(f"the monitor's {type(self.method).__name__} takes gradients, and none can be taken "
                               "under torch.inference_mode(): call monitor.step outside it (under torch.no_grad() "
                               "is fine)")
        start = time.perf_counter()
        try:
            with training_untouched(self.models):
                result = self._tunnel.attribute(self.inputs, target=self.target, **self._call)
                snap = summarise(result, global_step, self.masks, self.first, self.last)
                snap.seconds = time.perf_counter() - start
                self._record(snap)
        finally:
            self.seconds += time.perf_counter() - start
        if self.first is None:
            self.first = snap
        self.last = snap
        if self.history and global_step <= self.history[-1]["step"]:
            warnings.warn(f"step {global_step} recorded after step {self.history[-1]['step']}: the records repeat or go "
                          f"back (a TensorBoard curve turns back on itself); after monitor.snapshot(0) before the loop, "
                          f"call monitor.step(i + 1) after the i-th update, or monitor.step(i) before it",
                          stacklevel=user_stacklevel())
        self.history.append(snap.row())
        self._next_step = max(self._next_step, global_step + 1)
        return snap

    def _record(self, snap: Snapshot) -> None:
        if not self.sinks:
            return
        row = snap.row()
        step = row.pop("step")
        figure = None
        if self.figures_every and len(self.history) % self.figures_every == 0:
            figure = self.figure(snap)
        values = snap.values()
        for sink in self.sinks:
            sink.scalars(step, row)
            if figure is not None:
                sink.figure(step, self.tag, figure)
            if values.numel():  # a histogram of nothing: no sink takes one
                sink.histogram(step, "values", values)
            sink.flush()

    def figure(self, snap: Optional[Snapshot] = None) -> Any:
        """The maps of a snapshot (default the last) as a figure, drawn by :mod:`noisegrad.viz`, or None if the
        attributions have no shape it can draw."""
        snap = snap if snap is not None else self.last
        if snap is None:
            raise ValueError("no snapshot yet: call step() or snapshot() first")
        maps = snap.attributions[0] if isinstance(snap.attributions, tuple) else snap.attributions
        kind = figure_kind(maps, self.tokens)
        if kind is None:
            return None
        images = self.inputs[0] if isinstance(self.inputs, tuple) else self.inputs
        return snapshot_figure(maps, kind, images=images if images.is_floating_point() else None, tokens=self.tokens,
                               feature_names=self.feature_names, title=f"step {snap.step}")

    def __repr__(self) -> str:
        return (f"AttributionMonitor({type(self.method).__name__}, every={self.every}, "
                f"snapshots={len(self.history)}, sinks={self.sinks})")


def _kept(value: Any) -> Any:
    """A tensor, or each tensor of a tuple, copied (detached); anything else as it is."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_kept(v) for v in value)
    return value


def _checked_step(global_step: Any) -> int:
    """A step number: an int >= 0 (numpy's integers too), checked at the cost of a type test when it is one."""
    return global_step if type(global_step) is int and global_step >= 0 else as_int("global_step", global_step, least=0)


def _method(method: Any, model: Optional[nn.Module]) -> Attribution:
    if isinstance(method, type) and issubclass(method, Attribution):
        if issubclass(method, LayerAttribution):
            raise TypeError(f"{method.__name__} needs its layer: give an instance, "
                            f"{method.__name__}(model, model.<layer>)")
        if not isinstance(model, nn.Module):
            raise TypeError(f"method={method.__name__} (a class) needs model= (the nn.Module being trained), got "
                            f"{type(model).__name__}")
        return method(model)
    if not isinstance(method, Attribution):
        raise TypeError(f"method must be a Captum Attribution (e.g. Saliency(model)) or its class, got "
                        f"{type(method).__name__}")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return method

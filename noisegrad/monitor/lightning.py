"""The training monitor as a PyTorch Lightning callback, logging through the trainer's logger (rank 0 only).

Imported on first use of ``noisegrad.AttributionMonitorCallback``; needs
``pip install noisegrad[lightning]`` (``lightning``, or the older
``pytorch_lightning`` package).
"""

from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from noisegrad._validate import as_int
from noisegrad.monitor._checks import refuse_decided
from noisegrad.monitor.monitor import AttributionMonitor
from noisegrad.monitor.sinks import FolderSink, TensorBoardSink

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the older package name
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError("noisegrad's AttributionMonitorCallback needs PyTorch Lightning: "
                          "pip install 'noisegrad[lightning]'") from None

__all__ = ["AttributionMonitorCallback"]

#: Folder of figures and histograms (and of everything, without a logger) under the logger's or trainer's folder.
FOLDER = "attribution_monitor"


class AttributionMonitorCallback(Callback):
    """An :class:`~noisegrad.monitor.AttributionMonitor` driven by a Lightning ``Trainer``.

    Parameters
    ----------
    method : Captum Attribution, or an Attribution class
        A class (``Saliency``) is built on the LightningModule being trained;
        an instance must be built on it or a part of it (``Saliency(module.net)``).
    inputs, target
        The probe batch; put where the trainer puts a batch when fitting
        starts (the module's device; floating point in the trainer's
        precision, e.g. float64 with ``precision="64-true"``), as are the
        masks and the tensors in ``attribute_kwargs``.
    every_n_steps : int, optional
        A snapshot when fitting starts (step 0: the model before any update)
        and after every ``every_n_steps``-th optimizer step
        (``trainer.global_step``).
    at_epoch_end : bool
        Also a snapshot at the end of every training epoch.
    **monitor_kwargs
        The monitor's other arguments (``masks``, ``nt_samples``, ``noise_level``,
        ``figures_every``, ``config``, ...); where to record comes from the trainer.

    Scalars go through every logger's ``log_metrics`` (``trainer.loggers``)
    under ``<tag>/<name>``; figures and histograms through each logger's
    ``SummaryWriter`` when it is a TensorBoard logger, else into
    ``<logger's log_dir>/attribution_monitor`` (without a logger, everything
    goes into ``<default_root_dir>/attribution_monitor``). Under DDP only
    global rank 0 takes snapshots.

    Each ``fit`` builds a new monitor: a callback given to a second ``fit``
    starts its history, its first snapshot (``spearman_first``) and its step
    count again, and a folder it records in is appended to.

    Examples
    --------
    >>> from captum.attr import Saliency
    >>> callback = AttributionMonitorCallback(Saliency, torch.rand(4, 3), target=0, every_n_steps=10)
    >>> callback.monitor is None  # built when fitting starts, on the module being trained
    True
    """

    def __init__(
        self,
        method: Any,
        inputs: Any,
        target: Any = None,
        *,
        every_n_steps: Optional[int] = 50,
        at_epoch_end: bool = False,
        **monitor_kwargs: Any,
    ) -> None:
        super().__init__()
        self.every_n_steps = None if every_n_steps is None else as_int("every_n_steps", every_n_steps)
        if not isinstance(at_epoch_end, bool):
            raise TypeError(f"at_epoch_end must be True or False, got {at_epoch_end!r}")
        if self.every_n_steps is None and not at_epoch_end:
            raise ValueError("give every_n_steps= or at_epoch_end=True: otherwise the callback never takes a snapshot")
        taken = sorted({"every", "writer", "log_dir", "sinks"} & set(monitor_kwargs))
        if taken:
            raise TypeError(f"AttributionMonitorCallback takes no {', '.join(name + '=' for name in taken)}: it takes "
                            "snapshots when the trainer says and records through its logger; use every_n_steps= / "
                            "at_epoch_end=")
        refuse_decided(monitor_kwargs.get("attribute_kwargs"), monitor_kwargs)  # now, not when fitting starts
        self.at_epoch_end = at_epoch_end
        self._method, self._inputs, self._target, self._kwargs = method, inputs, target, monitor_kwargs
        self.monitor: Optional[AttributionMonitor] = None
        self._last_step: Optional[int] = None

    # ------------------------------------------------------------------ the trainer's hooks

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        # where the trainer puts a batch: on the module's device, floating point in its precision ("64-true",
        # "bf16-true" convert the module; "-mixed" ones leave both in float32)
        convert = getattr(getattr(trainer, "precision_plugin", None), "convert_input", None) or (lambda data: data)

        def placed(value: Any) -> Any:
            return _to(convert(value), pl_module.device)

        kwargs = dict(self._kwargs)
        if "masks" in kwargs:
            kwargs["masks"] = placed(kwargs["masks"])
        if isinstance(kwargs.get("attribute_kwargs"), dict):  # baselines, additional_forward_args, noise_mask, ...
            kwargs["attribute_kwargs"] = {name: placed(value) for name, value in kwargs["attribute_kwargs"].items()}
        kwargs.setdefault("model", pl_module)  # a method built on another model is refused
        self.monitor = AttributionMonitor(self._method, placed(self._inputs), placed(self._target),
                                          every=self.every_n_steps or 1, sinks=[_logger_sink(trainer, kwargs)],
                                          **kwargs)
        self._last_step = None  # a new fit counts its steps from 0 again

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.every_n_steps is not None:
            self._snapshot(trainer)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0:
            self._snapshot(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.at_epoch_end:
            self._snapshot(trainer)

    def _snapshot(self, trainer: Any) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or self.monitor is None or step == self._last_step:
            return  # other ranks; or this optimizer step's snapshot is taken (gradient accumulation, epoch end)
        self._last_step = step
        self.monitor.snapshot(step)


class _LoggerSink:
    """Scalars through every Lightning logger of the trainer; figures and histograms through each one's
    SummaryWriter, or into each one's folder (one set of files per folder)."""

    def __init__(self, loggers: List[Any], root: str, tag: str) -> None:
        self.loggers, self.tag = loggers, tag
        self.pictures: List[Any] = []
        folders = set()
        for logger in loggers:
            experiment = getattr(logger, "experiment", None)
            if all(callable(getattr(experiment, n, None)) for n in ("add_scalar", "add_image", "add_histogram")):
                self.pictures.append(TensorBoardSink(experiment, tag))
                continue
            folder = Path(getattr(logger, "log_dir", None) or root) / FOLDER
            if folder not in folders:
                folders.add(folder)
                self.pictures.append(FolderSink(folder))

    def scalars(self, step: int, values: Dict[str, Optional[float]]) -> None:
        finite = {f"{self.tag}/{k}": float(v) for k, v in values.items() if v is not None and v == v}
        for logger in self.loggers:
            logger.log_metrics(finite, step=step)

    def figure(self, step: int, name: str, fig: Any) -> None:
        for sink in self.pictures:
            sink.figure(step, name, fig)

    def histogram(self, step: int, name: str, values: Tensor) -> None:
        for sink in self.pictures:
            sink.histogram(step, name, values)

    def flush(self) -> None:
        for sink in self.pictures:
            sink.flush()


def _logger_sink(trainer: Any, kwargs: Dict[str, Any]) -> Any:
    loggers = list(getattr(trainer, "loggers", None) or ([trainer.logger] if trainer.logger is not None else []))
    if not loggers:
        return FolderSink(Path(trainer.default_root_dir) / FOLDER)
    return _LoggerSink(loggers, trainer.default_root_dir, kwargs.get("tag", "attribution"))


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    return value

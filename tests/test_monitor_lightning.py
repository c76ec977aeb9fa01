"""The monitor as a PyTorch Lightning callback: a 2-epoch Trainer run on CPU logs through the trainer's logger,
training stays bit-identical, and only rank 0 monitors.

Lightning and TensorBoard are test extras (``pip install -e '.[test]'``); the tests are skipped only where they are
not installed.
"""

import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency

from conftest import ForwardCounter
from test_monitor import Net, data

lightning = pytest.importorskip("lightning.pytorch", reason="pip install -e '.[test]' installs lightning")
pytest.importorskip("tensorboard", reason="pip install -e '.[test]' installs tensorboard")
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402

from noisegrad import AttributionMonitor, AttributionMonitorCallback  # noqa: E402
from test_monitor_tensorboard import assert_scalars_equal_history, read_events  # noqa: E402


class LitNet(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def fit(tmp_path, callbacks=(), logger=False, precision="bf16-mixed"):
    x, y, _ = data(64)
    lightning.seed_everything(0, verbose=False)
    module = LitNet()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", devices=1, precision=precision, logger=logger,
                                callbacks=list(callbacks), enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=str(tmp_path), log_every_n_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and small data sets
        trainer.fit(module, loader)
    return module, trainer


def test_lightning_callback_logs_through_tensorboard_logger_and_leaves_training_bit_identical(tmp_path):
    x, y, masks = data(8)
    plain, _ = fit(tmp_path / "plain")
    callback = AttributionMonitorCallback(Saliency, x, y, masks=masks, every_n_steps=2, at_epoch_end=True,
                                          figures_every=2)
    logger = TensorBoardLogger(str(tmp_path / "tb"), name="run")
    monitored, trainer = fit(tmp_path / "monitored", [callback], logger)
    for name, value in plain.state_dict().items():
        assert torch.equal(value, monitored.state_dict()[name]), name
    history = callback.monitor.history
    # 4 batches per epoch: fit start (step 0), every second optimizer step; the epoch ends fall on steps 4 and 8
    assert [row["step"] for row in history] == [0, 2, 4, 6, 8]
    events = read_events(logger.log_dir)
    assert_scalars_equal_history(events, history)
    assert [e.step for e in events.Images("attribution/attribution")] == [0, 4, 8]


def test_lightning_callback_with_a_logger_without_writer_puts_pictures_in_its_folder(tmp_path):
    x, y, _ = data(4)
    callback = AttributionMonitorCallback(Saliency, x, y, every_n_steps=None, at_epoch_end=True, figures_every=1)
    logger = CSVLogger(str(tmp_path), name="csv")
    fit(tmp_path, [callback], logger)
    assert [row["step"] for row in callback.monitor.history] == [4, 8]
    folder = tmp_path / "csv" / "version_0"
    metrics = (folder / "metrics.csv").read_text().splitlines()
    assert "attribution/gini" in metrics[0]
    pictures = sorted(p.name for p in (folder / "attribution_monitor" / "maps").iterdir())
    assert pictures == ["attribution_00000004.png", "attribution_00000008.png"]


def test_lightning_callback_does_nothing_on_other_ranks():
    x, y, _ = data(4)
    module = LitNet()
    callback = AttributionMonitorCallback(Saliency, x, y, every_n_steps=1)
    forwards = ForwardCounter(module)
    rank1 = types.SimpleNamespace(is_global_zero=False, global_step=0, logger=None, default_root_dir="/nonexistent")
    callback.on_fit_start(rank1, module)
    callback.on_train_start(rank1, module)
    callback.on_train_batch_end(rank1, module, None, None, 0)
    callback.on_train_epoch_end(rank1, module)
    assert callback.monitor is None and forwards.calls == 0


def test_lightning_callback_refuses_a_method_built_on_another_model_when_fitting_starts(tmp_path):
    x, y, _ = data(4)
    module = LitNet()
    trainer = types.SimpleNamespace(is_global_zero=True, global_step=0, logger=None, default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"model being trained \(LitNet\) shares no parameter"):
        AttributionMonitorCallback(Saliency(Net()), x, y).on_fit_start(trainer, module)
    callback = AttributionMonitorCallback(Saliency(module.net), x, y)
    callback.on_fit_start(trainer, module)
    assert callback.monitor.models == [module]  # restored after each snapshot: the whole module


def test_lightning_callback_refuses_what_the_trainer_decides():
    x, y, _ = data(4)
    with pytest.raises(TypeError, match="AttributionMonitorCallback takes no log_dir=: .* records through its logger"):
        AttributionMonitorCallback(Saliency, x, y, log_dir="somewhere")
    with pytest.raises(ValueError, match="never takes a snapshot"):
        AttributionMonitorCallback(Saliency, x, y, every_n_steps=None)
    with pytest.raises(ValueError, match="every_n_steps must be a positive int"):
        AttributionMonitorCallback(Saliency, x, y, every_n_steps=0)
    # what the configuration decides, refused when the callback is built, not when fitting starts (helper-65)
    with pytest.raises(TypeError, match=r"attribute_kwargs got \['nt_samples'\], which the configuration decides"):
        AttributionMonitorCallback(Saliency, x, y, attribute_kwargs={"nt_samples": 64})
    with pytest.raises(TypeError, match=r"the monitor got \['stdevs'\]"):
        AttributionMonitorCallback(Saliency, x, y, stdevs=0.1)


def test_lightning_callback_logs_to_every_logger_and_draws_for_each(tmp_path):
    x, y, masks = data(4)
    callback = AttributionMonitorCallback(Saliency, x, y, masks=masks, every_n_steps=None, at_epoch_end=True,
                                          figures_every=1)
    csv, board = CSVLogger(str(tmp_path), name="csv"), TensorBoardLogger(str(tmp_path), name="tb")
    fit(tmp_path, [callback], [csv, board])
    history = callback.monitor.history
    assert [row["step"] for row in history] == [4, 8]
    events = read_events(board.log_dir)
    assert_scalars_equal_history(events, history, tag="attribution")
    assert [e.step for e in events.Images("attribution/attribution")] == [4, 8]
    folder = tmp_path / "csv" / "version_0"
    header, *rows = (folder / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("attribution/gini")
    logged = [float(row.split(",")[column]) for row in rows if row.split(",")[column]]
    assert logged == pytest.approx([row["gini"] for row in history], rel=1e-12)
    pictures = sorted(p.name for p in (folder / "attribution_monitor" / "maps").iterdir())
    assert pictures == ["attribution_00000004.png", "attribution_00000008.png"]


def test_a_callback_given_to_a_second_fit_starts_again_with_a_snapshot_at_step_0(tmp_path):
    x, y, _ = data(4)
    module = LitNet()
    callback = AttributionMonitorCallback(Saliency, x, y, every_n_steps=2)
    for fit_number in range(2):
        trainer = types.SimpleNamespace(is_global_zero=True, global_step=0, logger=None, loggers=[],
                                        default_root_dir=str(tmp_path))
        callback.on_fit_start(trainer, module)
        callback.on_train_start(trainer, module)
        assert [row["step"] for row in callback.monitor.history] == [0], fit_number
    assert len((tmp_path / "attribution_monitor" / "metrics.jsonl").read_text().splitlines()) == 2  # appended


def test_the_probe_and_the_methods_tensors_are_put_in_the_precision_the_trainer_gives_the_module(tmp_path):
    # precision="64-true" makes the module float64: a float32 probe (as given, like the batches, which the trainer
    # converts) was refused when fitting started, and float32 baselines would have met float64 inputs in Captum
    from captum.attr import IntegratedGradients

    x, y, masks = data(4)
    callback = AttributionMonitorCallback(IntegratedGradients, x, y, masks=masks, every_n_steps=4, nt_samples=4,
                                          attribute_kwargs={"baselines": torch.zeros_like(x), "n_steps": 4})
    module, trainer = fit(tmp_path, [callback], precision="64-true")
    assert [row["step"] for row in callback.monitor.history] == [0, 4, 8]
    last = callback.monitor.last.attributions
    assert last.dtype == torch.float64
    direct = AttributionMonitor(IntegratedGradients(module), x.double(), y, masks=masks, nt_samples=4,
                                attribute_kwargs={"baselines": torch.zeros_like(x).double(), "n_steps": 4})
    assert torch.equal(direct.snapshot(8).attributions, last)

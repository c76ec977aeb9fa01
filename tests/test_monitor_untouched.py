"""A snapshot leaves a model as it found it also when the model's own ``train(mode)`` does more than set flags, when
its forward rebinds a buffer, when some submodules are in eval mode, and when it is wrapped in DistributedDataParallel."""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from torch import nn

from noisegrad import AttributionMonitor

X, Y = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0])


class FreezeInEval(nn.Module):
    """Its body's parameters take gradients in training mode only."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

    def train(self, mode=True):
        super().train(mode)
        self.body.requires_grad_(mode)
        return self


class AverageInEval(nn.Module):
    """Evaluates with averaged (EMA) weights: eval() swaps them in, train() swaps the trained ones back."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)
        self.average = [p.detach().clone() for p in self.net.parameters()]
        self.trained = None

    def forward(self, x):
        return self.net(x)

    def train(self, mode=True):
        super().train(mode)
        params = list(self.net.parameters())
        with torch.no_grad():
            if not mode and self.trained is None:
                self.trained = [p.detach().clone() for p in params]
                for p, a in zip(params, self.average):
                    p.copy_(a)
            elif mode and self.trained is not None:
                for p, t in zip(params, self.trained):
                    p.copy_(t)
                self.trained = None
        return self


class RunningMax(nn.Module):
    """Rebinds its buffer in the forward (``self.peak = ...``), not in place."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("peak", torch.zeros(()))

    def forward(self, x):
        self.peak = torch.maximum(self.peak, x.detach().abs().max())
        return x / (self.peak + 1)


def test_requires_grad_is_recorded_before_eval_and_the_models_own_train_undoes_its_eval():
    model = FreezeInEval().train()
    AttributionMonitor(Saliency(model), X, Y, every=1).step(0)
    assert model.training and model.body.weight.requires_grad and model.body.bias.requires_grad


def test_weights_swapped_in_by_the_models_eval_are_swapped_out_again():
    model = AverageInEval().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    F.cross_entropy(model(X), Y).backward()
    optimizer.step()  # the trained weights now differ from the averaged ones
    trained = [p.detach().clone() for p in model.parameters()]
    snap = AttributionMonitor(Saliency(model), X, Y, every=1, nt_samples=4).step(0)
    assert all(torch.equal(p, t) for p, t in zip(model.parameters(), trained)) and model.trained is None
    # and the snapshot saw the averaged weights: Saliency of a linear map is |the target's weight row|
    rows = model.average[0][Y].abs()
    torch.testing.assert_close(snap.attributions, rows.expand_as(snap.attributions))


def test_partial_eval_mode_is_restored_through_train_and_user_frozen_parameters_stay_frozen():
    model = FreezeInEval().train()
    model.head.eval()  # the user's choice inside a model in training mode
    model.body.weight.requires_grad_(False)  # frozen by hand after train() ran
    AttributionMonitor(Saliency(model), X, Y, every=1).step(0)
    assert model.training and model.body.training and not model.head.training
    assert not model.body.weight.requires_grad and model.body.bias.requires_grad


def test_a_buffer_the_forward_rebinds_is_the_same_tensor_after_a_snapshot():
    model = nn.Sequential(nn.Linear(4, 4), RunningMax(), nn.Linear(4, 2))
    model(X)
    peak = model[1].peak
    value = peak.clone()
    AttributionMonitor(Saliency(model), X * 10, Y, every=1).step(0)
    assert model[1].peak is peak and torch.equal(peak, value)


@pytest.mark.parametrize("wrapper", ["DataParallel", "DistributedDataParallel"])
def test_a_data_parallel_model_is_attributed_through_its_module_without_the_wrappers_forward(wrapper, tmp_path):
    import torch.distributed as dist

    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    if wrapper == "DistributedDataParallel":
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = (nn.DataParallel(inner) if wrapper == "DataParallel"
                   else nn.parallel.DistributedDataParallel(inner))
        calls = []
        wrapped.register_forward_pre_hook(lambda *_: calls.append(1))
        method = Saliency(wrapped)
        snap = AttributionMonitor(method, X, Y, every=1, nt_samples=4).step(0)
        expected = AttributionMonitor(Saliency(inner), X, Y, every=1, nt_samples=4).step(0)
        assert calls == [] and method.forward_func is wrapped  # the user's method is left as it was
        assert torch.equal(snap.attributions, expected.attributions)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_monitors_of_one_model_in_two_threads_leave_it_in_training_mode_with_the_serial_maps():
    # Thread B starts its snapshot while A's has the model in eval mode, and is held inside its forward until A is
    # done. Recorded outside the snapshots' lock, B took A's eval mode for the user's, ran on after A restored the
    # training mode (Dropout on in its maps) and left the model in eval mode for the rest of training. Serialised,
    # A's wait for B times out and B starts after A.
    import threading

    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
    monitors = {name: AttributionMonitor(Saliency(model), X, Y, every=1) for name in "AB"}
    serial = AttributionMonitor(Saliency(model), X, Y, every=1).snapshot(0).attributions
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()
    first_forward = set()

    def hold(module, inputs):
        name = threading.current_thread().name
        if name not in first_forward:
            first_forward.add(name)
            if name == "A":
                a_inside.set()
                b_inside.wait(0.5)
            elif name == "B":
                b_inside.set()
                a_done.wait(0.5)

    maps = {}

    def run(name):
        if name == "B":
            a_inside.wait(5)
        maps[name] = monitors[name].snapshot(0).attributions
        if name == "A":
            a_done.set()

    handle = model[0].register_forward_pre_hook(hold)
    threads = [threading.Thread(target=run, args=(name,), name=name) for name in "AB"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handle.remove()
    assert all(module.training for module in model.modules())
    assert torch.equal(maps["A"], serial) and torch.equal(maps["B"], serial)

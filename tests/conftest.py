"""Small models shared by the tests: fast enough to run hundreds of attributions in seconds."""

import contextlib

import pytest
import torch
from captum.attr import DeepLift, FeatureAblation, InputXGradient, IntegratedGradients, Saliency
from torch import nn

from noisegrad import _gradients

#: One method of each kind noisegrad wraps, with the arguments the tests call it with: gradient methods that take
#: several outputs in one pass, a method with its own hooks (DeepLift) and a perturbation method.
WRAPPED_METHODS = {
    "saliency": (Saliency, {"abs": False}),
    "input_x_gradient": (InputXGradient, {}),
    "integrated_gradients": (IntegratedGradients, {"n_steps": 6, "return_convergence_delta": True}),
    "deeplift": (DeepLift, {"return_convergence_delta": True}),
    "feature_ablation": (FeatureAblation, {}),
}


class TwoInputModel(nn.Module):
    """f(a, b, scale) = head(tanh(A a + B b) * scale): two inputs and an additional forward arg."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(3, 6)
        self.act = nn.Tanh()
        self.head = nn.Linear(6, 3)

    def forward(self, a, b, scale=None):
        hidden = self.act(self.a(a) + self.b(b))
        if scale is not None:
            hidden = hidden * scale
        return self.head(hidden)


def make_mlp(dtype=torch.float64, seed=0, features=5, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, classes)).to(dtype).eval()


def make_cnn(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4)
    ).to(dtype).eval()


def make_two_input(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return TwoInputModel().to(dtype).eval()


@pytest.fixture
def mlp():
    return make_mlp()


@pytest.fixture
def cnn():
    return make_cnn()


@pytest.fixture
def two_input():
    return make_two_input()


class Recorder(nn.Module):
    """Wraps a one-input model and keeps a copy of every input it is given (the noisy copies a call draws)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


class Counting(nn.Module):
    """Wraps a one-input model and records the rows of every forward (to count the forwards a chunk plan runs)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.model(x)


class ForwardCounter:
    """Counts forward calls of a module (to prove that errors come before any forward pass)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls += 1


@pytest.fixture(scope="module")
def this_python_kernel(tmp_path_factory):
    """A Jupyter kernel spec that runs this interpreter, so notebooks import the noisegrad under test."""
    import json
    import sys

    folder = tmp_path_factory.mktemp("jupyter") / "kernels" / "noisegrad-test"
    folder.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "noisegrad test", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))
    return folder.parent.parent


def as_tuple(value):
    """A tensor as a one-tensor tuple, a tuple as it is (Captum returns either, by inputs or layer)."""
    return value if isinstance(value, tuple) else (value,)


def separate_runs(nt, inputs, outputs, **kwargs):
    """What ``nt.attribute(inputs, outputs=outputs, **kwargs)`` must equal: one run per output, stacked last.

    A run's attributions keep their form (a tensor, or a tuple for tuple
    inputs or a layer with a tuple output); with
    ``return_convergence_delta``, ``(attributions, delta)`` as the run returns.
    """
    with_delta = kwargs.get("return_convergence_delta", False)
    runs = [nt.attribute(inputs, target=k, **kwargs) for k in outputs]
    attributions = [run[0] if with_delta else run for run in runs]
    stacked = tuple(torch.stack(parts, -1) for parts in zip(*map(as_tuple, attributions)))
    stacked = stacked if isinstance(attributions[0], tuple) else stacked[0]
    return (stacked, torch.stack([run[1] for run in runs], -1)) if with_delta else stacked


@pytest.fixture
def all_outputs_at_once():
    """A context manager: within it, the gradients of all outputs are one batched product, as ``_gradients.output_vjps``
    takes them on devices other than the CPU (on a CPU it takes one output at a time).

    Leaving the block fails unless the batched product ran, and a product that finds no batching rule fails at once,
    so a test of the batched path cannot pass on the path of one output at a time.
    """

    @contextlib.contextmanager
    def batched():
        columns = []

        def all_at_once(selected, inputs):
            grads = _gradients.batched_vjps(selected, inputs)
            assert grads is not None, "the batched product found no batching rule: one output at a time instead"
            columns.append(selected.shape[1])
            yield slice(0, selected.shape[1]), grads

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_gradients, "output_vjps", all_at_once)
            yield
        assert columns, "no gradient went through the batched product"

    return batched

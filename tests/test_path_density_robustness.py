"""path_density="adaptive" under the conditions a call meets: out of memory in the pilot, a pilot that sees NaN,
every form of the call's arguments, two threads, and the pilot's place in the first chunk."""

import threading
import warnings

import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from torch import nn

from noisegrad import NoiseTunnel
from noisegrad.estimators.path_density import PILOT_GRADIENTS
from noisegrad.perturb.inputs import InputNoise

X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def layer_norm_first(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.LayerNorm(5), nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()


def adaptive(method, x=X, **kwargs):
    common = dict(nt_samples=6, stdevs=0.2, target=1, seed=3, joint=True, path_density="adaptive")
    return NoiseTunnel(method).attribute(x, **dict(common, **kwargs))


def test_the_pilot_runs_before_the_first_chunk_makes_its_noisy_rows(monkeypatch):
    """The pilot runs at the first chunk's size, which the plan fits in memory: it must not also hold that chunk's
    noisy rows, so those are made after it (a pilot beside them would need one more copy of the chunk's inputs)."""
    events = []
    rows = InputNoise.rows
    monkeypatch.setattr(InputNoise, "rows", lambda self, ids: events.append("rows") or rows(self, ids))
    model = layer_norm_first()
    model.register_forward_pre_hook(lambda module, args: events.append("forward"))
    adaptive(IntegratedGradients(model), nt_samples=4, nt_samples_batch_size=4)
    assert events == ["forward"] * (PILOT_GRADIENTS // 4) + ["rows", "forward"]


class OutOfMemoryAbove(nn.Module):
    """Raises torch.OutOfMemoryError for a forward of more than ``rows`` rows, as a device would."""

    def __init__(self, model, rows):
        super().__init__()
        self.model, self.rows = model, rows

    def forward(self, x):
        if x.shape[0] > self.rows:
            raise torch.OutOfMemoryError(f"{x.shape[0]} rows")
        return self.model(x)


def test_out_of_memory_in_the_pilot_halves_the_chunk_and_gives_the_result_of_that_chunk_size():
    """8 copies per example do not fit, nor 4: the pilot fails twice, then runs (and the call ends) at 2."""
    model = layer_norm_first()
    common = dict(nt_samples=8, return_convergence_delta=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attr, delta = adaptive(IntegratedGradients(OutOfMemoryAbove(model, 2 * X.shape[0])), **common)
    assert [str(w.message).split(";")[0] for w in caught] == [
        f"out of memory with {n} noisy copies per example per chunk" for n in (8, 4)]
    expected, expected_delta = adaptive(IntegratedGradients(model), nt_samples_batch_size=2, **common)
    torch.testing.assert_close(attr, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(delta, expected_delta, rtol=1e-12, atol=1e-14)


class NaNNearZero(nn.Module):
    """The model, and a NaN gradient (and output) for rows whose norm is below 1e-3 and first feature positive:
    from a zero baseline, the pilot of an example with x₀ > 0 sees NaN in its lowest bins."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        norm = x.norm(dim=1, keepdim=True)
        nan_where_small = torch.where(x[:, :1] > 0, norm - 1e-3, torch.ones_like(norm)).sqrt()
        return self.model(x) + 0 * nan_where_small


def test_a_pilot_that_sees_nan_keeps_the_uniform_density_for_that_example_only():
    x = X.clone()
    x[:, 0] = torch.tensor([2.0, -2.0, -2.0], dtype=torch.float64)
    model = layer_norm_first()
    nan_model = IntegratedGradients(NaNNearZero(model))
    common = dict(x=x, stdevs=0.05, nt_samples=8)  # σ small: x₀ + ε keeps its sign
    with pytest.warns(RuntimeWarning, match=r"NaN or infinite contribution on the path of example\(s\) \[0\]"):
        got = adaptive(nan_model, **common)
    assert bool(torch.isfinite(got).all())  # the uniform density seldom lands below 1e-3
    torch.testing.assert_close(got[:1], adaptive(nan_model, path_density="uniform", **common)[:1],
                               rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got[1:], adaptive(IntegratedGradients(model), **common)[1:], rtol=1e-12, atol=1e-14)


class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.norm, self.a, self.b = nn.LayerNorm(5), nn.Linear(5, 3), nn.Linear(5, 3)
        self.double()

    def forward(self, x, y=None, scale=None):
        h = self.norm(x if y is None else x + y)
        out = torch.tanh(self.a(h)) * self.b(h)
        return out if scale is None else out * scale


BRANCHES = TwoBranches()
PER_EXAMPLE_SCALE = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)


with warnings.catch_warnings():  # Captum's reminder that the layers must not feed each other: they do not
    warnings.simplefilter("ignore", UserWarning)
    LIST_OF_LAYERS = LayerIntegratedGradients(BRANCHES, [BRANCHES.a, BRANCHES.b])


def pick(logits, targets):
    return logits.gather(1, targets[:, None]).squeeze(1)


@pytest.mark.parametrize("method, kwargs", [
    (IntegratedGradients(BRANCHES, multiply_by_inputs=False), dict(target=[0, 2, 1])),
    (IntegratedGradients(BRANCHES), dict(x=(X, X.flip(0)), additional_forward_args=(PER_EXAMPLE_SCALE,),
                                         baselines=(0.25, X[:1] * 0.5), target=torch.tensor([2, 0, 1]))),
    (IntegratedGradients(BRANCHES), dict(objective=lambda model, x, t: pick(model(x), t), target=[1, 0, 2])),
    (LIST_OF_LAYERS, dict(baselines=X * 0.1)),
    (LayerIntegratedGradients(BRANCHES, BRANCHES.a), dict(attribute_to_layer_input=True, joint="qmc", nt_samples=8)),
    (IntegratedGradients(BRANCHES), dict(joint="lhs", nt_samples=8, return_convergence_delta=True)),
    (IntegratedGradients(BRANCHES), dict(joint="antithetic", return_stderr=True)),
])
def test_every_form_of_call_is_keyed_by_example_and_free_of_the_chunking(method, kwargs):
    """Chunks of 1, 4 and as the row and memory planners choose; an example alone with its id: the same result."""
    whole = _tensors(adaptive(method, **kwargs))
    for chunking in (dict(nt_samples_batch_size=1), dict(nt_samples_batch_size=4), dict(nt_samples_batch_size="auto"),
                     dict(max_batch_rows=7), dict(memory_budget=4096)):
        for ours, theirs in zip(_tensors(adaptive(method, **kwargs, **chunking)), whole):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    alone = _tensors(adaptive(method, example_ids=[2], **_example(kwargs, 2)))
    for ours, theirs in zip(alone, whole):
        torch.testing.assert_close(ours, theirs[2:], rtol=1e-9, atol=1e-12)


def _tensors(result):
    if isinstance(result, torch.Tensor):
        return [result]
    if hasattr(result, "attributions"):
        return _tensors(result.attributions) + _tensors(result.stderr)
    return [t for part in result for t in _tensors(part)]


def _example(kwargs, i):
    """The call's arguments for example ``i`` alone: its rows of everything given per example."""
    def rows(value):
        if isinstance(value, tuple):
            return tuple(rows(v) for v in value)
        if isinstance(value, list):
            return value[i:i + 1]
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == X.shape[0]:
            return value[i:i + 1]
        return value
    return dict({k: rows(v) for k, v in kwargs.items()}, x=rows(kwargs.get("x", X)))


def test_two_threads_calling_one_tunnel_get_their_own_results():
    tunnel = NoiseTunnel(LayerIntegratedGradients(BRANCHES, BRANCHES.a))
    call = lambda seed: tunnel.attribute(X, nt_samples=6, nt_samples_batch_size=4, stdevs=0.2, target=1,  # noqa: E731
                                         seed=seed, joint=True, path_density="adaptive")
    expected = {seed: call(seed) for seed in range(4)}
    differences = []

    def work(seed):
        for _ in range(3):
            differences.append(float((call(seed) - expected[seed]).abs().max()))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(differences) == 12 and max(differences) == 0.0

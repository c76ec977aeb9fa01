"""After any call, also one that raised, the user's model is as it was."""

import pytest
import torch
from captum._utils.gradient import compute_gradients
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from noisegrad import NoiseTunnel
from noisegrad._gradients import summed_gradients


class FlakyNet(nn.Module):
    """BatchNorm, dropout, a frozen layer, and a forward that can be told to fail on its n-th call."""

    def __init__(self, fail_on_call=None):
        super().__init__()
        self.frozen = nn.Linear(5, 8)
        self.frozen.requires_grad_(False)
        self.norm = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 3)
        self.calls, self.fail_on_call = 0, fail_on_call

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("forward failed on purpose")
        return self.head(self.drop(torch.tanh(self.norm(self.frozen(x)))))


def snapshot(model):
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": {n: p.grad for n, p in model.named_parameters()},
        "grad_values": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    for name in before["params"]:
        assert torch.equal(after["params"][name], before["params"][name]), name
        assert after["requires_grad"][name] == before["requires_grad"][name], name
        assert after["grad"][name] is before["grad"][name], name
        if before["grad_values"][name] is not None:
            assert torch.equal(after["grad_values"][name], before["grad_values"][name]), name
    for name in before["buffers"]:
        assert torch.equal(after["buffers"][name], before["buffers"][name]), name
    assert after["training"] == before["training"]


def prepared(fail_on_call=None, train=True):
    torch.manual_seed(0)
    model = FlakyNet(fail_on_call).train(train)
    model(torch.randn(16, 5)).sum().backward()  # the user's own pending gradients
    model.calls = 0
    return model


@pytest.mark.parametrize("train", [True, False])
def test_a_successful_call_leaves_model_grads_modes_flags_and_running_stats_as_they_were(train):
    model = prepared(train=train)
    before = snapshot(model)
    with pytest.warns(UserWarning, match="BatchNorm") if train else _no_warning():
        NoiseTunnel(IntegratedGradients(model)).attribute(
            torch.randn(4, 5), nt_samples=6, nt_samples_batch_size=4, target=1, n_steps=3, seed=0
        )
    assert model.calls > 0
    assert_unchanged(model, before)


def test_a_call_that_raises_midway_leaves_everything_as_it_was():
    model = prepared(fail_on_call=3)
    before = snapshot(model)
    method = Saliency(model)
    with pytest.raises(RuntimeError, match="on purpose"):
        NoiseTunnel(method).attribute(torch.randn(4, 5), nt_samples=8, nt_samples_batch_size=2, target=0, seed=0)
    assert model.calls == 3
    assert_unchanged(model, before)
    assert method.gradient_func is compute_gradients


class CarelessNet(FlakyNet):
    """A forward that calls backward itself, writing into .grad."""

    def forward(self, x):
        out = super().forward(x)
        out.sum().backward(retain_graph=True)
        return out


@pytest.mark.parametrize("as_bound_method", [False, True])
def test_backward_inside_the_call_cannot_touch_the_users_grad(as_bound_method):
    torch.manual_seed(0)
    model = CarelessNet().eval()
    model(torch.randn(3, 5))  # leaves gradients in .grad, as a user's training step would
    before = snapshot(model)
    assert before["grad"]["head.weight"] is not None
    forward_func = model.forward if as_bound_method else model
    NoiseTunnel(Saliency(forward_func)).attribute(torch.randn(2, 5), nt_samples=2, target=0, seed=0)
    assert_unchanged(model, before)


def test_the_lean_gradient_path_returns_exactly_captums_gradients():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(7, 5, requires_grad=True)
    for target in (2, [0, 1, 2, 3, 0, 1, 2], torch.arange(7) % 4):
        theirs = compute_gradients(model, x, target_ind=target)
        ours = summed_gradients(model, x, target_ind=target)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_the_lean_gradient_path_needs_a_target_for_multi_output_models():
    model = nn.Linear(5, 3)
    with pytest.raises(ValueError, match="target is needed"):
        summed_gradients(model, torch.randn(2, 5, requires_grad=True))


class _no_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


def test_two_threads_on_one_model_get_right_results_and_leave_grads_and_rng_alone():
    """Both threads' results equal single-threaded runs; every p.grad is the user's tensor; the RNG did not move."""
    import threading

    import numpy as np

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 3)).eval()
    model(torch.randn(4, 5)).sum().backward()  # pending gradients of the user's own training step
    before = snapshot(model)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    calls = [
        (NoiseTunnel(Saliency(model)), dict(nt_samples=16, nt_samples_batch_size=4, stdevs=0.3, target=0, seed=1)),
        (NoiseTunnel(IntegratedGradients(model)), dict(nt_samples=8, stdevs=0.3, target=1, n_steps=8, seed=2)),
    ]
    expected = [nt.attribute(x, **kwargs) for nt, kwargs in calls]
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    results, errors = {}, []

    def work(index):
        try:
            nt, kwargs = calls[index % 2]
            for _ in range(5):
                results.setdefault(index, []).append(nt.attribute(x, **kwargs))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index, outs in results.items():
        for out in outs:
            torch.testing.assert_close(out, expected[index % 2], rtol=0, atol=0)
    assert_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


@pytest.mark.parametrize("wrap", ["lambda", "partial", "closure"])
def test_batchnorm_behind_a_lambda_or_partial_is_found_and_restored(wrap):
    import functools

    model = prepared(train=True)
    before = snapshot(model)
    if wrap == "lambda":
        forward = lambda t: model(t)  # noqa: E731
    elif wrap == "partial":
        forward = functools.partial(model.forward)
    else:
        def make():
            inner = model

            def forward(t):
                return inner(t)
            return forward
        forward = make()
    with pytest.warns(UserWarning, match="BatchNorm layers in training mode"):
        NoiseTunnel(Saliency(forward)).attribute(torch.randn(4, 5), nt_samples=3, target=0, seed=0)
    assert_unchanged(model, before)


def test_a_forward_function_with_no_module_to_be_found_says_so():
    weight = torch.randn(5, 3)
    with pytest.warns(UserWarning, match="found no torch.nn.Module behind the forward function"):
        NoiseTunnel(Saliency(lambda t: t @ weight)).attribute(torch.randn(2, 5), nt_samples=2, target=0, seed=0)


def test_a_seeded_call_on_a_model_that_draws_noise_itself_in_eval_mode_is_reproducible_and_leaves_the_rng():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(torch.tanh(x + torch.randn_like(x)))

    model = Noisy().eval()
    x = torch.randn(2, 4)
    state = torch.get_rng_state()
    first = NoiseTunnel(Saliency(model)).attribute(x, nt_samples=4, target=0, seed=0)
    second = NoiseTunnel(Saliency(model)).attribute(x, nt_samples=4, target=0, seed=0)
    assert torch.equal(first, second) and torch.equal(torch.get_rng_state(), state)


def test_automatic_chunks_measure_a_model_with_batchnorm_in_training_mode():
    import warnings

    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = NoiseTunnel(Saliency(model)).attribute(torch.randn(3, 5), nt_samples=4, target=0, seed=0,
                                                     nt_samples_batch_size="auto")
    assert out.shape == (3, 5)


class RowsOfWeight(nn.Module):
    """A layer whose output is a view of its own parameter: rows of ``table`` picked by nothing but position."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(64, 4, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return self.table[: x.shape[0]]


class KeepsItsAttribution(Saliency):
    """A method that returns a tensor it keeps (a cache, say): it must find it unchanged."""

    def __init__(self, model, store):
        super().__init__(model)
        self.store = store  # shared with the copy noisegrad calls

    def attribute(self, inputs, **kwargs):
        self.store["kept"] = torch.full_like(inputs, 3.0)
        return self.store["kept"]


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_attributions_that_are_the_models_or_the_methods_own_tensors_are_never_written(nt_type):
    """The statistics centre a chunk in place only when it is known to be new (Saliency's, say): a layer output
    that is a view of a parameter, or a tensor the method keeps, stays as it was."""
    from captum.attr import LayerActivation

    layer = RowsOfWeight().eval()
    model = nn.Sequential(layer, nn.Linear(4, 2)).eval()
    before = layer.table.detach().clone()
    NoiseTunnel(LayerActivation(model, layer)).attribute(torch.rand(3, 5), nt_type=nt_type, nt_samples=8,
                                                          nt_samples_batch_size=4, seed=0)
    assert torch.equal(layer.table.detach(), before)

    store = {}
    NoiseTunnel(KeepsItsAttribution(nn.Linear(5, 2), store)).attribute(
        torch.rand(3, 5), nt_type=nt_type, nt_samples=8, nt_samples_batch_size=4, seed=0)
    assert torch.equal(store["kept"], torch.full((3 * 4, 5), 3.0))


class SummedInputs(nn.Module):
    """``lin(a + b)``: autograd hands both inputs one and the same gradient tensor."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, a, b):
        return self.lin(a + b)


@pytest.mark.parametrize("nt_type", ["smoothgrad_sq", "vargrad"])
def test_saliency_without_abs_of_two_inputs_sharing_a_gradient_gives_each_its_own_statistics(nt_type):
    """Both inputs' gradient is the first row of the weight for every sample: SmoothGrad² is its square for both,
    VarGrad zero for both (centring one input's samples in place must not reach the other's)."""
    model = SummedInputs().eval()
    a, b = torch.rand(3, 4), torch.rand(3, 4)
    out = NoiseTunnel(Saliency(model)).attribute((a, b), nt_type=nt_type, nt_samples=6, nt_samples_batch_size=3,
                                                 target=0, abs=False, seed=0)
    weight = model.lin.weight.detach()[0].expand(3, 4)
    expected = weight * weight if nt_type == "smoothgrad_sq" else torch.zeros(3, 4)
    for attribution in out:
        torch.testing.assert_close(attribution, expected, rtol=1e-6, atol=1e-7)


class SquaredSum(nn.Module):
    """``(Σ x)²``: the gradient w.r.t. ``x`` is autograd's expanded view (a zero stride) of one value per row."""

    def forward(self, x):
        total = x.sum(1)
        return torch.stack([total * total, total], 1)


@pytest.mark.parametrize("nt_type", ["smoothgrad_sq", "vargrad"])
def test_saliency_without_abs_of_an_expanded_gradient_equals_its_absolute_value(nt_type):
    """Positive inputs and little noise: every gradient 2 Σ x is positive, so abs=False and abs=True (a new
    tensor) must give the same statistics, not fail writing into a view whose elements share memory."""
    x = 1.0 + torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    options = dict(nt_type=nt_type, nt_samples=6, nt_samples_batch_size=3, stdevs=0.01, target=0, seed=0)
    signed = NoiseTunnel(Saliency(SquaredSum())).attribute(x, abs=False, **options)
    absolute = NoiseTunnel(Saliency(SquaredSum())).attribute(x, abs=True, **options)
    torch.testing.assert_close(signed, absolute, rtol=0, atol=0)

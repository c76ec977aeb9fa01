"""NoiseGrad and FusionGrad: noise on the model's weights, in a private copy, batched over weight draws.

The reference below is written the way the paper's code works: deep-copy the
model, write one weight draw's noise into the copy, call Captum's method,
repeat per draw (and per input draw for FusionGrad), and reduce with numpy-
style formulas. Its noise is rebuilt from the keyed generator's primitives
(``row_keys`` and ``standard_normal``), not from noisegrad's perturbation
code, so equality checks the perturbation, the batching and the statistics.
"""

import copy
import functools
import threading

import pytest
import torch
from captum.attr import (
    DeepLift,
    FeatureAblation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    Occlusion,
    Saliency,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import noisegrad.perturb.weights as weights_module
from noisegrad import NoiseTunnel, SmoothedAttribution, weight_noise
from noisegrad.perturb.weight_spec import parameter_key, select_parameters, weight_draws
from noisegrad.plan import ChunkPlan
from noisegrad.sampling.keyed import row_keys, standard_normal
from noisegrad.sampling.streams import Purpose, stream

SEED = 7
NT_TYPES = ["smoothgrad", "smoothgrad_sq", "vargrad"]


class BatchNormCNN(nn.Module):
    """A small CNN with BatchNorm (in eval mode in the tests): conv → BN → tanh → conv → tanh → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.head = nn.Linear(3 * 5 * 5, 4)

    def forward(self, x):
        hidden = torch.tanh(self.bn(self.conv1(x)))
        return self.head(torch.tanh(self.conv2(hidden)).flatten(1))


def make_cnn(seed=0):
    torch.manual_seed(seed)
    model = BatchNormCNN().double()
    with torch.no_grad():  # running statistics that are not the identity, so eval-mode BN does something
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


X = torch.randn(3, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
#: Four feature groups (quadrant-like blocks per channel pair), so that ablation methods make few forwards.
MASK = (torch.arange(25).reshape(1, 1, 5, 5) // 7).expand(1, 2, 5, 5).clone()


# --------------------------------------------------------------------------- the hand-written reference


def reference_weights(model, names, draw, sigma, mode="multiplicative"):
    """Weight draw ``draw`` of the chosen parameters, from the keyed generator's primitives."""
    values = {}
    for name, parameter in model.named_parameters():
        if name in names:
            keys = row_keys(SEED, stream(Purpose.WEIGHT_NOISE), torch.tensor([parameter_key(name)]),
                            torch.tensor([draw]))
            eps = standard_normal(keys, tuple(parameter.shape), torch.empty((1, 1) + tuple(parameter.shape),
                                                                          dtype=parameter.dtype))[0, 0]
            values[name] = parameter.detach() * (1 + sigma * eps) if mode == "multiplicative" else \
                parameter.detach() + sigma * eps
    return values


def reference_input_noise(x, sample):
    keys = row_keys(SEED, stream(Purpose.INPUT_NOISE, 0), torch.arange(x.shape[0]), torch.tensor([sample]))
    return standard_normal(keys, tuple(x.shape[1:]), torch.empty((1,) + tuple(x.shape), dtype=x.dtype))[0]


def reference(model, make_method, x, draws, per_draw, sigma_w, stdevs, nt_type, mode="multiplicative",
              filter=None, **kwargs):
    """Deep-copy per draw, perturb, call Captum's method on each input draw; statistics over all samples."""
    names = select_parameters(model, filter)
    maps, deltas = [], []
    for draw in range(draws):
        noisy = copy.deepcopy(model)
        values = reference_weights(model, names, draw, sigma_w, mode)
        with torch.no_grad():
            for name, parameter in noisy.named_parameters():
                if name in values:
                    parameter.copy_(values[name])
        for n in range(per_draw):
            inputs = x if not x.is_floating_point() else (  # token ids get no noise
                x + stdevs * reference_input_noise(x, draw * per_draw + n)).requires_grad_()
            out = make_method(noisy).attribute(inputs, **kwargs)
            if kwargs.get("return_convergence_delta"):
                out, delta = out
                deltas.append(delta)
            maps.append(out.detach())
    maps = torch.stack(maps)
    value = {"smoothgrad": maps.mean(0), "smoothgrad_sq": (maps * maps).mean(0),
             "vargrad": maps.var(0, correction=0)}[nt_type]
    return (value, torch.stack(deltas).mean(0)) if deltas else value


def smoothed(make_method, model, x, draws, per_draw, sigma_w, stdevs, nt_type, batch_size=None, batched="auto",
             **kwargs):
    return NoiseTunnel(make_method(model)).attribute(
        x, nt_type=nt_type, nt_samples=per_draw, nt_samples_batch_size=batch_size, stdevs=stdevs, seed=SEED,
        weight_noise=weight_noise(sigma_w, draws=draws, batched=batched, filter=kwargs.pop("filter", None),
                                  mode=kwargs.pop("mode", "multiplicative")), **kwargs)


# --------------------------------------------------------------------------- equal to the reference


METHODS = {
    "Saliency": (lambda m: Saliency(m), dict(target=1, abs=False)),
    "IntegratedGradients": (lambda m: IntegratedGradients(m), dict(target=2, n_steps=6)),
}


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("nt_type, batched", [(t, True) for t in NT_TYPES] + [("vargrad", False)])
@pytest.mark.parametrize("per_draw, stdevs", [(1, 0.0), (3, 0.2)], ids=["noisegrad", "fusiongrad"])
def test_equals_the_deep_copy_reference_given_the_same_noise(name, nt_type, batched, per_draw, stdevs):
    """A CNN with BatchNorm in eval mode; NoiseGrad (one noise-free input per draw) and FusionGrad (input noise)."""
    make, kwargs = METHODS[name]
    model = make_cnn()
    expected = reference(model, make, X, 4, per_draw, 0.3, stdevs, nt_type, **kwargs)
    got = smoothed(make, model, X, 4, per_draw, 0.3, stdevs, nt_type, batch_size=2 * per_draw, batched=batched,
                   **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_ig_deltas_are_each_copys_own_completeness_gap():
    make, kwargs = METHODS["IntegratedGradients"]
    model = make_cnn()
    expected, expected_delta = reference(model, make, X, 3, 2, 0.3, 0.2, "smoothgrad", return_convergence_delta=True,
                                         **kwargs)
    got, delta = smoothed(make, model, X, 3, 2, 0.3, 0.2, "smoothgrad", return_convergence_delta=True, **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(delta, expected_delta, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("make, kwargs", [
    (lambda m: LayerIntegratedGradients(m, m.conv2), dict(target=0, n_steps=4)),
    (lambda m: LayerGradientXActivation(m, m.bn), dict(target=3)),
    (lambda m: DeepLift(m), dict(target=1)),
    (lambda m: InputXGradient(m), dict(target=1)),
    (lambda m: FeatureAblation(m), dict(target=2, feature_mask=MASK)),
    (lambda m: Occlusion(m), dict(target=2, sliding_window_shapes=(2, 3, 3), strides=2)),
], ids=["LayerIntegratedGradients", "LayerGradientXActivation", "DeepLift", "InputXGradient", "FeatureAblation",
        "Occlusion"])
def test_layer_hook_and_perturbation_methods_equal_the_reference(make, kwargs):
    """Layer methods attribute to the copy's layer, DeepLift hooks the copy; the rest run several draws per forward."""
    model = make_cnn()
    expected = reference(model, make, X, 3, 2, 0.3, 0.1, "vargrad", filter="*", **kwargs)
    got = smoothed(make, model, X, 3, 2, 0.3, 0.1, "vargrad", batch_size=4, filter="*", **kwargs)
    # ablation methods difference two forwards: float64 rounding of the batched convolutions shows at 1e-10
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("make, kwargs", [
    (Saliency, dict(target=1, abs=False)),
    (InputXGradient, dict(target=1)),
    (lambda m: IntegratedGradients(m), dict(target=2, n_steps=5, internal_batch_size=48)),
    (FeatureAblation, dict(target=0, feature_mask=MASK, perturbations_per_eval=3)),
    (Occlusion, dict(target=0, sliding_window_shapes=(2, 3, 3), strides=2, perturbations_per_eval=2)),
], ids=["Saliency", "InputXGradient", "IntegratedGradients", "FeatureAblation", "Occlusion"])
def test_black_box_methods_lay_out_each_forward_in_blocks_of_the_copies(monkeypatch, make, kwargs):
    """What one batched forward assumes of each method (noisegrad._captum.BLACK_BOX_METHODS) holds: batched over
    draws it gives what one call per draw gives."""
    model = make_cnn()
    batched = smoothed(make, model, X, 4, 2, 0.3, 0.1, "smoothgrad", batch_size=8, **kwargs)
    monkeypatch.setattr(weights_module._captum, "calls_model_as_black_box", lambda method: False)
    per_draw = smoothed(make, model, X, 4, 2, 0.3, 0.1, "smoothgrad", batch_size=8, **kwargs)
    torch.testing.assert_close(batched, per_draw, rtol=1e-9, atol=1e-12)


def test_tuple_inputs_and_per_example_forward_arguments_follow_their_rows(monkeypatch):
    """Each input tensor and each per-example extra argument is split by weight draw; other arguments are shared."""
    from conftest import make_two_input

    model = make_two_input()
    a = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    b = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    scale = torch.rand(3, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) + 0.5

    def run():
        return NoiseTunnel(IntegratedGradients(model)).attribute(
            (a, b), nt_samples=2, nt_samples_batch_size=4, stdevs=0.1, target=1, n_steps=3, seed=SEED,
            additional_forward_args=(scale,), weight_noise=weight_noise(0.3, draws=4))

    batched = run()
    monkeypatch.setattr(weights_module._captum, "calls_model_as_black_box", lambda method: False)
    for got, expected in zip(batched, run()):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("make, kwargs", [(IntegratedGradients, dict(n_steps=4)), (Saliency, dict(abs=False))])
def test_several_outputs_at_once_give_each_outputs_own_run(make, kwargs):
    """outputs= tiles every copy once per output; the weight draws still split each forward by draw."""
    nt = NoiseTunnel(make(make_cnn()))
    common = dict(nt_samples=2, stdevs=0.1, seed=SEED, weight_noise=weight_noise(0.3, draws=4),
                  nt_samples_batch_size=4, **kwargs)
    together = torch.as_tensor(nt.attribute(X, outputs=[0, 2], **common))
    for index, output in enumerate((0, 2)):
        torch.testing.assert_close(together[..., index], nt.attribute(X, target=output, **common),
                                   rtol=1e-9, atol=1e-12)


def test_additive_noise_and_a_filter_by_name_equal_the_reference():
    make, kwargs = METHODS["Saliency"]
    model = make_cnn()
    expected = reference(model, make, X, 3, 1, 0.05, 0.0, "smoothgrad", mode="additive", filter="conv*", **kwargs)
    got = smoothed(make, model, X, 3, 1, 0.05, 0.0, "smoothgrad", mode="additive", filter="conv*", **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_gradient_shap_draws_per_sample_with_weight_noise_too():
    """GradientShap attributes one weight draw per call; seeded, the chunk size does not change its result."""
    model, baselines = make_cnn(), torch.zeros(4, 2, 5, 5, dtype=torch.float64)
    runs = [smoothed(GradientShap, model, X, 2, 2, 0.3, 0.1, "smoothgrad", batch_size=size, target=0,
                     baselines=baselines, n_samples=2) for size in (1, None)]
    for run in runs[1:]:
        torch.testing.assert_close(run, runs[0], rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("batched", [True, False])
def test_results_do_not_depend_on_the_chunk_size(batched):
    make, kwargs = METHODS["Saliency"]
    model = make_cnn()
    runs = [smoothed(make, model, X, 4, 3, 0.3, 0.2, "vargrad", batch_size=size, batched=batched, **kwargs)
            for size in (None, 1, 4, 7)]  # all at once; a third of a draw; across draws; two draws, then one
    for run in runs[1:]:
        torch.testing.assert_close(run, runs[0], rtol=1e-9, atol=1e-12)


def test_an_example_alone_gets_what_it_gets_in_its_batch():
    """The weight draws are shared by every example of a call: keyed by the draw, not by the example."""
    make, kwargs = METHODS["Saliency"]
    model = make_cnn()
    spec = weight_noise(0.3, draws=4)
    nt = NoiseTunnel(make(model))
    whole = nt.attribute(X, nt_samples=2, stdevs=0.2, seed=SEED, weight_noise=spec, **kwargs)
    alone = nt.attribute(X[2:], nt_samples=2, stdevs=0.2, seed=SEED, weight_noise=spec, example_ids=[2], **kwargs)
    torch.testing.assert_close(alone[0], whole[2], rtol=1e-9, atol=1e-12)


def test_a_parameters_noise_depends_on_its_name_not_on_which_others_are_chosen():
    w = torch.randn(3, 4, dtype=torch.float64)
    one = weight_draws(w, "head.weight", range(0, 6), seed=SEED, sigma=0.2)
    torch.testing.assert_close(weight_draws(w, "head.weight", range(2, 5), seed=SEED, sigma=0.2), one[2:5],
                               rtol=0, atol=0)
    assert not torch.equal(weight_draws(w, "other.weight", range(0, 6), seed=SEED, sigma=0.2), one)
    pairs = weight_draws(w, "head.weight", range(0, 6), seed=SEED, sigma=0.2, sampler="antithetic")
    torch.testing.assert_close(pairs[0::2] + pairs[1::2], 2 * w.expand(3, 3, 4), rtol=1e-12, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(limit_units=st.integers(1, 12), unit=st.integers(1, 12), chunk=st.integers(1, 40),
       stops=st.lists(st.integers(1, 150), max_size=6))
def test_chunks_never_straddle_two_weight_draws(limit_units, unit, chunk, stops):
    plan = ChunkPlan(limit=limit_units * unit, chunk=chunk, unit=unit)
    start, stops = 0, sorted(stops)
    while start < plan.limit:
        ids = plan.next(start, stops.pop(0) if stops else None)
        assert len(ids) >= 1 and ids.start == start
        assert ids.start // unit == (ids.stop - 1) // unit or (ids.start % unit == 0 and ids.stop % unit == 0)
        start = ids.stop
    assert start == plan.limit


# --------------------------------------------------------------------------- the user's model is never modified


def snapshot(model):
    return {name: (t, t.detach().clone(), t.data_ptr()) for name, t in
            list(model.named_parameters()) + list(model.named_buffers())}


def assert_unchanged(model, before):
    now = dict(list(model.named_parameters()) + list(model.named_buffers()))
    assert set(now) == set(before)
    for name, (tensor, values, pointer) in before.items():
        assert now[name] is tensor and tensor.data_ptr() == pointer, name
        assert torch.equal(tensor, values), name


_CALLS = {"count": 0, "raise_at": None, "error": None}


class Failing(BatchNormCNN):
    """Raises in the middle of a call (a module-level counter: the model's copy shares it)."""

    def forward(self, x):
        _CALLS["count"] += 1
        if _CALLS["count"] == _CALLS["raise_at"]:
            raise _CALLS["error"]
        return super().forward(x)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
@pytest.mark.parametrize("make", [Saliency, lambda m: LayerGradientXActivation(m, m.conv2)], ids=["batched", "loop"])
def test_an_exception_or_an_interrupt_mid_call_leaves_the_model_as_it_was(error, make):
    torch.manual_seed(0)
    model = Failing().double().eval()
    before = snapshot(model)
    _CALLS.update(count=0, raise_at=3, error=error)
    try:
        with pytest.raises(type(error)):
            NoiseTunnel(make(model)).attribute(X, nt_samples=2, nt_samples_batch_size=2, stdevs=0.1, target=0,
                                               seed=SEED, weight_noise=weight_noise(0.5, draws=6, filter="*"))
    finally:
        _CALLS.update(raise_at=None)
    assert _CALLS["count"] == 3
    assert_unchanged(model, before)


def test_another_thread_running_the_model_meanwhile_sees_the_original_weights():
    """If the noisy weights were ever swapped into the user's module, even inside functional_call, the other
    thread's forwards would see them."""
    model = make_cnn()
    rows = X.repeat(4, 1, 1, 1)
    clean = model(rows).detach()
    before = snapshot(model)
    stop, mismatches = threading.Event(), []

    def plain_forwards():
        while not stop.is_set():
            with torch.no_grad():
                if not torch.equal(model(rows), clean):
                    mismatches.append("noisy output")

    worker = threading.Thread(target=plain_forwards)
    worker.start()
    try:
        for make in (Saliency, lambda m: LayerIntegratedGradients(m, m.conv1)):
            for _ in range(4):
                NoiseTunnel(make(model)).attribute(X, nt_samples=2, stdevs=0.1, target=0, seed=SEED,
                                                   weight_noise=weight_noise(1.0, draws=4, filter="*"))
    finally:
        stop.set()
        worker.join()
    assert not mismatches
    assert_unchanged(model, before)


class Watched(BatchNormCNN):
    """Notes which instance runs (its copies too: the list is a module global, not copied with the model)."""

    def forward(self, x):
        RAN.append(self)
        return super().forward(x)


RAN: list = []
G_MODEL = Watched().double()
G_MODEL.load_state_dict(make_cnn().state_dict())
G_MODEL.eval()


@pytest.mark.parametrize("wrap", ["module", "bound method", "lambda", "partial", "closure", "global"])
def test_the_forward_function_is_pointed_at_the_copy_however_it_reaches_the_model(wrap):
    """The user's module never runs; its copy does. Results equal the model passed directly."""
    model = G_MODEL

    def closure(x):
        return model(x)

    forward = {"module": model, "bound method": model.forward, "lambda": lambda x: model(x),
               "partial": functools.partial(model.__call__), "closure": closure,
               "global": lambda x: G_MODEL(x)}[wrap]
    RAN.clear()
    got = NoiseTunnel(Saliency(forward)).attribute(X, nt_samples=2, stdevs=0.1, target=1, seed=SEED, abs=False,
                                                  weight_noise=weight_noise(0.3, draws=3))
    assert RAN and not any(m is model for m in RAN)
    expected = smoothed(Saliency, model, X, 3, 2, 0.3, 0.1, "smoothgrad", target=1, abs=False)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_the_users_method_object_is_left_as_it_was():
    model = make_cnn()
    method = LayerIntegratedGradients(model, model.conv1)
    before = dict(vars(method))
    NoiseTunnel(method).attribute(X, nt_samples=1, stdevs=0.0, target=0, n_steps=3, seed=SEED,
                                  weight_noise=weight_noise(draws=2))
    assert vars(method) == before and method.layer is model.conv1 and method.forward_func is model


# --------------------------------------------------------------------------- standard errors and "auto"


def mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()


XM = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


class Recording(Saliency):
    """Saliency that keeps every chunk's maps (rows sample-major): the samples noisegrad averages."""

    maps: list = []

    def attribute(self, inputs, **kwargs):
        out = super().attribute(inputs, **kwargs)
        self.maps.append(out.detach().clone())
        return out


@pytest.mark.parametrize("sampler", ["iid", "antithetic"])
def test_the_standard_error_counts_weight_draws_and_matches_the_spread_over_seeds(sampler):
    """Samples of one weight draw share its model: the units are whole draws. The reported error matches the spread
    of the estimate over seeds, where one that took all draws × input draws as independent samples falls short."""
    nt, draws, per_draw = NoiseTunnel(Recording(mlp())), 16, 4
    spec = weight_noise(0.4, draws=draws, sampler=sampler)
    runs, naive = [], []
    for seed in range(40):
        Recording.maps = []
        runs.append(nt.attribute(XM, nt_samples=per_draw, stdevs=0.05, target=0, abs=False, seed=seed,
                                 return_stderr=True, weight_noise=spec))
        samples = torch.cat(Recording.maps).reshape((draws * per_draw,) + tuple(XM.shape))
        naive.append(samples.std(0) / (draws * per_draw) ** 0.5)
    estimates = torch.stack([r.attributions for r in runs])
    empirical = estimates.std(dim=0).norm()
    reported = torch.stack([r.stderr for r in runs]).pow(2).mean(dim=0).sqrt().norm()
    assert runs[0].dof == 7 and runs[0].nt_samples == draws * per_draw
    assert 0.7 < float(reported / empirical) < 1.45
    if sampler == "iid":  # (antithetic pairs cancel what the naive error counts, so it says nothing there)
        assert float(torch.stack(naive).pow(2).mean(0).sqrt().norm() / empirical) < 0.6


def test_auto_adds_weight_draws_until_the_relative_error_meets_tol():
    result = NoiseTunnel(Saliency(mlp())).attribute(
        XM, nt_samples=2, stdevs=0.05, target=0, abs=False, seed=SEED, tol=0.1, max_samples=400,
        weight_noise=weight_noise(0.3, draws="auto"))
    assert isinstance(result, SmoothedAttribution)
    assert bool(result.converged.all()) and bool((result.relative_stderr <= 0.1).all())
    assert bool((result.nt_samples % 2 == 0).all()) and bool((result.nt_samples >= 16).all())


def test_inputs_that_leave_do_not_give_the_others_more_weight_draws_per_chunk(monkeypatch):
    """A weight draw's stacked parameters grow with a chunk's samples, not its noisy copies: under "auto" the inputs
    left keep the samples per chunk the budget gave the batch (helper-65: they got 6 times as many, and one chunk's
    draws took 9.5 MB against memory_budget=1.5 MB)."""
    chunks, original = [], ChunkPlan.next

    def recording(plan, start, stop_at=None):
        chunks.append(plan.chunk)
        return original(plan, start, stop_at)

    monkeypatch.setattr(ChunkPlan, "next", recording)
    stdevs = torch.tensor([0.01] * (XM.shape[0] - 1) + [3.0], dtype=XM.dtype).unsqueeze(1)  # the last runs on alone
    result = NoiseTunnel(Saliency(mlp())).attribute(
        XM, nt_samples=2, stdevs=stdevs, target=0, abs=False, seed=SEED, tol=0.1, max_samples=2000,
        weight_noise=weight_noise(0.02, draws="auto"), memory_budget=10_000)
    assert len(set(result.nt_samples.tolist())) > 1, result.nt_samples  # inputs did leave
    assert len(chunks) > 2 and set(chunks) == {chunks[0]}, (chunks, result.nt_samples)


def test_no_forward_sees_more_rows_than_max_batch_rows(monkeypatch):
    """The rows of all weight draws in one forward count against the budget (3 examples x 2 input draws x 4 steps =
    24 rows per draw: 60 rows hold 2 draws)."""
    from noisegrad.perturb._draws_forward import DrawsForward

    sizes, original = [], DrawsForward.__call__

    def counting(self, draws, copies, args, kwargs):
        sizes.append(args[0].shape[0])
        return original(self, draws, copies, args, kwargs)

    monkeypatch.setattr(DrawsForward, "__call__", counting)
    make, kwargs = METHODS["IntegratedGradients"]
    model = make_cnn()
    got = NoiseTunnel(IntegratedGradients(model)).attribute(
        X, nt_samples=2, stdevs=0.1, target=2, n_steps=4, seed=SEED, max_batch_rows=60,
        weight_noise=weight_noise(0.3, draws=6, batched=True))  # one forward for both draws (the loop: one each)
    assert sizes and max(sizes) == 48
    expected = smoothed(make, model, X, 6, 2, 0.3, 0.1, "smoothgrad", target=2, n_steps=4)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_a_memory_budget_counts_the_weight_draws_and_leaves_the_result_as_it_was():
    make, kwargs = METHODS["Saliency"]
    model = make_cnn()
    whole = smoothed(make, model, X, 4, 3, 0.3, 0.2, "smoothgrad_sq", **kwargs)
    budgeted = NoiseTunnel(make(model)).attribute(
        X, nt_type="smoothgrad_sq", nt_samples=3, stdevs=0.2, seed=SEED, memory_budget=40_000,
        weight_noise=weight_noise(0.3, draws=4), **kwargs)
    torch.testing.assert_close(budgeted, whole, rtol=1e-9, atol=1e-12)


def test_auto_takes_vmap_for_few_rows_per_draw_and_the_loop_beyond():
    from noisegrad.perturb._draws_forward import VMAP_MOST_ROWS, DrawsForward

    cpu = torch.device("cpu")
    for model, most in ((make_cnn(), VMAP_MOST_ROWS["convolution"]), (mlp(), VMAP_MOST_ROWS["linear"])):
        forward = DrawsForward(model, model, "auto")
        assert forward.batches(most, cpu) and not forward.batches(most + 1, cpu)
        assert DrawsForward(model, model, True).batches(10**6, cpu)
        assert not DrawsForward(model, model, False).batches(1, cpu)


# --------------------------------------------------------------------------- choosing parameters, and refusals


def test_the_default_filter_takes_linear_and_convolution_weights_not_biases_or_norms():
    model = make_cnn()
    assert select_parameters(model) == ("conv1.weight", "conv2.weight", "head.weight")
    assert select_parameters(model, nn.BatchNorm2d) == ("bn.weight",)
    assert select_parameters(model, ["*.bias"]) == ("conv1.bias", "bn.bias", "conv2.bias", "head.bias")
    assert select_parameters(model, lambda name, module: module is model.head) == ("head.weight", "head.bias")
    attention = nn.MultiheadAttention(4, 2)
    assert select_parameters(attention) == ("in_proj_weight", "out_proj.weight")


def test_tied_weights_get_one_noise():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared).double()
    assert select_parameters(model) == ("0.weight",)
    out = NoiseTunnel(Saliency(model)).attribute(XM[:, :3], nt_samples=1, stdevs=0.0, target=0, seed=SEED,
                                                 weight_noise=weight_noise(0.2, draws=4))
    assert out.shape == (2, 3)


class Broken:
    pass


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(weight_noise=0.2), TypeError, r"weight_noise must be made by noisegrad.weight_noise"),
    (dict(nt_samples="auto"), ValueError, r'give weight_noise\(draws="auto"\)'),
    (dict(joint=True, make=IntegratedGradients), ValueError, "does not take weight_noise"),
    (dict(noise_layer="conv1"), ValueError, "cannot be combined"),
    (dict(nt_samples=3, stdevs=0.0), ValueError, r"give nt_samples=1 \(NoiseGrad\)"),
    (dict(nt_samples=3, sampler="antithetic"), ValueError, "nt_samples must be even"),
    (dict(sampler="qmc", return_stderr=True), ValueError, "makes them dependent"),
    (dict(spec=dict(filter="nothing*")), ValueError, "chooses no floating-point parameter"),
    (dict(spec=dict(draws=3), nt_type="vargrad", return_stderr=True), ValueError, "needs at least 4 independent"),
    (dict(spec=dict(draws="auto"), max_samples=1, nt_samples=2), ValueError, "smaller than one weight draw"),
    (dict(spec=dict(draws=4), tol=0.05), ValueError, r'tol=0.05 applies only to weight_noise\(draws="auto"\)'),
])
def test_bad_arguments_are_refused_before_any_forward_pass(kwargs, error, match):
    model = make_cnn()
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    make = kwargs.pop("make", Saliency)
    spec = weight_noise(**kwargs.pop("spec", {}))
    arguments = dict(nt_samples=1, stdevs=0.1, target=0, seed=SEED, weight_noise=spec)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        NoiseTunnel(make(model)).attribute(X, **arguments)
    assert not calls


@pytest.mark.parametrize("kwargs, match", [
    (dict(sigma=-1.0), "sigma"), (dict(mode="scaled"), "mode"), (dict(draws=0), "draws"),
    (dict(sampler="qmc"), "sampler"), (dict(batched="yes"), "batched"), (dict(filter=3), "filter"),
])
def test_a_bad_weight_noise_spec_is_refused_when_made(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        weight_noise(**kwargs)


def test_a_forward_function_without_a_model_or_with_two_is_refused():
    a, b = nn.Linear(5, 3).double(), nn.Linear(5, 3).double()
    with pytest.raises(TypeError, match="no torch.nn.Module was found"):
        NoiseTunnel(Saliency(torch.sin)).attribute(XM, nt_samples=1, stdevs=0.0, weight_noise=weight_noise())
    with pytest.raises(TypeError, match="2 separate modules"):
        NoiseTunnel(Saliency(lambda x: a(x) + b(x))).attribute(XM, nt_samples=1, stdevs=0.0, target=0,
                                                               weight_noise=weight_noise())


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: vmap cannot run it, the loop over draws can."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3)

    def forward(self, x):
        out = self.lin(x)
        return out if float(out.detach().sum()) < 1e9 else -out


def test_a_model_vmap_cannot_run_falls_back_to_a_loop_over_draws_unless_vmap_was_asked_for():
    torch.manual_seed(0)
    model = DataDependent().double().eval()
    expected = reference(model, Saliency, XM, 4, 1, 0.3, 0.0, "smoothgrad", target=0, abs=False)
    got = smoothed(Saliency, model, XM, 4, 1, 0.3, 0.0, "smoothgrad", batched="auto", target=0, abs=False)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    with pytest.raises(RuntimeError, match=r"vmap cannot run the model"):
        smoothed(Saliency, model, XM, 4, 1, 0.3, 0.0, "smoothgrad", batched=True, target=0, abs=False)


# --------------------------------------------------------------------------- how the forward function reaches the model


#: A module-level name equal to an attribute name the forward functions below read (``holder.head``, ``self.head``):
#: an attribute is not a global, so this unrelated network must never be taken for the model.
head = nn.Linear(5, 3).double()


class Holder:
    """A plain (not callable) object holding the model, as explainer classes do."""

    def __init__(self, net):
        self.head = net

    def predict(self, x):
        return self.head(x)


def test_an_attribute_named_like_a_global_is_not_taken_for_it():
    from noisegrad._state import loaded_globals

    holder = Holder(mlp())
    assert loaded_globals((lambda t: holder.head(t) + torch.zeros(1)).__code__) == {"torch"}  # not "head"
    expected = reference(holder.head, Saliency, XM, 4, 1, 0.5, 0.0, "smoothgrad", target=1, abs=False)
    for forward in (lambda t: holder.head(t), holder.predict):
        got = NoiseTunnel(Saliency(forward)).attribute(XM, nt_samples=1, stdevs=0.0, target=1, abs=False, seed=SEED,
                                                       weight_noise=weight_noise(0.5, draws=4))
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


class Slotted:
    """Holds the model where noisegrad cannot follow it (no ``__dict__``)."""

    __slots__ = ("net",)


def test_the_users_model_running_during_the_call_is_an_error_not_a_silent_un_noised_result():
    slotted = Slotted()
    slotted.net = mlp()
    method = LayerGradientXActivation(lambda t: slotted.net(t), slotted.net[0])  # only the layer can be found
    with pytest.raises(RuntimeError, match="ran the user's own Linear instead of the private copy"):
        NoiseTunnel(method).attribute(XM, nt_samples=1, stdevs=0.0, target=0, seed=SEED,
                                      weight_noise=weight_noise(0.5, draws=2))
    slotted.net(XM)  # afterwards (and in other threads) the user's model runs as ever


def test_a_forward_that_cannot_be_redirected_is_refused_and_left_as_it_was():
    model = mlp()

    @functools.lru_cache(maxsize=None)
    def cached(t):
        return model(t)

    class SelfCopying:
        def __init__(self, net):
            self.net = net

        def __call__(self, x):
            return self.net(x)

        def __copy__(self):
            return self

    wrapped, predictor = cached.__wrapped__, SelfCopying(model)
    for forward, match in ((cached, "lru_cache"), (predictor, "returns the object itself")):
        with pytest.raises(TypeError, match=match):
            NoiseTunnel(Saliency(forward)).attribute(XM, nt_samples=1, stdevs=0.0, target=0, seed=SEED,
                                                     weight_noise=weight_noise(0.5, draws=2))
    assert cached.__wrapped__ is wrapped and predictor.net is model
    parameters = dict(model.named_parameters())
    with pytest.raises(TypeError, match="holds the model's parameter or buffer tensors itself"):
        NoiseTunnel(Saliency(lambda t: torch.func.functional_call(model, parameters, (t,)))).attribute(
            XM, nt_samples=1, stdevs=0.0, target=0, seed=SEED, weight_noise=weight_noise(0.5, draws=2))


class OwnDeepcopy(nn.Module):
    """A model with its own ``__deepcopy__`` (rebuilt from its state dict); ``shared=True`` shares its tensors."""

    def __init__(self, shared=False):
        super().__init__()
        self.net, self.shared = mlp(), shared

    def forward(self, x):
        return self.net(x)

    def __deepcopy__(self, memo):
        twin = OwnDeepcopy(self.shared)
        if self.shared:
            twin.net = self.net
        else:
            twin.load_state_dict(self.state_dict())
        return twin


def test_a_models_own_deepcopy_is_used_when_it_gives_an_independent_copy():
    model = OwnDeepcopy()
    expected = reference(model, Saliency, XM, 3, 1, 0.5, 0.0, "smoothgrad", target=1, abs=False)
    torch.testing.assert_close(smoothed(Saliency, model, XM, 3, 1, 0.5, 0.0, "smoothgrad", target=1, abs=False),
                               expected, rtol=1e-9, atol=1e-12)
    with pytest.raises(TypeError, match="does not give an independent module"):
        smoothed(Saliency, OwnDeepcopy(shared=True), XM, 3, 1, 0.5, 0.0, "smoothgrad", target=1)


def test_a_torchscript_model_is_refused_with_what_to_give_instead():
    scripted = torch.jit.script(mlp())
    with pytest.raises(TypeError, match="TorchScript module"):
        smoothed(Saliency, scripted, XM, 2, 1, 0.5, 0.0, "smoothgrad", target=1, filter="*.weight")


def test_the_users_module_is_not_written_nor_run_during_the_call():
    """Its .grad stays, a change another thread makes meanwhile (here: a hook of the user's, copied with the model,
    that runs mid-call) is kept, and no forward of the user's module runs, also not the chunk planner's."""
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    model(XM).sum().backward()
    grad = model[0].weight.grad
    seen, ran = [], []
    model.register_forward_pre_hook(lambda module, args: ran.append(module is model))

    def meanwhile(module, args, output):
        seen.append(model[0].weight.grad is grad)
        model.train()

    model[3].register_forward_hook(meanwhile)
    for chunking in (dict(nt_samples_batch_size="auto"), dict(memory_budget=10**6)):
        model.eval()
        NoiseTunnel(Saliency(model)).attribute(XM, nt_samples=2, stdevs=0.1, target=0, seed=SEED,
                                               weight_noise=weight_noise(0.2, draws=3), **chunking)
        assert model.training and model[0].weight.grad is grad
    assert seen and all(seen) and ran and not any(ran)


def test_a_filter_that_is_a_module_or_takes_the_wrong_arguments_is_refused_when_made():
    with pytest.raises(TypeError, match=r"filter=\.\.\.\) takes a module class, not a module"):
        weight_noise(filter=nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"filter=\.\.\.\) as a callable is called as filter\(name, module\)"):
        weight_noise(filter=lambda name: True)
    assert weight_noise(filter=lambda name, module: True).filter is not None


def test_parametrized_layers_missed_by_the_default_filter_are_named_in_a_warning():
    from torch.nn.utils import parametrizations

    model = mlp()
    parametrizations.weight_norm(model[0])
    with pytest.warns(UserWarning, match=r"no noise: 0\.parametrizations\.weight\.original0, "
                                         r"0\.parametrizations\.weight\.original1"):
        smoothed(Saliency, model, XM, 2, 1, 0.3, 0.0, "smoothgrad", target=0)
    names = ("0.parametrizations.weight.original1", "2.weight")  # weight_norm's direction, and a plain layer
    assert select_parameters(model, "*.original1") + select_parameters(model) == names
    expected = reference(model, Saliency, XM, 3, 1, 0.3, 0.0, "smoothgrad", filter=["*.original1", "2.weight"],
                         target=0, abs=False)
    got = smoothed(Saliency, model, XM, 3, 1, 0.3, 0.0, "smoothgrad", filter=["*.original1", "2.weight"], target=0,
                   abs=False)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- vmap or a loop, and memory


class Attention(nn.Module):
    """Self-attention then a linear head: under vmap PyTorch takes a fused kernel without a backward."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.attention(x, x, x)[0].mean(1))


def test_attention_models_take_the_loop_by_default_and_refuse_vmap_before_any_forward():
    torch.manual_seed(0)
    model = Attention().eval()
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    expected = reference(model, Saliency, x, 3, 1, 0.3, 0.0, "smoothgrad", target=1, abs=False)
    got = smoothed(Saliency, model, x, 3, 1, 0.3, 0.0, "smoothgrad", target=1, abs=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"batched=True\): torch.func.vmap cannot run nn.MultiheadAttention"):
        smoothed(Saliency, model, x, 3, 1, 0.3, 0.0, "smoothgrad", batched=True, target=1)


def test_a_users_hooks_see_plain_tensors_not_vmaps():
    model = mlp()
    recorded = []
    model[1].register_forward_hook(lambda module, args, output: recorded.append(output.detach()))
    smoothed(Saliency, model, XM, 4, 1, 0.3, 0.0, "smoothgrad", target=0)
    assert recorded and all(float(r.sum()) == float(r.sum()) and r.shape == (2, 16) for r in recorded)


def test_where_the_draws_are_looped_over_they_are_made_one_at_a_time_and_once(monkeypatch):
    made = []
    original = weights_module.WeightNoise.draw

    def recording(self, draw_ids):
        made.append(len(draw_ids))
        return original(self, draw_ids)

    monkeypatch.setattr(weights_module.WeightNoise, "draw", recording)
    model = mlp()
    expected = reference(model, Saliency, XM, 3, 4, 0.3, 0.1, "smoothgrad", target=0, abs=False)
    cases = ((False, None, 0, [1, 1, 1]), (False, 1, 0, [1, 1, 1]), (True, None, 0, [3]),
             (False, None, weights_module.STACKED_MOST_BYTES, [3]))  # small draws: stacked, looped inside the forward
    for batched, batch_size, most_bytes, draws_made in cases:
        monkeypatch.setattr(weights_module, "STACKED_MOST_BYTES", most_bytes)
        made.clear()
        got = smoothed(Saliency, model, XM, 3, 4, 0.3, 0.1, "smoothgrad", batch_size=batch_size, batched=batched,
                       target=0, abs=False)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
        assert made == draws_made, (batched, batch_size)


# --------------------------------------------------------------------------- token ids, and samples that differ anyway


class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, ids):
        return self.head(self.embedding(ids).mean(1))


def test_noisegrad_takes_token_ids_when_no_input_noise_is_asked_for():
    torch.manual_seed(0)
    model = TokenNet().double().eval()
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    make = lambda m: LayerIntegratedGradients(m, m.embedding)  # noqa: E731
    kwargs = dict(target=1, baselines=torch.zeros_like(ids), n_steps=4)
    expected = reference(model, make, ids, 3, 1, 0.3, 0.0, "smoothgrad", **kwargs)
    got = smoothed(make, model, ids, 3, 1, 0.3, 0.0, "smoothgrad", **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    with pytest.raises(TypeError, match="weight_noise=... with stdevs=0"):
        smoothed(make, model, ids, 3, 1, 0.3, 0.1, "smoothgrad", **kwargs)


def test_methods_whose_samples_differ_without_input_noise_are_not_refused():
    model = mlp()
    baselines = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for make, kwargs in ((GradientShap, dict(baselines=baselines, n_samples=2)),
                         (IntegratedGradients, dict(baselines=baselines, n_steps=3, draw_baseline_from_distrib=True))):
        out = NoiseTunnel(make(model)).attribute(XM, nt_type="vargrad", nt_samples=2, stdevs=0.0, target=0, seed=SEED,
                                                 weight_noise=weight_noise(0.0, draws=1), **kwargs)
        assert bool((out > 0).any())  # no weight noise (sigma 0): all the spread is the method's own sampling


def test_large_shapes_get_the_same_keyed_bits_in_blocks_and_leave_nothing_cached(monkeypatch):
    """A big weight's element keys are made block by block (never at full size, never kept in the process-wide
    cache); the numbers are those of the whole-shape construction."""
    import noisegrad.sampling.keyed as keyed

    keys = row_keys(SEED, stream(Purpose.WEIGHT_NOISE), torch.tensor([5, -9]), torch.arange(3))
    shape = (7, 3, 5)
    whole_bits = keyed.random_bits(keys, shape, torch.empty((3, 2) + shape, dtype=torch.int32))
    whole_normals = keyed.standard_normal(keys, shape, torch.empty((3, 2) + shape, dtype=torch.float64))
    keyed._element_keys.cache_clear()
    monkeypatch.setattr(keyed, "_CACHED_ELEMENTS", 20)
    monkeypatch.setattr(keyed, "_CPU_BLOCK", 16)  # several blocks, the last one partial
    blocked_bits = keyed.random_bits(keys, shape, torch.empty((3, 2) + shape, dtype=torch.int32))
    blocked_normals = keyed.standard_normal(keys, shape, torch.empty((3, 2) + shape, dtype=torch.float64))
    assert torch.equal(blocked_bits, whole_bits) and torch.equal(blocked_normals, whole_normals)
    assert keyed._element_keys.cache_info().currsize == 0


def test_wrappers_of_the_same_network_get_the_same_noise():
    from noisegrad.perturb.weight_spec import noise_name

    model = mlp()
    plain = smoothed(Saliency, model, XM, 3, 1, 0.3, 0.0, "smoothgrad", target=1, abs=False)
    wrapped = smoothed(Saliency, nn.DataParallel(model), XM, 3, 1, 0.3, 0.0, "smoothgrad", target=1, abs=False)
    torch.testing.assert_close(wrapped, plain, rtol=1e-12, atol=0)
    assert noise_name(torch.compile(nn.DataParallel(model)), "_orig_mod.module.0.weight") == "0.weight"
    holder = nn.Sequential()
    holder.module = model  # a submodule of the user's that happens to be named "module" keeps its name
    assert noise_name(holder, "module.0.weight") == "module.0.weight"


def test_a_vargrad_standard_error_over_weight_draws_is_not_a_fixed_fraction_of_the_estimate():
    """Over 3 draws the delete-one jackknife of a variance is 3/4 of it whatever the data (refused above); over 4
    it depends on the draws."""
    result = NoiseTunnel(Saliency(mlp())).attribute(XM, nt_type="vargrad", nt_samples=1, stdevs=0.0, target=0,
                                                    seed=SEED, return_stderr=True,
                                                    weight_noise=weight_noise(0.3, draws=4))
    ratios = (result.stderr / result.attributions).flatten()
    assert float(ratios.max() - ratios.min()) > 0.05


@pytest.mark.parametrize("sigma", [10**400, -(10**400), float("nan"), float("inf"), -0.5],
                         ids=["1e400", "-1e400", "nan", "inf", "negative"])
def test_a_weight_sigma_too_large_for_a_float_or_not_finite_is_refused_naming_it(sigma):
    # float() of a huge int raised OverflowError from math.isfinite instead of the argument's ValueError
    with pytest.raises(ValueError, match=r"weight_noise\(sigma=...\) must be a finite number >= 0"):
        weight_noise(sigma=sigma)

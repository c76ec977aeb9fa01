"""Chunk sizes chosen for the user: row budgets respected, OOM back-off, compile and autocast."""

import warnings

import pytest
import torch
from captum.attr import FeatureAblation, GradientShap, IntegratedGradients, Saliency
from torch import nn

from conftest import make_cnn, make_mlp
from noisegrad import NoiseTunnel
from noisegrad.plan import activation_bytes_per_row, chunk_for_rows


class RowCounter:
    """Largest batch (rows) any forward of the model saw."""

    def __init__(self, model: nn.Module) -> None:
        self.max_rows, self.calls = 0, 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls += 1
        self.max_rows = max(self.max_rows, args[0].shape[0])


X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

BUDGET_CASES = {
    "saliency": (Saliency, dict(target=0), 7),
    "integrated_gradients_split_by_steps": (IntegratedGradients, dict(target=1, n_steps=10), 16),
    "integrated_gradients_whole_copies": (IntegratedGradients, dict(target=1, n_steps=4), 30),
    "gradient_shap": (GradientShap, dict(target=2, n_samples=4, baselines=torch.zeros(2, 5, dtype=torch.float64)), 25),
    "feature_ablation": (FeatureAblation, dict(target=0, perturbations_per_eval=2), 13),
}


@pytest.mark.parametrize("case", sorted(BUDGET_CASES))
def test_no_forward_sees_more_rows_than_max_batch_rows(case):
    method_class, kwargs, max_rows = BUDGET_CASES[case]
    model = make_mlp()
    counter = RowCounter(model)
    NoiseTunnel(method_class(model)).attribute(X, nt_samples=9, stdevs=0.1, max_batch_rows=max_rows, seed=0, **kwargs)
    assert 0 < counter.max_rows <= max_rows
    assert counter.max_rows >= max_rows // 2  # and the budget is used, not wasted


def test_a_row_budget_gives_the_result_of_the_equivalent_fixed_chunk():
    model = make_mlp()
    nt = NoiseTunnel(Saliency(model))
    common = dict(nt_type="vargrad", nt_samples=10, stdevs=0.2, target=1, abs=False, seed=3)
    budgeted = nt.attribute(X, max_batch_rows=12, **common)  # 12 rows // 3 examples = 4 copies per chunk
    fixed = nt.attribute(X, nt_samples_batch_size=4, **common)
    assert torch.equal(budgeted, fixed)


def test_integrated_gradients_split_by_the_budget_matches_the_unsplit_result():
    model = make_mlp()
    nt = NoiseTunnel(IntegratedGradients(model))
    common = dict(nt_samples=5, stdevs=0.2, target=1, n_steps=10, seed=4)
    split = nt.attribute(X, max_batch_rows=8, **common)
    whole = nt.attribute(X, nt_samples_batch_size=5, **common)
    torch.testing.assert_close(split, whole, rtol=1e-10, atol=1e-12)


def test_chunk_for_rows_counts_the_methods_own_expansion():
    assert chunk_for_rows(100, batch=4, per_copy=5, nt_samples=64, splits_itself=False) == (5, False)
    assert chunk_for_rows(100, batch=4, per_copy=5, nt_samples=3, splits_itself=False) == (3, False)
    assert chunk_for_rows(10, batch=4, per_copy=50, nt_samples=64, splits_itself=True) == (2, True)
    with pytest.raises(ValueError, match=r"max_batch_rows=10 \(given, or derived from memory_budget=\) is smaller "
                                         r"than one noisy copy.*4 examples × 5 rows"):
        chunk_for_rows(10, batch=4, per_copy=5, nt_samples=64, splits_itself=False)


def test_a_budget_too_small_for_one_copy_fails_before_any_forward():
    model = make_mlp()
    counter = RowCounter(model)
    with pytest.raises(ValueError, match="max_batch_rows=2"):
        NoiseTunnel(Saliency(model)).attribute(X, nt_samples=4, max_batch_rows=2, target=0)
    assert counter.calls == 0


def test_a_budget_and_a_fixed_chunk_size_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        NoiseTunnel(Saliency(make_mlp())).attribute(X, nt_samples_batch_size=2, max_batch_rows=8, target=0)


def test_activation_bytes_per_row_counts_leaf_module_outputs():
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    # Linear 8 + Tanh 8 + Linear 3 outputs, plus the 5 input values, in float64.
    assert activation_bytes_per_row(model, (X,), None) == (8 + 8 + 3 + 5) * 8
    assert activation_bytes_per_row(lambda x: model(x), (X,), None) is None
    assert activation_bytes_per_row(torch.jit.script(model), (X,), None) is None


def test_the_probe_forward_gives_the_model_inputs_in_memory_of_their_own():
    class ChecksItsInput(nn.Module):  # as a custom operator may
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(5, 3).double()

        def forward(self, x):
            if not x.is_contiguous() or 0 in x.stride():
                raise RuntimeError("expected a contiguous input")
            return self.linear(x)

    model = ChecksItsInput()
    assert activation_bytes_per_row(model, (X,), None) == (3 + 5) * 8
    out = NoiseTunnel(Saliency(model)).attribute(X, nt_samples=4, nt_samples_batch_size="auto", target=0, seed=0)
    assert out.shape == X.shape


def test_auto_works_for_torchscript_models():
    model = torch.jit.script(make_mlp())
    out = NoiseTunnel(Saliency(model)).attribute(X, nt_samples=4, nt_samples_batch_size="auto", target=0, seed=0)
    assert out.shape == X.shape


def test_memory_budget_and_auto_choose_chunks_within_the_budget():
    model = make_cnn(torch.float32)
    counter = RowCounter(model)
    x = torch.rand(2, 2, 5, 5)
    per_row = activation_bytes_per_row(model, (x,), None)
    NoiseTunnel(Saliency(model)).attribute(x, nt_samples=16, stdevs=0.1, target=0, memory_budget=6 * per_row, seed=0)
    assert counter.max_rows == 6  # 6 rows: 3 copies of 2 examples
    counter.max_rows = 0
    NoiseTunnel(Saliency(model)).attribute(x, nt_samples=16, stdevs=0.1, target=0, nt_samples_batch_size="auto", seed=0)
    assert counter.max_rows == 32  # a tiny model: everything fits in the CPU budget


class OutOfMemoryAbove:
    """Wraps a method's attribute to raise torch.OutOfMemoryError for batches above ``rows``."""

    def __init__(self, method, rows: int) -> None:
        self.inner, self.rows, self.failures = method.attribute, rows, 0
        method.attribute = self

    def __call__(self, inputs, **kwargs):
        if inputs.shape[0] > self.rows:
            self.failures += 1
            raise torch.OutOfMemoryError(f"injected: {inputs.shape[0]} rows")
        return self.inner(inputs, **kwargs)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "vargrad"])
def test_out_of_memory_halves_the_chunk_and_gives_the_smaller_chunks_result(nt_type):
    model = make_mlp()
    common = dict(nt_type=nt_type, nt_samples=12, stdevs=0.3, target=2, n_steps=4, seed=5,
                  return_convergence_delta=True)
    method = IntegratedGradients(model)
    oom = OutOfMemoryAbove(method, rows=3 * 3)  # 3 examples x at most 3 copies
    with pytest.warns(RuntimeWarning, match="retrying with nt_samples_batch_size=3"):
        attr, delta = NoiseTunnel(method).attribute(X, nt_samples_batch_size=12, **common)
    assert oom.failures == 2  # 12 -> 6 -> 3
    expected, expected_delta = NoiseTunnel(IntegratedGradients(model)).attribute(X, nt_samples_batch_size=3, **common)
    assert torch.equal(attr, expected) and torch.equal(delta, expected_delta)


def test_out_of_memory_with_one_copy_per_chunk_is_raised():
    method = Saliency(make_mlp())
    OutOfMemoryAbove(method, rows=2)
    with pytest.raises(torch.OutOfMemoryError, match="injected"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            NoiseTunnel(method).attribute(X, nt_samples=4, nt_samples_batch_size=4, target=0, seed=0)


def test_a_compiled_model_gives_the_eager_result():
    model = make_cnn(torch.float32, seed=2)
    compiled = torch.compile(model, backend="aot_eager", dynamic=True)
    x = torch.rand(2, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    common = dict(nt_type="smoothgrad_sq", nt_samples=6, nt_samples_batch_size=4, stdevs=0.1, target=1, seed=0)
    eager = NoiseTunnel(Saliency(model)).attribute(x, **common)
    ours = NoiseTunnel(Saliency(compiled)).attribute(x, **common)
    torch.testing.assert_close(ours, eager, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_mixed_precision_stays_close_to_float32(dtype):
    model = make_cnn(torch.float32, seed=3)
    x = torch.rand(2, 2, 5, 5, generator=torch.Generator().manual_seed(2))
    common = dict(nt_samples=8, nt_samples_batch_size=3, stdevs=0.05, target=0, n_steps=8, seed=0)
    nt = NoiseTunnel(IntegratedGradients(model))
    reference = nt.attribute(x, **common)
    with torch.autocast("cpu", dtype=dtype):
        mixed = nt.attribute(x, **common)
    assert mixed.dtype == torch.float32
    error = float((mixed - reference).norm() / reference.norm())
    assert error < 3e-2


class OutOfMemoryOnce:
    """Wraps a method's attribute to raise torch.OutOfMemoryError on its ``n``-th call only."""

    def __init__(self, method, n: int) -> None:
        self.inner, self.n, self.calls = method.attribute, n, 0
        method.attribute = self

    def __call__(self, inputs, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise torch.OutOfMemoryError("injected once")
        return self.inner(inputs, **kwargs)


def test_out_of_memory_with_gradient_shap_under_a_seed_does_not_change_the_result():
    """GradientShap's own draws follow the sample (not the chunk), so halving a chunk leaves the result as it was."""
    from captum.attr import GradientShap

    model = make_mlp()
    baselines = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    common = dict(nt_type="vargrad", nt_samples=8, nt_samples_batch_size=4, stdevs=0.3, target=1, seed=7,
                  baselines=baselines, n_samples=3)
    expected = NoiseTunnel(GradientShap(model)).attribute(X, **common)
    method = GradientShap(model)
    OutOfMemoryOnce(method, n=2)
    with pytest.warns(RuntimeWarning, match="retrying with nt_samples_batch_size=2"):
        ours = NoiseTunnel(method).attribute(X, **common)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-15)  # the chunks merge in another order


def test_out_of_memory_in_auto_mode_stops_where_a_call_without_it_does():
    """nt_samples="auto" checks at the counts it planned, whatever the chunks: a chunk halved after running out of
    memory (so smaller than the way to the next check) changes neither the stops nor the result."""
    model = make_mlp(seed=3)
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    stdevs = torch.linspace(0.05, 1.0, 6, dtype=torch.float64).unsqueeze(1)  # examples converge one by one
    common = dict(nt_samples="auto", tol=0.03, max_samples=1000, nt_samples_batch_size=64, stdevs=stdevs, target=0,
                  abs=False, seed=0)
    expected = NoiseTunnel(Saliency(model)).attribute(x, **common)
    method = Saliency(model)
    oom = OutOfMemoryAbove(method, rows=6 * 3)  # at most 3 copies of the 6 examples
    with pytest.warns(RuntimeWarning, match="retrying with nt_samples_batch_size"):
        result = NoiseTunnel(method).attribute(x, **common)
    assert oom.failures >= 2 and len(set(expected.nt_samples.tolist())) >= 3
    assert torch.equal(result.nt_samples, expected.nt_samples)
    torch.testing.assert_close(result.attributions, expected.attributions, rtol=1e-10, atol=1e-12)


def test_in_auto_mode_the_examples_left_get_more_samples_per_chunk_and_never_more_rows():
    """As examples stop, a chunk keeps its noisy copies and the examples left get more samples in each: fewer forwards
    (one example left used to run chunks of the batch's samples per example, a quarter of the rows on the ResNet of
    benchmarks/TIME_TO_ACCURACY.md), none larger than the plan's chunk of the whole batch, no row computed past an
    example's stop, and the stops and result of a call in one chunk."""
    model = make_mlp(seed=3)
    forwards = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(args[0].shape[0]))
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    stdevs = torch.linspace(0.05, 1.0, 6, dtype=torch.float64).unsqueeze(1)  # examples converge one by one
    common = dict(nt_samples="auto", tol=0.03, max_samples=1000, stdevs=stdevs, target=0, abs=False, seed=0)
    chunked = NoiseTunnel(Saliency(model)).attribute(x, nt_samples_batch_size=4, **common)
    whole = NoiseTunnel(Saliency(make_mlp(seed=3))).attribute(x, nt_samples_batch_size=1000, **common)
    assert torch.equal(chunked.nt_samples, whole.nt_samples)
    torch.testing.assert_close(chunked.attributions, whole.attributions, rtol=1e-10, atol=1e-12)
    stops = chunked.nt_samples.tolist()
    assert len(set(stops)) >= 3, stops  # the examples did leave at different checks
    assert max(forwards) <= 4 * 6, forwards
    assert sum(forwards) == sum(stops), (forwards, stops)
    assert len(forwards) < max(stops) / 4 / 2, forwards  # half of what 4 samples per chunk to the last stop take


def test_after_inputs_left_the_out_of_memory_warning_gives_the_chunk_for_them_and_for_the_whole_batch():
    """After inputs left, a halved chunk is per input still running; the whole batch's equivalent is what a user
    would pass next time, and where not even 1 sample per input of the whole batch fits, the warning says so rather
    than suggest 1 (helper-67: 8 copies suggested where 6 failed)."""
    from noisegrad.plan import ChunkOutOfMemory, ChunkPlan

    error = ChunkOutOfMemory()
    error.__cause__ = RuntimeError("out of memory")
    plan = ChunkPlan(limit=100, chunk=4, examples=8)  # 32 copies per chunk
    plan.examples_left(2)  # 16 samples of each of 2 inputs
    with pytest.warns(RuntimeWarning, match=r"out of memory with 16 noisy copies per input still running \(2 of 8\); "
                                            r"retrying with nt_samples_batch_size=8 for those inputs, 2 for the whole "
                                            r"batch"):
        plan.halve(range(0, 16), torch.device("cpu"), error)
    plan = ChunkPlan(limit=100, chunk=1, examples=8)
    plan.examples_left(3)  # 2 samples of each of 3 inputs: 6 copies
    with pytest.warns(RuntimeWarning, match=r"retrying with nt_samples_batch_size=1 for those inputs, not even 1 for "
                                            r"the whole batch of 8: attribute it in parts"):
        plan.halve(range(0, 2), torch.device("cpu"), error)

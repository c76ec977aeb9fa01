"""Noise that belongs to the example: what the model sees of an example is the same in any batch.

Each test records every row the model is given, picks one example's rows out of each forward, and
compares them bit for bit between the example alone (``example_ids=[i]``), inside the whole batch,
inside a shuffled batch, and with other chunk sizes.
"""

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from conftest import Recorder, make_mlp
from noisegrad import NoiseTunnel, joint_integrated_gradients
from noisegrad.sampling.samplers import SAMPLERS

X = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def rows_of(seen, batch, position):
    """The rows of the example at ``position`` in every recorded forward (rows are sample-major per forward)."""
    return torch.cat([t.view((t.shape[0] // batch, batch) + tuple(t.shape[1:]))[:, position] for t in seen])


def run(attribute, x, ids, **kwargs):
    recorder = Recorder(make_mlp(seed=1))
    out = attribute(recorder, x, ids, **kwargs)
    return recorder.seen, out


def nested(recorder, x, ids, **kwargs):
    return NoiseTunnel(Saliency(recorder)).attribute(x, nt_samples=6, stdevs=0.3, target=1, seed=7,
                                                     example_ids=ids, abs=False, **kwargs)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("stderr", [False, True])
def test_an_example_sees_the_same_noise_alone_in_its_batch_and_in_a_shuffled_batch(sampler, stderr):
    kwargs = dict(sampler=sampler, return_stderr=stderr, nt_samples_batch_size=4)
    seen_batch, in_batch = run(nested, X, None, **kwargs)
    order = torch.tensor([3, 0, 4, 2, 1])
    seen_shuffled, shuffled = run(nested, X[order], order, **dict(kwargs, nt_samples_batch_size=2))
    result = (lambda r: r.attributions) if stderr else (lambda r: r)
    for i in range(5):
        seen_alone, alone = run(nested, X[i : i + 1], [i], **dict(kwargs, nt_samples_batch_size=None))
        position = int((order == i).nonzero())
        assert torch.equal(rows_of(seen_batch, 5, i), rows_of(seen_alone, 1, 0))
        assert torch.equal(rows_of(seen_shuffled, 5, position), rows_of(seen_alone, 1, 0))
        torch.testing.assert_close(result(alone)[0], result(in_batch)[i], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(result(shuffled)[position], result(in_batch)[i], rtol=1e-12, atol=1e-14)


def joint(recorder, x, ids, **kwargs):
    return joint_integrated_gradients(IntegratedGradients(recorder), x, nt_samples=8, stdevs=0.3, target=1, seed=7,
                                      example_ids=ids, **kwargs)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_joint_path_points_and_noise_are_the_examples_own(sampler):
    """The model sees b + α (x + ε − b): equal rows mean equal noise and equal path fractions."""
    seen_batch, in_batch = run(joint, X, None, sampler=sampler, nt_samples_batch_size=3)
    for i in (0, 4):
        seen_alone, alone = run(joint, X[i : i + 1], torch.tensor([i]), sampler=sampler)
        assert torch.equal(rows_of(seen_batch, 5, i), rows_of(seen_alone, 1, 0))
        torch.testing.assert_close(alone[0], in_batch[i], rtol=1e-12, atol=1e-14)


def test_drawn_baselines_are_keyed_by_the_example():
    baselines = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def drawn(recorder, x, ids, **kwargs):
        return NoiseTunnel(IntegratedGradients(recorder)).attribute(
            x, nt_samples=6, stdevs=0.3, target=1, seed=7, example_ids=ids, draw_baseline_from_distrib=True,
            baselines=baselines, n_steps=2, **kwargs)

    # one chunk each: IG's forward is step-major over the chunk's copies, so chunks of other sizes order rows otherwise
    seen_batch, in_batch = run(drawn, X, None)
    seen_alone, alone = run(drawn, X[2:3], [2])
    assert torch.equal(rows_of(seen_batch, 5, 2), rows_of(seen_alone, 1, 0))
    torch.testing.assert_close(alone[0], in_batch[2], rtol=1e-12, atol=1e-14)


def test_auto_stopping_gives_an_example_its_own_result_alone_for_its_sample_count():
    """Where an example stops can depend on its batch (the closest example sets when the batch is checked, README);
    what it got for its samples is its own: the result of a fixed call of that example alone with that count."""
    stdevs = torch.tensor([[0.01], [0.3], [0.6], [0.3], [0.05]], dtype=torch.float64)
    common = dict(target=1, abs=False, seed=3)
    nt = NoiseTunnel(Saliency(make_mlp(seed=1)))
    in_batch = nt.attribute(X, stdevs=stdevs, nt_samples="auto", tol=0.02, max_samples=256, nt_samples_batch_size=16,
                            **common)
    assert len(set(in_batch.nt_samples.tolist())) > 1  # examples left the batch at different times
    for i in (1, 2):
        alone = nt.attribute(X[i : i + 1], stdevs=stdevs[i : i + 1], example_ids=[i],
                             nt_samples=int(in_batch.nt_samples[i]), **common)
        torch.testing.assert_close(alone[0], in_batch.attributions[i], rtol=1e-12, atol=1e-14)


class TokenSum(nn.Module):
    """A model of (batch, positions, features) inputs of any length: the mean over positions of a linear map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.linear = nn.Linear(4, 3).double()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.tanh(self.linear(x)).sum(1)


def test_padding_a_batch_does_not_change_the_noise_of_the_real_positions():
    tokens = torch.randn(2, 6, 4, dtype=torch.float64)
    padded = torch.cat([tokens, torch.zeros(2, 3, 4, dtype=torch.float64)], dim=1)
    seen = []
    for x in (tokens, padded):
        model = TokenSum()
        NoiseTunnel(Saliency(model)).attribute(x, nt_samples=3, stdevs=0.2, target=0, seed=1)
        seen.append((torch.cat(model.seen) - x.repeat(3, 1, 1)))  # the noise alone
    assert torch.equal(seen[1][:, :6], seen[0])


@pytest.mark.parametrize(
    "ids, error, match",
    [
        ([0, 1], ValueError, r"one id per example: shape \(5,\), got shape \(2,\)"),
        (torch.zeros(5, 1, dtype=torch.long), ValueError, r"shape \(5,\), got shape \(5, 1\)"),
        (torch.arange(5.0), TypeError, "example_ids must hold integers, got a tensor of dtype torch.float32"),
        ([0, 1, 2, 3, True], TypeError, "example_ids must hold integers, got bool"),
        ([0, 1, 2, 3, "4"], TypeError, "example_ids must hold integers, got str"),
        ([0, 1, 2, 3, 2**63], ValueError, "example_ids must fit in int64"),
        ("01234", TypeError, "example_ids must be a sequence, range, array or tensor of integers, got str"),
    ],
)
def test_bad_example_ids_are_refused_before_any_forward(ids, error, match):
    def never(x):
        raise AssertionError("the model ran")

    with pytest.raises(error, match=match):
        NoiseTunnel(Saliency(never)).attribute(X, nt_samples=2, target=0, example_ids=ids)


def test_example_ids_can_be_a_range_or_a_numpy_array():
    np = pytest.importorskip("numpy")
    nt = NoiseTunnel(Saliency(make_mlp(seed=1)))
    base = nt.attribute(X, nt_samples=3, stdevs=0.3, target=0, seed=2, example_ids=torch.arange(10, 15))
    for ids in (range(10, 15), np.arange(10, 15), np.arange(10, 15, dtype=np.uint8), [10, 11, 12, 13, 14]):
        assert torch.equal(nt.attribute(X, nt_samples=3, stdevs=0.3, target=0, seed=2, example_ids=ids), base)
    assert not torch.equal(nt.attribute(X, nt_samples=3, stdevs=0.3, target=0, seed=2), base)

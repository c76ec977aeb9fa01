"""The monitor's numbers against hand-written references: mask share, Gini, entropy, Spearman with ties."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisegrad.monitor.metrics import entropy, gini, mask_share, spearman


def ref_ranks(values):
    """Average ranks by counting: 1 + (values below) + (ties − 1) / 2."""
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]


def ref_spearman(a, b):
    ra, rb = np.array(ref_ranks(list(np.abs(a)))), np.array(ref_ranks(list(np.abs(b))))
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def ref_gini(a):
    """Gini as the mean absolute difference over twice the mean (no sorting)."""
    x = np.abs(np.asarray(a, dtype=np.float64))
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean()))


def ref_entropy(a):
    x = np.abs(np.asarray(a, dtype=np.float64))
    p = x / x.sum()
    return float(-sum(q * math.log(q) for q in p if q > 0) / math.log(len(x)))


# small integers: many ties, and sometimes a map that is all zero or constant
maps = st.lists(st.lists(st.integers(-3, 3), min_size=6, max_size=6), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(maps, st.data())
def test_spearman_with_ties_equals_pearson_of_average_ranks(rows, data):
    other = data.draw(st.lists(st.lists(st.integers(-3, 3), min_size=6, max_size=6), min_size=len(rows),
                               max_size=len(rows)))
    got = spearman(torch.tensor(rows, dtype=torch.float32), torch.tensor(other, dtype=torch.float32))
    for i in range(len(rows)):
        expected = ref_spearman(np.array(rows[i], float), np.array(other[i], float))
        if math.isnan(expected):
            assert math.isnan(got[i])
        else:
            assert got[i].item() == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(maps)
def test_gini_and_entropy_equal_their_definitions(rows):
    x = torch.tensor(rows, dtype=torch.float32)
    g, h = gini(x), entropy(x)
    for i, row in enumerate(rows):
        if not any(row):
            assert math.isnan(g[i]) and math.isnan(h[i])  # an all-zero map has no concentration
            continue
        assert g[i].item() == pytest.approx(ref_gini(row), abs=1e-12)
        assert h[i].item() == pytest.approx(ref_entropy(row), abs=1e-12)
        assert 0 <= g[i] <= 1 - 1 / len(row) + 1e-12 and -1e-12 <= h[i] <= 1 + 1e-12


def test_mask_share_broadcasts_a_mask_over_channels_and_counts_several_inputs_together():
    torch.manual_seed(0)
    a, b = torch.randn(3, 2, 4, 4), torch.randn(3, 5)
    ma, mb = torch.rand(3, 1, 4, 4) > 0.5, torch.rand(3, 5) > 0.5
    got = mask_share((a, b), (ma, mb))
    for i in range(3):
        on = (a[i].abs() * ma[i]).sum().double() + (b[i].abs() * mb[i]).sum().double()
        total = a[i].abs().sum().double() + b[i].abs().sum().double()
        assert got[i].item() == pytest.approx((on / total).item(), rel=1e-6)
    assert mask_share(torch.zeros(1, 4), torch.ones(1, 4)).item() == 0.0  # no mass: 0, as the demo scores it
    with pytest.raises(ValueError, match=r"masks\[0\] of shape \(3, 3\) does not broadcast"):
        mask_share(torch.zeros(3, 4), torch.ones(3, 3))


def test_metrics_reject_attributions_without_a_batch_dimension():
    with pytest.raises(ValueError, match="batch"):
        gini(torch.tensor(1.0))
    with pytest.raises(TypeError, match="attributions must be a tensor"):
        entropy([1.0, 2.0])
    with pytest.raises(ValueError, match="same shapes"):
        spearman(torch.zeros(2, 3), torch.zeros(2, 4))


def ref_share(a, mask):
    """Share of sum |a| on the mask, by a float64 loop over the elements."""
    a, mask = np.abs(np.asarray(a, dtype=np.float64)).ravel(), np.asarray(mask, dtype=bool).ravel()
    return float(sum(v for v, m in zip(a, mask) if m) / a.sum())


def test_a_mask_must_hold_only_zeros_and_ones():
    a = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5
    for scaled in (mask.to(torch.uint8) * 255, mask.float() * 0.5):  # a 0/255 image; soft weights
        with pytest.raises(ValueError, match=r"masks\[0\] must hold only 0 and 1 .* got values 0, (255|0.5)"):
            mask_share(a, scaled)
    float_share, bool_share = mask_share(a, mask.float()), mask_share(a, mask)
    assert torch.equal(float_share, bool_share)
    for i in range(2):
        assert bool_share[i].item() == pytest.approx(ref_share(a[i], mask[i]), rel=1e-12)


def test_an_empty_mask_has_no_share():
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    share = mask_share(a, torch.tensor([[False, False, False], [True, False, False]]))
    assert math.isnan(share[0]) and share[1].item() == pytest.approx(1 / 6)


def test_a_per_token_mask_needs_the_layer_attributions_dimensions():
    # batch = tokens = hidden: a (batch, tokens) mask would broadcast along the wrong dimensions
    a = torch.randn(3, 3, 3, generator=torch.Generator().manual_seed(0))
    per_token = torch.tensor([[True, False, False], [False, True, False], [False, False, True]])
    with pytest.raises(ValueError, match=r"masks\[0\] of shape \(3, 3\) has 2 dimensions .* masks\[\.\.\., None\]"):
        mask_share(a, per_token)
    share = mask_share(a, per_token[..., None])
    for i in range(3):
        assert share[i].item() == pytest.approx(ref_share(a[i], per_token[i][:, None].expand(3, 3)), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from([-2.0, 0.0, 1.0, 3.0, math.nan]), min_size=6, max_size=6), min_size=2,
                max_size=4), st.data())
def test_a_snapshot_summary_in_one_pass_equals_each_metric_alone(rows, data):
    """Ties, all-zero maps and NaN maps; Spearman against snapshots whose ranks are kept and one whose are not."""
    from types import SimpleNamespace

    from noisegrad.monitor.snapshot import Snapshot, summarise

    errors = torch.Generator().manual_seed(0)

    def result(values):
        a = torch.tensor(values, dtype=torch.float32).reshape(len(values), 1, 2, 3)
        return SimpleNamespace(attributions=a, relative_stderr=torch.rand(len(values), generator=errors), delta=None,
                               nt_samples=16)

    def draw_maps():
        return [data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, -4.0]), min_size=6, max_size=6)) for _ in rows]

    masks = (torch.tensor([[True, False, True, False, False, True]] * len(rows)).reshape(len(rows), 1, 2, 3),)
    first = summarise(result(draw_maps()), 0, masks, None, None)
    between = summarise(result(draw_maps()), 1, masks, None, None)
    bare = Snapshot(1, between.result, between.per_example)  # built by hand: no ranks kept
    snap = summarise(result(rows), 2, masks, first, bare)  # first (ranks kept), previous (not)
    a = snap.attributions
    # previous and first differ, so a summary that mixed them up would fail
    expected = {"mass_in_mask": mask_share(a, masks), "gini": gini(a), "entropy": entropy(a),
                "spearman_previous": spearman(a, between.attributions), "spearman_first": spearman(a, first.attributions),
                "nonfinite_share": (~a.isfinite()).flatten(1).double().mean(1)}
    for name, values in expected.items():
        torch.testing.assert_close(snap.per_example[name], values, equal_nan=True, rtol=1e-12, atol=1e-12)
    means = {name: v[v.isfinite()].mean().item() if v.isfinite().any() else None
             for name, v in snap.per_example.items()}
    assert snap.metrics == pytest.approx(means, nan_ok=True)

"""Moments in standard-error groups: every group's moments as a float64 computation over its own samples.

GroupedMoments sums all groups' rows at once over the whole rounds of the groups in a chunk, and run by run at
its ends; both must give each group the moments of exactly its samples, in any chunking.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisegrad.stats.grouped import GroupedMoments
from noisegrad.stats.moments import Moments


def group_of(sample: int, groups: int, unit_size: int) -> int:
    """The group of sample ``k`` as GroupedMoments documents it."""
    return (sample // unit_size) % groups


def reference(samples: torch.Tensor, groups: int, unit_size: int):
    """Per group: float64 count, mean and sum of squared deviations of its samples (dim 0 = sample id)."""
    out = []
    for group in range(groups):
        rows = [k for k in range(samples.shape[0]) if group_of(k, groups, unit_size) == group]
        mine = samples[rows].double()
        mean = mine.mean(dim=0)
        out.append((len(rows), mean, ((mine - mean) ** 2).sum(dim=0)))
    return out


def one_group_at_a_time(samples: torch.Tensor, edges, groups: int, unit_size: int):
    """The groups' moments updated group by group (the unbatched path), as independent Moments."""
    parts = [Moments() for _ in range(groups)]
    for start, stop in zip(edges, edges[1:]):
        for k in range(start, stop):
            parts[group_of(k, groups, unit_size)].update(samples[k:k + 1], dim=0)
    return parts


@settings(max_examples=40, deadline=None)
@given(
    groups=st.integers(2, 5),
    unit_size=st.integers(1, 4),  # 4: Latin hypercube blocks under nt_samples="auto"
    rounds=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    ragged=st.lists(st.integers(1, 40), max_size=2),
    seed=st.integers(0, 2**31 - 1),
    overwrite=st.booleans(),
)
def test_each_group_gets_the_moments_of_its_own_samples_in_any_chunking(groups, unit_size, rounds, ragged, seed,
                                                                         overwrite):
    """Chunks of whole rounds (the batched update), then possibly chunks that split rounds (one group at a time)."""
    period = groups * unit_size
    edges = [0]
    for count in rounds:
        edges.append(edges[-1] + count * period)
    for extra in ragged:
        edges.append(edges[-1] + extra)
    generator = torch.Generator().manual_seed(seed)
    samples = (3.0 + torch.randn(edges[-1], 2, 3, generator=generator)).float()
    grouped = GroupedMoments(groups, unit_size)
    for start, stop in zip(edges, edges[1:]):
        chunk = samples[start:stop].clone()
        grouped.update(chunk, range(start, stop), overwrite=overwrite)
        if not overwrite:  # the caller's chunk is left as it was
            assert torch.equal(chunk, samples[start:stop])
    for part, (count, mean, m2) in zip(grouped.parts, reference(samples, groups, unit_size)):
        assert part.count == count
        torch.testing.assert_close(part.mean, mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(part.m2, m2, rtol=1e-5, atol=1e-5)
    all_samples, total = samples.double(), grouped.total()
    assert total.count == samples.shape[0]
    torch.testing.assert_close(total.mean, all_samples.mean(dim=0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(total.m2, ((all_samples - all_samples.mean(dim=0)) ** 2).sum(dim=0), rtol=1e-5,
                               atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(groups=st.integers(2, 6), unit_size=st.integers(1, 4), rounds=st.integers(1, 4), chunk_rounds=st.integers(1, 2),
       seed=st.integers(0, 2**31 - 1))
def test_the_batched_update_equals_updating_the_groups_one_at_a_time(groups, unit_size, rounds, chunk_rounds, seed):
    """Whole rounds (every group's rows at once) against the same samples merged group by group, and the standard
    errors against those of the same samples in chunks of one sample (runs only)."""
    period = groups * unit_size
    total = rounds * chunk_rounds * period
    edges = list(range(0, total + 1, chunk_rounds * period))
    samples = torch.randn(total, 4, generator=torch.Generator().manual_seed(seed)).float()
    grouped = GroupedMoments(groups, unit_size)
    for start, stop in zip(edges, edges[1:]):
        grouped.update(samples[start:stop], range(start, stop))
    assert torch.equal(samples, torch.randn(total, 4, generator=torch.Generator().manual_seed(seed)))  # not written
    separate = one_group_at_a_time(samples, edges, groups, unit_size)
    ulp = torch.finfo(torch.float32).eps * float(samples.abs().max())
    for batched, alone in zip(grouped.parts, separate):
        assert batched.count == alone.count
        # both centre on a float32 shift (the groups share one; a group alone has its own): the mean may differ
        # by its rounding (an ulp of the samples' size), M2 by that of each squared deviation (at most twice the
        # samples' size): 2·|d|·ulp per sample
        torch.testing.assert_close(batched.mean, alone.mean, rtol=0, atol=2 * ulp)
        torch.testing.assert_close(batched.m2, alone.m2, rtol=0, atol=4 * float(samples.abs().max()) * ulp * alone.count)
    split = GroupedMoments(groups, unit_size)
    for k in range(total):
        split.update(samples[k:k + 1], range(k, k + 1))
    for nt_type in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        if rounds * chunk_rounds * unit_size < 2 and nt_type == "vargrad":
            continue
        (ours, dof), (theirs, their_dof) = grouped.stderr(nt_type), split.stderr(nt_type)
        assert dof == their_dof == groups - 1
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batched", [True, False], ids=["whole-rounds", "a-split-round"])
def test_selecting_examples_keeps_their_moments_and_later_updates_add_to_them(batched):
    groups, samples = 3, torch.randn(12, 5, 2, generator=torch.Generator().manual_seed(0)).double()
    grouped = GroupedMoments(groups)
    first = 6 if batched else 5
    grouped.update(samples[:first], range(0, first))
    keep = torch.tensor([True, False, True, True, False])
    grouped = grouped.select(keep)
    grouped.update(samples[first:, keep], range(first, 12))
    for part, (count, mean, m2) in zip(grouped.parts, reference(samples[:, keep], groups, 1)):
        assert part.count == count
        torch.testing.assert_close(part.mean, mean)
        torch.testing.assert_close(part.m2, m2)


def jackknife(samples: torch.Tensor, groups: int, unit_size: int, nt_type: str) -> torch.Tensor:
    """The delete-one-group jackknife written out: the statistic of all samples but one group's, in float64."""
    samples = samples.double()
    stats = []
    for group in range(groups):
        rest = samples[[k for k in range(samples.shape[0]) if group_of(k, groups, unit_size) != group]]
        if rest.shape[0] == samples.shape[0]:
            continue  # the group has no samples
        mean = rest.mean(dim=0)
        stats.append({"smoothgrad": mean, "smoothgrad_sq": (rest * rest).mean(dim=0),
                      "vargrad": ((rest - mean) ** 2).mean(dim=0)}[nt_type])
    stats = torch.stack(stats)
    g = stats.shape[0]
    return ((g - 1) / g * ((stats - stats.mean(dim=0)) ** 2).sum(dim=0)).sqrt()


@settings(max_examples=40, deadline=None)
@given(groups=st.integers(2, 8), unit_size=st.integers(1, 4), extra=st.integers(0, 40), chunk=st.integers(1, 50),
       nt_type=st.sampled_from(["smoothgrad", "smoothgrad_sq", "vargrad"]), seed=st.integers(0, 2**31 - 1))
def test_the_standard_error_is_the_jackknife_over_the_groups_also_when_they_hold_different_counts(
        groups, unit_size, extra, chunk, nt_type, seed):
    total = 3 * groups * unit_size + extra  # every group has at least 3 samples: a VarGrad without one is defined
    samples = (2.0 + torch.randn(total, 3, 2, generator=torch.Generator().manual_seed(seed))).double()
    grouped = GroupedMoments(groups, unit_size)
    for start in range(0, total, chunk):
        grouped.update(samples[start:start + chunk], range(start, min(start + chunk, total)))
    error, dof = grouped.stderr(nt_type)
    assert dof == groups - 1
    torch.testing.assert_close(error, jackknife(samples, groups, unit_size, nt_type), rtol=1e-9, atol=1e-12)


def test_groups_left_empty_between_others_are_left_out_of_the_jackknife():
    """Sample ids that do not start at 0 can leave a group empty before filled ones: it takes no part."""
    samples = torch.randn(9, 3, generator=torch.Generator().manual_seed(1)).double()
    grouped = GroupedMoments(groups=4)
    grouped.update(samples, range(1, 10))  # groups 1, 2, 3, 0, 1, 2, 3, 0, 1: all filled
    sparse = GroupedMoments(groups=4)
    ids = [k for k in range(1, 40) if k % 4 != 2][:9]  # group 2 stays empty
    for row, k in enumerate(ids):
        sparse.update(samples[row:row + 1], range(k, k + 1))
    error, dof = sparse.stderr("smoothgrad")
    assert dof == 2
    by_group = {g: samples[[row for row, k in enumerate(ids) if k % 4 == g]] for g in (0, 1, 3)}
    stats = torch.stack([torch.cat([v for h, v in by_group.items() if h != g]).mean(dim=0) for g in by_group])
    expected = ((2 / 3) * ((stats - stats.mean(dim=0)) ** 2).sum(dim=0)).sqrt()
    torch.testing.assert_close(error, expected)
    assert grouped.stderr("smoothgrad")[1] == 3


@pytest.mark.parametrize("nt_type", ["smoothgrad_sq", "vargrad"])
def test_a_standard_error_that_needs_m2_is_refused_by_name_without_it(nt_type):
    """The vectorised jackknife called ``None.clamp`` (an AttributeError) where the per-group one raised a
    ValueError that says what is missing."""
    grouped = GroupedMoments(groups=3, track_m2=False)
    grouped.update(torch.randn(9, 2, generator=torch.Generator().manual_seed(0)), range(9))
    with pytest.raises(ValueError, match=rf"{nt_type} needs Moments\(track_m2=True\)"):
        grouped.stderr(nt_type)
    assert grouped.stderr("smoothgrad")[1] == 2  # the mean's needs no M2


def test_counts_reach_the_state_s_device_asynchronously_only_from_pinned_memory(monkeypatch):
    """A non-blocking copy of a pageable temporary may read it after it is freed (on MPS, pytorch/pytorch#189690:
    silently wrong values); the per-group counts went to any device that way, pinned only for CUDA."""
    pageable = []
    to = torch.Tensor.to

    def recording(self, *args, **kwargs):
        if kwargs.get("non_blocking") and self.device.type == "cpu" and not self.is_pinned():
            pageable.append(tuple(self.shape))
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording)
    samples = torch.randn(14, 2, generator=torch.Generator().manual_seed(2)).double()
    grouped = GroupedMoments(groups=3)
    for start in range(0, 14, 5):
        grouped.update(samples[start:start + 5], range(start, min(start + 5, 14)))
    grouped.stderr("vargrad")
    torch.testing.assert_close(grouped.total().mean, samples.mean(dim=0))
    assert pageable == []

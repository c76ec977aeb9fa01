"""Streaming statistics: equal to a float64 two-pass computation, whatever the chunking."""

import io
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisegrad import Moments
from noisegrad.stats.smoothing import smooth


def two_pass(samples: torch.Tensor):
    """Reference: float64 mean, then float64 mean of squared deviations (dim 1 = samples)."""
    s = samples.double()
    mean = s.mean(dim=1)
    return mean, ((s - mean.unsqueeze(1)) ** 2).mean(dim=1)


def rel_l2(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 63), unique=True, max_size=6),
    offset=st.sampled_from([0.0, 1e2, 1e4]),
    seed=st.integers(0, 2**31 - 1),
)
def test_chunked_moments_equal_a_float64_two_pass_for_any_chunking(cuts, offset, seed):
    generator = torch.Generator().manual_seed(seed)
    samples = (offset + torch.randn(3, 64, 5, generator=generator)).float()
    edges = [0, *sorted(cuts), 64]
    moments = Moments()
    for start, stop in zip(edges, edges[1:]):
        moments.update(samples[:, start:stop])
    mean, var = two_pass(samples)
    assert moments.count == 64
    assert rel_l2(moments.mean, mean) < 1e-6
    assert rel_l2(moments.variance(), var) < 1e-5
    assert bool((moments.variance() >= 0).all())


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 47), unique=True, max_size=5), reads=st.lists(st.booleans(), min_size=6,
       max_size=6), seed=st.integers(0, 2**31 - 1))
def test_reading_the_state_between_chunks_does_not_change_it(cuts, reads, seed):
    """Reading settles the chunks' sums and re-centres later chunks: the same moments, to float64 rounding."""
    samples = (5.0 + torch.randn(2, 48, 3, generator=torch.Generator().manual_seed(seed))).float()
    edges = [0, *sorted(cuts), 48]
    read, unread = Moments(), Moments()
    for (start, stop), look in zip(zip(edges, edges[1:]), reads):
        read.update(samples[:, start:stop])
        unread.update(samples[:, start:stop])
        if look:
            assert read.count == stop and read.mean is not None
    mean, var = two_pass(samples)
    for moments in (read, unread):
        assert moments.count == 48
        assert rel_l2(moments.mean, mean) < 1e-7
        assert rel_l2(moments.variance(), var) < 1e-6


@pytest.mark.parametrize("read_between", [False, True])
def test_a_stream_whose_mean_drifts_by_many_spreads_keeps_an_accurate_variance(read_between):
    """Float32 chunks whose means move 100 spreads a chunk, all centred on the first chunk's mean (or the running
    mean when read): a float64 two-pass on the same float32 values is matched to float32 rounding."""
    generator = torch.Generator().manual_seed(4)
    chunks = [(100.0 * k + torch.randn(2, 8, 50, generator=generator, dtype=torch.float64)).float() for k in range(8)]
    moments = Moments()
    for chunk in chunks:
        moments.update(chunk)
        if read_between:
            assert moments.mean is not None
    mean, var = two_pass(torch.cat(chunks, dim=1))
    assert rel_l2(moments.mean, mean) < 1e-7
    assert rel_l2(moments.variance(), var) < 1e-6


@pytest.mark.parametrize("dtype, tolerance", [(None, 1e-5), (torch.float32, 1e-4)])
def test_a_first_sample_far_from_the_rest_does_not_stay_the_centre_of_every_later_chunk(dtype, tolerance):
    """One sample 1e4 spreads below the 10 000 after it, in chunks of 100, never read in between: centred on that
    sample for good, every chunk's squares (~1e8, rounded in float32) would cancel against the mean's; centred on
    the running mean, only the second chunk is measured from it. Also with float32 sums (Apple's MPS)."""
    generator = torch.Generator().manual_seed(6)
    rest = 1e4 + torch.randn(1, 10_000, 20, generator=generator, dtype=torch.float64)
    samples = torch.cat([torch.zeros(1, 1, 20, dtype=torch.float64), rest], dim=1).float()
    moments = Moments(dtype)
    moments.update(samples[:, :1])
    for start in range(1, 10_001, 100):
        moments.update(samples[:, start:start + 100])
    mean, var = two_pass(samples)
    assert rel_l2(moments.mean, mean) < 1e-6
    assert rel_l2(moments.variance(), var) < tolerance


def test_chunks_of_another_dtype_are_centred_in_their_own():
    samples = 7.0 + torch.randn(2, 20, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    moments = Moments()
    moments.update(samples[:, :8].float())
    moments.update(samples[:, 8:14])
    moments.update(samples[:, 14:].float())
    mean, var = two_pass(samples.float())
    assert rel_l2(moments.mean, mean) < 1e-7
    assert rel_l2(moments.variance(), var) < 1e-6


def test_merge_of_two_accumulators_equals_one_that_saw_everything():
    samples = torch.randn(2, 30, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    left, right, whole = Moments(), Moments(), Moments()
    left.update(samples[:, :7])
    right.update(samples[:, 7:19])
    right.update(samples[:, 19:])
    whole.update(samples)
    left.merge(right)
    assert left.count == whole.count == 30
    torch.testing.assert_close(left.mean, whole.mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(left.variance(), whole.variance(), rtol=1e-12, atol=0)


def test_vargrad_of_nearly_constant_attributions_is_never_negative_and_accurate():
    """The regime where E[a²] − E[a]² in float32 fails: tiny spread around a large mean."""
    generator = torch.Generator().manual_seed(1)
    samples = (3.0 + 1e-4 * torch.randn(4, 48, 100, generator=generator)).float()
    moments = Moments()
    for start in range(0, 48, 5):
        moments.update(samples[:, start : start + 5])
    _, var = two_pass(samples)
    naive = (samples.double() ** 2).mean(1).float() - samples.mean(1) ** 2
    assert bool((naive < 0).any()), "the test's regime should break the naive formula"
    vargrad = smooth(moments, "vargrad")
    assert bool((vargrad >= 0).all())
    assert rel_l2(vargrad, var) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_chunks_are_reduced_in_float32_or_wider(dtype):
    samples = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(2)).to(dtype)
    moments = Moments()
    for start in range(0, 40, 8):
        moments.update(samples[:, start : start + 8])
    mean, var = two_pass(samples)
    assert moments.mean.dtype == torch.float64 and moments.m2.dtype == torch.float64
    assert rel_l2(moments.mean, mean) < 1e-6
    assert rel_l2(moments.variance(), var) < 1e-6


def test_mean_only_accumulator_computes_no_second_moment():
    moments = Moments(track_m2=False)
    moments.update(torch.ones(2, 3, 4))
    assert moments.m2 is None
    torch.testing.assert_close(moments.mean, torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="track_m2"):
        moments.variance()


def test_smoothgrad_sq_is_the_mean_of_squares():
    samples = torch.randn(3, 9, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    moments = Moments()
    moments.update(samples[:, :4])
    moments.update(samples[:, 4:])
    torch.testing.assert_close(smooth(moments, "smoothgrad_sq"), (samples**2).mean(1), rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- merge, state, select, without

EXAMPLES, FEATURES = 3, 4


@st.composite
def split_samples(draw, max_parts=6, dtypes=(torch.float32, torch.float64)):
    """Samples ``(examples, n, features)`` around an offset, and the sizes of the parts they are split into."""
    sizes = draw(st.lists(st.integers(0, 9), min_size=1, max_size=max_parts).filter(lambda s: sum(s) > 0))
    offset = draw(st.sampled_from([0.0, -3.0, 1e3]))
    dtype = draw(st.sampled_from(dtypes))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    samples = (offset + torch.randn(EXAMPLES, sum(sizes), FEATURES, generator=generator, dtype=torch.float64))
    return samples.to(dtype), sizes


def parts_of(samples, sizes, track_m2=True):
    """One accumulator per part; an empty part still receives its (empty) chunk."""
    parts, start = [], 0
    for size in sizes:
        part = Moments(track_m2=track_m2)
        part.update(samples[:, start : start + size])
        parts.append(part)
        start += size
    return parts


def relative_error(actual, expected):
    """‖actual − expected‖ / ‖expected‖; the absolute error if the expected value is all zeros (one sample)."""
    error = float((actual.double() - expected.double()).norm())
    size = float(expected.double().norm())
    return error / size if size > 0 else error


def tolerance(dtype):
    """Relative error allowed against a float64 reference: chunks are centred and squared in their own dtype."""
    return 1e-5 if dtype == torch.float32 else 1e-11


@settings(max_examples=60, deadline=None)
@given(split=split_samples(), data=st.data())
def test_merging_any_split_in_any_order_equals_a_float64_two_pass(split, data):
    samples, sizes = split
    pending = parts_of(samples, sizes)
    # any order and any bracketing: merge a randomly chosen accumulator into another until one is left
    while len(pending) > 1:
        into = pending.pop(data.draw(st.integers(0, len(pending) - 1), label="into"))
        source = pending.pop(data.draw(st.integers(0, len(pending) - 1), label="source"))
        if data.draw(st.booleans(), label="into an empty accumulator first"):
            copy = Moments()
            copy.merge(into)
            into = copy
        into.merge(source)
        pending.append(into)
    merged = pending[0]
    mean, var = two_pass(samples)
    assert merged.count == sum(sizes)
    assert relative_error(merged.mean, mean) < tolerance(samples.dtype) / 10
    assert relative_error(merged.variance(), var) < tolerance(samples.dtype)
    assert bool((merged.m2 >= 0).all())


@settings(max_examples=40, deadline=None)
@given(split=split_samples(max_parts=3), track_m2=st.booleans(), dtype=st.sampled_from([None, torch.float32]))
def test_a_saved_and_loaded_state_is_exact_and_keeps_updating_identically(split, track_m2, dtype):
    samples, sizes = split
    seen, later = sizes[0], sum(sizes[1:])
    original = Moments(dtype, track_m2)
    original.update(samples[:, :seen])  # possibly no samples at all: an empty state round-trips too
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = Moments(dtype, track_m2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert_same_state(restored, original)
    for start in range(seen, seen + later, 2):
        original.update(samples[:, start : start + 2])
        restored.update(samples[:, start : start + 2])
        assert_same_state(restored, original)


def assert_same_state(actual, expected):
    assert actual.count == expected.count and actual.track_m2 == expected.track_m2
    for name in ("mean", "m2"):
        a, e = getattr(actual, name), getattr(expected, name)
        assert (a is None) == (e is None), name
        if e is not None:
            assert a.dtype == e.dtype and torch.equal(a, e), name


def test_a_loaded_state_belongs_to_the_accumulator_not_to_the_dict_it_came_from():
    samples = torch.randn(EXAMPLES, 10, FEATURES, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    source = Moments()
    source.update(samples[:, :6])
    checkpoint = {name: value.clone() if torch.is_tensor(value) else value
                  for name, value in source.state_dict().items()}
    restored = Moments()
    restored.load_state_dict(checkpoint)
    restored.update(samples[:, 6:])
    assert torch.equal(checkpoint["mean"], source.mean) and torch.equal(checkpoint["m2"], source.m2)
    again = Moments()
    again.load_state_dict(checkpoint)
    assert_same_state(again, source)


@settings(max_examples=30, deadline=None)
@given(before=split_samples(max_parts=2), after=split_samples(max_parts=2), track_m2=st.booleans())
def test_reset_forgets_every_sample_seen(before, after, track_m2):
    used, fresh = Moments(track_m2=track_m2), Moments(track_m2=track_m2)
    used.update(before[0])
    used.reset()
    assert used.count == 0 and used.mean is None and used.m2 is None
    used.update(after[0])
    fresh.update(after[0])
    assert_same_state(used, fresh)


@settings(max_examples=40, deadline=None)
@given(split=split_samples(max_parts=4, dtypes=(torch.float64,)), data=st.data())
def test_selecting_examples_then_merging_equals_selecting_from_everything(split, data):
    samples, sizes = split
    as_mask = data.draw(st.booleans(), label="boolean mask")
    if as_mask:
        examples = torch.tensor(data.draw(st.lists(st.booleans(), min_size=EXAMPLES, max_size=EXAMPLES)))
    else:  # any order, repeats allowed
        examples = torch.tensor(data.draw(st.lists(st.integers(0, EXAMPLES - 1), max_size=5)), dtype=torch.long)
    parts = parts_of(samples, sizes)
    before = [None if part.mean is None else part.mean.clone() for part in parts]
    selected = parts[0].select(examples)  # the others are merged into this selection, in place
    for part in parts[1:]:
        selected.merge(part.select(examples))
    # a selection is a state of its own: merging into it leaves the accumulator it came from as it was
    assert all(part.mean is None or torch.equal(part.mean, mean) for part, mean in zip(parts, before))
    everything = Moments()
    for part in parts:
        everything.merge(part)
    expected = everything.select(examples)
    assert selected.count == expected.count == sum(sizes)
    torch.testing.assert_close(selected.mean, expected.mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(selected.m2, expected.m2, rtol=1e-12, atol=1e-12 * float(everything.m2.max()))
    mean, var = two_pass(samples[examples])
    torch.testing.assert_close(selected.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(selected.variance(), var, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(split=split_samples(max_parts=2, dtypes=(torch.float64,)), track_m2=st.booleans())
def test_without_a_part_inverts_merging_it(split, track_m2):
    samples, sizes = split
    kept_size = sizes[0]
    kept, part = parts_of(samples, [kept_size, sum(sizes) - kept_size], track_m2)
    whole = Moments(track_m2=track_m2)
    whole.merge(kept)
    whole.merge(part)
    rest = whole.without(part)
    assert rest.count == kept.count
    if kept.count == 0:
        assert rest.mean is None and rest.m2 is None
        return
    # Taking a part out subtracts sums of the whole: the rounding left is that of the whole's magnitude.
    scale = float(whole.mean.abs().max()) + 1.0
    torch.testing.assert_close(rest.mean, kept.mean, rtol=0, atol=1e-12 * scale)
    if track_m2:
        torch.testing.assert_close(rest.m2, kept.m2, rtol=0, atol=1e-11 * float(whole.m2.max()) + 1e-12)
        assert bool((rest.m2 >= 0).all())
    else:
        assert rest.m2 is None


def test_a_state_taken_earlier_is_not_changed_by_later_updates():
    moments = Moments()
    moments.update(torch.randn(2, 4, 3, dtype=torch.float64))
    state = moments.state_dict()
    mean = state["mean"].clone()
    moments.update(torch.randn(2, 6, 3, dtype=torch.float64))
    assert torch.equal(state["mean"], mean) and state["count"] == 4


# A user's own streaming statistics: samples stacked in rows (dim=0), read mid-stream, and mistakes named.


def test_a_stream_of_rows_with_dim_0_read_between_chunks_equals_a_float64_two_pass():
    rows = (100 + 3 * torch.randn(200, 7, generator=torch.Generator().manual_seed(0))).float()
    moments = Moments()
    for chunk in rows.split(37):
        moments.update(chunk, dim=0)
        moments.variance()  # reading mid-stream is allowed
    mean, var = two_pass(rows.T)
    assert moments.count == 200
    assert rel_l2(moments.mean, mean) < 1e-9 and rel_l2(moments.variance(), var) < 1e-6


@pytest.mark.parametrize("later", [(3, 5), (3, 1), (3, 7, 1)])
def test_a_chunk_whose_sample_shape_differs_from_the_state_is_refused_not_broadcast(later):
    moments = Moments()
    moments.update(torch.randn(4, 7), dim=0)
    with pytest.raises(ValueError, match=r"samples.*\(7,\)"):
        moments.update(torch.randn(*later), dim=0)
    assert moments.count == 4


def test_merging_a_state_of_another_shape_is_refused_not_broadcast():
    moments, other = Moments(), Moments()
    moments.update(torch.randn(4, 7), dim=0)
    other.update(torch.randn(4, 1), dim=0)
    with pytest.raises(ValueError, match=r"merge.*\(1,\).*\(7,\)"):
        moments.merge(other)
    assert moments.count == 4


@pytest.mark.parametrize("dim", [1, -2, 5])
def test_a_dim_the_samples_do_not_have_is_named(dim):
    with pytest.raises(ValueError, match=rf"dim={dim}.*\(7,\)"):
        Moments().update(torch.randn(7), dim=dim)


def test_samples_that_are_not_a_tensor_are_a_type_error():
    with pytest.raises(TypeError, match="samples"):
        Moments().update([[1.0, 2.0]], dim=0)


def test_complex_samples_are_refused_not_cast_to_their_real_part():
    with pytest.raises(TypeError, match="complex"):
        Moments().update(torch.randn(3, 2, dtype=torch.complex64), dim=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_samples_are_accumulated_exactly(dtype):
    values = torch.tensor([[3, 0], [1, 1], [4, 1], [1, 0], [5, 1]]).to(dtype)
    moments = Moments()
    moments.update(values[:2], dim=0)
    moments.update(values[2:], dim=0)
    mean, var = two_pass(values.T)
    assert torch.equal(moments.mean, mean) and torch.allclose(moments.variance(), var, rtol=0, atol=1e-15)


@pytest.mark.parametrize("read", ["variance", "mean_of_squares"])
def test_reading_the_variance_before_any_sample_says_there_is_none(read):
    with pytest.raises(ValueError, match="no samples"):
        getattr(Moments(), read)()


@pytest.mark.parametrize("dim", [1.0, True, "1", None])
def test_update_refuses_a_dim_that_is_not_an_int_naming_it(dim):
    """A float or string dim fell through to torch's movedim/indexing errors; True was taken as 1."""
    moments = Moments()
    with pytest.raises(TypeError, match=rf"dim must be an int, got {re.escape(repr(dim))}"):
        moments.update(torch.zeros(2, 3), dim=dim)
    assert moments.count == 0 and moments.mean is None


@pytest.mark.parametrize("dim", [-1, 1])
def test_select_along_a_negative_dim_is_that_dimension_counted_from_the_end(dim):
    """select(..., dim=-1) indexed dimension 0 instead: the moments of the wrong examples, silently."""
    samples = torch.randn(3, 5, 4, dtype=torch.float64)  # (rows, samples, columns)
    moments = Moments()
    moments.update(samples, dim=1)
    chosen = moments.select(torch.tensor([3, 1]), dim=dim)
    kept = samples[:, :, [3, 1]]
    torch.testing.assert_close(chosen.mean, kept.mean(dim=1))
    torch.testing.assert_close(chosen.variance(), kept.var(dim=1, correction=0))


def test_select_names_a_dim_the_state_does_not_have():
    moments = Moments()
    moments.update(torch.zeros(3, 2, 4))
    for dim in (2, -3):
        with pytest.raises(ValueError, match=rf"dim={dim} is not a dimension of this accumulator's state \(3, 4\)"):
            moments.select(0, dim=dim)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, "float32", float])
def test_an_accumulation_dtype_that_is_not_a_real_floating_torch_dtype_is_refused_naming_it(dtype):
    """Moments(dtype="float32") or an integer dtype failed at the first update with torch's cast/device errors."""
    with pytest.raises(TypeError, match=rf"dtype must be a floating torch\.dtype \(e\.g\. torch\.float64\) or None, "
                                        rf"got {re.escape(repr(dtype))}"):
        Moments(dtype=dtype)


@pytest.mark.parametrize("state, message", [
    ({"count": 3, "mean": torch.zeros(2), "m2": torch.zeros(3), "track_m2": True}, r"m2 of shape \(3,\) .* mean's \(2,\)"),
    ({"count": 3, "mean": None, "m2": None, "track_m2": False}, r"count=3 but no mean"),
    ({"count": 3, "mean": torch.zeros(2), "m2": None, "track_m2": True}, r"track_m2=True but no m2"),
])
def test_load_state_dict_refuses_a_state_whose_parts_disagree(state, message):
    """A mean and M2 of different shapes loaded silently, and variance() broadcast them into a wrong shape."""
    moments = Moments(track_m2=state["track_m2"])
    with pytest.raises(ValueError, match=message):
        moments.load_state_dict(state)
    assert moments.count == 0 and moments.mean is None

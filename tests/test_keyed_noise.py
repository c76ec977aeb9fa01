"""The counter-based generator: its bits follow its written construction, and its numbers look random.

The construction is re-derived here with Python integers, so the tensor version's tricks (masked
right shifts for logical ones, two's-complement wrap-around for unsigned products, signed halves)
are checked against plain unsigned arithmetic.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisegrad.sampling import keyed
from noisegrad.sampling.keyed import random_bits, row_keys, standard_normal, uniform
from noisegrad.sampling.streams import Purpose, stream

M64, M32 = 2**64 - 1, 2**32 - 1


def splitmix64(v):
    v = (v + 0x9E3779B97F4A7C15) & M64
    v = ((v ^ (v >> 30)) * 0xBF58476D1CE4E5B9) & M64
    v = ((v ^ (v >> 27)) * 0x94D049BB133111EB) & M64
    return v ^ (v >> 31)


def lowbias32(x):
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & M32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & M32
    return x ^ (x >> 16)


def reference_bits(seed, stream_id, example_id, unit, coordinates):
    """The 32 bits of one element, as module keyed's docstring describes them, in unsigned Python integers."""
    prefix = splitmix64((seed ^ splitmix64(stream_id)) & M64)
    row = splitmix64(splitmix64((example_id + prefix) & M64) ^ unit)
    element = 0
    for c in coordinates:
        element = splitmix64(element ^ c)
    element = splitmix64(element)
    x = lowbias32((element & M32) ^ (row & M32))
    return lowbias32(x ^ (row >> 32) ^ (element >> 32))


def bits_of(seed, stream_id, example_ids, units, shape):
    keys = row_keys(seed, stream_id, torch.tensor(example_ids), torch.tensor(units))
    out = torch.empty(tuple(keys.shape) + shape, dtype=torch.int32)
    return random_bits(keys, shape, out)


@pytest.fixture(params=["numpy", "tensor"])
def row_key_path(request, monkeypatch):
    """Both ways of making row keys: numpy's unsigned integers for a small CPU grid, tensor operations otherwise."""
    monkeypatch.setattr(keyed, "_NUMPY_ROWS", 10**9 if request.param == "numpy" else -1)
    return request.param


@pytest.fixture(params=["numpy", "torch"])
def hash_path(request, monkeypatch):
    """Both ways of hashing a block: numpy's unsigned integers for a small CPU block, torch operations otherwise."""
    monkeypatch.setattr(keyed, "_NUMPY_ELEMENTS", 10**9 if request.param == "numpy" else -1)
    return request.param


@pytest.mark.parametrize("seed", [0, 12345, 2**64 - 1, -7 & M64])
def test_bits_follow_the_written_construction(seed, row_key_path, hash_path):
    example_ids, units, shape = [0, 1, -3, 2**62 + 5], [0, 1, 2**31 + 9], (2, 3)
    got = bits_of(seed, stream(Purpose.INPUT_NOISE, 1), example_ids, units, shape)
    for k, unit in enumerate(units):
        for i, example in enumerate(example_ids):
            for a in range(2):
                for b in range(3):
                    expected = reference_bits(seed, stream(Purpose.INPUT_NOISE, 1), example & M64, unit, (a, b))
                    assert int(got[k, i, a, b]) & M32 == expected


def test_normals_are_the_inverse_normal_cdf_of_the_top_24_bits():
    keys = row_keys(3, 1, torch.arange(5), torch.arange(4))
    bits = random_bits(keys, (7,), torch.empty(4, 5, 7, dtype=torch.int32))
    top = torch.bitwise_right_shift(bits, 8).double()  # signed: [-2^23, 2^23)
    expected = math.sqrt(2) * torch.erfinv((top + 0.5) * 2.0**-23)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)):
        z = standard_normal(keys, (7,), torch.empty(4, 5, 7, dtype=dtype))
        assert z.dtype == dtype
        torch.testing.assert_close(z.double(), expected, rtol=tol, atol=tol)
    assert float(expected.abs().max()) < 5.4


def test_blocks_do_not_change_the_bits(monkeypatch, hash_path):
    keys = row_keys(1, 1, torch.arange(37), torch.arange(5))
    whole = random_bits(keys, (3, 11), torch.empty(5, 37, 3, 11, dtype=torch.int32))
    monkeypatch.setattr(keyed, "_CPU_BLOCK", 100)  # 3 rows per block, and a ragged last block
    assert torch.equal(random_bits(keys, (3, 11), torch.empty(5, 37, 3, 11, dtype=torch.int32)), whole)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), rows=st.integers(1, 9), shape=st.lists(st.integers(1, 6), max_size=3),
       first_id=st.integers(-2**62, 2**62))
def test_numpy_and_torch_hash_the_same_bits(seed, rows, shape, first_id):
    """The small-block CPU path (numpy) and the torch path give every element the same 32 bits."""
    keys = row_keys(seed, 1, torch.arange(first_id, first_id + rows + 1), torch.arange(3))[:, 1:]  # not contiguous
    out = {}
    for path, limit in (("numpy", 10**9), ("torch", -1)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(keyed, "_NUMPY_ELEMENTS", limit)
            out[path] = random_bits(keys, tuple(shape), torch.empty((3, rows) + tuple(shape), dtype=torch.int32))
    assert torch.equal(out["numpy"], out["torch"])


def test_an_elements_bits_do_not_depend_on_the_size_of_any_dimension():
    """Padding a batch along any dimension leaves every original element's draw as it was."""
    small = bits_of(2, 1, [4, 9], [0, 3], (5, 6))
    for padded_shape in ((8, 6), (5, 9), (8, 9)):
        padded = bits_of(2, 1, [4, 9], [0, 3], padded_shape)
        assert torch.equal(padded[:, :, :5, :6], small)


def test_uniforms_are_in_the_open_unit_interval_from_all_32_bits():
    keys = row_keys(0, 1, torch.arange(3), torch.arange(2))
    bits = random_bits(keys, (4,), torch.empty(2, 3, 4, dtype=torch.int32)).long() & M32
    u = uniform(keys, (4,))
    assert u.dtype == torch.float64
    torch.testing.assert_close(u, (bits.double() + 0.5) / 2**32, rtol=0, atol=0)


def _ks_statistic(z):
    z = z.double().flatten().sort().values
    n = z.numel()
    cdf = torch.special.ndtr(z)
    steps = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum(steps - cdf, cdf - (steps - 1 / n)).max())


def test_normal_marginals_pass_a_kolmogorov_smirnov_test():
    z = standard_normal(row_keys(11, 1, torch.arange(500), torch.arange(20)), (30,), torch.empty(20, 500, 30))
    n = z.numel()
    assert _ks_statistic(z) < 1.95 / math.sqrt(n)  # the 0.1 % critical value
    assert abs(float(z.double().mean())) < 4 / math.sqrt(n)
    assert abs(float(z.double().var()) - 1) < 4 * math.sqrt(2 / n)


def _correlation(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_neighbouring_keys_give_uncorrelated_draws():
    """Neighbouring elements, examples, samples, seeds and streams: each pair's correlation is within noise."""
    shape, ids, units = (64,), torch.arange(256), torch.arange(16)
    z = standard_normal(row_keys(5, 1, ids, units), shape, torch.empty(16, 256, 64))
    n = z[:, :, 1:].numel()
    limit = 5 / math.sqrt(n)
    assert abs(_correlation(z[:, :, 1:], z[:, :, :-1])) < limit
    assert abs(_correlation(z[:, 1:], z[:, :-1])) < limit
    assert abs(_correlation(z[1:], z[:-1])) < limit
    other_seed = standard_normal(row_keys(6, 1, ids, units), shape, torch.empty(16, 256, 64))
    other_stream = standard_normal(row_keys(5, 2, ids, units), shape, torch.empty(16, 256, 64))
    assert abs(_correlation(z, other_seed)) < limit
    assert abs(_correlation(z, other_stream)) < limit


def test_pairs_of_neighbouring_uniforms_fill_the_unit_square_evenly():
    """A chi-square test on a 16 × 16 grid of (u[e], u[e + 1]) and (u[i], u[i + 1]): structure a correlation misses."""
    u = uniform(row_keys(8, 1, torch.arange(2048), torch.arange(2)), (130,))
    for first, second in ((u[..., :-1], u[..., 1:]), (u[:, :-1], u[:, 1:])):
        cells = (first * 16).long() * 16 + (second * 16).long()
        counts = torch.bincount(cells.flatten(), minlength=256).double()
        expected = cells.numel() / 256
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 255 + 5 * math.sqrt(2 * 255)


def test_streams_seeds_and_units_never_repeat_each_others_bits():
    ids, units, shape = torch.arange(64), torch.arange(8), (256,)
    draws = {}
    for purpose in Purpose:
        for index in (0, 1):
            draws[(purpose, index)] = bits_of(0, stream(purpose, index), ids.tolist(), units.tolist(), shape)
    draws["seed 1"] = bits_of(1, stream(Purpose.INPUT_NOISE, 0), ids.tolist(), units.tolist(), shape)
    names = list(draws)
    n = draws[names[0]].numel()
    for i, a in enumerate(names):
        # within one stream, all rows distinct and almost all values distinct (32-bit birthday collisions aside)
        values = draws[a].flatten()
        assert values.unique().numel() > n - 8
        for b in names[i + 1 :]:
            assert int((draws[a] == draws[b]).sum()) <= 2, (a, b)  # chance alone gives n / 2^32 ≈ 0.03


def test_stream_ids_are_distinct_and_checked():
    ids = {stream(p, i) for p in Purpose for i in (0, 1, 2**32 - 1)}
    assert len(ids) == 3 * len(Purpose)
    with pytest.raises(ValueError, match="input_index"):
        stream(Purpose.INPUT_NOISE, 2**32)


def test_a_wrong_output_buffer_is_refused():
    keys = row_keys(0, 1, torch.arange(2), torch.arange(3))
    with pytest.raises(ValueError, match="contiguous with shape"):
        standard_normal(keys, (4,), torch.empty(3, 2, 5))
    with pytest.raises(ValueError, match="contiguous with shape"):
        standard_normal(keys, (4,), torch.empty(3, 4, 2).transpose(1, 2))


def test_a_dry_run_under_fake_tensor_mode_leaves_nothing_behind_for_the_calls_after_it():
    """FakeTensorMode (shapes without data, e.g. a memory estimate) makes fake tensors of whatever the generator
    creates; its caches must not keep them, or every later call would compute with them (it gave NaN)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    keys = row_keys(1, 2, torch.arange(2), torch.arange(3))
    shapes = [(70_000,), (50_000, 2)]  # past the numpy block: torch's operations and the cached element keys
    expected = [standard_normal(keys, shape, torch.empty((3, 2) + shape)) for shape in shapes]
    keyed._mix32_operands.cache_clear()  # cold caches, as in a fresh process whose first call is the dry run
    keyed._element_keys.cache_clear()
    with FakeTensorMode(allow_non_fake_inputs=True):
        standard_normal(keys, shapes[0], torch.empty((3, 2) + shapes[0]))
    for shape, before in zip(shapes, expected):
        assert torch.equal(standard_normal(keys, shape, torch.zeros((3, 2) + shape)), before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_bits_are_the_same_on_cuda_and_the_normals_agree_to_rounding():
    ids, units = torch.arange(33), torch.arange(5)
    cpu_keys = row_keys(4, 1, ids, units)
    cuda_keys = row_keys(4, 1, ids.cuda(), units.cuda())
    assert torch.equal(cuda_keys.cpu(), cpu_keys)
    cpu_bits = random_bits(cpu_keys, (3, 7), torch.empty(5, 33, 3, 7, dtype=torch.int32))
    cuda_bits = random_bits(cuda_keys, (3, 7), torch.empty(5, 33, 3, 7, dtype=torch.int32, device="cuda"))
    assert torch.equal(cuda_bits.cpu(), cpu_bits)
    cpu_z = standard_normal(cpu_keys, (3, 7), torch.empty(5, 33, 3, 7))
    cuda_z = standard_normal(cuda_keys, (3, 7), torch.empty(5, 33, 3, 7, device="cuda"))
    torch.testing.assert_close(cuda_z.cpu(), cpu_z, rtol=1e-6, atol=1e-6)

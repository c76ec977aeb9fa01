"""numpy's global RNG saved and restored: exactly what get_state() shows, cached gaussian included."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisegrad import _numpy_rng


def legacy_state():
    kind, key, position, has_gauss, gauss = np.random.get_state()
    return kind, key.copy(), position, has_gauss, gauss


def assert_same(a, b):
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def disturb(uniforms: int, gaussians: int, reseed: bool) -> None:
    """What a call may do to the global generator: draw uniforms and gaussians, seed it."""
    if reseed:
        np.random.seed(12345)
    np.random.rand(uniforms)
    np.random.randn(gaussians)


@pytest.fixture(params=["numpy >= 1.25", "numpy < 1.25"])
def path(request, monkeypatch):
    if request.param == "numpy < 1.25":  # no np.random.get_bit_generator: one bit generator for good
        monkeypatch.delattr(np.random, "get_bit_generator", raising=False)
    return request.param


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), before=st.integers(0, 1300), gaussians_before=st.integers(0, 3),
       uniforms=st.integers(0, 1300), gaussians=st.integers(0, 3), reseed=st.booleans())
def test_restore_gives_back_the_whole_state_after_any_draws(seed, before, gaussians_before, uniforms, gaussians,
                                                           reseed):
    for old_numpy in (False, True):  # both ways of saving: with and without np.random.get_bit_generator
        with pytest.MonkeyPatch.context() as patch:
            if old_numpy:
                patch.delattr(np.random, "get_bit_generator", raising=False)
            np.random.seed(seed)
            np.random.rand(before)  # any position of the twister, across its 624-word refills
            np.random.randn(gaussians_before)  # an odd count leaves a cached gaussian
            expected = legacy_state()
            saved = _numpy_rng.save()
            assert_same(legacy_state(), expected)  # saving changes nothing
            disturb(uniforms, gaussians, reseed)
            _numpy_rng.restore(saved)
            assert_same(legacy_state(), expected)


def test_the_draws_after_a_restore_are_those_that_would_have_come(path):
    np.random.seed(3)
    np.random.randn(1)
    expected = np.random.randn(5), np.random.rand(3)
    np.random.seed(3)
    np.random.randn(1)
    saved = _numpy_rng.save()
    disturb(7, 3, reseed=True)
    _numpy_rng.restore(saved)
    got = np.random.randn(5), np.random.rand(3)
    assert all(np.array_equal(g, e) for g, e in zip(got, expected))


needs_bit_generators = pytest.mark.skipif(not hasattr(np.random, "get_bit_generator"),
                                          reason="numpy < 1.25 cannot replace the global bit generator")


@needs_bit_generators
@pytest.mark.parametrize("replacement", [lambda: np.random.PCG64(1), lambda: np.random.MT19937(2)],
                         ids=["PCG64", "another MT19937"])
def test_a_bit_generator_replaced_in_between_is_put_back_with_its_state(replacement):
    # a forward that replaces numpy's global generator: the user's comes back, with its state
    original = np.random.get_bit_generator()
    np.random.seed(11)
    np.random.randn(3)
    expected = legacy_state()
    saved = _numpy_rng.save()
    np.random.set_bit_generator(replacement())
    np.random.rand(5)
    _numpy_rng.restore(saved)
    assert np.random.get_bit_generator() is original
    assert_same(legacy_state(), expected)


@needs_bit_generators
def test_a_replaced_bit_generator_is_saved_with_its_whole_state():
    original = np.random.get_bit_generator()
    try:
        np.random.set_bit_generator(np.random.PCG64(4))
        np.random.standard_normal()
        expected = np.random.get_state(legacy=False)
        saved = _numpy_rng.save()
        np.random.seed(3)
        np.random.randn(3)
        _numpy_rng.restore(saved)
        got = np.random.get_state(legacy=False)
        assert got["state"] == expected["state"] and (got["has_gauss"], got["gauss"]) == (expected["has_gauss"],
                                                                                          expected["gauss"])
    finally:
        np.random.set_bit_generator(original)


@needs_bit_generators
def test_a_subclass_of_the_twister_is_saved_without_a_warning_and_restored_exactly():
    # its state dictionary names the subclass, so numpy has no legacy tuple for it (it would warn and fall back)
    class Twister(np.random.MT19937):
        pass

    original = np.random.get_bit_generator()
    try:
        np.random.set_bit_generator(Twister(5))
        np.random.randn(3)  # a cached gaussian
        expected = np.random.randn(4), np.random.rand(2)
        np.random.set_bit_generator(Twister(5))
        np.random.randn(3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            saved = _numpy_rng.save()
        disturb(9, 1, reseed=True)
        _numpy_rng.restore(saved)
        got = np.random.randn(4), np.random.rand(2)
        assert all(np.array_equal(g, e) for g, e in zip(got, expected))
    finally:
        np.random.set_bit_generator(original)

"""numpy's global RNG saved as bytes and restored: exactly what get_state() shows, cached gaussian included."""

import threading

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


@pytest.fixture(params=["bytes", "get_state", "numpy < 1.25"])
def path(request, monkeypatch):
    if request.param == "get_state":  # the fallback for a numpy whose state is not laid out as expected
        monkeypatch.setattr(_numpy_rng, "_state_address", lambda: None)
    if request.param == "numpy < 1.25":  # no np.random.get_bit_generator: one bit generator for good
        monkeypatch.delattr(np.random, "get_bit_generator")
    return request.param


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), before=st.integers(0, 1300), gaussians_before=st.integers(0, 3),
       uniforms=st.integers(0, 1300), gaussians=st.integers(0, 3), reseed=st.booleans())
def test_restore_gives_back_the_whole_state_after_any_draws(seed, before, gaussians_before, uniforms, gaussians,
                                                           reseed):
    for state_path in ("bytes", "get_state"):
        np.random.seed(seed)
        np.random.rand(before)  # any position of the twister, across its 624-word refills
        np.random.randn(gaussians_before)  # an odd count leaves a cached gaussian
        expected = legacy_state()
        address = _numpy_rng._state_address
        if state_path == "get_state":
            _numpy_rng._state_address = lambda: None
        try:
            saved = _numpy_rng.save()
            assert_same(legacy_state(), expected)  # saving changes nothing
            disturb(uniforms, gaussians, reseed)
            _numpy_rng.restore(saved)
        finally:
            _numpy_rng._state_address = address
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


def test_the_byte_layout_is_used_only_when_it_matches_get_state():
    assert _numpy_rng._state_address() is not None  # this numpy: the fast path is the one tested above
    other = np.random.MT19937(5)  # a twister whose bytes are not the global generator's state
    assert _numpy_rng._checked_address.__wrapped__(other) is None


@pytest.mark.parametrize("replacement", [lambda: np.random.PCG64(1), lambda: np.random.MT19937(2)],
                         ids=["PCG64", "another MT19937"])
def test_a_bit_generator_replaced_in_between_is_put_back_with_its_state(replacement):
    # Before: the twister's bytes were written to whatever generator was global at the restore (a PCG64 gave
    # a NULL address: segmentation fault; another MT19937 got the state, the user's generator kept the draws).
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


def taking(lock, draw):
    """``draw`` as numpy 1.25 to 2.3 make it: it takes the generator's (non-reentrant) lock; failing, not hanging."""
    def locked(*args, **kwargs):
        if not lock.acquire(timeout=5):
            raise AssertionError(f"{draw.__name__} waited for a lock its caller holds: a deadlock")
        try:
            return draw(*args, **kwargs)
        finally:
            lock.release()
    return locked


@pytest.mark.parametrize("gaussians", [0, 1], ids=["no cached gaussian", "a cached gaussian"])
def test_numpys_non_reentrant_lock_is_not_held_around_its_own_draws(monkeypatch, gaussians):
    # numpy 1.25 to 2.3: the global generator's lock is a threading.Lock that every draw takes; saving held it
    # around the probe's draw, and every seeded call hung (reproduced with numpy 2.3.5)
    real, lock = np.random.get_bit_generator(), threading.Lock()

    class OldMT19937:  # the global generator as those numpys have it: this state, a non-reentrant lock
        def __init__(self):
            self.lock, self.ctypes = lock, real.ctypes

    old = OldMT19937()
    monkeypatch.setattr(np.random, "MT19937", OldMT19937)
    monkeypatch.setattr(np.random, "get_bit_generator", lambda: old)
    for name in ("standard_normal", "seed", "set_state", "get_state", "rand", "randn"):
        monkeypatch.setattr(np.random, name, taking(lock, getattr(np.random, name)))
    np.random.seed(5)
    np.random.randn(1 + 2 * gaussians)  # an odd count before leaves a cached gaussian
    expected = legacy_state()
    saved = _numpy_rng.save()
    assert _numpy_rng._state_address() is not None  # the bytes path, not get_state's
    disturb(3, 3, reseed=True)
    _numpy_rng.restore(saved)
    assert_same(legacy_state(), expected)

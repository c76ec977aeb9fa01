"""numpy's global RNG state, saved and restored exactly in a few microseconds instead of about fifty.

``np.random.get_state()`` and ``set_state()`` copy the Mersenne Twister's
624 words one Python object at a time (about 25 µs each way, measured in
benchmarks/FIXED_COST.md). Here the generator's state (its 624 words and
position, at ``bit_generator.ctypes.state_address``, numpy's documented
ctypes interface) is copied as bytes. The legacy generator holds one more
thing, a cached gaussian (the second of each pair its normal draws make),
which only ``get_state()`` shows; it is found by a probe:
``standard_normal()`` returns a cached gaussian without touching the twister
and otherwise draws from it, so the twister's bytes tell which happened.

The byte layout is checked against ``get_state()`` on first use; if it
ever differs (another numpy), ``get_state()`` and ``set_state()`` are used.

Examples
--------
>>> import numpy as np
>>> np.random.seed(1); _ = np.random.randn(3)  # an odd number of gaussians: one is cached
>>> expected = np.random.randn(4)
>>> np.random.seed(1); _ = np.random.randn(3)
>>> saved = save()
>>> _ = np.random.randn(5), np.random.seed(7)
>>> restore(saved)
>>> bool((np.random.randn(4) == expected).all())
True
"""

import contextlib
import ctypes
import functools
import threading
from typing import Any, ContextManager, Optional, Tuple

import numpy as np

__all__ = ["save", "restore"]

#: The Mersenne Twister's state: 624 32-bit words and an int position.
_WORDS = 624
_STATE_BYTES = 4 * _WORDS + 4


def save() -> Any:
    """The global RandomState's state (opaque), leaving it exactly as it was."""
    get_bit_generator = getattr(np.random, "get_bit_generator", None)
    if get_bit_generator is None:  # numpy < 1.25: one bit generator for good
        return None, np.random.get_state(legacy=False)
    return get_bit_generator(), _save_state()


def restore(saved: Any) -> None:
    """Put back what :func:`save` returned: the global bit generator (if something replaced it) and its state."""
    bit_generator, state = saved
    if bit_generator is not None and np.random.get_bit_generator() is not bit_generator:
        np.random.set_bit_generator(bit_generator)  # the state below is this generator's, not its replacement's
    if not isinstance(state, tuple):
        np.random.set_state(state)
        return
    twister, cached = state
    address = _state_address()
    with _draws_lock():
        if cached is None:
            np.random.seed(0)  # the one cheap way to drop a cached gaussian; the twister is overwritten next
            ctypes.memmove(address, twister, _STATE_BYTES)
        else:
            key = np.frombuffer(twister, dtype=np.uint32, count=_WORDS).copy()
            position = int.from_bytes(twister[4 * _WORDS:], "little", signed=True)
            np.random.set_state(("MT19937", key, position, 1, cached))


def _save_state() -> Any:
    """The current global generator's state: its twister's bytes and cached gaussian, or get_state()'s dict."""
    address = _state_address()
    if address is None:
        return np.random.get_state(legacy=False)
    with _draws_lock():
        twister = ctypes.string_at(address, _STATE_BYTES)
        probe = np.random.standard_normal()
        if ctypes.string_at(address, _STATE_BYTES) == twister:  # a cached gaussian, now taken: put it back
            state: Tuple[bytes, Optional[float]] = (twister, probe)
        else:  # the probe drew from the twister and cached its pair's second gaussian: forget both
            state = (twister, None)
        restore((None, state))
    return state


def _draws_lock() -> ContextManager[Any]:
    """The lock numpy's draws from the global generator take, to hold while calling them: only if reentrant.

    numpy 1.25 to 2.3 take a ``threading.Lock`` in every draw, the probe's
    too, so holding it around the probe would wait for ever; numpy 2.4 made it
    an ``RLock``. Without it another thread's draw could fall between the
    probe's two reads (and its draws are undone by the restore anyway).
    """
    lock = np.random.get_bit_generator().lock
    return lock if isinstance(lock, _RLOCK) else contextlib.nullcontext()


_RLOCK = type(threading.RLock())


def _state_address() -> Optional[int]:
    """Where the global generator's twister state is, or None where that cannot be used (numpy < 1.25, a change)."""
    get_bit_generator = getattr(np.random, "get_bit_generator", None)
    if get_bit_generator is None:
        return None
    bit_generator = get_bit_generator()
    return _checked_address(bit_generator) if type(bit_generator) is np.random.MT19937 else None


@functools.lru_cache(maxsize=4)
def _checked_address(bit_generator: Any) -> Optional[int]:
    """The state's address, if its bytes are the key and position ``get_state()`` gives (checked once)."""
    address = bit_generator.ctypes.state_address
    kind, key, position, _, _ = np.random.get_state()
    raw = ctypes.string_at(address, _STATE_BYTES)
    same = (kind == "MT19937" and np.array_equal(np.frombuffer(raw, dtype=np.uint32, count=_WORDS), key)
            and int.from_bytes(raw[4 * _WORDS:], "little", signed=True) == position)
    return address if same else None

"""Counter-based random numbers: each number is a hash of what it is for, not the next draw of a generator.

The draw for one element of one noisy copy is a function of (seed, stream,
example id, unit, element) only, computed with tensor integer operations on
the tensor's own device:

* a **row key** (64 bits) mixes the seed, the stream, the example id and the
  unit (a sample, an antithetic pair, a replicate) with SplitMix64's
  finaliser, on the small ``(units, examples)`` grid;
* an **element key** (64 bits) mixes the element's coordinates within its
  example one dimension after another, so an element keeps its key however
  much padding a batch adds along any dimension;
* the 32 random bits of an element are two rounds of a 32-bit integer hash
  (Wellons' ``lowbias32``) of the keys' halves, over the full tensor in blocks
  that stay in cache (small blocks on a CPU with numpy's unsigned integers,
  whose operations cost a fraction of torch's: the same bits).

Integer arithmetic is exact, so the bits are the same on every device and in
any batch, chunk or process. Normals are ``√2·erfinv(2u − 1)`` of a 24-bit
uniform ``u``, which never reaches 0 or 1 (so at most 5.42 σ).

References
----------
G. L. Steele, D. Lea, C. H. Flood (2014), "Fast splittable pseudorandom
number generators", OOPSLA (SplitMix64). J. K. Salmon et al. (2011),
"Parallel random numbers: as easy as 1, 2, 3", SC11 (counter-based
generators). C. Wellons (2018), "Prospecting for hash functions"
(lowbias32).
"""

import functools
import math
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["splitmix64", "row_keys", "random_bits", "standard_normal", "uniform"]

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX64 = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None))
_MIX32 = ((16, 0x7FEB352D), (15, 0x846CA68B), (16, None))
#: Elements hashed at a time on a CPU: fewer per-operation overheads than smaller blocks, and the block's
#: buffers (1 MiB each) stay in cache (benchmarks/NOISE.md).
_CPU_BLOCK = 1 << 18
_DEVICE_BLOCK = 1 << 24


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def splitmix64(value: int) -> int:
    """SplitMix64's output for state ``value``: a bijective 64-bit mix (Python integers).

    Examples
    --------
    >>> splitmix64(0) == 0xE220A8397B1DCDAF
    True
    """
    value = (value + _GAMMA) & _MASK64
    for shift, multiplier in _MIX64:
        value ^= value >> shift
        if multiplier is not None:
            value = (value * multiplier) & _MASK64
    return value


def _mix64_(x: Tensor) -> Tensor:
    """:func:`splitmix64` of every element of an int64 tensor, in place (two's complement wraps as uint64 does)."""
    x.add_(_signed(_GAMMA, 64))
    for shift, multiplier in _MIX64:
        x.bitwise_xor_(torch.bitwise_right_shift(x, shift).bitwise_and_((1 << (64 - shift)) - 1))
        if multiplier is not None:
            x.mul_(_signed(multiplier, 64))
    return x


#: At most this many elements of a CPU call are hashed with numpy, in one block: the hash's two dozen operations cost
#: about a microsecond each there against several in torch, which wins on more elements with its thread pool
#: (benchmarks/FIXED_COST.md).
_NUMPY_ELEMENTS = 1 << 16
_MIX32_NUMPY = tuple((shift, None if multiplier is None else np.uint32(multiplier)) for shift, multiplier in _MIX32)


def _kept_if_plain(maxsize: int) -> Callable[[Callable[..., Any]], Any]:
    """``functools.lru_cache(maxsize)`` whose cache is emptied when a call made a tensor that is not a plain
    ``torch.Tensor``: one made under a mode such as ``FakeTensorMode`` (a subclass without data) must not be handed
    to the calls after it, which would compute with it (NaN or silently wrong noise)."""

    def decorate(make: Callable[..., Any]) -> Any:
        cached = functools.lru_cache(maxsize=maxsize)(make)

        @functools.wraps(make)
        def get(*key: Any) -> Any:
            value = cached(*key)
            if not all(type(t) is Tensor for t in _flat(value)):
                cached.cache_clear()
            return value

        get.cache_clear, get.cache_info = cached.cache_clear, cached.cache_info
        return get

    return decorate


def _flat(value: Any) -> Iterator[Any]:
    """The tensors of nested tuples (None skipped)."""
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, tuple):
            yield from _flat(item)
        elif item is not None:
            yield item


@_kept_if_plain(maxsize=8)
def _mix32_operands(device: torch.device) -> Tuple[Tuple[Tensor, Tensor, Optional[Tensor]], ...]:
    """:data:`_MIX32`'s shift, logical-shift mask and multiplier of each step as int32 scalars on ``device``.

    A Python integer operand is made into a tensor and converted to int32 at every operation: about 10 µs each,
    nearly what the operation itself costs on a transformer chunk's 131,072 elements (0.84-0.88 of the noise's time
    without it, in an in-process A/B of ``noisy_copies`` that changed only these operands). Made by fill kernels (no
    copy from host memory, which a CUDA graph being captured refuses).
    """

    def scalar(value: int) -> Tensor:
        return torch.full((), _signed(value, 32), dtype=torch.int32, device=device)

    return tuple((scalar(shift), scalar((1 << (32 - shift)) - 1), None if m is None else scalar(m))
                 for shift, m in _MIX32)


def _hash32_(x: Tensor, scratch: Tensor) -> None:
    """lowbias32 of every element of an int32 tensor, in place (right shifts made logical by a mask)."""
    for shift, mask, multiplier in _mix32_operands(x.device):
        torch.bitwise_right_shift(x, shift, out=scratch)
        x.bitwise_xor_(scratch.bitwise_and_(mask))
        if multiplier is not None:
            x.mul_(multiplier)


def _halves(keys: Tensor) -> Tuple[Tensor, Tensor]:
    """The low and high 32 bits of int64 keys, each as int32 (a conversion to int32 keeps the low 32 bits)."""
    return keys.to(torch.int32), torch.bitwise_right_shift(keys, 32).to(torch.int32)


#: Row keys are made with numpy's unsigned integers when a CPU call needs at most this many: a dozen numpy operations
#: cost less than two dozen tensor operations on a small grid (benchmarks/FIXED_COST.md).
_NUMPY_ROWS = 1 << 16


def row_keys(seed: int, stream: int, example_ids: Tensor, units: Tensor) -> Tensor:
    """The 64-bit keys of ``(unit, example)`` rows, shape ``(len(units), len(example_ids))``, int64.

    Distinct (seed, stream, example id, unit) give unrelated keys: each step
    is a bijective mix of one more component.

    Examples
    --------
    >>> keys = row_keys(0, 1, torch.tensor([5, 7]), torch.arange(3))
    >>> keys.shape, torch.equal(keys[:, 1:], row_keys(0, 1, torch.tensor([7]), torch.arange(3)))
    (torch.Size([3, 2]), True)
    """
    prefix = splitmix64((seed ^ splitmix64(stream & _MASK64)) & _MASK64)
    device = example_ids.device
    if device.type == "cpu" and len(units) * len(example_ids) <= _NUMPY_ROWS:  # the same keys, fewer operations
        by_example = example_ids.numpy().astype(np.uint64)  # negative ids wrap modulo 2^64, as in int64 below
        by_example += np.uint64(prefix)
        rows = np.bitwise_xor(_mix64_numpy(by_example)[None, :], units.cpu().numpy().astype(np.uint64)[:, None])
        return torch.from_numpy(_mix64_numpy(rows).view(np.int64))
    by_example = _mix64_(example_ids.to(torch.int64).add(_signed(prefix, 64)))
    return _mix64_(by_example.unsqueeze(0).bitwise_xor(units.to(device=device, dtype=torch.int64).view(-1, 1)))


_GAMMA_NUMPY = np.uint64(_GAMMA)
_MIX64_NUMPY = tuple((np.uint64(shift), None if multiplier is None else np.uint64(multiplier))
                     for shift, multiplier in _MIX64)


def _mix64_numpy(x: np.ndarray) -> np.ndarray:
    """:func:`splitmix64` of every element of a uint64 array, in place (numpy's array arithmetic wraps)."""
    x += _GAMMA_NUMPY
    for shift, multiplier in _MIX64_NUMPY:
        x ^= x >> shift
        if multiplier is not None:
            x *= multiplier
    return x


#: Shapes of at most this many elements keep their element keys in a process-wide cache (8 bytes per element, on
#: the tensor's device); larger ones (a big weight) make them block by block, so that neither a call's peak nor what
#: stays behind after it grows with the shape.
_CACHED_ELEMENTS = 1 << 18


@_kept_if_plain(maxsize=16)
def _element_keys(shape: Tuple[int, ...], device: torch.device) -> Tuple[Tensor, Tensor]:
    """Both halves of every element's key, flat: coordinates mixed in one dimension at a time."""
    keys = torch.zeros((), dtype=torch.int64, device=device)
    for size in shape:
        keys = _mix64_(keys.unsqueeze(-1).bitwise_xor(torch.arange(size, dtype=torch.int64, device=device)))
    low, high = _halves(_mix64_(keys.reshape(-1).clone()))
    return low, high


@functools.lru_cache(maxsize=16)
def _element_keys_numpy(shape: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_element_keys` of a CPU tensor as uint32 arrays (views of the cached tensors)."""
    return tuple(half.numpy().view(np.uint32) for half in _element_keys(shape, torch.device("cpu")))


def _element_keys_between(shape: Tuple[int, ...], start: int, stop: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """The keys :func:`_element_keys` gives flat elements ``start`` to ``stop``, without those of the others.

    Examples
    --------
    >>> low, high = _element_keys((3, 5), torch.device("cpu"))
    >>> part = _element_keys_between((3, 5), 4, 11, torch.device("cpu"))
    >>> torch.equal(part[0], low[4:11]) and torch.equal(part[1], high[4:11])
    True
    """
    flat = torch.arange(start, stop, dtype=torch.int64, device=device)
    keys = torch.zeros_like(flat)
    stride = math.prod(shape)
    for size in shape:  # the coordinates of each element, most significant first
        stride //= size
        _mix64_(keys.bitwise_xor_(torch.div(flat, stride, rounding_mode="floor").remainder_(size)))
    return _halves(_mix64_(keys))


def random_bits(keys: Tensor, shape: Tuple[int, ...], out: Tensor) -> Tensor:
    """32 random bits (as int32) for every element of shape ``shape`` of every row key.

    ``out`` is a contiguous int32 tensor of shape ``keys.shape + shape``;
    element ``e`` of row ``r`` depends on ``keys[r]`` and ``e``'s
    coordinates only.

    Examples
    --------
    >>> keys = row_keys(0, 1, torch.arange(2), torch.arange(3))
    >>> bits = random_bits(keys, (4,), torch.empty(3, 2, 4, dtype=torch.int32))
    >>> torch.equal(bits[:, 1:], random_bits(keys[:, 1:], (4,), torch.empty(3, 1, 4, dtype=torch.int32)))
    True
    """
    _each_block(keys, shape, out, lambda bits, target: target.copy_(bits))
    return out


def standard_normal(keys: Tensor, shape: Tuple[int, ...], out: Tensor) -> Tensor:
    """Fill ``out`` (contiguous, floating point, shape ``keys.shape + shape``) with N(0, 1) keyed draws.

    Examples
    --------
    >>> keys = row_keys(0, 1, torch.arange(1000), torch.arange(10))
    >>> z = standard_normal(keys, (), torch.empty(10, 1000))
    >>> abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    True
    """

    def to_normal(bits: Tensor, target: Tensor) -> None:
        # the top 24 bits s ∈ [−2^23, 2^23) as 2u − 1 = (s + ½)·2^-23, exact in float32, never ±1
        bits.bitwise_right_shift_(8)
        work = target if target.dtype in (torch.float32, torch.float64) else torch.empty_like(target, dtype=torch.float32)
        work.copy_(bits)  # converted as copied: a mixed-type product would convert into a temporary first
        torch.add(2.0**-24, work, alpha=2.0**-23, out=work)  # one pass; each step exact
        work.erfinv_().mul_(math.sqrt(2))
        if work is not target:
            target.copy_(work)

    _each_block(keys, shape, out, to_normal)
    return out


def uniform(keys: Tensor, shape: Tuple[int, ...] = (), dtype: torch.dtype = torch.float64) -> Tensor:
    """Keyed uniforms in (0, 1) from all 32 bits, shape ``keys.shape + shape``.

    Examples
    --------
    >>> u = uniform(row_keys(0, 1, torch.arange(4), torch.arange(2)))
    >>> u.shape, bool(((u > 0) & (u < 1)).all())
    (torch.Size([2, 4]), True)
    """
    bits = random_bits(keys, shape, torch.empty(tuple(keys.shape) + tuple(shape), dtype=torch.int32, device=keys.device))
    unsigned = bits.to(torch.int64).bitwise_and_(0xFFFFFFFF)
    return unsigned.to(dtype).add_(0.5).mul_(2.0**-32)


def _each_block(keys: Tensor, shape: Tuple[int, ...], out: Tensor, finish) -> None:
    """Hash the rows' elements in blocks and hand each block's bits and ``out`` slice to ``finish``."""
    expected = tuple(keys.shape) + tuple(shape)
    if tuple(out.shape) != expected or not out.is_contiguous():
        raise ValueError(f"out must be contiguous with shape {expected}, got {tuple(out.shape)}")
    rows, elements = math.prod(keys.shape), math.prod(shape)
    flat = out.view(rows, elements)
    if keys.device.type == "cpu" and rows * elements <= _NUMPY_ELEMENTS:  # one block, hashed with numpy
        halves = keys.reshape(-1).contiguous().numpy().view(np.uint32).reshape(rows, 2)  # each key's two words
        low, high = (0, 1) if np.little_endian else (1, 0)
        x = np.empty((rows, elements), dtype=np.uint32)
        _hash_block_numpy(*_element_keys_numpy(tuple(shape)), halves[:, low:low + 1], halves[:, high:high + 1], x,
                          np.empty_like(x))
        finish(torch.from_numpy(x.view(np.int32)), flat)
        return
    low, high = _halves(keys.reshape(-1))
    most = _CPU_BLOCK if keys.device.type == "cpu" else _DEVICE_BLOCK
    if elements > _CACHED_ELEMENTS:  # a block of elements at a time, each row in turn: the keys never at full size
        bits = torch.empty((1, min(most, elements)), dtype=torch.int32, device=keys.device)
        scratch = torch.empty_like(bits)
        for first in range(0, elements, most):
            last = min(first + most, elements)
            element_low, element_high = _element_keys_between(tuple(shape), first, last, keys.device)
            for row in range(rows):
                _hash_block(element_low, element_high, low[row:row + 1, None], high[row:row + 1, None],
                            bits[:, : last - first], scratch[:, : last - first])
                finish(bits[:, : last - first], flat[row:row + 1, first:last])
        return
    element_low, element_high = _element_keys(tuple(shape), keys.device)
    block = max(1, most // max(elements, 1))
    bits = torch.empty((min(block, rows), elements), dtype=torch.int32, device=keys.device)
    scratch = torch.empty_like(bits)
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        x = bits[: stop - start]
        _hash_block(element_low, element_high, low[start:stop, None], high[start:stop, None], x,
                    scratch[: stop - start])
        finish(x, flat[start:stop])


def _hash_block(element_low: Tensor, element_high: Tensor, row_low: Tensor, row_high: Tensor, x: Tensor,
                scratch: Tensor) -> None:
    """The 32 random bits of (rows × elements) into ``x``: two rounds of lowbias32 over the keys' halves."""
    torch.bitwise_xor(element_low, row_low, out=x)
    _hash32_(x, scratch)
    x.bitwise_xor_(row_high).bitwise_xor_(element_high)
    _hash32_(x, scratch)


def _hash_block_numpy(element_low: np.ndarray, element_high: np.ndarray, row_low: np.ndarray, row_high: np.ndarray,
                      x: np.ndarray, scratch: np.ndarray) -> None:
    """:func:`_hash_block` on uint32 arrays (views of the tensors' memory): shifts are logical, products wrap."""
    np.bitwise_xor(element_low, row_low, out=x)
    _hash32_numpy(x, scratch)
    np.bitwise_xor(x, row_high, out=x)
    np.bitwise_xor(x, element_high, out=x)
    _hash32_numpy(x, scratch)


def _hash32_numpy(x: np.ndarray, scratch: np.ndarray) -> None:
    """:func:`_hash32_` of a uint32 array, in place."""
    for shift, multiplier in _MIX32_NUMPY:
        np.right_shift(x, shift, out=scratch)
        np.bitwise_xor(x, scratch, out=x)
        if multiplier is not None:
            np.multiply(x, multiplier, out=x)

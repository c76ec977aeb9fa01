"""Noise samplers: i.i.d., antithetic, randomised quasi-Monte-Carlo and Latin hypercube draws.

Every sampler writes standard-normal noise for given sample ids and example
ids into a buffer. The draw of sample ``k`` for an example depends only on the
call's seed, the input tensor, the example's id, ``k`` and ``nt_samples``
(:mod:`noisegrad.sampling.keyed`) — never on the chunking, nor on which other
examples share the batch. Samples are
organised in ``groups`` of independent units, from which standard errors are
estimated: single samples (i.i.d.), pairs (antithetic), or independently
randomised replicates of the design (QMC, LHS: sample ``k`` belongs to
replicate ``k mod R`` and is point ``k div R`` of it). A Latin hypercube
drawn until converged (``nt_samples="auto"``), whose sample count is not known
up front, is instead a run of independent hypercubes of :data:`AUTO_BLOCK`
samples each (sample ``k`` is point ``k mod B`` of block ``k div B``): the
blocks are its units.
"""

import functools
import math
import threading
from typing import Dict, Tuple

import torch
from torch import Tensor

from noisegrad.sampling.keyed import random_bits, row_keys, standard_normal, uniform
from noisegrad.sampling.seeding import SampleSeeds
from noisegrad.sampling.streams import Purpose, stream

__all__ = ["SAMPLERS", "DEFAULT_REPLICATES", "AUTO_BLOCK", "NoiseSampler", "independent_units", "units_for_stderr"]

SAMPLERS = ("iid", "antithetic", "qmc", "lhs")
#: Independently randomised replicates of a QMC or LHS design: the units of its standard error.
DEFAULT_REPLICATES = 4
#: Samples per independent Latin hypercube when the sample count is not known up front (``nt_samples="auto"``).
AUTO_BLOCK = 4

_SOBOL_BITS = 30
_SOBOL_MAX_DIM = torch.quasirandom.SobolEngine.MAXDIM
_GOLDEN = (math.sqrt(5) - 1) / 2
#: Under ``nt_samples="auto"``, at most this many values of block randomisation (a permutation and phase per block,
#: example and element) are made at once: gathered for every row of a chunk they took 4-5 times the noise's own
#: memory (a 64-sample chunk of 4 images of 3x96x96: 124 MB beside 27 MB of noise; 24 MB now, as for replicates).
_BLOCK_SLICE_ELEMENTS = 1 << 18


def independent_units(kind: str, nt_samples: int, blocks: bool = False) -> int:
    """Independent units among ``nt_samples`` samples of ``kind``: samples, pairs, replicates, or ``blocks``.

    Examples
    --------
    >>> independent_units("iid", 5), independent_units("antithetic", 5), independent_units("lhs", 5)
    (5, 3, 4)
    >>> independent_units("lhs", 9, blocks=True)  # hypercubes of AUTO_BLOCK samples, the last one partial
    3
    """
    if kind == "antithetic":
        return (nt_samples + 1) // 2
    if kind == "lhs" and blocks:
        return -(-nt_samples // AUTO_BLOCK)
    if kind in ("qmc", "lhs"):
        return min(nt_samples, DEFAULT_REPLICATES)
    return nt_samples


def units_for_stderr(nt_type: str) -> int:
    """Independent units a standard error of ``nt_type`` needs: 2, or 3 for VarGrad.

    The jackknife leaves one group out; a VarGrad estimate of what is left
    needs two samples, or it is 0 and so would be the standard error.

    Examples
    --------
    >>> units_for_stderr("smoothgrad"), units_for_stderr("vargrad")
    (2, 3)
    """
    return 3 if nt_type == "vargrad" else 2


class NoiseSampler:
    """Standard-normal draws for the noisy copies of one call.

    Parameters
    ----------
    kind : {"iid", "antithetic", "qmc", "lhs"}
        * ``"iid"``: independent draws (Captum's behaviour).
        * ``"antithetic"``: samples ``2j`` and ``2j + 1`` are ε and −ε, which
          cancels every odd order of the noise in their mean. An odd last
          sample is the first half of a pair whose second half is not drawn.
        * ``"qmc"``: Sobol points mapped through the inverse normal CDF, each
          replicate randomised by its own random digital shift per example
          and dimension; inputs with more dimensions than a Sobol engine has
          (21,201) reuse the engine's dimensions in blocks with independent
          shifts.
        * ``"lhs"``: Latin hypercube: in each replicate of ``m`` samples every
          dimension's ``m`` equal-probability strata are each used once, in an
          order given by a random affine permutation ``(a·i + b) mod m`` per
          example and dimension. The position inside the stratum is
          ``frac(c + i·φ)`` for a uniform random phase ``c`` per example and
          dimension and the golden ratio φ: uniform for every sample, hence
          unbiased; about as accurate as a textbook hypercube (random
          permutations, independent jitter: ``benchmarks/ABS_DESIGNS.md``)
          and free of per-sample random draws.
    seeds : SampleSeeds
    nt_samples : int
        The call's number of samples (Latin hypercube strata depend on it).
    replicates : int
        Independent randomisations of the QMC / LHS design (the units of the
        standard error); ignored by ``"iid"`` and ``"antithetic"``.
    blocks : bool
        For ``"lhs"`` with no sample count up front (``nt_samples="auto"``):
        consecutive blocks of :data:`AUTO_BLOCK` samples, each an
        independently randomised hypercube of that many strata (keyed by
        the block's index), instead of ``replicates`` hypercubes spread over
        ``nt_samples``. The blocks are the units of the standard error, dealt
        round-robin into 8 groups; ``nt_samples`` and ``replicates`` are
        then ignored.

    Examples
    --------
    >>> sampler = NoiseSampler("antithetic", SampleSeeds(0), nt_samples=4)
    >>> out = torch.empty(4, 2, 3)
    >>> sampler.fill(out, range(4), example_ids=torch.arange(2), input_index=0)
    >>> torch.equal(out[1], -out[0]) and torch.equal(out[3], -out[2])
    True
    """

    def __init__(
        self, kind: str, seeds: SampleSeeds, nt_samples: int, replicates: int = DEFAULT_REPLICATES, blocks: bool = False
    ) -> None:
        if kind not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {kind!r}")
        self.kind, self.seeds, self.nt_samples = kind, seeds, nt_samples
        self.block = AUTO_BLOCK if blocks and kind == "lhs" else None
        self.replicates = replicates if kind in ("qmc", "lhs") and self.block is None else 1
        self._randomisation: Dict[Tuple[int, int], Tuple[Tensor, Tuple[Tensor, ...]]] = {}

    @property
    def unit_size(self) -> int:
        """Consecutive samples per independent unit: 2 for antithetic pairs, a block of LHS ``blocks``, else 1.

        Units are dealt round-robin into standard-error groups: sample ``k``
        belongs to group ``(k // unit_size) mod groups`` (for QMC and LHS
        replicates, with ``groups = replicates``, that is its replicate).
        """
        if self.block is not None:
            return self.block
        return 2 if self.kind == "antithetic" else 1

    def standard_error_groups(self, default: int = 8) -> int:
        """How many independent groups the standard error is estimated from."""
        return self.replicates if self.kind in ("qmc", "lhs") and self.block is None else default

    def fill(self, out: Tensor, sample_ids: range, example_ids: Tensor, input_index: int) -> None:
        """Write the standard-normal draws of ``sample_ids`` for ``example_ids`` into ``out[j, i]``.

        ``out`` has shape ``(len(sample_ids), len(example_ids), ...)``. The
        draw of (sample ``k``, example ``i``, element ``e``) depends on the
        seed, the input's index, ``example_ids[i]``, ``k`` and ``e``'s
        position within the example (and, for QMC and LHS, ``nt_samples``),
        so the same example gets the same noise in any batch and any chunk.
        """
        shape, device = tuple(out.shape[2:]), out.device
        if self.kind in ("iid", "antithetic"):
            antithetic = self.kind == "antithetic"
            units = torch.arange(sample_ids.start, sample_ids.stop, device=device)
            keys = row_keys(self.seeds.base_seed, stream(Purpose.INPUT_NOISE, input_index), example_ids,
                            units // 2 if antithetic else units)
            target = out if out.is_contiguous() else torch.empty_like(out, memory_format=torch.contiguous_format)
            standard_normal(keys, shape, target)
            if target is not out:
                out.copy_(target)
            if antithetic:
                out[(1 - sample_ids.start) % 2 :: 2].neg_()  # the odd samples: the second halves of their pairs
            return
        work = out if out.dtype in (torch.float32, torch.float64) else torch.empty_like(out, dtype=torch.float32)
        flat = work.reshape(len(sample_ids), out.shape[1], -1)
        if self.block is not None:
            self._blocks_centred_uniform(flat, sample_ids, shape, input_index, example_ids)
        # The samples of one replicate are every R-th row of the chunk: handle them together.
        for replicate in range(self.replicates if self.block is None else 0):
            first = (replicate - sample_ids.start) % self.replicates
            rows = sample_ids[first :: self.replicates]
            if len(rows):
                points = range(rows[0] // self.replicates, rows[0] // self.replicates + len(rows))
                randomisation = self._randomised(shape, work.dtype, replicate, input_index, example_ids)
                self._centred_uniform(flat[first :: self.replicates], replicate, points, randomisation)
        # Φ⁻¹(u) = √2·erfinv(2u − 1): several times faster than torch.special.ndtri.
        edge = 1 - torch.finfo(work.dtype).eps
        work.clamp_(-edge, edge).erfinv_().mul_(math.sqrt(2))
        if work is not out:
            out.copy_(work)

    def _centred_uniform(self, out: Tensor, replicate: int, points: range, randomisation: Tuple[Tensor, ...]) -> None:
        """Turn ``out`` (samples, examples, dims) into 2u − 1 for the samples' uniforms u in (0, 1).

        ``points`` are the samples' indices within the replicate.
        """
        if self.kind == "qmc":
            shift, = randomisation
            sobol = _sobol_points(points.start, len(points), out.shape[2])
            pinned = out.device.type == "cuda"  # a copy from pinned memory does not stop the host
            if pinned:
                sobol = sobol.pin_memory()
            # non-blocking only from pinned memory: elsewhere (MPS) the copy could read the freed temporary
            sobol = sobol.to(out.device, non_blocking=pinned)
            out.copy_(torch.bitwise_xor(sobol.unsqueeze(1), shift))
            # u = (digits + 0.5) / 2^30, so 2u − 1 = digits / 2^29 + 2^-30 − 1
            out.mul_(2.0 ** (1 - _SOBOL_BITS)).add_(2.0**-_SOBOL_BITS - 1)
            return
        multiplier, offset, phase = randomisation
        strata = self._strata(replicate)
        index = torch.arange(points.start, points.stop, dtype=multiplier.dtype, device=out.device).view(-1, 1, 1)
        if multiplier.is_floating_point():
            # The stratum (a·i + b) mod m = x − m·⌊x / m⌋ for x = a·i + b, in float32: several times faster
            # than an integer remainder. The offset holds b + ½, which keeps x / m half a stratum away from an
            # integer, so its floor is exact despite rounding (and x itself is exact) up to 1024 strata.
            position = out if out.dtype == multiplier.dtype else torch.empty_like(out, dtype=multiplier.dtype)
            torch.addcmul(offset, multiplier, index, out=position)
            position.sub_(torch.mul(position, 1 / strata).floor_(), alpha=strata)
            if position is not out:
                out.copy_(position)
        else:  # more strata: exact int64 arithmetic, which every device has (MPS has no float64)
            out.copy_((multiplier * index).add_(offset).remainder_(strata)).add_(0.5)
        # The jitter: frac(c + i·φ), a Weyl sequence from a random phase c.
        advance = torch.arange(points.start, points.stop, dtype=out.dtype, device=out.device).mul_(_GOLDEN).frac_()
        out.add_(advance.view(-1, 1, 1).add(phase).frac_()).mul_(2 / strata).sub_(1 + 1 / strata)

    def _blocks_centred_uniform(
        self, out: Tensor, sample_ids: range, shape: Tuple[int, ...], input_index: int, example_ids: Tensor
    ) -> None:
        """:meth:`_centred_uniform` for ``blocks``, a slice of whole blocks at a time.

        A slice's randomisation (a word, a permutation and a phase per block, example and element) holds at most
        :data:`_BLOCK_SLICE_ELEMENTS` values each (at least one block's), so that it stays in cache and a large
        chunk's does not add the noise's own size again.
        """
        size = self.block
        per_block = math.prod(out.shape[1:])
        step = max(1, _BLOCK_SLICE_ELEMENTS // max(1, per_block)) * size
        start = sample_ids.start
        while start < sample_ids.stop:
            stop = min(sample_ids.stop, start - start % size + step)
            rows = out[start - sample_ids.start : stop - sample_ids.start]
            self._blocks_slice(rows, range(start, stop), shape, input_index, example_ids)
            start = stop

    def _blocks_slice(
        self, out: Tensor, sample_ids: range, shape: Tuple[int, ...], input_index: int, example_ids: Tensor
    ) -> None:
        """:meth:`_centred_uniform` for ``blocks``: every block of a slice at once (its rows are contiguous).

        One keyed 32-bit word per (block, example, element) randomises the block's hypercube: its low bits the
        affine permutation ``(a·i + b) mod B`` (``B`` a power of 2: ``b`` any stratum, ``a`` any odd number
        below ``B``, exact from whole bits), its top 24 the jitter phase ``c``. One word where three uniforms
        (two of them float64) were drawn made the hypercube's noise about 3x the cost of i.i.d. noise.
        """
        size, device = self.block, out.device
        bits = size.bit_length() - 1  # of the offset; the multiplier's log2(B) − 1 follow, the phase's 24 start at 8
        if size != 1 << bits or 2 * bits - 1 > 8:
            raise ValueError(f"a Latin hypercube block must hold a power of 2 up to 16 samples, got {size}")
        blocks = range(sample_ids.start // size, (sample_ids.stop - 1) // size + 1)
        keys = row_keys(self.seeds.base_seed, stream(Purpose.LHS_BLOCK, input_index), example_ids,
                        torch.arange(blocks.start, blocks.stop, device=device))
        words = random_bits(keys, shape, torch.empty((len(blocks), len(example_ids)) + shape, dtype=torch.int32,
                                                     device=device)).view(len(blocks), len(example_ids), -1)
        offset = words.bitwise_and(size - 1)
        multiplier = torch.bitwise_right_shift(words, bits).bitwise_and_(size // 2 - 1).mul_(2).add_(1)
        phase = torch.bitwise_right_shift(words, 8).bitwise_and_(2**24 - 1).to(out.dtype).mul_(2.0**-24).add_(2.0**-25)
        del words
        # every point of every block at once, (blocks, point, examples, elements): straight into ``out`` when the
        # slice holds whole blocks, else into a grid of the whole blocks, whose rows of the slice are then copied
        skip = sample_ids.start - blocks.start * size
        grid_shape = (len(blocks), size) + tuple(out.shape[1:])
        whole = skip == 0 and len(sample_ids) == len(blocks) * size
        grid = out.view(grid_shape) if whole else torch.empty(grid_shape, dtype=out.dtype, device=device)
        points = torch.arange(size, dtype=multiplier.dtype, device=device).view(1, size, 1, 1)
        grid.copy_(multiplier.unsqueeze(1).mul(points).add_(offset.unsqueeze(1)).bitwise_and_(size - 1))
        advance = torch.tensor([point * _GOLDEN % 1 for point in range(size)], dtype=phase.dtype, device=device)
        grid.add_(phase.unsqueeze(1).add(advance.view(1, size, 1, 1)).frac_())
        grid.mul_(2 / size).sub_(1)  # 2u − 1 for u = (stratum + jitter) / B
        if not whole:
            out.copy_(grid.view((-1,) + tuple(out.shape[1:]))[skip : skip + len(sample_ids)])

    def _strata(self, replicate: int) -> int:
        """Samples in replicate ``r`` of the Latin hypercube: those ``k < nt_samples`` with ``k mod R == r``."""
        return max(1, math.ceil((self.nt_samples - replicate) / self.replicates))

    def _randomised(
        self, shape: Tuple[int, ...], dtype: torch.dtype, replicate: int, input_index: int, example_ids: Tensor
    ) -> Tuple[Tensor, ...]:
        """One replicate's randomisation per (example, element), flat ``(examples, elements)``, keyed like the noise.

        Kept for the call while the running examples stay the same.
        """
        cache_key = (input_index, replicate)
        cached = self._randomisation.get(cache_key)
        if cached is not None and cached[0] is example_ids:
            return cached[1]
        seed, batch = self.seeds.base_seed, example_ids.shape[0]

        def keys(purpose: Purpose, unit: int) -> Tensor:
            return row_keys(seed, stream(purpose, input_index), example_ids,
                            torch.tensor([unit], device=example_ids.device))

        if self.kind == "qmc":
            bits = torch.empty((1, batch) + shape, dtype=torch.int32, device=example_ids.device)
            random_bits(keys(Purpose.QMC_SHIFT, replicate), shape, bits)
            randomisation: Tuple[Tensor, ...] = (bits.view(batch, -1).bitwise_and(2**_SOBOL_BITS - 1),)
        else:  # the affine permutation (a, b) of the replicate's strata and its jitter phase
            strata = self._strata(replicate)
            units = torch.tensor([a for a in range(1, strata + 1) if math.gcd(a, strata) == 1],
                                 device=example_ids.device)
            pick = uniform(keys(Purpose.LHS_PERMUTATION, 2 * replicate), shape).mul_(len(units)).long().view(batch, -1)
            offset = uniform(keys(Purpose.LHS_PERMUTATION, 2 * replicate + 1), shape).mul_(strata).long()
            phase = uniform(keys(Purpose.LHS_PHASE, replicate), shape, dtype).view(batch, -1)
            # up to 1024 strata a and b + ½ as float32 (see _centred_uniform), else int64
            if strata <= 1024:
                randomisation = (units[pick].float(), offset.view(batch, -1).float().add_(0.5), phase)
            else:
                randomisation = (units[pick], offset.view(batch, -1), phase)
        self._randomisation[cache_key] = (example_ids, randomisation)
        return randomisation


@functools.lru_cache(maxsize=4)
def _sobol_engine(dims: int) -> torch.quasirandom.SobolEngine:
    """An unscrambled engine per dimension count, built once: building one costs about 1 ms per 3,000 dimensions."""
    return torch.quasirandom.SobolEngine(dims, scramble=False)


_SOBOL_LOCK = threading.Lock()


def _sobol_points(first: int, count: int, dims: int) -> Tensor:
    """Sobol points ``first .. first + count − 1`` as 30-bit integers, dimensions reused in blocks beyond the engine's."""
    engine_dims = min(dims, _SOBOL_MAX_DIM)
    with _SOBOL_LOCK:  # the cached engines are shared and stateful
        engine = _sobol_engine(engine_dims)
        if engine.num_generated != first:
            engine.reset()
            engine.fast_forward(first)
        drawn = engine.draw(count, dtype=torch.float64)
    digits = (drawn * 2**_SOBOL_BITS).to(torch.int32)
    return digits.repeat(1, math.ceil(dims / engine_dims))[:, :dims]

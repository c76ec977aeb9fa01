"""Chunk plans: which noisy samples are computed together, how many fit, and what to do when they do not.

A chunk of ``k`` noisy copies of a batch of ``B`` examples makes the wrapped
method run forwards of ``B × k × e`` rows, where ``e`` is the estimator's
rows per copy (IntegratedGradients' ``n_steps``, GradientShap's
``n_samples``, the number of baselines of DeepLiftShap, FeatureAblation's
``perturbations_per_eval``; 1 for a joint sample). Everything here counts
those real rows.
"""

import warnings
from typing import Any, Callable, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from noisegrad._caller import user_stacklevel

__all__ = [
    "plan_chunks",
    "ChunkPlan",
    "chunk_for_rows",
    "activation_bytes_per_row",
    "ChunkOutOfMemory",
    "AUTO_CPU_BYTES",
]

#: On a CPU the fastest chunk is the one whose forward keeps about this many
#: bytes of activations: larger allocations are page-faulted afresh on every
#: call, smaller chunks pay the per-call overhead (measured in
#: benchmarks/CHUNKS.md).
AUTO_CPU_BYTES = 32 * 2**20


def plan_chunks(nt_samples: int, nt_samples_batch_size: Optional[int]) -> Tuple[range, ...]:
    """Split the sample ids ``0 .. nt_samples - 1`` into consecutive chunks.

    Full chunks of ``nt_samples_batch_size`` come first and a shorter remainder
    last, the order Captum's ``NoiseTunnel`` uses, so that per-sample outputs
    (such as ``delta_reduction="none"``) line up with Captum's.

    Parameters
    ----------
    nt_samples : int
        Number of noisy samples per input example.
    nt_samples_batch_size : int or None
        Samples per chunk; ``None`` puts all samples in one chunk.

    Returns
    -------
    tuple of range
        The sample ids of each chunk.

    Examples
    --------
    >>> plan_chunks(64, 24)
    (range(0, 24), range(24, 48), range(48, 64))
    >>> plan_chunks(5, None)
    (range(0, 5),)
    """
    size = nt_samples if nt_samples_batch_size is None else min(nt_samples, nt_samples_batch_size)
    return tuple(range(start, min(start + size, nt_samples)) for start in range(0, nt_samples, size))


class ChunkOutOfMemory(Exception):
    """The wrapped method ran out of memory on a chunk before anything of it was merged."""


class ChunkPlan:
    """The chunk size of a call, and the next chunk's sample ids.

    Parameters
    ----------
    limit : int
        Samples per example at most (``nt_samples``, or ``max_samples`` with ``"auto"``).
    chunk : int
        Samples per example per chunk.
    unit : int
        Consecutive samples that belong together (the input draws of one
        weight draw): a chunk holds whole units or, if one is too large, an
        equal part of one, so that no chunk straddles two units.
    examples : int, optional
        Examples of the batch, when a chunk's memory grows with its noisy
        copies (samples × examples): as examples leave (``nt_samples="auto"``),
        :meth:`examples_left` gives the others as many more samples per chunk
        as keep its copies. ``None`` when it grows with the samples alone (the
        stacked parameters of weight draws): chunks keep their samples.

    Examples
    --------
    >>> plan = ChunkPlan(limit=100, chunk=4, examples=6)
    >>> plan.next(0), plan.next(96)
    (range(0, 4), range(96, 100))
    >>> plan.examples_left(2)  # 24 copies per chunk: 12 samples of each of 2 examples
    >>> plan.next(8)
    range(8, 20)
    """

    def __init__(self, limit: int, chunk: int, unit: int = 1, examples: Optional[int] = None) -> None:
        self.limit, self.unit, self.batch, self.examples = limit, unit, examples, examples
        self.resize(chunk)

    def resize(self, chunk: int) -> None:
        """Chunks of ``chunk`` samples per example from now on (whole units, at most ``limit``)."""
        self.chunk = self.aligned(max(1, min(chunk, self.limit)))
        self._copies = self.chunk * (self.examples or 1)  # per chunk, what its memory grows with

    def examples_left(self, examples: int) -> None:
        """Only ``examples`` of the batch run on: as many more samples per chunk as keep its noisy copies."""
        if self.examples is None:  # memory per sample: the chunk stays
            return
        self.examples = examples
        self.chunk = self.aligned(max(1, min(self._copies // examples, self.limit)))

    def aligned(self, chunk: int) -> int:
        """``chunk`` rounded down to whole units, or to a divisor of one unit if it is smaller."""
        if chunk >= self.unit:
            return chunk - chunk % self.unit
        return max(d for d in range(1, chunk + 1) if self.unit % d == 0)

    def next(self, start: int, stop_at: Optional[int] = None) -> range:
        """The sample ids of the chunk from ``start``, ending at ``stop_at`` (whole units) if that comes first."""
        stop = min(start + self.chunk, self.limit)
        if stop_at is not None:
            stop = min(stop, -(-max(stop_at, start + 1) // self.unit) * self.unit)
        return range(start, stop)

    def halve(self, failed: range, device: torch.device, error: ChunkOutOfMemory) -> None:
        """After ``failed`` ran out of memory: retry with half as many samples per chunk, or give up at one."""
        if len(failed) <= 1:
            raise error.__cause__
        if device.type == "cuda":
            torch.cuda.empty_cache()
        self.resize(max(1, len(failed) // 2))
        if self.examples == self.batch:
            what, retry = f"{len(failed)} noisy copies per example per chunk", f"{self.chunk}"
        else:  # inputs have left (nt_samples="auto"): the whole batch's chunk too, in the call's terms
            what = f"{len(failed)} noisy copies per input still running ({self.examples} of {self.batch})"
            whole = (f"{self._copies // self.batch} for the whole batch" if self._copies >= self.batch else
                     f"not even 1 for the whole batch of {self.batch}: attribute it in parts")
            retry = f"{self.chunk} for those inputs, {whole}"
        warnings.warn(
            f"out of memory with {what}; retrying with nt_samples_batch_size={retry} (the result does not depend on "
            "it for a fixed seed)",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )

    @classmethod
    def choose(
        cls,
        limit: int,
        batch: int,
        device: torch.device,
        batch_size: Union[int, str, None],
        max_rows: Optional[int],
        memory_budget: Optional[int],
        rows_per_copy: int,
        splits_itself: int,
        measure: Callable[[], int],
        internal_batch_size: Optional[int] = None,
        unit: int = 1,
        per_copy: bool = True,
    ) -> Tuple["ChunkPlan", Optional[int]]:
        """The plan for the user's chunk arguments, and ``internal_batch_size`` if the method must split itself.

        ``measure()`` returns the activation bytes of one input row; it is
        called only for ``"auto"`` and ``memory_budget``. ``per_copy``: a
        chunk's memory grows with its noisy copies alone, so examples that
        leave give the others more samples per chunk (not with weight draws).
        """
        examples = batch if per_copy else None
        if isinstance(batch_size, int):
            return cls(limit, batch_size, unit, examples), None
        if batch_size is None and max_rows is None and memory_budget is None:
            return cls(limit, limit, unit, examples), None
        if batch_size == "auto" or memory_budget is not None:
            budget = memory_budget if memory_budget is not None else _auto_budget(device)
            rows = max(1, budget // measure())
            max_rows = rows if max_rows is None else min(rows, max_rows)
        if internal_batch_size is not None:  # the user's own split caps the method's forwards already
            max_rows = min(max_rows, internal_batch_size)
        chunk, must_split = chunk_for_rows(max_rows, batch, rows_per_copy, limit, splits_itself)
        return cls(limit, chunk, unit, examples), (max_rows if must_split and internal_batch_size is None else None)


def chunk_for_rows(max_rows: int, batch: int, per_copy: int, nt_samples: int, splits_itself: int) -> Tuple[int, bool]:
    """The largest chunk whose forwards stay within ``max_rows``; and whether the method must split itself.

    A method that splits its own forward (``splits_itself``: the fewest rows
    per copy a split forward holds, 0 if it cannot split) only needs that
    many rows of the chunk's copies, ``batch × k × splits_itself``, to fit;
    it is then given ``internal_batch_size=max_rows``. Raises
    ``ValueError`` if not even one copy per example fits.

    Examples
    --------
    >>> chunk_for_rows(256, batch=8, per_copy=1, nt_samples=64, splits_itself=False)
    (32, False)
    >>> chunk_for_rows(256, batch=8, per_copy=50, nt_samples=64, splits_itself=True)
    (32, True)
    >>> chunk_for_rows(256, batch=8, per_copy=51, nt_samples=64, splits_itself=2)  # LayerConductance
    (16, True)
    """
    rows = batch * per_copy
    if rows <= max_rows:
        return max(1, min(nt_samples, max_rows // rows)), False
    if splits_itself and batch * splits_itself <= max_rows:
        return max(1, min(nt_samples, max_rows // (batch * splits_itself))), True
    raise ValueError(
        f"max_batch_rows={max_rows} (given, or derived from memory_budget=) is smaller than one noisy copy of the "
        f"batch: {batch} examples × "
        f"{per_copy} rows each = {rows} rows; raise the budget or attribute the batch in parts"
    )


def activation_bytes_per_row(
    forward_func: Callable[..., Any], inputs: Tuple[Tensor, ...], additional_forward_args: Any
) -> Optional[int]:
    """Bytes of module outputs one input row produces, from a forward of two rows (the first example, twice).

    Counts the outputs of every leaf ``nn.Module`` (what autograd keeps for the
    backward pass, roughly); ``None`` when ``forward_func`` is not a module or a
    module's method, or is TorchScript, so nothing can be hooked. Two rows, so
    that BatchNorm in training mode can run; the global RNGs are put back
    afterwards, so that the measurement draws nothing a dropout layer would.
    """
    owner = getattr(forward_func, "__self__", forward_func)
    if not isinstance(owner, nn.Module) or isinstance(owner, torch.jit.ScriptModule):
        return None  # nothing to hook (TorchScript modules take no Python hooks)
    total = [0]

    def count(_module: nn.Module, _args: Any, output: Any) -> None:
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, Tensor):
                total[0] += t.numel() * t.element_size()

    leaves = [m for m in owner.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    extra = additional_forward_args if isinstance(additional_forward_args, tuple) else (
        () if additional_forward_args is None else (additional_forward_args,)
    )
    extra = tuple(_two_rows(a) if isinstance(a, Tensor) and a.dim() > 0 else a for a in extra)
    devices = sorted({x.device.index or 0 for x in inputs if x.device.type == "cuda"})
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            forward_func(*(_two_rows(x) for x in inputs), *extra)
    finally:
        for handle in handles:
            handle.remove()
    return total[0] // 2 + sum(x[:1].numel() * x.element_size() for x in inputs)


def _two_rows(x: Tensor) -> Tensor:
    """The first example twice, in memory of its own: a forward may check that its input is contiguous."""
    return x[:1].repeat((2,) + (1,) * (x.dim() - 1))


def _auto_budget(device: torch.device) -> int:
    """Activation bytes per forward for nt_samples_batch_size="auto"."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 2
    return AUTO_CPU_BYTES

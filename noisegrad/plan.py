"""Chunk plans: which noisy samples are computed together."""

from typing import Optional, Tuple

__all__ = ["plan_chunks"]


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

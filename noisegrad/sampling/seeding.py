"""A call's base seed, from ``seed=``, ``generator=`` or one draw of torch's global RNG."""

from typing import Optional

import torch

from noisegrad.sampling.keyed import splitmix64

__all__ = ["SampleSeeds"]

_MASK64 = (1 << 64) - 1


class SampleSeeds:
    """Seeds for ``(stream, sample id)`` pairs, derived from one base seed.

    ``base_seed`` keys every random number of a call
    (:mod:`noisegrad.sampling.keyed`, with the streams of
    :mod:`noisegrad.sampling.streams`); the scalar seeds of ``(stream,
    sample)`` pairs seed torch's global RNG for methods that draw from it
    themselves (GradientShap), one seed per sample whatever the chunk size.

    Parameters
    ----------
    base_seed : int
        Any integer; reduced modulo 2**64.

    Examples
    --------
    >>> seeds = SampleSeeds(0)
    >>> seeds(stream=0, sample=3) == SampleSeeds(0)(stream=0, sample=3)
    True
    >>> seeds(stream=0, sample=3) != seeds(stream=1, sample=3)
    True
    """

    def __init__(self, base_seed: int) -> None:
        self.base_seed = base_seed & _MASK64

    @classmethod
    def from_arguments(cls, seed: Optional[int], generator: Optional[torch.Generator]) -> "SampleSeeds":
        """The seeds for a call's ``seed=`` / ``generator=`` arguments.

        With neither, one integer is drawn from torch's global (CPU) generator,
        which advances it as one small torch draw does and no further.
        With a generator, one integer is drawn from it.
        """
        if seed is not None:
            return cls(seed)
        source = generator if generator is not None else torch.default_generator
        drawn = torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64, generator=source, device=source.device)
        return cls(int(drawn))

    def __call__(self, stream: int, sample: int) -> int:
        return splitmix64(self.base_seed ^ splitmix64(splitmix64(stream & _MASK64) ^ (sample & _MASK64)))

    def derived(self, stream: int) -> int:
        """A seed for a whole stream (used to seed the global RNG for the wrapped method)."""
        return self(stream, 2**32 - 1) & (2**63 - 1)


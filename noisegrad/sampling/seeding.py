"""Random streams: every noisy sample gets its own seed, so chunking cannot change the noise."""

from typing import Optional

import torch

__all__ = ["SampleSeeds"]

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    # Steele, Lea and Flood's SplitMix64 finaliser: a bijective 64-bit mixer,
    # so distinct (stream, sample) pairs give unrelated generator seeds.
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


class SampleSeeds:
    """Seeds for ``(stream, sample id)`` pairs, derived from one base seed.

    A stream is one source of randomness of a call: the noise of input tensor
    ``t`` is stream ``t``; drawn baselines use streams after the inputs. The
    seed of a pair depends on nothing else, which is what makes the noise of
    sample ``k`` bit-identical whatever the chunk size.

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
        return _splitmix64(self.base_seed ^ _splitmix64((stream << 32) ^ sample))

    def derived(self, stream: int) -> int:
        """A seed for a whole stream (used to seed the global RNG for the wrapped method)."""
        return self(stream, 2**32 - 1) & (2**63 - 1)


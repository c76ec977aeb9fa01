"""The random streams of a call, named in one place.

Every random number noisegrad draws is keyed by (seed, stream, example id,
unit, element): the stream says what it is for, so draws for different
purposes never coincide. A stream is a purpose and, where the purpose has
one per input tensor, the input's index.
"""

import enum

__all__ = ["Purpose", "stream", "LAYER_OUTPUT"]

#: The index, among the perturbed tensors, of the noise layer's output (input tensors are 0, 1, ...).
LAYER_OUTPUT = 2**32 - 1


class Purpose(enum.IntEnum):
    """What a stream's numbers are for."""

    #: Gaussian noise added to input tensor ``t`` (unit: the sample, or the antithetic pair).
    INPUT_NOISE = 1
    #: A QMC replicate's random digital shift per (example, element) (unit: the replicate).
    QMC_SHIFT = 2
    #: A Latin hypercube replicate's affine permutation (units ``2r``: multiplier, ``2r + 1``: offset).
    LHS_PERMUTATION = 3
    #: A Latin hypercube replicate's jitter phase per (example, element) (unit: the replicate).
    LHS_PHASE = 4
    #: The joint estimator's path fraction α per (example, sample unit).
    PATH_POINT = 5
    #: ``draw_baseline_from_distrib``: the baseline row of each (example, sample) of input ``t``.
    BASELINE_ROW = 6
    #: The global-RNG seed of each sample for methods that draw from torch's global RNG (GradientShap).
    GLOBAL_RNG = 7
    #: Gaussian noise on a model parameter (row key: the parameter's name key; unit: the weight draw or pair).
    WEIGHT_NOISE = 8
    #: The joint estimator's pilot for ``path_density="adaptive"``: its noise's base seed, and α within a bin.
    PATH_PILOT = 9
    #: A Latin hypercube block's permutation and jitter phase per (example, element) (unit: the block), under
    #: ``nt_samples="auto"``.
    LHS_BLOCK = 10


def stream(purpose: Purpose, input_index: int = 0) -> int:
    """The stream id of ``purpose`` for input tensor ``input_index``.

    Examples
    --------
    >>> stream(Purpose.INPUT_NOISE, 1) != stream(Purpose.INPUT_NOISE, 0) != stream(Purpose.QMC_SHIFT, 0)
    True
    """
    if not 0 <= input_index < 2**32:
        raise ValueError(f"input_index must be in [0, 2**32), got {input_index}")
    return (int(purpose) << 32) | input_index

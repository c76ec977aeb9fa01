"""Where on the path the joint estimator puts its gradients: uniform, or a density fitted by a short pilot.

IG's integrand ``(x + ε − b) ⊙ ∇f(b + α (x + ε − b))`` can hold nearly all its
mass in a sliver of the path. A network that normalises its input (a
LayerNorm first, as in a transformer on float embeddings) sees almost the
same input at every α until ``α · std(x)`` falls to about √ε, the
normaliser's ε: from a zero baseline, ``f`` climbs from ``f(b)`` to almost
``f(x)`` below that α (about 10⁻³ for unit-scale inputs and ε = 10⁻⁵) and
stays flat after. A uniform α rarely lands there, and the
estimate is mostly noise (benchmarks/PATH_DENSITY.md).

The adaptive density draws α with probability ``q_j`` in bin ``j`` of fixed
edges, log-spaced below 1/16 and of width 1/8 above, uniformly within the bin,
and weights the sample by ``width_j / q_j``, which keeps the estimate unbiased
for any ``q``. ``q`` is fitted per example by a pilot of
:data:`PILOT_PER_BIN` gradients per bin: ``q_j ∝ width_j · rms_j``, the root
mean square of the contribution's norm in the bin (the density that minimises
the variance of the summed squared error), mixed with the uniform density in
the share :data:`UNIFORM_SHARE`, so that no weight exceeds
``1 / UNIFORM_SHARE``: a sample's mean square is at most that many times
what it is under the uniform density, however wrong the pilot.
"""

import warnings
from typing import Callable, List, Tuple

import torch
from torch import Tensor

from noisegrad._caller import user_stacklevel
from noisegrad.perturb.inputs import noisy_copies
from noisegrad.sampling.keyed import row_keys, uniform
from noisegrad.sampling.seeding import SampleSeeds
from noisegrad.sampling.streams import Purpose, stream

__all__ = ["PATH_DENSITIES", "EDGES", "PILOT_PER_BIN", "PILOT_GRADIENTS", "UNIFORM_SHARE", "PathDensity",
           "fit_path_density"]

PATH_DENSITIES = ("uniform", "adaptive")
#: Bin edges of the adaptive density on [0, 1]: log-spaced below 1/16, then steps of 1/8.
EDGES: Tuple[float, ...] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1 / 16) + tuple(i / 8 for i in range(1, 9))
#: Pilot gradients per bin and example (one α uniform within the bin, one noise draw each).
PILOT_PER_BIN = 2
#: Gradients the pilot costs per example, on top of ``nt_samples``.
PILOT_GRADIENTS = (len(EDGES) - 1) * PILOT_PER_BIN
#: Share of the uniform density in the adaptive one: it bounds every weight by 1 / UNIFORM_SHARE.
UNIFORM_SHARE = 0.25


class PathDensity:
    """A piecewise-constant density of α on :data:`EDGES`, one per example.

    Parameters
    ----------
    probabilities : Tensor
        ``(batch, bins)``, float64: each row sums to 1 and is positive.

    Examples
    --------
    >>> edges = torch.tensor(EDGES, dtype=torch.float64)
    >>> half = (edges[1:] - edges[:-1]) / 2  # half the uniform density in each bin ...
    >>> half[-1] += 0.5  # ... and the other half of the probability in the last bin, [7/8, 1)
    >>> alpha, weight = PathDensity(half.unsqueeze(0)).transform(torch.tensor([[0.25], [0.71875]], dtype=torch.float64))
    >>> alpha.flatten().tolist(), [round(w, 4) for w in weight.flatten().tolist()]  # the last bin: 9/16 of u
    ([0.5, 0.9375], [2.0, 0.2222])
    """

    def __init__(self, probabilities: Tensor) -> None:
        self.edges, self.widths = _edges(probabilities.device)
        self.probabilities = probabilities
        cumulative = probabilities.cumsum(dim=1)
        self.starts = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], dim=1)
        self.inner = cumulative[:, :-1].contiguous()  # the inner bin boundaries, in probability

    def transform(self, u: Tensor) -> Tuple[Tensor, Tensor]:
        """α for uniform numbers ``u`` (``(samples, batch)`` in [0, 1)) by the inverse CDF, and its weight
        ``1 / density(α)``; both float64 and shaped like ``u``."""
        bins = torch.searchsorted(self.inner, u.t().contiguous(), right=True)  # (batch, samples)
        probability = self.probabilities.gather(1, bins)
        start = self.starts.gather(1, bins)
        width = self.widths[bins]
        alpha = self.edges[bins] + (u.t() - start) / probability * width
        alpha = torch.minimum(alpha, self.edges[bins + 1])  # rounding at a bin's top edge
        return alpha.t(), (width / probability).t()


def _edges(device: torch.device) -> Tuple[Tensor, Tensor]:
    """:data:`EDGES` and the bins' widths, float64 on ``device``."""
    edges = torch.tensor(EDGES, dtype=torch.float64, device=device)
    return edges, edges[1:] - edges[:-1]


def fit_path_density(
    contributions: Callable[[Tuple[Tensor, ...], Tensor, int], List[Tensor]],
    inputs: Tuple[Tensor, ...],
    sigmas: Tuple[Tensor, ...],
    example_ids: Tensor,
    seeds: SampleSeeds,
    samples_per_chunk: int,
) -> PathDensity:
    """Run the pilot and fit each example's density.

    ``contributions(noisy, alphas, n)``: the joint estimator's per-sample
    contributions for ``n`` samples of noisy rows (sample-major) at path
    fractions ``alphas`` ``(n, batch)``. The pilot's noise and α come from
    streams of their own, keyed by the seed and the example's id, so the
    density depends on neither the batch nor the chunking (beyond rounding),
    and is independent of the estimate's own draws. An example whose pilot
    is all zero keeps the uniform density; so does one whose pilot is not
    finite, with a ``RuntimeWarning`` naming it (its integrand is NaN or
    infinite somewhere on the path, which the estimate may or may not meet).
    """
    batch, device = inputs[0].shape[0], inputs[0].device
    bins = len(EDGES) - 1
    pilot_seeds = SampleSeeds(seeds.derived(stream(Purpose.PATH_PILOT)))
    edges, widths = _edges(device)
    squares = torch.zeros(batch, bins, dtype=torch.float64, device=device)
    for start in range(0, PILOT_GRADIENTS, samples_per_chunk):
        ids = range(start, min(start + samples_per_chunk, PILOT_GRADIENTS))
        n = len(ids)
        noisy = tuple(noisy_copies(x, s, ids, pilot_seeds, i, example_ids)
                      for i, (x, s) in enumerate(zip(inputs, sigmas)))
        units = torch.arange(ids.start, ids.stop, device=device)
        within = uniform(row_keys(pilot_seeds.base_seed, stream(Purpose.PATH_PILOT), example_ids, units))
        which = units % bins
        alphas = edges[which].unsqueeze(1) + within * widths[which].unsqueeze(1)
        with torch.no_grad():
            norms = sum(c.detach().reshape(n, batch, -1).double().square().sum(2)
                        for c in contributions(noisy, alphas, n))
        squares.index_add_(1, which, norms.t())
    rms = (squares / PILOT_PER_BIN).sqrt()
    mass = widths * rms
    total = mass.sum(dim=1, keepdim=True)
    finite = torch.isfinite(total)
    if not bool(finite.all()):  # the pilot's one host synchronisation
        broken = example_ids[~finite.squeeze(1).to(example_ids.device)].tolist()
        warnings.warn(f'path_density="adaptive": the pilot met a NaN or infinite contribution on the path of '
                      f"example(s) {broken}; they keep the uniform density, and their attributions are NaN wherever "
                      "the estimate meets the same", RuntimeWarning, stacklevel=user_stacklevel())
    fitted = finite & (total > 0)
    fitted_q = torch.where(fitted, mass / torch.where(fitted, total, torch.ones_like(total)), widths)
    return PathDensity((1 - UNIFORM_SHARE) * fitted_q + UNIFORM_SHARE * widths)

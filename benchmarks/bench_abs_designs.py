"""Why no noise design halves the samples of absolute-gradient SmoothGrad on the CNN.

    python benchmarks/bench_abs_designs.py      # writes benchmarks/ABS_DESIGNS.md

bench_samplers.py finds that on the trained CNN no sampler reaches the error of 32 i.i.d. samples with
16 samples when the gradient is taken in absolute value (Saliency's default), although several do for
the signed gradient. This script tries the stratified designs one might reach for next, written by hand
next to noisegrad's own Latin hypercube, on both benchmark models and both gradient settings:

* noisegrad's ``sampler="lhs"`` (affine stratum permutations, Weyl-sequence jitter, one design);
* a textbook Latin hypercube: uniformly random permutations, independent jitter;
* the textbook hypercube in another orthonormal basis (ε = Q z: still exactly N(0, I)): per-channel 2-D
  DCT, per-channel 2-D DCT after an orthonormal colour-opponent transform, and a random rotation;
* antithetic Latin hypercube: a hypercube of N / 2 points and their negatives.

A Latin hypercube removes the part of the variance that is additive in the stratified coordinates.
If some basis made |∂f/∂x| more additive, stratifying in it would help; the table shows whether any does.
Same measurement as bench_samplers.py: Saliency, 4 held-out inputs, σ = 15 % of the range, error = mean
relative L2 error against a 4,096-sample i.i.d. reference, median over 20 seeds, samples needed to match
i.i.d. at 32 interpolated log-log. Runs on one thread, about 4 minutes.
"""

import datetime
import functools
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import Saliency

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_joint import trained_models  # noqa: E402
from bench_samplers import samples_to_match  # noqa: E402
from noisegrad import NoiseTunnel, relative  # noqa: E402
from noisegrad.perturb.inputs import resolve_stdevs  # noqa: E402

SEEDS = range(20)
NOISE = relative(0.15)
COUNTS = [8, 16, 32, 64]
REFERENCE_SAMPLES = 4096
MATCH_AT = 32


# --------------------------------------------------------------------------- designs: (seed, N, batch, shape) → noise


def iid(seed, n, batch, shape):
    return torch.randn((n, batch) + shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def textbook_lhs(seed, n, batch, shape):
    generator = torch.Generator().manual_seed(seed)
    strata = torch.rand((n, batch) + shape, generator=generator, dtype=torch.float64).argsort(dim=0)
    jitter = torch.rand((n, batch) + shape, generator=generator, dtype=torch.float64)
    return torch.special.ndtri((strata + jitter) / n)


def antithetic_lhs(seed, n, batch, shape):
    half = textbook_lhs(seed, n // 2, batch, shape)
    return torch.cat([half, -half])


def dct_matrix(size):
    """Orthonormal DCT-II: rows are the basis vectors."""
    k = torch.arange(size, dtype=torch.float64).view(-1, 1)
    i = torch.arange(size, dtype=torch.float64).view(1, -1)
    basis = torch.cos(math.pi * (i + 0.5) * k / size) * math.sqrt(2 / size)
    basis[0] /= math.sqrt(2)
    return basis


def colour_opponent():
    """Orthonormal luminance / red-green / blue-yellow transform of 3 channels."""
    rows = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], dtype=torch.float64)
    return rows / rows.norm(dim=1, keepdim=True)


def in_dct_basis(colour):
    def design(seed, n, batch, shape):
        z = textbook_lhs(seed, n, batch, shape)
        if len(shape) != 3:  # not an image: nothing to transform
            return None
        rows, cols = dct_matrix(shape[1]), dct_matrix(shape[2])
        noise = torch.einsum("hk,wl,nbckl->nbchw", rows.T, cols.T, z)
        return torch.einsum("dc,nbchw->nbdhw", colour_opponent().T, noise) if colour else noise

    return design


@functools.lru_cache(maxsize=None)
def rotation(dims):
    """A fixed random orthogonal matrix (the Q of a Gaussian matrix)."""
    q, _ = torch.linalg.qr(torch.randn(dims, dims, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    return q


def rotated(seed, n, batch, shape):
    dims = math.prod(shape)
    z = textbook_lhs(seed, n, batch, shape).reshape(n, batch, dims)
    return (z @ rotation(dims).T).reshape((n, batch) + shape)


DESIGNS = {
    "textbook LHS": textbook_lhs,
    "LHS in the DCT basis": in_dct_basis(colour=False),
    "LHS in the DCT basis, colour-opponent channels": in_dct_basis(colour=True),
    "LHS in a random rotation": rotated,
    "antithetic LHS": antithetic_lhs,
}


# --------------------------------------------------------------------------- measurement


def smoothed_by_hand(model, x, target, noise, sigma, absolute):
    """SmoothGrad of Saliency with the given standard-normal noise (N, batch, ...)."""
    n = noise.shape[0]
    noisy = (x.unsqueeze(0) + sigma * noise.to(x.dtype)).reshape((-1,) + tuple(x.shape[1:])).requires_grad_()
    output = model(noisy).gather(1, torch.tensor(target).repeat(n).view(-1, 1))
    gradient, = torch.autograd.grad(output.sum(), noisy)
    gradient = gradient.view((n,) + tuple(x.shape))
    return (gradient.abs() if absolute else gradient).mean(0)


def noisegrad_lhs(model, x, target, n, seed, absolute):
    return NoiseTunnel(Saliency(model)).attribute(
        x, nt_samples=n, nt_samples_batch_size=n, stdevs=NOISE, target=target, abs=absolute, sampler="lhs", seed=seed
    )


def error(estimate, reference):
    return float(((estimate - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)).mean())


def curves(model, x, target, absolute):
    """Median error per sample count for i.i.d., noisegrad's LHS and each hand-written design."""
    sigma, = resolve_stdevs(NOISE, (x,))  # one σ per example, shaped to broadcast over (N, batch, ...)
    batch, shape = x.shape[0], tuple(x.shape[1:])
    chunks = [smoothed_by_hand(model, x, target, iid(10**6 + k, 512, batch, shape), sigma, absolute)
              for k in range(REFERENCE_SAMPLES // 512)]
    reference = torch.stack(chunks).mean(0)
    result = {}
    for label, design in [("i.i.d.", iid), ("noisegrad lhs", None)] + list(DESIGNS.items()):
        medians = []
        for n in COUNTS:
            errors = []
            for seed in SEEDS:
                if design is None:
                    estimate = noisegrad_lhs(model, x, target, n, seed, absolute)
                else:
                    noise = design(seed, n, batch, shape)
                    if noise is None:
                        break
                    estimate = smoothed_by_hand(model, x, target, noise, sigma, absolute)
                errors.append(error(estimate, reference))
            if not errors:
                break
            medians.append(float(np.median(errors)))
        if medians:
            result[label] = medians
    return result


def needed(result, label):
    return samples_to_match(result[label], result["i.i.d."][COUNTS.index(MATCH_AT)], COUNTS)


def main():
    torch.set_num_threads(1)
    started = time.perf_counter()
    models = trained_models()
    rows = {}
    for name, (model, x, labels, _) in models.items():
        for absolute in (True, False):
            rows[name, absolute] = curves(model, x, labels.tolist(), absolute)
            print(f"{name}, abs={absolute}: {time.perf_counter() - started:.0f} s", flush=True)
    write_report(rows, time.perf_counter() - started)


def write_report(rows, elapsed):
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    labels = list(next(iter(rows.values())))[1:]
    settings = list(rows)
    header = " | ".join(f"{name}, {'absolute' if absolute else 'signed'}" for name, absolute in settings)
    lines = [
        "# Stratified noise designs for absolute-gradient SmoothGrad",
        "",
        f"`python benchmarks/bench_abs_designs.py` — {datetime.date.today()}, noisegrad {revision.stdout.strip()}, "
        f"torch {torch.__version__}, Python {platform.python_version()}, 1 thread, {elapsed / 60:.1f} min.",
        "",
        "Samples each design needs to reach the median error of 32 i.i.d. samples (SmoothGrad of Saliency, "
        f"σ = 15 % of the range, 4 inputs, median over {len(SEEDS)} seeds, reference {REFERENCE_SAMPLES:,} i.i.d. "
        "samples; see the script's docstring). The target is 16. '—': the design needs an image input.",
        "",
        f"| design | {header} |",
        "|---|" + "---:|" * len(settings),
    ]
    for label in labels:
        cells = []
        for setting in settings:
            if label not in rows[setting]:
                cells.append("—")
                continue
            n = needed(rows[setting], label)
            cells.append("< 8" if n is None else "> 64" if math.isinf(n) else f"{n:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Median errors per sample count (" + ", ".join(str(n) for n in COUNTS) + "):", ""]
    for setting, result in rows.items():
        name, absolute = setting
        lines.append(f"* {name}, {'absolute' if absolute else 'signed'}: " + "; ".join(
            f"{label} " + " / ".join(f"{e:.4f}" for e in errors) for label, errors in result.items()
        ))
    lines.append("")
    (ROOT / "benchmarks" / "ABS_DESIGNS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

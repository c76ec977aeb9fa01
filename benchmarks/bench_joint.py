"""Error versus gradient evaluations: nested NoiseTunnel(IntegratedGradients) versus joint (ε, α) sampling.

    python benchmarks/bench_joint.py            # writes benchmarks/JOINT.md and benchmarks/joint_error.png

Two small models are trained briefly with a fixed seed (a CNN on generated 3×32×32 images of coloured
shapes, a 64-feature MLP on a Gaussian mixture). For 4 held-out inputs per model, SmoothGrad × IG with
σ = 15 % of each input's range is estimated by

* the nested estimator (noisegrad's NoiseTunnel, Captum-exact: nt_samples noise draws × n_steps
  Gauss–Legendre points), on an nt_samples × n_steps grid;
* the joint estimator (noisegrad.estimators.joint_ig) with plain (iid α), stratified α, antithetic ε,
  stratified α + antithetic ε, and stratified α with QMC or LHS noise;

and compared with a reference of 16,384 joint samples (stratified + antithetic, its own seed). The error
of a run is the mean over the inputs of ‖estimate − reference‖ / ‖reference‖; the table reports its
median over 6 seeds. Runs on one thread.
"""

import datetime
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import captum
import matplotlib
import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from noisegrad import NoiseTunnel, relative  # noqa: E402
from noisegrad.estimators.joint_ig import joint_integrated_gradients  # noqa: E402

SEEDS = range(6)
NOISE = relative(0.15)
REFERENCE_SAMPLES = 16384
NESTED = [(2, 8), (2, 16), (5, 10), (5, 16), (10, 16), (5, 50), (20, 16), (40, 16), (20, 50)]
JOINT = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
VARIANTS = {  # name: (stratify, noise sampler)
    "joint, iid α": (False, "iid"),
    "joint, stratified α": (True, "iid"),
    "joint, antithetic ε": (False, "antithetic"),
    "joint, stratified α + antithetic ε": (True, "antithetic"),
    "joint, stratified α + QMC ε": (True, "qmc"),
    "joint, stratified α + LHS ε": (True, "lhs"),
}
MAX_ROWS = 2048  # forward batch rows per chunk


# --------------------------------------------------------------------------- data and models


def coloured_shapes(n: int, generator: torch.Generator):
    """3×32×32 images: a coloured square, cross, ring or bar (the class) at a random place on noise."""
    yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    r = ((yy - 4) ** 2 + (xx - 4) ** 2).sqrt()
    stencils = torch.stack([
        torch.ones(9, 9),
        ((yy - 4).abs() <= 1) | ((xx - 4).abs() <= 1),
        (r <= 4.2) & (r >= 2.5),
        (xx - 4).abs() <= 1.0,
    ]).float()
    labels = torch.randint(4, (n,), generator=generator)
    images = 0.3 * torch.randn(n, 3, 32, 32, generator=generator)
    colours = torch.rand(n, 3, generator=generator) + 0.5
    for i in range(n):
        row, col = torch.randint(0, 24, (2,), generator=generator).tolist()
        images[i, :, row : row + 9, col : col + 9] += colours[i, :, None, None] * stencils[labels[i]]
    return images, labels


def gaussian_mixture(n: int, generator: torch.Generator, features: int = 64, classes: int = 4):
    centres = torch.randn(classes, features, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(classes, (n,), generator=generator)
    return centres[labels] + 1.5 * torch.randn(n, features, generator=generator), labels


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 4),
    )


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def train(model: nn.Module, data, epochs: int) -> float:
    images, labels = data
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimiser.step()
    return model.eval()


def accuracy(model: nn.Module, data) -> float:
    with torch.no_grad():
        return float((model(data[0]).argmax(1) == data[1]).float().mean())


# --------------------------------------------------------------------------- estimators


def nested(ig, x, target, nt_samples, n_steps, seed):
    chunk = max(1, MAX_ROWS // (x.shape[0] * n_steps))
    return NoiseTunnel(ig).attribute(
        x, nt_samples=nt_samples, nt_samples_batch_size=chunk, stdevs=NOISE, target=target, n_steps=n_steps, seed=seed
    )


def joint(ig, x, target, nt_samples, seed, stratify, sampler):
    return joint_integrated_gradients(
        ig, x, nt_samples=nt_samples, nt_samples_batch_size=MAX_ROWS // x.shape[0], stdevs=NOISE, target=target,
        seed=seed, stratify=stratify, sampler=sampler,
    )


def error(estimate, reference) -> float:
    diff = (estimate - reference).flatten(1).norm(dim=1)
    return float((diff / reference.flatten(1).norm(dim=1)).mean())


def measure(name, model, x, target):
    ig = IntegratedGradients(model)
    start = time.perf_counter()
    reference = joint(ig, x, target, REFERENCE_SAMPLES, 10**6, True, "antithetic")
    reference_time = time.perf_counter() - start
    rows = []
    for nt_samples, n_steps in NESTED:
        errors = [error(nested(ig, x, target, nt_samples, n_steps, seed), reference) for seed in SEEDS]
        rows.append(("nested", f"{nt_samples}×{n_steps}", nt_samples * n_steps, float(np.median(errors))))
    for variant, (stratify, sampler) in VARIANTS.items():
        for n in JOINT:
            errors = [error(joint(ig, x, target, n, seed, stratify, sampler), reference) for seed in SEEDS]
            rows.append((variant, str(n), n, float(np.median(errors))))
    print(f"{name}: {time.perf_counter() - start:.0f} s (reference {reference_time:.0f} s)", flush=True)
    return rows


def evaluations_to_match(rows, variant, target_error):
    """Gradient evaluations at which the variant's error curve reaches ``target_error`` (log-log interpolation)."""
    curve = [(n, e) for v, _, n, e in rows if v == variant]
    for (n0, e0), (n1, e1) in zip(curve, curve[1:]):
        if e0 >= target_error >= e1:
            t = (math.log(e0) - math.log(target_error)) / (math.log(e0) - math.log(e1))
            return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))
    if target_error > curve[0][1]:
        return None  # already better at the smallest budget: reported as "< smallest"
    return math.inf


# --------------------------------------------------------------------------- report


def trained_models(examples: int = 4) -> dict:
    """The benchmark's trained CNN and MLP: name → (model, the first ``examples`` held-out inputs, their labels,
    held-out accuracy)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    cnn_data, cnn_test = coloured_shapes(3000, generator), coloured_shapes(500, generator)
    mlp_data, mlp_test = gaussian_mixture(4000, generator), gaussian_mixture(500, generator)
    cnn = train(make_cnn(), cnn_data, epochs=4)
    torch.manual_seed(0)
    mlp = train(make_mlp(), mlp_data, epochs=10)
    return {
        "CNN 3×32×32": (cnn, cnn_test[0][:examples], cnn_test[1][:examples], accuracy(cnn, cnn_test)),
        "MLP 64": (mlp, mlp_test[0][:examples], mlp_test[1][:examples], accuracy(mlp, mlp_test)),
    }


def main() -> None:
    torch.set_num_threads(1)
    started = time.perf_counter()
    models = {name: (m, x, y.tolist(), acc) for name, (m, x, y, acc) in trained_models().items()}
    results = {name: measure(name, model, x, target) for name, (model, x, target, _) in models.items()}
    elapsed = time.perf_counter() - started
    write_report(models, results, elapsed)
    plot(results)


def write_report(models, results, elapsed):
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    lines = [
        "# Joint (ε, α) sampling versus nested NoiseTunnel(IntegratedGradients)",
        "",
        f"`python benchmarks/bench_joint.py` — {datetime.date.today()}, noisegrad {revision.stdout.strip()}, "
        f"torch {torch.__version__}, captum {captum.__version__}, Python {platform.python_version()}, "
        f"1 thread, {elapsed / 60:.1f} min.",
        "",
        "SmoothGrad × IG, σ = 15 % of each input's range, zero baseline, target = the true class, 4 inputs per "
        "model. Error = mean over the inputs of the relative L2 error against a 16,384-sample joint reference "
        "(stratified + antithetic, separate seed); the median over 6 seeds is shown. Nested = noisegrad's "
        "NoiseTunnel (equal to Captum's) with nt_samples × n_steps Gauss–Legendre; joint = "
        "`noisegrad.joint_integrated_gradients` with nt_samples gradients.",
        "",
        "Models (trained with a fixed seed, held-out accuracy): "
        + ", ".join(f"{name}: {acc:.0%}" for name, (_, _, _, acc) in models.items()) + ".",
        "",
    ]
    names = list(results)
    lines += ["## Error versus gradient evaluations per input", ""]
    lines += ["| estimator | samples | gradients | " + " | ".join(names) + " |"]
    lines += ["|---|---|---:|" + "---:|" * len(names)]
    for i, (variant, label, n, _) in enumerate(results[names[0]]):
        errors = " | ".join(f"{results[name][i][3]:.3f}" for name in names)
        lines.append(f"| {variant} | {label} | {n} | {errors} |")
    lines += ["", "## Gradient evaluations the joint estimator needs to match nested", ""]
    lines += ["| model | nested | nested error | " + " | ".join(VARIANTS) + " |"]
    lines += ["|---|---|---:|" + "---:|" * len(VARIANTS)]
    for name in names:
        for label in ("5×50", "20×16"):
            row = next(r for r in results[name] if r[0] == "nested" and r[1] == label)
            cells = []
            for variant in VARIANTS:
                needed = evaluations_to_match(results[name], variant, row[3])
                if needed is None:
                    cells.append(f"< {JOINT[0]} (> {row[2] / JOINT[0]:.0f}×)")
                elif math.isinf(needed):
                    cells.append(f"> {JOINT[-1]}")
                else:
                    cells.append(f"{needed:.0f} ({row[2] / needed:.1f}× fewer)")
            lines.append(f"| {name} | {label} = {row[2]} | {row[3]:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "![error versus gradient evaluations](joint_error.png)", ""]
    (ROOT / "benchmarks" / "JOINT.md").write_text("\n".join(lines))
    print("\n".join(lines))


def plot(results):
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.6), squeeze=False)
    styles = dict(zip(VARIANTS, ["C0", "C1", "C2", "C3", "C4", "C5"]))
    for ax, (name, rows) in zip(axes[0], results.items()):
        for variant, colour in styles.items():
            curve = [(n, e) for v, _, n, e in rows if v == variant]
            ax.plot(*zip(*curve), "o-", color=colour, label=variant, ms=4)
        nested_rows = [(n, e, label) for v, label, n, e in rows if v == "nested"]
        ax.scatter([n for n, _, _ in nested_rows], [e for _, e, _ in nested_rows], color="k", marker="s",
                   zorder=3, label="nested nt_samples×n_steps")
        for n, e, label in nested_rows:
            ax.annotate(label, (n, e), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gradient evaluations per input")
        ax.set_ylabel("median relative L2 error (6 seeds)")
        ax.set_title(f"{name}: SmoothGrad × IG, σ = 15 % of range")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ROOT / "benchmarks" / "joint_error.png", dpi=120)


if __name__ == "__main__":
    main()

"""Regenerate the figures in ``docs/figures/`` (used by the README): ``python tutorials/make_figures.py``.

Everything is generated, seeded and small (about half a minute on two CPU cores):
the demo's 16×16 shape images and tiny CNN (trained for fewer steps), a tabular
MLP on synthetic features, and a bag-of-embeddings sentiment toy.
"""

import argparse
import time
from pathlib import Path

import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

import noisegrad
from noisegrad import viz
from noisegrad.app.demo import SHAPES, _pick_images, make_shapes, train_cnn
from noisegrad.viz._canvas import new_figure, save_figure

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures"


def image_figures(out: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    train_x, train_y, _ = make_shapes(1024, generator)
    test_x, test_y, _ = make_shapes(200, generator)
    model = train_cnn(train_x, train_y, steps=150, seed=0)
    pick = _pick_images(test_y, 3)
    x, y = test_x[pick], test_y[pick]
    target = y.tolist()
    smooth = dict(nt_samples=32, nt_samples_batch_size=16, stdevs=noisegrad.relative(0.15), seed=0, target=target)
    saliency = noisegrad.NoiseTunnel(Saliency(model))
    ig = noisegrad.NoiseTunnel(IntegratedGradients(model))
    maps = {
        "Saliency": Saliency(model).attribute(x.clone().requires_grad_(), target=target, abs=False),
        "SmoothGrad": saliency.attribute(x, nt_type="smoothgrad", abs=False, **smooth),
        "SmoothGrad²": saliency.attribute(x, nt_type="smoothgrad_sq", abs=False, **smooth),
        "VarGrad": saliency.attribute(x, nt_type="vargrad", abs=False, **smooth),
        "IG + SmoothGrad": ig.attribute(x, nt_type="smoothgrad", n_steps=16, **smooth),
    }
    labels = [f"class: {list(SHAPES)[int(c)]}" for c in y]
    viz.plot_attr_comparison(maps, x, row_labels=labels, suptitle="Signed maps: blue < 0 < red; unsigned: white to red",
                             save=out / "comparison.png")
    viz.plot_image_attr_grid(maps["SmoothGrad"], x, method="blended_heat_map", titles=labels, shared_scale=True,
                             colorbar=True, alpha_overlay=0.6, panel_size=2.2,
                             suptitle="SmoothGrad over the input, one shared scale", save=out / "overlay_grid.png")

    run = viz.measure_convergence(saliency, x, sample_counts=(1, 4, 16, 64), stdevs=noisegrad.relative(0.15),
                                  target=target, abs=False, nt_samples_batch_size=16)
    viz.plot_convergence_maps(run, x, row_labels=labels, suptitle="SmoothGrad as samples grow (one scale per row)",
                              save=out / "convergence_maps.png")
    fig = new_figure((9.5, 3.4))
    left, right = fig.subplots(1, 2)
    viz.plot_convergence_curve(run, labels=labels, ax=left)
    viz.plot_convergence_curve(run, metric="relative_change", labels=labels, reference=False, ax=right)
    save_figure(fig, out / "convergence_curve.png")

    ig_run = viz.measure_convergence(ig, x, sample_counts=(4, 16, 64), stderr=None, stdevs=noisegrad.relative(0.15),
                                     target=target, n_steps=16, return_convergence_delta=True)
    viz.plot_convergence_delta(ig_run, labels=labels, title="IG + SmoothGrad: mean convergence delta per input",
                               save=out / "convergence_delta.png")


def tabular_figure(out: Path) -> None:
    names = ["income", "age", "debt ratio", "late payments", "tenure", "open accounts", "inquiries", "zip noise"]
    weights = torch.tensor([1.5, 0.4, -1.2, -2.0, 0.8, 0.1, -0.5, 0.0])
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(512, len(names), generator=generator)
    labels = (features @ weights + 0.3 * torch.randn(512, generator=generator) > 0).long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(len(names), 16), nn.Tanh(), nn.Linear(16, 2))
        optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(150):
            loss = nn.functional.cross_entropy(model(features), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    nt = noisegrad.NoiseTunnel(IntegratedGradients(model))
    x, n = features[:1], 32
    kwargs = dict(nt_samples=n, stdevs=0.3, seed=0, target=1, n_steps=16)
    smoothed = nt.attribute(x, nt_type="smoothgrad", return_stderr=True, **kwargs)  # SE from the same samples
    viz.plot_feature_attr(smoothed.attributions, names, smoothed.stderr, err_scale=1.96,
                          title="IG + SmoothGrad (32 samples) for one applicant", save=out / "tabular.png")


def text_figure(out: Path) -> None:
    tokens = "the plot was thin and slow , but the acting is superb and the ending truly moving".split()
    polarity = {"thin": -1.0, "slow": -1.2, "superb": 1.6, "moving": 1.0, "truly": 0.4, "but": 0.2}
    vocab = sorted(set(tokens))
    embedding = nn.Embedding(len(vocab), 4)
    with torch.no_grad():
        torch.manual_seed(0)
        embedding.weight.normal_(0, 0.3)
        embedding.weight[:, 0] = torch.tensor([polarity.get(w, 0.0) for w in vocab])
    head = nn.Sequential(nn.Linear(4, 1), nn.Tanh())
    with torch.no_grad():
        head[0].weight.copy_(torch.tensor([[1.0, 0.1, -0.1, 0.05]]))
        head[0].bias.zero_()

    def forward(embedded):  # (batch, tokens, 4) → (batch, 1): sentiment of the summed embeddings
        return head(embedded.sum(dim=1))

    embedded = embedding(torch.tensor([[vocab.index(t) for t in tokens]])).detach()
    nt = noisegrad.NoiseTunnel(IntegratedGradients(forward))
    attr = nt.attribute(embedded, nt_samples=16, stdevs=0.05, seed=0, target=0, n_steps=16,
                        baselines=torch.zeros_like(embedded))
    viz.plot_token_attr(tokens, attr[0], title="IG + SmoothGrad on a toy sentiment model (summed over embedding)",
                        width=7.5, save=out / "tokens.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: docs/figures/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.set_num_threads(1)  # the models are tiny: threads only wait on each other
    image_figures(args.out)
    tabular_figure(args.out)
    text_figure(args.out)
    print(f"wrote {sorted(p.name for p in args.out.glob('*.png'))} to {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

"""Does noise at the word embedding put a text model's attribution on the words that decide its label?

    python benchmarks/bench_text.py --out docs/text.md

About 100 s on one thread (the model trains in 2-3 s of that). A small transformer
(``tutorials/text_task.py``: word + position embeddings, one ``nn.TransformerEncoder`` layer, the mean over real
words) learns a synthetic task whose right answer is known: sentences of 12-16 words padded to 16, the label decided
by one to three trigger words ("good", "bad", ...) among filler words. Held-out sentences are explained at the word
embedding (``model.embed``), for the true class, by

* the gradient (``LayerGradientXActivation(..., multiply_by_inputs=False)``), one score per word: its L2 norm;
* gradient × activation (``LayerGradientXActivation``), one score per word: the sum over the hidden dimension;
* VarGrad of the gradient (the variance over the noisy copies, summed over the hidden dimension);
* Integrated Gradients (``LayerIntegratedGradients``, every word replaced by ``[pad]`` as the baseline, whose
  embedding is zero), summed over the hidden dimension;

each without noise and smoothed with ``NoiseTunnel(...).attribute(ids, noise_layer=model.embed,
noise_mask=attention_mask, stdevs=noisegrad.relative(σ, of="std"))`` at several σ (SmoothGrad; IG + SmoothGrad).
Two scores per sentence with k trigger words, as mean ± standard error across sentences: the share of the |score|
mass of its real words that lies on the triggers, and top-k precision (the share of its k highest-|score| words
that are triggers); and the paired change of each from the same method without noise. A check repeats the key
comparison on models trained with other seeds and with two encoder layers.

The output file's hand-written reading of the results, between the ``<!-- reading`` and ``<!-- end of reading -->``
markers, is kept when the file is rewritten; after a new run, check it against the new tables.
"""

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import captum
import numpy as np
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tutorials"))  # the task and the model, shared with tutorials/07_text.ipynb
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_tunnel import noisegrad_revision  # noqa: E402

from noisegrad import NoiseTunnel, relative, token_scores  # noqa: E402
from text_task import Sentences, accuracy, chance, make_sentences, top_k_precision, train, trigger_mass  # noqa: E402

NOISE_LEVELS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
CHECK_LEVELS = (0.0, 0.5, 1.0)
#: name → (the Captum method on the model's word embedding, nt_type, how token_scores reduces the hidden dimension)
METHODS: Dict[str, Tuple[Callable, str, str]] = {
    "Gradient (L2 norm)": (lambda m: LayerGradientXActivation(m, m.embed, multiply_by_inputs=False),
                           "smoothgrad", "l2"),
    "Gradient × activation": (lambda m: LayerGradientXActivation(m, m.embed), "smoothgrad", "sum"),
    "VarGrad of the gradient": (lambda m: LayerGradientXActivation(m, m.embed, multiply_by_inputs=False),
                                "vargrad", "sum"),
    "Integrated Gradients": (lambda m: LayerIntegratedGradients(m, m.embed), "smoothgrad", "sum"),
}
SCORES = {"mass": trigger_mass, "top-k": top_k_precision}
READING_START, READING_END = "<!-- reading", "<!-- end of reading -->"


def token_attributions(model, data: Sentences, method: str, noise: float, samples: int, ig_steps: int,
                       seed: int) -> Optional[torch.Tensor]:
    """One score per word, (sentences, tokens), or None where the method is undefined (VarGrad without noise)."""
    make, nt_type, reduce = METHODS[method]
    attribution = make(model)
    kwargs = dict(target=data.labels.tolist(), additional_forward_args=(data.attention_mask,))
    if isinstance(attribution, LayerIntegratedGradients):
        kwargs.update(baselines=torch.zeros_like(data.ids), n_steps=ig_steps)
    if noise == 0:
        if nt_type == "vargrad":
            return None
        attr = attribution.attribute(data.ids, **kwargs)
    else:
        attr = NoiseTunnel(attribution).attribute(
            data.ids, nt_type=nt_type, nt_samples=samples, nt_samples_batch_size="auto", seed=seed,
            noise_layer=model.embed, noise_mask=data.attention_mask, stdevs=relative(noise, of="std"), **kwargs)
    return token_scores(attr, reduce, mask=data.attention_mask)


def measure(model, data: Sentences, levels, samples: int, ig_samples: int, ig_steps: int, seed: int,
            say: Callable[[str], None]):
    """Per method and σ: each score per sentence (NaN where undefined), and the seconds the attributions took."""
    scores: Dict[str, Dict[float, Dict[str, np.ndarray]]] = {m: {} for m in METHODS}
    seconds: Dict[str, Dict[float, float]] = {m: {} for m in METHODS}
    for method in METHODS:
        n = ig_samples if method == "Integrated Gradients" else samples
        for noise in levels:
            start = time.perf_counter()
            words = token_attributions(model, data, method, noise, n, ig_steps, seed)
            seconds[method][noise] = time.perf_counter() - start
            nan = np.full(len(data.labels), np.nan)
            scores[method][noise] = {name: nan if words is None else score(words, data).numpy()
                                     for name, score in SCORES.items()}
            say(f"{method:<24} σ={noise:<4}  {seconds[method][noise]:5.1f} s")
    return scores, seconds


def _mean_se(values: np.ndarray) -> Tuple[float, float]:
    values = values[~np.isnan(values)]
    return values.mean(), values.std(ddof=1) / np.sqrt(len(values))


def _cell(values: np.ndarray, signed: bool = False) -> str:
    if np.isnan(values).all():
        return "—"
    mean, se = _mean_se(values)
    return f"{mean:+.3f} ± {se:.3f}" if signed else f"{mean:.3f} ± {se:.3f}"


def _sigma_head(levels) -> List[str]:
    return ["| method | " + " | ".join(f"σ = {s:g}" for s in levels) + " |", "|---|" + "---:|" * len(levels)]


def table(scores, metric: str, levels) -> List[str]:
    rows = [f"| {m} | " + " | ".join(_cell(scores[m][s][metric]) for s in levels) + " |" for m in METHODS]
    return _sigma_head(levels) + rows


def paired_table(scores, metric: str, levels) -> List[str]:
    """Each σ > 0 minus the same method without noise (VarGrad: minus the plain gradient), paired per sentence."""
    rows = []
    for method in METHODS:
        base = scores["Gradient (L2 norm)" if method.startswith("VarGrad") else method][0.0][metric]
        rows.append(f"| {method} | " + " | ".join(
            _cell(scores[method][s][metric] - base, signed=True) for s in levels if s > 0) + " |")
    return _sigma_head([s for s in levels if s > 0]) + rows


def check_table(checks: Dict[str, dict], levels) -> List[str]:
    """Per other trained model: each score at σ = 0 and its paired change at the check levels."""
    changes = [s for s in levels if s > 0]
    head = ("| model | method | " + " | ".join(
        f"{metric} σ = 0 | Δ {metric} σ = {s:g}" if i == 0 else f"Δ {metric} σ = {s:g}"
        for metric in SCORES for i, s in enumerate(changes)) + " |")
    lines = [head, "|---|---|" + "---:|" * (len(SCORES) * (len(changes) + 1))]
    for model_name, scores in checks.items():
        for method in METHODS:
            if method.startswith("VarGrad"):
                continue
            cells = []
            for metric in SCORES:
                base = scores[method][0.0][metric]
                cells.append(_cell(base))
                cells += [_cell(scores[method][s][metric] - base, signed=True) for s in changes]
            lines.append(f"| {model_name} | {method} | " + " | ".join(cells) + " |")
    return lines


def reduction_table(model, data: Sentences, ig_steps: int) -> List[str]:
    """token_scores' two reductions on the same unsmoothed attributions."""
    lines = ["| method | reduce | mass on triggers | top-k precision |", "|---|---|---:|---:|"]
    for method in ("Gradient × activation", "Integrated Gradients"):
        make, _, _ = METHODS[method]
        kwargs = dict(target=data.labels.tolist(), additional_forward_args=(data.attention_mask,))
        if method == "Integrated Gradients":
            kwargs.update(baselines=torch.zeros_like(data.ids), n_steps=ig_steps)
        attr = make(model).attribute(data.ids, **kwargs)
        for reduce in ("sum", "l2"):
            words = token_scores(attr, reduce, mask=data.attention_mask)
            lines.append(f"| {method} | `{reduce}` | {_cell(trigger_mass(words, data).numpy())} | "
                         f"{_cell(top_k_precision(words, data).numpy())} |")
    return lines


def ig_delta(model, data: Sentences, ig_steps: int) -> float:
    """Median |convergence delta| of plain IG relative to |f(x) − f(baseline)|."""
    target = data.labels.tolist()
    _, delta = LayerIntegratedGradients(model, model.embed).attribute(
        data.ids, baselines=torch.zeros_like(data.ids), n_steps=ig_steps, target=target,
        additional_forward_args=(data.attention_mask,), return_convergence_delta=True)
    with torch.no_grad():
        rows = torch.arange(len(target))
        change = (model(data.ids, data.attention_mask)[rows, data.labels]
                  - model(torch.zeros_like(data.ids), data.attention_mask)[rows, data.labels])
    return float((delta.abs() / change.abs()).median())


def plot(scores, levels, baseline: float, path: Path) -> None:
    from noisegrad.viz._canvas import new_figure, save_figure

    fig = new_figure((9.5, 3.5))
    for ax, (metric, title) in zip(fig.subplots(1, 2), [("mass", "|score| mass on the trigger words"),
                                                          ("top-k", "top-k words that are triggers")]):
        for method in METHODS:
            pairs = [(s, *_mean_se(scores[method][s][metric])) for s in levels
                     if not np.isnan(scores[method][s][metric]).all()]
            xs, means, ses = zip(*pairs)
            ax.errorbar(xs, means, yerr=ses, marker="o", markersize=3, capsize=2, label=method)
        ax.axhline(baseline, color="grey", linewidth=0.8, linestyle=":", label="uniform scores")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xticks(levels, [f"{s:g}" for s in levels])
        ax.set_xlim(-0.03, 1.3 * levels[-1])
        ax.set_xlabel("σ (× std of the sentence's word embeddings)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    save_figure(fig, path)


def kept_reading(path: Path) -> List[str]:
    """The hand-written reading of the results in the file being replaced, markers included (none: [])."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    start, end = text.find(READING_START), text.find(READING_END)
    if start < 0 or end < start:
        return []
    return text[start:end + len(READING_END)].splitlines() + [""]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "text.md")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "text_localisation.png")
    parser.add_argument("--train", type=int, default=4000, help="training sentences")
    parser.add_argument("--steps", type=int, default=600, help="training steps (batches of 64)")
    parser.add_argument("--sentences", type=int, default=500, help="held-out sentences explained")
    parser.add_argument("--samples", type=int, default=32, help="noisy copies per sentence (gradient methods)")
    parser.add_argument("--ig-samples", type=int, default=16, help="noisy copies per sentence for IG + SmoothGrad")
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the training and the noise")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    start = time.perf_counter()
    train_data = make_sentences(args.train, torch.Generator().manual_seed(args.seed))
    test_data = make_sentences(args.sentences, torch.Generator().manual_seed(args.seed + 1000))
    trained = time.perf_counter()
    model = train(train_data, steps=args.steps, seed=args.seed)
    train_seconds = time.perf_counter() - trained
    test_accuracy = accuracy(model, test_data)
    say(f"trained in {train_seconds:.1f} s, held-out accuracy {test_accuracy:.3f}")
    scores, seconds = measure(model, test_data, NOISE_LEVELS, args.samples, args.ig_samples, args.ig_steps,
                              args.seed, say)
    reductions = reduction_table(model, test_data, args.ig_steps)
    delta = ig_delta(model, test_data, args.ig_steps)
    checks, check_accuracy = {}, {}
    for name, seed, layers in [(f"seed {args.seed + 1}", args.seed + 1, 1), (f"seed {args.seed + 2}", args.seed + 2, 1),
                               (f"seed {args.seed}, 2 layers", args.seed, 2)]:
        other = train(train_data, steps=args.steps, seed=seed, layers=layers)
        check_accuracy[name] = accuracy(other, test_data)
        checks[name], _ = measure(other, test_data, CHECK_LEVELS, args.samples, args.ig_samples, args.ig_steps,
                                  args.seed, say)
    total = time.perf_counter() - start
    uniform = float(chance(test_data).mean())
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    plot(scores, NOISE_LEVELS, uniform, args.figure)

    command = "python benchmarks/bench_text.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    figure = Path("figures") / args.figure.name if args.figure.parent.name == "figures" else args.figure
    k = test_data.triggers.sum(1)
    lengths = test_data.attention_mask.sum(1)
    lines = [
        "# Text: does noise at the word embedding put the attribution on the words that decide the label?",
        "",
        f"- command: `{command}` ({total:.0f} s on one thread, {time.strftime('%Y-%m-%d')})",
        f"- noisegrad git {noisegrad_revision()}, torch {torch.__version__}, captum {captum.__version__}, "
        f"Python {platform.python_version()}",
        f"- task (`tutorials/text_task.py`): sentences of {int(lengths.min())}–{int(lengths.max())} real words "
        "padded to 16; 1–3 trigger words (positive: good, great, superb, fine; negative: bad, awful, dull, poor) "
        "among 20 filler words; label 1 iff more positive than negative triggers. "
        f"{args.sentences} held-out sentences ({int((k == 1).sum())} with one trigger, {int((k == 2).sum())} with "
        f"two, {int((k == 3).sum())} with three)",
        f"- model: word + position embeddings (32 dims), one `nn.TransformerEncoder` layer (4 heads), mean over real "
        f"words, linear head; trained on {args.train} sentences, {args.steps} Adam steps of 64, seed {args.seed}, in "
        f"{train_seconds:.1f} s; held-out accuracy {test_accuracy:.3f}",
        f"- explained: the true class, at `model.embed` (word embeddings, before the position embedding is added). "
        f"Noise: `noise_layer=model.embed, noise_mask=attention_mask, stdevs=relative(σ, of=\"std\")` — σ is a "
        f"multiple of each sentence's standard deviation of its real words' embedding values; padding gets none. "
        f"{args.samples} noisy copies per sentence ({args.ig_samples} for IG + SmoothGrad, each with "
        f"{args.ig_steps} IG steps, also without noise; median |convergence delta| / |f(x) − f(baseline)| of plain "
        f"IG: {delta:.3f}), seed {args.seed}",
        "- per-word scores: `token_scores(attr, reduce, mask=attention_mask)`, `\"l2\"` for the gradient, `\"sum\"` "
        "for the others; σ = 0 is the method without noise (a plain call of the Captum method), σ > 0 its SmoothGrad "
        "(for Integrated Gradients: IG + SmoothGrad); VarGrad is the variance over the noisy copies, undefined "
        "without noise",
        f"- cells: mean over the {args.sentences} sentences ± standard error across sentences; uniform scores would "
        f"get {uniform:.3f} on both measures in expectation (triggers / real words, averaged)",
        "",
        *kept_reading(args.out),
        "## Share of the |score| mass on the trigger words",
        "",
        *table(scores, "mass", NOISE_LEVELS),
        "",
        "## Top-k precision (k = the sentence's number of triggers)",
        "",
        "Ties are broken by position; a score that is exactly zero on every word ranks the first k words.",
        "",
        *table(scores, "top-k", NOISE_LEVELS),
        "",
        "## Paired change from the same method without noise",
        "",
        "Each σ minus σ = 0 on the same sentence, mean ± paired standard error (VarGrad: minus the plain "
        "gradient's L2 norm).",
        "",
        "Mass on the triggers:",
        "",
        *paired_table(scores, "mass", NOISE_LEVELS),
        "",
        "Top-k precision:",
        "",
        *paired_table(scores, "top-k", NOISE_LEVELS),
        "",
        f"![mass and top-k precision against σ]({figure.as_posix()})",
        "",
        "## Other trained models",
        "",
        "The same sentences and noise, models trained with other seeds or with two encoder layers (held-out accuracy "
        + ", ".join(f"{name}: {acc:.3f}" for name, acc in check_accuracy.items())
        + "); each score at σ = 0 and its paired change at larger σ.",
        "",
        *check_table(checks, CHECK_LEVELS),
        "",
        "## Sum or L2 norm over the hidden dimension",
        "",
        "`token_scores`' two reductions of the same attributions (no noise, the first model).",
        "",
        *reductions,
        "",
        "## Time",
        "",
        "Seconds for all sentences, one thread (σ > 0: the median over the noise levels).",
        "",
        "| method | no noise | with noise |",
        "|---|---:|---:|",
        *(f"| {m} | {'—' if m.startswith('VarGrad') else f'{seconds[m][0.0]:.2f}'} | "
          f"{np.median([seconds[m][s] for s in NOISE_LEVELS if s > 0]):.2f} |" for m in METHODS),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {args.out} and {args.figure} in {total:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Several outputs at once for the layer forms: K = 10 outputs in one call against 10 runs, on the small CNN.

    python benchmarks/bench_layer_outputs.py              # ~1 min on 2 idle cores
    python benchmarks/bench_layer_outputs.py --repeats 9

LayerGradientXActivation and LayerIntegratedGradients (n_steps = 8) on the
CNN's second convolution, nt_samples = 16 in one chunk. The limit is the
one of benchmarks/bench_outputs.py, K (F + B) / (F + K B), with B the
backward from the output to the layer only (measured on the same chunk): one
forward saved per extra output. K separate runs also pay, each, what one
call pays once (LayerIntegratedGradients: the layer's forwards at the inputs
and at the baselines; Captum's one graph root per row), so the speed-up can
pass the limit. Variants are timed interleaved; the table says how many
repetitions were clean (not disturbed by other processes).
"""

import argparse
import os
import statistics
import sys

import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tunnel import ForeignLoad, build_workloads, time_interleaved  # noqa: E402

import noisegrad  # noqa: E402

K = 10
NT_SAMPLES = 16


def forward_and_backward_to(model, layer, rows, load) -> tuple:
    """Seconds of a no-grad forward and of one backward from output 0 to ``layer``'s output on ``rows``."""

    def forward():
        with torch.no_grad():
            return model(rows)

    def both():
        saved = []
        handle = layer.register_forward_hook(lambda _module, _args, output: saved.append(output))
        try:
            out = model(rows)
        finally:
            handle.remove()
        return torch.autograd.grad(out[:, 0].sum(), saved[0])

    seconds = time_interleaved({"forward": forward, "both": both}, 9, warmup=1, load=load).used()
    f = statistics.median(seconds["forward"])
    return f, max(statistics.median(seconds["both"]) - f, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load = ForeignLoad()
    workload = next(w for w in build_workloads(False) if w.name == "cnn")
    model, x = workload.model, workload.inputs
    layer = model.features[3]
    print(f"load average {os.getloadavg()[0]:.1f} before, {torch.get_num_threads()} threads")
    print("| method | examples | K outputs at once (ms) | K runs (ms) | speed-up (median, min–max) | limit | "
          "clean repetitions |\n|---|---:|---:|---:|---:|---:|---:|")
    for method, extra, inputs in ((LayerGradientXActivation, {}, x),
                                  (LayerIntegratedGradients, {"n_steps": 8}, x[:workload.ig_batch])):
        steps = extra.get("n_steps", 1)
        f, b = forward_and_backward_to(model, layer, inputs.repeat(NT_SAMPLES * steps, 1, 1, 1), load)
        nt = noisegrad.NoiseTunnel(method(model, layer))
        common = dict(nt_samples=NT_SAMPLES, stdevs=0.1, seed=0, **extra)
        timings = time_interleaved(
            {"together": lambda: nt.attribute(inputs, outputs=list(range(K)), **common),
             "separately": lambda: [nt.attribute(inputs, target=k, **common) for k in range(K)]},
            args.repeats, warmup=1, load=load)
        seconds = timings.used()
        ratios = [s / t for s, t in zip(seconds["separately"], seconds["together"])]
        print(f"| {method.__name__} | {inputs.shape[0]} | {statistics.median(seconds['together']) * 1e3:.0f} | "
              f"{statistics.median(seconds['separately']) * 1e3:.0f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}–{max(ratios):.2f}) | {K * (f + b) / (f + K * b):.2f} | "
              f"{sum(timings.clean)} of {len(timings.clean)} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()

"""How fast is each chunk size, and how close does nt_samples_batch_size="auto" come to the best?

    python benchmarks/bench_chunks.py --repeats 7 --out benchmarks/CHUNKS.md   # ~5 min on 2 cores
    python benchmarks/bench_chunks.py --quick                                  # ~1 min

For every workload of ``bench_tunnel.py`` (small CNN, ResNet-style net, 64-feature
MLP, small transformer) and Saliency / InputXGradient / IntegratedGradients, one
noisegrad call with ``nt_samples`` = 32 is timed at every fixed chunk size
(1, 2, 4, ..., 32), with ``"auto"``, and Captum's NoiseTunnel at its default
(all samples at once). Variants are interleaved round-robin within each
repetition; repetitions during which other processes used the CPU are redone
(``ForeignLoad``). The report gives median times, the best fixed chunk of the
sweep, and the ratios auto / best and Captum default / best.
"""

import argparse
import datetime
import os
import statistics
import sys
from typing import Callable, Dict, List, Optional

import captum
import torch
from captum.attr import NoiseTunnel as CaptumNoiseTunnel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tunnel import Config, ForeignLoad, build_workloads, cpu_model, make_method, method_kwargs, publish, time_interleaved  # noqa: E402

import noisegrad  # noqa: E402
from noisegrad._captum import rows_per_copy, rows_per_split_copy  # noqa: E402
from noisegrad.plan import AUTO_CPU_BYTES, activation_bytes_per_row, chunk_for_rows  # noqa: E402

NT_SAMPLES = 32
METHODS = ("Saliency", "InputXGradient", "IntegratedGradients")


def variants_for(workload, method: str, cfg: Config, nt_type: str) -> Dict[str, Callable[[], object]]:
    model = workload.model
    x = workload.inputs if method != "IntegratedGradients" else workload.inputs[: workload.ig_batch]
    target = workload.target[: x.shape[0]]
    kwargs = dict(nt_type=nt_type, nt_samples=NT_SAMPLES, stdevs=0.1, target=target, **method_kwargs(method, cfg))
    ours = noisegrad.NoiseTunnel(make_method(method, model))
    theirs = CaptumNoiseTunnel(make_method(method, model))
    variants: Dict[str, Callable[[], object]] = {}
    size = 1
    while size <= NT_SAMPLES:
        variants[f"chunk {size}"] = lambda size=size: ours.attribute(x, nt_samples_batch_size=size, seed=0, **kwargs)
        size *= 2
    variants["auto"] = lambda: ours.attribute(x, nt_samples_batch_size="auto", seed=0, **kwargs)
    variants["captum default"] = lambda: theirs.attribute(x, **kwargs)
    return variants


def auto_chunk(workload, method: str, cfg: Config) -> int:
    """The chunk "auto" picks, by the same rule as NoiseTunnel (for the report)."""
    x = workload.inputs if method != "IntegratedGradients" else workload.inputs[: workload.ig_batch]
    wrapped = make_method(method, workload.model)
    per_row = activation_bytes_per_row(workload.model, (x,), None)
    rows = max(1, AUTO_CPU_BYTES // per_row)
    per_copy = rows_per_copy(wrapped, method_kwargs(method, cfg))
    return chunk_for_rows(rows, x.shape[0], per_copy, NT_SAMPLES, rows_per_split_copy(wrapped))[0]


def run(args: argparse.Namespace) -> List[dict]:
    cfg = Config(n_steps=8)
    load = ForeignLoad()
    results = []
    for workload in build_workloads(args.quick):
        for method in METHODS:
            variants = variants_for(workload, method, cfg, args.nt_type)
            timings = time_interleaved(variants, args.repeats, 1, load).used()
            medians = {name: statistics.median(ts) for name, ts in timings.items()}
            fixed = {name: t for name, t in medians.items() if name.startswith("chunk")}
            best = min(fixed, key=fixed.get)
            row = dict(workload=workload.name, method=method, medians=medians, best=best,
                       auto_ratio=medians["auto"] / fixed[best], captum_ratio=medians["captum default"] / fixed[best],
                       auto_chunk=auto_chunk(workload, method, cfg))
            results.append(row)
            print(f"{workload.name:12s} {method:20s} auto chunk {row['auto_chunk']:3d}  best {best:9s} "
                  f"{1e3 * fixed[best]:7.1f} ms  "
                  f"auto/best {row['auto_ratio']:.3f}  captum/best {row['captum_ratio']:.3f}", flush=True)
    return results


def report(results: List[dict], args: argparse.Namespace, command: str) -> str:
    sizes = [name for name in results[0]["medians"] if name.startswith("chunk")]
    lines = [
        "# Chunk size: the sweep, `\"auto\"`, and Captum's default",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"- torch {torch.__version__}, captum {captum.__version__}, noisegrad {noisegrad.__version__}",
        f"- CPU: {cpu_model()}, torch.get_num_threads() = {torch.get_num_threads()}",
        f"- nt_samples={NT_SAMPLES}, nt_type={args.nt_type}, stdevs=0.1, IG n_steps=8; median of {args.repeats} "
        "clean interleaved repetitions per variant",
        "",
        "| workload | method | " + " | ".join(f"{s} ms" for s in sizes) + " | auto ms | Captum default ms "
        "| best fixed | auto chunk | auto / best | Captum default / best |",
        "|---|---|" + "---:|" * (len(sizes) + 2) + "---|---:|---:|---:|",
    ]
    for r in results:
        m = r["medians"]
        cells = " | ".join(f"{1e3 * m[s]:.1f}" for s in sizes)
        lines.append(
            f"| {r['workload']} | {r['method']} | {cells} | {1e3 * m['auto']:.1f} | {1e3 * m['captum default']:.1f} "
            f"| {r['best']} | {r['auto_chunk']} | {r['auto_ratio']:.3f} | {r['captum_ratio']:.3f} |"
        )
    within = sum(r["auto_ratio"] <= 1.10 for r in results)
    lines += ["", f"\"auto\" is within 10 % of the best fixed chunk in {within}/{len(results)} rows."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nt-type", default="smoothgrad", choices=sorted(noisegrad.NT_TYPES))
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 3
    results = run(args)
    text = report(results, args, "python " + " ".join(sys.argv))
    publish(text, args.out)


if __name__ == "__main__":
    main()

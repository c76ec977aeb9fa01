"""Where a small call's fixed cost goes: noisegrad's steps timed one by one against the minimal loop's.

    python benchmarks/bench_fixed_cost.py --out benchmarks/FIXED_COST.md    # ~1 min
    python benchmarks/bench_fixed_cost.py --batch 64                        # the issue's stock MLP batch

The call of issue #21: the MLP workload of bench_tunnel.py (64 features), Saliency (abs=True), VarGrad, 32 samples
in one chunk of 32, at batch 1 by default. Each step of ``NoiseTunnel.attribute`` is called on its own, many times,
and reported as the 10th percentile of its wall time (robust to a busy machine, unlike a median), with the number
of top-level ATen operations one call dispatches (from ``torch.profiler``; exact, whatever the machine's load).
Each step is set against what the minimal loop of bench_tunnel.py does for it.
"""

import argparse
import datetime
import os
import platform
import random
import sys
import time
from collections import Counter
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from captum.attr import Saliency
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tunnel import Config, command_line, cpu_model, minimal_tunnel, mlp, noisegrad_revision, publish  # noqa: E402
from noisegrad import NoiseTunnel, _numpy_rng, tunnel  # noqa: E402
from noisegrad._loop import run  # noqa: E402
from noisegrad._request import check_request  # noqa: E402
from noisegrad._state import guarded, preserved_modules, seeded_global_rng  # noqa: E402
from noisegrad.stats.tally import Chunk  # noqa: E402

SAMPLES = 32
STDEV = 0.1


def percentile_us(fn: Callable[[], object], calls: int, warmup: int = 20) -> float:
    """The 10th percentile of ``calls`` wall times of ``fn``, in microseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    times.sort()
    return times[len(times) // 10] / 1e3


def aten_ops(fn: Callable[[], object]) -> Tuple[int, str]:
    """Top-level ATen operations one call of ``fn`` dispatches, and the most frequent ones."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()
             if e.name.startswith("aten::") and not (e.cpu_parent and e.cpu_parent.name.startswith("aten::"))]
    common = ", ".join(f"{name[6:]} {count}" for name, count in Counter(names).most_common(3))
    return len(names), common


def entered(context: Callable[[], object]) -> Callable[[], None]:
    def call() -> None:
        with context():
            pass
    return call


def steps(batch: int) -> List[Tuple[str, Callable[[], object], Optional[Callable[[], object]]]]:
    """(step, noisegrad's, the minimal loop's) for one call."""
    torch.manual_seed(3)
    model = mlp().eval()
    x, target = torch.randn(batch, 64), torch.randint(0, 10, (batch,))
    method = Saliency(model)
    nt = NoiseTunnel(method)
    kwargs = dict(nt_type="vargrad", nt_samples=SAMPLES, nt_samples_batch_size=SAMPLES, stdevs=STDEV, target=target,
                  abs=True)
    cfg = Config(nt_samples_batch_size=SAMPLES, stdevs=STDEV)

    def request(seed: Optional[int]):
        return check_request(method, x, "vargrad", SAMPLES, SAMPLES, STDEV, False, None, None, False, "iid", False,
                             None, None, seed, None, "mean", dict(target=target, abs=True),
                             accepted=nt._accepted_keywords)

    checked = request(0)
    estimator = tunnel._estimator(method, checked)
    noisy = estimator.perturbation.rows(range(SAMPLES))[0].detach()
    rows_target = target.repeat(SAMPLES)
    attributions = estimator.method.attribute(noisy.clone().requires_grad_(), target=rows_target, abs=True)
    by_sample = attributions.detach().view(SAMPLES, batch, 64)

    def setup():
        built = tunnel._estimator(method, checked)
        return tunnel._plan(built, checked, nt.forward_func), tunnel._tally(built, checked)

    def statistics():
        tally = tunnel._tally(estimator, checked)
        tally.add(Chunk((by_sample.clone(),), None, (True,)), range(SAMPLES))
        return tally.values("vargrad")

    def minimal_statistics():
        a = by_sample.clone()
        mean = a.sum(0) / SAMPLES
        return (a * a).sum(0) / SAMPLES - mean * mean

    def minimal_gradient():
        rows = noisy.clone().requires_grad_()
        selected = model(rows).gather(1, rows_target[:, None])
        return torch.autograd.grad(selected.sum(), rows)[0].abs()

    def whole_body():
        built = tunnel._estimator(method, checked)
        plan, tally = tunnel._plan(built, checked, nt.forward_func), tunnel._tally(built, checked)
        run(built, plan, tally, "vargrad", None)
        return tunnel._finish(checked, built, tally, None)

    numpy_state, python_state = np.random.get_state(), random.getstate()
    return [
        ("whole call, seeded", lambda: nt.attribute(x, seed=0, **kwargs),
         lambda: minimal_tunnel(model, "Saliency", x, target, cfg, "vargrad", SAMPLES)),
        ("whole call, unseeded", lambda: nt.attribute(x, **kwargs), None),
        ("validation (check_request)", lambda: request(0), None),
        ("state guards, seeded (guarded)", entered(lambda: guarded(method, x.device, 1)), None),
        ("state guards, unseeded (guarded)", entered(lambda: guarded(method, x.device, None)), None),
        ("· model state (preserved_modules)", entered(lambda: preserved_modules([model])), None),
        ("· global RNGs (seeded_global_rng)", entered(lambda: seeded_global_rng(1, x.device)), None),
        ("· · numpy save + restore (noisegrad._numpy_rng: get_state + set_state)",
         lambda: _numpy_rng.restore(_numpy_rng.save()), None),
        ("· · random getstate + seed + setstate", lambda: (random.getstate(), random.seed(1),
                                                           random.setstate(python_state)), None),
        ("· · torch get_rng_state + seed + set", lambda: (torch.get_rng_state(), torch.default_generator.manual_seed(1),
                                                          torch.set_rng_state(torch.get_rng_state())), None),
        ("set-up (estimator, chunk plan, tally)", setup, None),
        ("noise: 32 keyed noisy copies", lambda: estimator.perturbation.rows(range(SAMPLES)),
         lambda: x.repeat_interleave(SAMPLES, 0) + STDEV * torch.randn((batch * SAMPLES, 64))),
        ("wrapped method on the 32 copies", lambda: estimator.method.attribute(
            noisy.clone().requires_grad_(), target=rows_target, abs=True), minimal_gradient),
        ("one chunk: noise, wrapped call and its guards (estimator.chunk)",
         lambda: estimator.chunk(range(SAMPLES)), None),
        ("statistics (Tally.add, values)", statistics, minimal_statistics),
        ("estimator … finish (no validation, no guards)", whole_body, None),
    ], numpy_state


def measure(batch: int, calls: int) -> List[Tuple[str, float, Tuple[int, str], Optional[float], Optional[int]]]:
    table, numpy_state = steps(batch)
    rows = []
    for name, ours, theirs in table:
        rows.append((name, percentile_us(ours, calls), aten_ops(ours),
                     None if theirs is None else percentile_us(theirs, calls),
                     None if theirs is None else aten_ops(theirs)[0]))
        print(f"{name:48s} {rows[-1][1]:9.1f} µs", flush=True)
    np.random.set_state(numpy_state)
    return rows


def report(rows, args: argparse.Namespace) -> str:
    lines = [
        "# The fixed cost of a small call",
        "",
        f"- command: `{args.command}`",
        f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}; noisegrad {noisegrad_revision()}, torch {torch.__version__}, "
        f"Python {platform.python_version()}; CPU: {cpu_model()}, torch.get_num_threads() = {torch.get_num_threads()}; "
        f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}",
        f"- the call: MLP (64 → 256 → 256 → 10, bench_tunnel.py), batch {args.batch}, Saliency(abs=True), VarGrad, "
        f"{SAMPLES} samples in one chunk, σ = {STDEV}; every step called {args.calls} times after 20 warm-up calls, "
        "10th percentile of the wall times; ATen operations: top-level operations of one call (torch.profiler)",
        "",
        "| step | noisegrad µs | ATen ops (most frequent) | minimal loop µs | its ATen ops |",
        "|---|---:|---|---:|---:|",
    ]
    for name, ours, (count, common), theirs, their_count in rows:
        lines.append(f"| {name} | {ours:.1f} | {count} ({common}) | "
                     f"{'' if theirs is None else f'{theirs:.1f}'} | {'' if their_count is None else their_count} |")
    return "\n".join(lines + [""])


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.command = command_line(argv)
    publish(report(measure(args.batch, args.calls), args), args.out)


if __name__ == "__main__":
    main()

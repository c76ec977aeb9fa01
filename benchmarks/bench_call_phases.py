"""Where a stock call's time beyond the minimal loop goes: its phases timed inside the call, against the loop's.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
        python benchmarks/bench_call_phases.py --out benchmarks/CALL_PHASES.md    # ~5 min on 2 cores, idle

(The two variables keep freed memory in the process, benchmarks/ALLOCATOR.md: without them every call faults its
activations in afresh, as many pages as glibc happened to give back, and that noise is larger than most phases.)

bench_tunnel.py times whole calls; this script splits them. Each workload of
bench_tunnel.py (its stock batch, VarGrad, 16 samples in chunks of 8, seeded)
runs noisegrad's ``NoiseTunnel.attribute`` with its phases timed from inside
(wrappers around the functions that do them; a wrapper costs well under a
microsecond) and the minimal loop of bench_tunnel.py written out with a clock
between its steps. The two alternate call by call. Phases:

* **noise**: the noisy copies (noisegrad: ``noisy_copies``, keyed noise; the
  loop: ``repeat_interleave``, ``randn``, scale and add);
* **wrapped call**: forward, backward and what the method does around them
  (noisegrad: ``call_wrapped``, Captum's ``Saliency.attribute`` with the output
  hooks and grad mode; the loop: ``minimal_attribution``);
* **statistics**: merging a chunk (noisegrad: ``Tally.add``, centred sums in
  float64 state; the loop: a sum and a sum of squares per chunk);
* **validation**, **state guards** (model state and, seeded, the global RNGs),
  **set-up and finish** (estimator, chunk plan, tally; the result);
* **rest**: the call's time not in any phase above (the chunk loop itself).

Every phase is the median over the calls of its time per call; the table
gives noisegrad's and the loop's, and noisegrad's excess in per cent of the
loop's whole call. (Medians of parts do not add up exactly to the median of
the whole.)
"""

import argparse
import functools
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tunnel import (  # noqa: E402
    Config, build_workloads, command_line, make_variants, minimal_attribution, publish, report_header,
)
from noisegrad import tunnel  # noqa: E402
from noisegrad.estimators import nested  # noqa: E402
from noisegrad.perturb import inputs as perturb_inputs  # noqa: E402
from noisegrad.stats.tally import Tally  # noqa: E402

PHASES = ("noise", "wrapped call", "statistics", "validation", "state guards", "set-up and finish", "rest")


class Clock:
    """Seconds per phase of the call being timed."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = defaultdict(float)

    def wrap(self, owner: object, name: str, phase: str) -> None:
        """Replace ``owner.name`` by a wrapper that adds its time to ``phase``."""
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        setattr(owner, name, timed)

    def wrap_context(self, owner: object, name: str, phase: str) -> None:
        """As :meth:`wrap` for a context-manager function: its entry and its exit count, not its body.

        The exit gets the body's exception, as without the clock (a guard may act on it, or suppress it).
        """
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            return _TimedManager(self, phase, lambda: inner(*args, **kwargs))

        setattr(owner, name, timed)


class _TimedManager:
    """A context manager made by ``make`` on entry, its entry (with the making) and exit timed into ``phase``."""

    def __init__(self, clock: Clock, phase: str, make: Callable[[], Any]) -> None:
        self.clock, self.phase, self.make = clock, phase, make

    def __enter__(self) -> Any:
        start = time.perf_counter()
        try:
            self.manager = self.make()
            return self.manager.__enter__()
        finally:
            self.clock.seconds[self.phase] += time.perf_counter() - start

    def __exit__(self, *exception: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.manager.__exit__(*exception)
        finally:
            self.clock.seconds[self.phase] += time.perf_counter() - start


def instrument(clock: Clock) -> None:
    """Time noisegrad's phases into ``clock`` (module attributes replaced for the rest of the process)."""
    clock.wrap(perturb_inputs, "noisy_copies", "noise")
    clock.wrap(nested, "call_wrapped", "wrapped call")
    clock.wrap(Tally, "add", "statistics")
    clock.wrap(tunnel.NoiseTunnel, "_checked", "validation")
    clock.wrap_context(tunnel, "guarded", "state guards")
    for name in ("_estimator", "_plan", "_tally", "_finish"):
        clock.wrap(tunnel, name, "set-up and finish")


def minimal_timed(clock: Clock, model, method: str, x: Tensor, target: Tensor, cfg: Config) -> Tensor:
    """bench_tunnel.minimal_tunnel (VarGrad) with a clock between its steps."""
    batch, total, total_sq, done = x.shape[0], None, None, 0
    while done < cfg.nt_samples:
        k = min(cfg.nt_samples_batch_size, cfg.nt_samples - done)
        start = time.perf_counter()
        noisy = x.repeat_interleave(k, 0) + cfg.stdevs * torch.randn((batch * k,) + x.shape[1:], dtype=x.dtype,
                                                                     device=x.device)
        noise_done = time.perf_counter()
        attribution = minimal_attribution(model, method, noisy, target.repeat_interleave(k, 0), cfg)
        call_done = time.perf_counter()
        per_example = attribution.view((batch, k) + x.shape[1:])
        chunk_sum, chunk_sq = per_example.sum(dim=1), (per_example * per_example).sum(dim=1)
        total = chunk_sum if total is None else total + chunk_sum
        total_sq = chunk_sq if total_sq is None else total_sq + chunk_sq
        done += k
        clock.seconds["noise"] += noise_done - start
        clock.seconds["wrapped call"] += call_done - noise_done
        clock.seconds["statistics"] += time.perf_counter() - call_done
    start = time.perf_counter()
    mean = total / cfg.nt_samples
    result = total_sq / cfg.nt_samples - mean * mean
    clock.seconds["set-up and finish"] += time.perf_counter() - start
    return result


def measure(workload, method: str, cfg: Config, calls: int, clock: Clock) -> Dict[str, Dict[str, List[float]]]:
    """Per variant ("noisegrad", "minimal"), per phase and "whole": seconds of each call."""
    noisegrad_call = make_variants(workload, method, cfg, cfg.nt_type, cfg.nt_samples)["noisegrad"]
    batch = workload.batch_for(method)
    x, target = workload.inputs[:batch], workload.target[:batch]
    variants: Dict[str, Callable[[], object]] = {
        "noisegrad": noisegrad_call,
        "minimal": lambda: minimal_timed(clock, workload.model, method, x, target, cfg),
    }
    for call in variants.values():
        call(), call()
    return alternate(variants, calls, clock, PHASES[:-1], "rest")


def alternate(calls: Dict[str, Callable[[], object]], repeats: int, clock: Clock, phases: Sequence[str],
              rest: str) -> Dict[str, Dict[str, List[float]]]:
    """Per call name: seconds of each repetition, "whole", per clock phase in ``phases``, and ``rest`` (the whole
    minus those phases); the calls alternate, each repetition starting with the next one."""
    out: Dict[str, Dict[str, List[float]]] = {name: defaultdict(list) for name in calls}
    names = list(calls)
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            clock.seconds.clear()
            start = time.perf_counter()
            calls[name]()
            whole = time.perf_counter() - start
            out[name]["whole"].append(whole)
            for phase in phases:
                out[name][phase].append(clock.seconds.get(phase, 0.0))
            out[name][rest].append(whole - sum(clock.seconds.get(phase, 0.0) for phase in phases))
    return out


def report(rows: List[dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        *report_header("Where a stock call's time goes: noisegrad's phases against the minimal loop's", command),
        f"- the calls of bench_tunnel.py: VarGrad, nt_samples=16, chunks of 8, σ = 0.1, seeded; {args.calls} calls "
        "of each, alternating; every number is a median over the calls, in ms per call; \"excess\" is noisegrad's "
        "phase minus the loop's, in % of the loop's whole call",
        "",
        "| workload | method | phase | noisegrad ms | minimal ms | excess |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        ng, mn = row["times"]["noisegrad"], row["times"]["minimal"]
        whole_min = statistics.median(mn["whole"])
        for phase in PHASES + ("whole",):
            a, b = statistics.median(ng[phase]), statistics.median(mn[phase])
            name = f"**{phase}**" if phase == "whole" else phase
            lines.append(f"| {row['workload']} | {row['method']} | {name} | {1e3 * a:.3f} | {1e3 * b:.3f} "
                         f"| {100 * (a - b) / whole_min:+.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60, help="calls of each variant per row")
    parser.add_argument("--workloads", default="cnn,resnet,mlp,transformer")
    parser.add_argument("--methods", default="Saliency,InputXGradient,IntegratedGradients")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    command = command_line(argv)
    cfg = Config()
    clock = Clock()
    instrument(clock)
    rows = []
    wanted = args.workloads.split(",")
    for workload in [w for w in build_workloads(False) if w.name in wanted]:
        for method in args.methods.split(","):
            times = measure(workload, method, cfg, args.calls, clock)
            ng, mn = statistics.median(times["noisegrad"]["whole"]), statistics.median(times["minimal"]["whole"])
            print(f"{workload.name:12s} {method:16s} noisegrad {1e3 * ng:7.2f} ms  minimal {1e3 * mn:7.2f} ms", flush=True)
            rows.append({"workload": workload.name, "method": method, "times": times})
    publish(report(rows, args, command), args.out)


if __name__ == "__main__":
    main()

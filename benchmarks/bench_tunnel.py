"""Benchmark noisegrad.NoiseTunnel against captum.attr.NoiseTunnel and a hand-written minimal loop.

    python benchmarks/bench_tunnel.py --repeats 20 --out benchmarks/RESULTS.md   # full run, ~3-10 min on 2 cores
    python benchmarks/bench_tunnel.py --quick                                    # ~1 min smoke run
    python benchmarks/bench_tunnel.py --repeats 80 --processes 16 --out benchmarks/RESULTS.md  # rows over 16 fresh processes
    python benchmarks/bench_tunnel.py --device cuda --out RESULTS_cuda.md       # on a GPU (benchmarks/gpu_run.sh)

Three implementations of the same smoothing are timed side by side in one
process, interleaved round-robin (each repetition calls every variant once,
in a rotating order), so drifts of the machine hit all of them alike:

* ``captum``:    ``captum.attr.NoiseTunnel(method).attribute(...)``
* ``noisegrad``: ``noisegrad.NoiseTunnel(method).attribute(..., seed=0)``
* ``unseeded``:  the same without ``seed`` (noise from the global RNG, as Captum's)
* ``minimal``:   per chunk ``x.repeat_interleave(k, 0) + sigma * torch.randn(...)``,
  one forward, one ``torch.autograd.grad(selected.sum(), noisy)``, then the
  per-example sum and sum of squares (for IntegratedGradients it builds the
  steps x rows scaled batch itself with Captum's Gauss-Legendre alphas).

For every (workload, method) the script reports the median time of each
variant, the per-repetition ratios noisegrad/Captum and noisegrad/minimal
(median and min-max), the CPU peak memory allocated during one call (from the
allocation events of ``torch.profiler``; the method is checked on toy cases at
start-up; on a GPU, torch.cuda.max_memory_allocated above what was allocated
before the call), and whether the targets are met. A sanity check compares the
smoothgrad means of the three variants (same shape, and an L2 difference from
Captum's at most 1.5 times what two independent runs differ by: the noise
differs, so a fixed tolerance would fail at a large ``--stdevs`` and let a bias
through at a small one).

The timed ``nt_type`` is ``vargrad`` by default (``--nt-type`` to change it):
Captum always accumulates the sum and the sum of squares, so with vargrad all
three variants do the same statistical work. The machine may be shared:
repetitions during which other processes used the CPU are detected from
/proc/stat, redone, and left out of the statistics (see ``ForeignLoad``).
``--profile`` prints cProfile's top functions of noisegrad and of the minimal
loop for every row where noisegrad is more than 5 % slower than the loop.
"""

import argparse
import cProfile
import datetime
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import captum
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from captum.attr import NoiseTunnel as CaptumNoiseTunnel
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

import noisegrad
from glibc_malloc import KEEP_FREED_MEMORY, allocator_environment, freed_memory_kept, malloc_settings

VARIANTS = ("captum", "noisegrad", "minimal")
METHODS = ("Saliency", "InputXGradient", "IntegratedGradients")
#: How far a variant's smoothgrad mean may lie from Captum's, in units of the L2 distance two independent runs have
#: (sqrt(2 Σ var / n)); measured: 0.97–1.10 of it on the CNN and the transformer at σ = 0.1 and 1.0.
SANITY_TOLERANCE = 1.5
TIME_TOLERANCE_VS_MINIMAL = 1.05


@dataclass
class Config:
    nt_type: str = "vargrad"
    nt_samples: int = 16
    nt_samples_batch_size: int = 8
    stdevs: float = 0.1
    n_steps: int = 8
    sanity_samples: int = 64


# --------------------------------------------------------------------------- workloads


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class SmallResNet(nn.Module):
    def __init__(self, channels: int = 16, blocks: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.head = nn.Linear(channels, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class SmallTransformer(nn.Module):
    """Float token embeddings (batch, 16, 32) -> 2 encoder layers -> mean pool -> linear head."""

    def __init__(self, dim: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


@dataclass
class Workload:
    name: str
    model: nn.Module
    inputs: Tensor  # float32, the largest batch used; a method uses its first rows
    target: Tensor  # one class per example
    ig_batch: int  # IntegratedGradients multiplies the rows by n_steps, so it gets a smaller batch

    def batch_for(self, method: str) -> int:
        return self.ig_batch if method == "IntegratedGradients" else self.inputs.shape[0]


def build_workloads(quick: bool, device: str = "cpu") -> List[Workload]:
    """Random-init models (fixed seed, eval mode) on ``device``; batch sizes give calls of roughly 20-300 ms on 2
    cores."""
    specs = [  # name, model, example shape, batch, IG batch
        ("cnn", SmallCNN, (3, 32, 32), 16, 4),
        ("resnet", SmallResNet, (3, 32, 32), 8, 2),
        ("mlp", mlp, (64,), 1024, 256),
        ("transformer", SmallTransformer, (16, 32), 32, 16),
    ]
    workloads = []
    for i, (name, factory, shape, batch, ig_batch) in enumerate(specs):
        torch.manual_seed(i)
        model = factory().eval()
        if quick:
            batch, ig_batch = max(1, batch // 2), max(1, ig_batch // 2)
        inputs = torch.randn((batch,) + shape)
        target = torch.randint(0, 10, (batch,))
        workloads.append(Workload(name, model.to(device), inputs.to(device), target.to(device), ig_batch))
    return workloads


def make_method(name: str, model: nn.Module):
    return {"Saliency": Saliency, "InputXGradient": InputXGradient, "IntegratedGradients": IntegratedGradients}[name](
        model
    )


def method_kwargs(name: str, cfg: Config) -> Dict[str, object]:
    if name == "Saliency":
        return {"abs": True}  # Captum's default, stated explicitly; the minimal loop does the same
    if name == "IntegratedGradients":
        return {"n_steps": cfg.n_steps, "method": "gausslegendre"}
    return {}


# --------------------------------------------------------------------------- the minimal loop


def minimal_attribution(model: nn.Module, method: str, noisy: Tensor, target_rows: Tensor, cfg: Config) -> Tensor:
    """One chunk's attributions: one forward, one autograd.grad of the summed selected outputs."""
    if method == "IntegratedGradients":
        step_sizes_fn, alphas_fn = approximation_parameters("gausslegendre")
        steps = cfg.n_steps
        view = (steps,) + (1,) * noisy.dim()
        alphas = torch.tensor(alphas_fn(steps), dtype=noisy.dtype, device=noisy.device).view(view)
        step_sizes = torch.tensor(step_sizes_fn(steps), dtype=noisy.dtype, device=noisy.device).view(view)
        baseline = torch.zeros_like(noisy[:1])
        scaled = (baseline + alphas * (noisy - baseline)).reshape((steps * noisy.shape[0],) + noisy.shape[1:])
        scaled.requires_grad_()
        selected = model(scaled).gather(1, target_rows.repeat(steps)[:, None])
        (grads,) = torch.autograd.grad(selected.sum(), scaled)
        total = (grads.view((steps,) + noisy.shape) * step_sizes).sum(dim=0)
        return total * (noisy - baseline)
    noisy.requires_grad_()
    selected = model(noisy).gather(1, target_rows[:, None])
    (grads,) = torch.autograd.grad(selected.sum(), noisy)
    if method == "Saliency":
        return grads.abs()
    return grads * noisy.detach()  # InputXGradient


def minimal_tunnel(model: nn.Module, method: str, x: Tensor, target: Tensor, cfg: Config, nt_type: str,
                   nt_samples: int) -> Tensor:
    """Chunked noise smoothing with nothing but repeat_interleave, randn, one grad and sums."""
    batch = x.shape[0]
    total = total_sq = None
    done = 0
    while done < nt_samples:
        k = min(cfg.nt_samples_batch_size, nt_samples - done)
        noisy = x.repeat_interleave(k, 0) + cfg.stdevs * torch.randn((batch * k,) + x.shape[1:], dtype=x.dtype,
                                                                     device=x.device)
        attribution = minimal_attribution(model, method, noisy, target.repeat_interleave(k, 0), cfg)
        per_example = attribution.view((batch, k) + x.shape[1:])
        chunk_sum, chunk_sq = per_example.sum(dim=1), (per_example * per_example).sum(dim=1)
        total = chunk_sum if total is None else total + chunk_sum
        total_sq = chunk_sq if total_sq is None else total_sq + chunk_sq
        done += k
    mean = total / nt_samples
    if nt_type == "smoothgrad":
        return mean
    if nt_type == "smoothgrad_sq":
        return total_sq / nt_samples
    return total_sq / nt_samples - mean * mean  # vargrad, as Captum computes it


# --------------------------------------------------------------------------- variants


def make_variants(workload: Workload, method: str, cfg: Config, nt_type: str,
                  nt_samples: int) -> Dict[str, Callable[[], Tensor]]:
    """Zero-argument callables, one per implementation, all computing the same smoothing."""
    batch = workload.batch_for(method)
    x, target = workload.inputs[:batch], workload.target[:batch]
    kwargs = dict(method_kwargs(method, cfg), target=target)
    captum_nt = CaptumNoiseTunnel(make_method(method, workload.model))
    noisegrad_nt = noisegrad.NoiseTunnel(make_method(method, workload.model))
    common = dict(nt_type=nt_type, nt_samples=nt_samples, nt_samples_batch_size=cfg.nt_samples_batch_size,
                  stdevs=cfg.stdevs)
    return {
        "captum": lambda: captum_nt.attribute(x, **common, **kwargs),
        "noisegrad": lambda: noisegrad_nt.attribute(x, **common, seed=0, **kwargs),
        "unseeded": lambda: noisegrad_nt.attribute(x, **common, **kwargs),  # the global RNG's noise, as Captum
        "minimal": lambda: minimal_tunnel(workload.model, method, x, target, cfg, nt_type, nt_samples),
    }


# --------------------------------------------------------------------------- timing


class ForeignLoad:
    """CPU time used by other processes: busy ticks of /proc/stat minus this process's own ticks.

    The machine is shared; with torch's default of one thread per core, any
    other busy process stalls the intra-op thread pool and inflates a call
    several-fold. Repetitions during which others used the CPU are flagged.
    """

    def __init__(self) -> None:
        self.available = os.path.exists("/proc/stat") and os.path.exists("/proc/self/stat")
        self.tick = 1.0 / os.sysconf("SC_CLK_TCK") if self.available else 0.0

    def snapshot(self) -> Tuple[int, int]:
        if not self.available:
            return 0, 0
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return busy, int(own[11]) + int(own[12])  # utime + stime (fields 14 and 15)

    def foreign_seconds(self, before: Tuple[int, int], after: Tuple[int, int]) -> float:
        return max(0, (after[0] - before[0]) - (after[1] - before[1])) * self.tick


@dataclass
class Timings:
    times: Dict[str, List[float]]  # seconds per call, one entry per repetition (all repetitions)
    clean: List[bool]  # per repetition: no other process used the CPU meanwhile
    process: Optional[List[int]] = None  # per repetition: which worker process ran it (``--processes``)

    def _kept(self) -> List[bool]:
        return self.clean if sum(self.clean) >= 3 else [True] * len(self.clean)

    def used(self) -> Dict[str, List[float]]:
        """The clean repetitions if there are at least 3 of them, else all."""
        keep = self._kept()
        return {k: [t for t, ok in zip(v, keep) if ok] for k, v in self.times.items()}

    def used_processes(self) -> Optional[List[int]]:
        """The worker process of each repetition :meth:`used` keeps, or None when one process ran them all."""
        if self.process is None:
            return None
        return [p for p, ok in zip(self.process, self._kept()) if ok]


def time_interleaved(variants: Dict[str, Callable[[], Tensor]], repeats: int, warmup: int,
                     load: ForeignLoad) -> Timings:
    """Seconds per call; each repetition calls every variant once, the order rotating by one each time.

    Repetitions during which other processes used more than 5 % of a core
    (plus two clock ticks of slack) are flagged and redone, up to 3 × repeats
    repetitions in all.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: Dict[str, List[float]] = {name: [] for name in names}
    clean: List[bool] = []
    rep = 0
    while sum(clean) < repeats and rep < 3 * repeats:
        shift = rep % len(names)
        before, wall = load.snapshot(), 0.0
        for name in names[shift:] + names[:shift]:
            gc.collect()
            settle()
            start = time.perf_counter()
            variants[name]()
            settle()
            elapsed = time.perf_counter() - start
            times[name].append(elapsed)
            wall += elapsed
        foreign = load.foreign_seconds(before, load.snapshot())
        clean.append(foreign <= 0.05 * wall + 2 * load.tick)
        rep += 1
    return Timings(times, clean)


def machine_line() -> str:
    """A report's "- date: ..." line: when, which code and versions, which CPU and threads, which allocator."""
    return (f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}; noisegrad {noisegrad_revision()}, torch "
            f"{torch.__version__}, Python {platform.python_version()}; CPU: {cpu_model()}, torch.get_num_threads() = "
            f"{torch.get_num_threads()}; load average (1 min): {os.getloadavg()[0]:.2f}; glibc keeps freed memory: "
            f"{freed_memory_kept()}")


def time_in_processes(workload: str, method: str, args: argparse.Namespace) -> Timings:
    """:func:`time_interleaved` in ``args.processes`` fresh worker processes, one after another, pooled.

    Each worker builds the workloads anew, warms up and runs its share of the
    repetitions (the same interleaving); the repetitions keep their worker's
    number, so that :func:`ratio_stats` can resample whole processes. A
    process's own state (where the allocator put the buffers, which core the
    threads landed on) then counts as the run-to-run noise it is, instead of
    being pinned down in a single process. With ``args.keep_freed_memory``
    the workers start with :data:`KEEP_FREED_MEMORY` in their environment.
    """
    per_process = -(-args.repeats // args.processes)
    command = [sys.executable, os.path.abspath(__file__), "--worker", f"{workload},{method}", "--repeats",
               str(per_process), "--warmup", str(args.warmup), "--nt-type", args.nt_type, "--device", args.device,
               "--stdevs", repr(args.stdevs)]
    if args.quick:
        command.append("--quick")
    env = allocator_environment(args.keep_freed_memory)
    pooled = Timings({}, [], [])
    for index in range(args.processes):
        part = worker_result(command, env, f"worker process {index + 1} of {args.processes} ({workload}, {method})")
        for name, seconds in part["times"].items():
            pooled.times.setdefault(name, []).extend(seconds)
        pooled.clean.extend(part["clean"])
        pooled.process.extend([index] * len(part["clean"]))
    return pooled


def worker_result(command: List[str], env: Dict[str, str], label: str) -> dict:
    """Run a worker process; its result is the JSON on the last line of its stdout. A worker that fails or prints
    nothing stops the benchmark with its own stderr (its traceback is there: shown, not dropped)."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed with exit status {done.returncode}: {' '.join(command)}\n"
                         f"{done.stderr.strip()}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"{label} printed no result: {' '.join(command)}\n{done.stderr.strip()}")
    return json.loads(lines[-1])


def _worker(args: argparse.Namespace) -> None:
    """One worker of :func:`time_in_processes`: its timings as JSON on the last line of stdout."""
    workload_name, method = args.worker.split(",")
    cfg = Config(nt_type=args.nt_type, stdevs=args.stdevs)
    workload = next(w for w in build_workloads(args.quick, args.device) if w.name == workload_name)
    timings = time_interleaved(make_variants(workload, method, cfg, cfg.nt_type, cfg.nt_samples), args.repeats,
                               args.warmup, ForeignLoad())
    print(json.dumps({"times": timings.times, "clean": timings.clean}))


def settle() -> None:
    """Wait for the GPU's queued work, if CUDA is in use, so that a call's time includes its kernels."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory allocated during one call of ``fn`` on ``device``, above what was allocated before it."""
    if device.type != "cuda":
        return peak_cpu_bytes(fn)
    gc.collect()
    settle()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    settle()
    return torch.cuda.max_memory_allocated(device) - before


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {cpu_model()}"


def ratio_stats(numerator: List[float], denominator: List[float],
                processes: Optional[List[int]] = None) -> Tuple[float, float, float, float, float]:
    """Median, min and max of the per-repetition ratios, and a 95 % percentile-bootstrap interval of the median
    (2000 resamples, a fixed seed): how far this run pins the median down.

    With ``processes`` (the worker of each repetition) the bootstrap is
    two-stage: it draws the processes with replacement, then repetitions
    within each drawn process, so the interval also covers how much a fresh
    process moves the ratio, not only the repetitions' scatter.
    """
    ratios = [a / b for a, b in zip(numerator, denominator)]
    draw = random.Random(0)
    if processes is None:
        groups = [ratios]
        resample = lambda: draw.choices(ratios, k=len(ratios))  # noqa: E731
    else:
        by_process: Dict[int, List[float]] = {}
        for ratio, process in zip(ratios, processes):
            by_process.setdefault(process, []).append(ratio)
        groups = list(by_process.values())
        resample = lambda: [r for g in draw.choices(groups, k=len(groups)) for r in draw.choices(g, k=len(g))]  # noqa: E731
    medians = sorted(statistics.median(resample()) for _ in range(2000))
    return statistics.median(ratios), min(ratios), max(ratios), medians[49], medians[1949]


# --------------------------------------------------------------------------- memory


def peak_cpu_bytes(fn: Callable[[], object]) -> int:
    """Peak of the running sum of CPU allocations (minus frees) while ``fn`` runs, in bytes.

    Reads the allocation events of the profiler's event tree (each has a signed
    ``alloc_size`` and a timestamp). ``prof.events()`` is not enough on its own:
    there only frees appear as ``[memory]`` events, allocations are folded into
    the ops' net ``self_cpu_memory_usage``, which hides temporaries.
    """
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    running = peak = 0
    for _, size in sorted(events):
        running += size
        peak = max(peak, running)
    return peak


def verify_memory_method() -> None:
    """The peak measurement must give known answers on toy cases before it is trusted."""
    mb4 = 1024 * 1024  # float32 elements in 4 MB

    def alloc_then_free() -> None:
        a = torch.empty(mb4)
        del a

    def overlapping() -> None:  # 4 MB + 4 MB, free one, then 8 MB: peak 12 MB
        x, y = torch.empty(mb4), torch.empty(mb4)
        del x
        z = torch.empty(2 * mb4)
        del y, z

    def temporary_inside_expression() -> Tensor:  # 4 MB kept + a 4 MB temporary (a * 2): peak 8 MB
        a = torch.ones(mb4)
        return (a * 2).sum() + a.sum()

    for fn, expected in ((alloc_then_free, 4 << 20), (overlapping, 12 << 20), (temporary_inside_expression, 8 << 20)):
        measured = peak_cpu_bytes(fn)
        # small scalars (a few bytes each) may come on top
        if not expected <= measured <= expected + 4096:
            raise RuntimeError(f"memory method check failed for {fn.__name__}: expected {expected}, got {measured}")
    print("memory method verified on toy cases (4 MB, 12 MB, 8 MB peaks measured as expected)")


# --------------------------------------------------------------------------- sanity check


def sanity_check(variants: Dict[str, Callable[[], Tensor]], variance: Callable[[], Tensor],
                 samples: int) -> Dict[str, object]:
    """Shapes equal and smoothgrad means of ``samples`` samples as close to Captum's as independent noise allows.

    Two independent means of ``n`` samples differ by about ``sqrt(2 Σ var / n)``
    in L2, ``var`` the per-element variance of one sample's attribution
    (``variance``: Captum's VarGrad on as many samples). ``rel`` and ``noise``
    are that difference and that yardstick relative to Captum's mean.
    """
    results = {name: fn().detach() for name, fn in variants.items()}
    reference = results["captum"]
    shapes_ok = all(r.shape == reference.shape for r in results.values())
    rel = {name: float((r - reference).norm() / reference.norm()) for name, r in results.items() if name != "captum"}
    noise = float((2 * variance().detach().double().clamp_min(0).sum() / samples).sqrt() / reference.norm())
    return {"shapes_ok": shapes_ok, "shape": tuple(reference.shape), "rel": rel, "noise": noise,
            "ok": shapes_ok and all(v <= SANITY_TOLERANCE * noise for v in rel.values())}


# --------------------------------------------------------------------------- profiling (optional)


def cprofile_top(fn: Callable[[], object], calls: int = 5, top: int = 15) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        for line in lines:
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def noisegrad_revision() -> str:
    """The commit the benchmarked noisegrad comes from, and whether its sources differ from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(noisegrad.__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "noisegrad"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"git {commit}" + (" with uncommitted changes in noisegrad/" if dirty else "")


def publish(text: str, out: Optional[str]) -> None:
    """Print a report and, if ``out`` names a file, write it there too."""
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)


def mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def build_rows(results: List[dict]) -> Tuple[List[str], List[str]]:
    """Markdown lines of the time table and the memory table."""
    time_lines = [
        "| workload | method | batch | Captum ms | noisegrad ms | minimal ms | ng/Captum median [min–max] "
        "| ng/minimal median [min–max] (95 % CI of the median) | unseeded ng/minimal median [min–max] (CI) "
        "| reps used | ng ≤ Captum "
        "| ng ≤ 1.05×minimal, seeded and unseeded |",
        "|---|---|---:|---:|---:|---:|---|---|---|---:|---|---|",
    ]
    memory_lines = [
        "| workload | method | Captum MB | noisegrad MB | minimal MB | ng/Captum | ng/minimal | ng ≤ Captum |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        t, m = r["times"], r["peaks"]
        med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
        vs_captum, vs_minimal, unseeded = r["vs_captum"], r["vs_minimal"], r["unseeded_vs_minimal"]
        used, n_clean, n_total = r["reps"]
        reps = f"{used}" if used == n_clean else f"{used} (all; only {n_clean} clean)"
        if r.get("processes") is not None:
            reps += f" in {r['processes']} processes"
        time_lines.append(
            f"| {r['workload']} | {r['method']} | {r['batch']} | {med['captum']:.1f} | {med['noisegrad']:.1f} "
            f"| {med['minimal']:.1f} | {vs_captum[0]:.3f} [{vs_captum[1]:.3f}–{vs_captum[2]:.3f}] "
            f"| {vs_minimal[0]:.3f} [{vs_minimal[1]:.3f}–{vs_minimal[2]:.3f}] (CI {vs_minimal[3]:.3f}–{vs_minimal[4]:.3f}) "
            f"| {unseeded[0]:.3f} [{unseeded[1]:.3f}–{unseeded[2]:.3f}] (CI {unseeded[3]:.3f}–{unseeded[4]:.3f}) "
            f"| {reps} "
            f"| {mark(vs_captum[0] <= 1.0)} | {mark(_near_minimal(r))} |"
        )
        mb = {k: v / 2**20 for k, v in m.items()}
        memory_lines.append(
            f"| {r['workload']} | {r['method']} | {mb['captum']:.2f} | {mb['noisegrad']:.2f} | {mb['minimal']:.2f} "
            f"| {m['noisegrad'] / m['captum']:.3f} | {m['noisegrad'] / m['minimal']:.3f} "
            f"| {mark(m['noisegrad'] <= m['captum'])} |"
        )
    return time_lines, memory_lines


def sanity_lines(results: List[dict], cfg: Config) -> List[str]:
    lines = [
        f"Sanity check (nt_type=smoothgrad, nt_samples={cfg.sanity_samples}, independent noise per variant): "
        "relative L2 difference of each variant's mean to Captum's, must be at most "
        f"{SANITY_TOLERANCE} times what two independent runs differ by (sqrt(2 Σ var / n) over the norm of "
        "Captum's mean, the variance from Captum's VarGrad on as many samples).",
        "",
        "| workload | method | shape (all variants) | noisegrad vs Captum | minimal vs Captum | independent runs "
        "differ by | ok |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        s = r["sanity"]
        shape = "×".join(map(str, s["shape"])) if s["shapes_ok"] else "MISMATCH"
        lines.append(f"| {r['workload']} | {r['method']} | {shape} | {s['rel']['noisegrad']:.3f} "
                     f"| {s['rel']['minimal']:.3f} | {s['noise']:.3f} | {'yes' if s['ok'] else '**no**'} |")
    return lines


def _near_minimal(row: dict) -> bool:
    """Both the seeded and the unseeded call within TIME_TOLERANCE_VS_MINIMAL of the minimal loop (medians)."""
    return max(row["vs_minimal"][0], row["unseeded_vs_minimal"][0]) <= TIME_TOLERANCE_VS_MINIMAL


def targets_paragraph(results: List[dict]) -> List[str]:
    n = len(results)
    faster = sum(r["vs_captum"][0] <= 1.0 for r in results)
    near_min = sum(_near_minimal(r) for r in results)
    memory = sum(r["peaks"]["noisegrad"] <= r["peaks"]["captum"] for r in results)
    both = [(r["vs_minimal"], r["unseeded_vs_minimal"]) for r in results]
    sure_met = sum(max(a[4], b[4]) <= TIME_TOLERANCE_VS_MINIMAL for a, b in both)
    sure_missed = sum(max(a[3], b[3]) > TIME_TOLERANCE_VS_MINIMAL for a, b in both)
    return [
        "Targets for noisegrad, judged per row on the medians of the per-repetition ratios:",
        f"(1) never slower than Captum (median ng/Captum ≤ 1.00) — met in {faster}/{n} rows; "
        f"(2) within 5 % of the minimal loop, seeded and unseeded (median ng/minimal ≤ 1.05 for both) — met in "
        f"{near_min}/{n} rows; "
        f"(3) peak CPU memory no higher than Captum's — met in {memory}/{n} rows. "
        "Rows marked **not met** miss the target in this run.",
        "",
        "How firmly this run decides target (2), from the 95 % bootstrap intervals of the medians: within 5 % "
        f"(both intervals at or below 1.05) in {sure_met}/{n} rows, beyond 5 % (an interval wholly above 1.05) in "
        f"{sure_missed}/{n}, undecided at this run's noise in {n - sure_met - sure_missed}/{n}.",
    ]


def write_report(path: Optional[str], command: str, cfg: Config, args: argparse.Namespace,
                 results: List[dict], time_lines: List[str], memory_lines: List[str]) -> str:
    header = [
        "# noisegrad vs Captum NoiseTunnel vs a minimal loop",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}",
        f"- torch {torch.__version__}, captum {captum.__version__}, noisegrad {noisegrad.__version__} "
        f"({args.revision}), "
        f"Python {platform.python_version()}",
        f"- {device_description(torch.device(args.device))}"
        + ("" if args.device == "cpu" else f"; CPU: {cpu_model()}") + ", torch.get_num_threads() = "
        f"{torch.get_num_threads()} (default, not set)",
        f"- settings: nt_type={cfg.nt_type}, nt_samples={cfg.nt_samples}, "
        f"nt_samples_batch_size={cfg.nt_samples_batch_size}, stdevs={cfg.stdevs}, IG n_steps={cfg.n_steps} "
        f"(gausslegendre), Saliency abs=True, float32, random-init models in eval mode, per-example targets; "
        f"{args.warmup} warm-up call(s) per variant, then {args.repeats} repetitions interleaved round-robin "
        "(rotating order); time.perf_counter; ratios computed per repetition."
        + ("" if args.processes == 1 else
           f" The repetitions of each row ran in {args.processes} fresh processes one after another "
           f"({-(-args.repeats // args.processes)} each, after their own warm-up), pooled; the 95 % intervals "
           "resample processes, then repetitions within them.")
        + ("" if not args.keep_freed_memory else
           " The timing processes ran with " + " ".join(f"`{k}={v}`" for k, v in KEEP_FREED_MEMORY.items())
           + ": glibc keeps freed memory, so no call faults its activations in afresh (ALLOCATOR.md)."),
        "- shared machine: a repetition counts as clean when other processes used at most 5 % of a core "
        "(from /proc/stat) while it ran; contended repetitions are redone (up to 3 × repeats) and left out "
        "of the statistics (\"reps used\" = clean repetitions). "
        f"Load average (1 min) before / after the run: {args.load[0][0]:.2f} / {args.load[1][0]:.2f}.",
        ("- peak memory: one call per variant after warm-up; torch.cuda.max_memory_allocated during the call "
         "minus what was allocated before it." if args.device.startswith("cuda") else
         "- peak memory: one profiled call per variant after warm-up; peak of the running sum of CPU "
         "allocation events of `torch.profiler` (profile_memory=True) during the call, verified on toy cases."),
        "",
        "## Time",
        "",
    ]
    text = "\n".join(
        header + time_lines + ["", "## Peak memory allocated during one call", ""] + memory_lines
        + ["", "## Targets", ""] + targets_paragraph(results) + ["", "## Sanity check", ""]
        + sanity_lines(results, cfg) + [""]
    )
    if path:
        with open(path, "w") as f:
            f.write(text)
    return text


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="interleaved repetitions per (workload, method)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls per variant")
    parser.add_argument("--out", default=None, help="markdown file to write (e.g. benchmarks/RESULTS.md)")
    parser.add_argument("--quick", action="store_true", help="half batches, 5 repeats, 1 warm-up, 32 sanity samples: ~1 minute")
    parser.add_argument("--nt-type", default="vargrad", choices=("smoothgrad", "smoothgrad_sq", "vargrad"),
                        help="timed nt_type (vargrad: every variant needs both moments)")
    parser.add_argument("--stdevs", type=float, default=Config.stdevs,
                        help="the noise σ of every variant (inputs are standard normal; the stock 0.1 is about 1.5 %% "
                             "of their range, and nearly identical copies make max pooling faster in Captum's row "
                             "order: benchmarks/ROW_ORDER.md)")
    parser.add_argument("--workloads", default="cnn,resnet,mlp,transformer")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU (models and inputs moved there)")
    parser.add_argument("--processes", type=int, default=1,
                        help="time each (workload, method) in this many fresh processes, one after another, and pool "
                             "them (the repetitions are shared out; the confidence intervals resample processes)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="time in worker processes started with glibc's MALLOC_MMAP_THRESHOLD_ and "
                             "MALLOC_TRIM_THRESHOLD_ at 4 GiB: freed memory stays in the process, so calls do not "
                             "fault their activations in afresh (Linux; see benchmarks/ALLOCATOR.md)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one process of --processes
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile top functions of noisegrad and minimal for rows slower than 1.05x minimal")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}")
    settings = malloc_settings(os.environ)
    if args.worker is None and args.processes > 1 and settings and not args.keep_freed_memory:
        parser.error(f"the worker processes of --processes {args.processes} start with glibc's default allocator, "
                     f"not with this environment's {' '.join(sorted(settings))}: unset them, or pass "
                     "--keep-freed-memory to time with glibc keeping freed memory")
    if args.quick and args.worker is None:
        args.repeats, args.warmup = min(args.repeats, 5), 1
    return args


def report_header(title: str, command: str) -> List[str]:
    """A report's first lines: its title, the command that made it, and :func:`machine_line`."""
    return [f"# {title}", "", f"- command: `{command}`", machine_line()]


def command_line(argv: Optional[List[str]] = None) -> str:
    """The command that ran this benchmark, as printed beside its results (with glibc's malloc settings, if any)."""
    allocator = [f"{name}={value}" for name, value in malloc_settings(os.environ).items()]
    return " ".join(allocator + ["python", sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        _worker(args)
        return
    command = command_line(argv)
    cfg = Config(nt_type=args.nt_type, stdevs=args.stdevs, sanity_samples=32 if args.quick else 64)
    verify_memory_method()
    load = ForeignLoad()
    load_before = os.getloadavg()
    args.revision = noisegrad_revision()  # taken at start: the sources imported are the ones of this moment
    wanted = set(args.workloads.split(","))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA GPU (torch {torch.__version__})")
    workloads = [w for w in build_workloads(args.quick, args.device) if w.name in wanted]
    results = []
    for workload in workloads:
        for method in args.methods.split(","):
            variants = make_variants(workload, method, cfg, cfg.nt_type, cfg.nt_samples)
            if args.processes > 1 or args.keep_freed_memory:
                timings = time_in_processes(workload.name, method, args)
            else:
                timings = time_interleaved(variants, args.repeats, args.warmup, load)
            times, processes = timings.used(), timings.used_processes()
            peaks = {name: peak_bytes(fn, torch.device(args.device)) for name, fn in variants.items()}
            sanity = sanity_check(make_variants(workload, method, cfg, "smoothgrad", cfg.sanity_samples),
                                  make_variants(workload, method, cfg, "vargrad", cfg.sanity_samples)["captum"],
                                  cfg.sanity_samples)
            row = {
                "workload": workload.name, "method": method, "batch": workload.batch_for(method),
                "times": times, "peaks": peaks, "sanity": sanity,
                "reps": (len(times["captum"]), sum(timings.clean), len(timings.clean)),
                "processes": None if processes is None else len(set(processes)),  # those the repetitions came from
                "vs_captum": ratio_stats(times["noisegrad"], times["captum"], processes),
                "vs_minimal": ratio_stats(times["noisegrad"], times["minimal"], processes),
                "unseeded_vs_minimal": ratio_stats(times["unseeded"], times["minimal"], processes),
            }
            results.append(row)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            print(f"{workload.name:12s} {method:20s} captum {med['captum']:7.1f} ms  noisegrad {med['noisegrad']:7.1f} ms"
                  f"  minimal {med['minimal']:7.1f} ms  ng/captum {row['vs_captum'][0]:.3f}"
                  f"  ng/minimal {row['vs_minimal'][0]:.3f}  unseeded {row['unseeded_vs_minimal'][0]:.3f}  clean reps {row['reps'][1]}/{row['reps'][2]}"
                  f"  sanity {'ok' if sanity['ok'] else 'FAILED'}", flush=True)
            if args.profile and row["vs_minimal"][0] > TIME_TOLERANCE_VS_MINIMAL:
                for name in ("noisegrad", "minimal"):
                    print(f"--- cProfile, {name}, {workload.name} {method}, 5 calls ---")
                    print(cprofile_top(variants[name]))
    args.load = (load_before, os.getloadavg())
    time_lines, memory_lines = build_rows(results)
    text = write_report(args.out, command, cfg, args, results, time_lines, memory_lines)
    print()
    print(text)
    if not all(r["sanity"]["ok"] for r in results):
        print("WARNING: sanity check failed for some rows", file=sys.stderr)


if __name__ == "__main__":
    main()

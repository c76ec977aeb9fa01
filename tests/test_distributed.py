"""Two real processes (gloo on CPU): Moments.all_reduce equals one float64 two-pass over all their samples, and a
batch split between the processes by example id gets the results one process gives it."""

import datetime
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2
SAMPLES_PER_RANK = (7, 13)  # unequal, so a plain average of the ranks' means would be wrong
OFFSET = 1e3  # float32 values far from zero against a unit spread: E[a²] − E[a]² would cancel
TIMEOUT_SECONDS = 60
PACKAGE = Path(__file__).resolve().parents[1] / "noisegrad"

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


def _import_moments():
    """This checkout's ``noisegrad.stats.moments``, without running ``noisegrad/__init__.py``.

    The package's ``__init__`` imports Captum and matplotlib, which doubles
    the time a rank takes to start and to exit; Moments needs only torch.
    """
    if "noisegrad" not in sys.modules:
        package = types.ModuleType("noisegrad")
        package.__path__ = [str(PACKAGE)]
        sys.modules["noisegrad"] = package
    from noisegrad.stats.moments import Moments

    return Moments


def _all_reduce_on_rank(rank, rendezvous, directory):
    """One process: update Moments with this rank's own samples, all-reduce, and save what it then holds."""
    Moments = _import_moments()
    assert Path(sys.modules["noisegrad.stats.moments"].__file__).resolve().parents[1] == PACKAGE
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS),
    )
    try:
        samples = torch.load(directory / "samples.pt", weights_only=True)[rank]
        full, mean_only = Moments(), Moments(track_m2=False)
        for chunk in samples.split(5, dim=1):  # several chunks: each rank's own state is already a merge
            full.update(chunk)
            mean_only.update(chunk)
        full.all_reduce()
        mean_only.all_reduce()
        torch.save({"full": full.state_dict(), "mean_only": mean_only.state_dict()}, directory / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_two_processes(directory, on_rank=_all_reduce_on_rank):
    """Spawn the ranks, wait for both within the timeout, and kill them if they hang."""
    context = mp.start_processes(
        on_rank, args=(directory / "rendezvous", directory), nprocs=WORLD_SIZE, join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_SECONDS
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):  # raises if a rank raised
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD_SIZE} ranks did not finish within {TIMEOUT_SECONDS} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()
    return [torch.load(directory / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]


def test_all_reduce_gives_every_rank_the_moments_of_all_samples(tmp_path):
    generator = torch.Generator().manual_seed(0)
    samples = (OFFSET + torch.randn(3, sum(SAMPLES_PER_RANK), 4, generator=generator, dtype=torch.float64)).float()
    torch.save(list(samples.split(SAMPLES_PER_RANK, dim=1)), tmp_path / "samples.pt")

    states = run_on_two_processes(tmp_path)

    reference = samples.double()  # the float32 samples themselves, reduced in float64 in two passes
    mean = reference.mean(dim=1)
    variance = ((reference - mean.unsqueeze(1)) ** 2).mean(dim=1)
    full = states[0]["full"]
    assert full["count"] == sum(SAMPLES_PER_RANK)
    torch.testing.assert_close(full["mean"], mean, rtol=1e-10, atol=0)
    torch.testing.assert_close(full["m2"] / full["count"], variance, rtol=1e-6, atol=0)

    mean_only = states[0]["mean_only"]
    assert mean_only["count"] == sum(SAMPLES_PER_RANK) and mean_only["m2"] is None
    # without M2 a chunk's mean is taken in the samples' float32, uncentred: at most one float32 rounding
    # (2^-24 relative) per addition of a chunk of 5 and one for the division
    torch.testing.assert_close(mean_only["mean"], mean, rtol=5 * 2**-24, atol=0)

    for name in ("full", "mean_only"):
        for key in ("count", "mean", "m2"):
            theirs, ours = states[1][name][key], states[0][name][key]
            assert theirs == ours if not torch.is_tensor(ours) else torch.equal(theirs, ours), (name, key)


def _attribute_half_on_rank(rank, rendezvous, directory):
    """One process: attribute its examples (every other one), gather all ranks' results, and save them."""
    from captum.attr import Saliency

    from noisegrad import NoiseTunnel

    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS),
    )
    try:
        x = torch.load(directory / "x.pt", weights_only=True)
        ids = torch.arange(rank, x.shape[0], WORLD_SIZE)
        sampler = (directory / "sampler").read_text()
        result = NoiseTunnel(Saliency(_model())).attribute(x[ids], example_ids=ids, **_split_kwargs(sampler))
        gathered = [None] * WORLD_SIZE
        dist.all_gather_object(gathered, (ids, result.attributions, result.stderr))
        torch.save(gathered, directory / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double().eval()


def _split_kwargs(sampler):
    return dict(nt_samples=8, stdevs=0.3, target=1, seed=11, sampler=sampler, return_stderr=True,
                nt_samples_batch_size=3)


@pytest.mark.parametrize("sampler", ["iid", "lhs"])
def test_a_batch_split_across_processes_by_example_id_gets_the_results_of_one_process(tmp_path, sampler):
    from captum.attr import Saliency

    from noisegrad import NoiseTunnel

    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    (tmp_path / "sampler").write_text(sampler)

    gathered = run_on_two_processes(tmp_path, _attribute_half_on_rank)

    one_process = NoiseTunnel(Saliency(_model())).attribute(x, **_split_kwargs(sampler))
    attributions, stderr = torch.empty_like(x), torch.empty_like(x)
    for ids, rank_attributions, rank_stderr in gathered[0]:
        attributions[ids], stderr[ids] = rank_attributions, rank_stderr
    torch.testing.assert_close(attributions, one_process.attributions, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(stderr, one_process.stderr, rtol=1e-10, atol=1e-14)

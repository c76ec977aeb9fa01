"""The CUDA paths: device placement, pinned Sobol points, out-of-memory halving on a real CUDA error, and no host
synchronisation per chunk. Skipped without a GPU; ``benchmarks/gpu_run.sh`` runs them first on a machine with one."""

import warnings

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency

from noisegrad import NoiseTunnel, relative

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SAMPLERS = ("iid", "antithetic", "qmc", "lhs")


def make_cnn(channels: int = 8, side: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(channels * side * side, 10),
    ).eval()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_gives_on_cuda_what_it_gives_on_the_cpu_and_keeps_results_on_the_device(sampler):
    model, x = make_cnn(), torch.rand(3, 3, 16, 16)
    target = torch.tensor([1, 4, 7])
    kwargs = dict(nt_samples=16, nt_samples_batch_size=4, stdevs=relative(0.15), sampler=sampler, seed=3,
                  return_stderr=True)
    on_cpu = NoiseTunnel(Saliency(model)).attribute(x, target=target, **kwargs)
    on_cuda = NoiseTunnel(Saliency(model.cuda())).attribute(x.cuda(), target=target.cuda(), **kwargs)
    for field in (on_cuda.attributions, on_cuda.stderr, on_cuda.relative_stderr):
        assert field.device.type == "cuda"
    # the same noise bits on both devices (the keyed generator; QMC's Sobol points come through pinned memory)
    torch.testing.assert_close(on_cuda.attributions.cpu(), on_cpu.attributions, rtol=1e-4, atol=1e-5)


def test_auto_chunks_and_stopping_run_on_the_device():
    model, x = make_cnn().cuda(), torch.rand(4, 3, 16, 16, device="cuda")
    result = NoiseTunnel(Saliency(model)).attribute(
        x, nt_samples="auto", tol=0.2, nt_samples_batch_size="auto", stdevs=relative(0.15),
        target=torch.tensor([0, 1, 2, 3], device="cuda"), sampler="antithetic", seed=0)
    assert result.attributions.device.type == "cuda" and result.nt_samples.device.type == "cuda"
    assert bool(result.converged.all())


def _synchronisations(call) -> int:
    """How many synchronising CUDA operations ``call`` makes (torch's sync debug mode, counted as warnings)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("method", ["saliency", "ig"])
def test_more_chunks_make_no_more_host_synchronisations(sampler, method):
    model, x = make_cnn().cuda(), torch.rand(2, 3, 16, 16, device="cuda")
    target = torch.tensor([2, 5], device="cuda")
    wrapped = Saliency(model) if method == "saliency" else IntegratedGradients(model)
    nt = NoiseTunnel(wrapped)
    extra = {"n_steps": 4} if method == "ig" else {}

    def call(chunks: int):
        return lambda: nt.attribute(x, nt_samples=4 * chunks, nt_samples_batch_size=4, stdevs=0.1, target=target,
                                    sampler=sampler, seed=0, **extra)

    call(2)()  # warm-up: lazy initialisation and caches are not the loop's
    two, eight = _synchronisations(call(2)), _synchronisations(call(8))
    assert eight == two, f"{eight - two} more synchronisations with 6 more chunks"


def test_a_real_out_of_memory_error_halves_the_chunk_and_leaves_the_result_as_it_was():
    model, x = make_cnn(channels=32, side=64).cuda(), torch.rand(4, 3, 64, 64, device="cuda")
    target = torch.tensor([0, 3, 6, 9], device="cuda")
    nt = NoiseTunnel(Saliency(model))
    kwargs = dict(nt_samples=32, stdevs=0.1, target=target, seed=1)
    expected = nt.attribute(x, nt_samples_batch_size=2, **kwargs)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    nt.attribute(x, nt_samples_batch_size=4, **kwargs)
    four = torch.cuda.max_memory_allocated() - before  # what a chunk of 4 needs; 32 at once needs about 8 times it
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(x.device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved() + 2 * four) / total))
    try:
        with pytest.warns(RuntimeWarning, match="out of memory"):
            halved = nt.attribute(x, nt_samples_batch_size=32, **kwargs)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    torch.testing.assert_close(halved, expected, rtol=1e-5, atol=1e-6)


def test_joint_layer_ig_with_device_ids_gives_what_it_gives_on_one_device():
    """``device_ids`` (DataParallel) takes Captum's gather-and-scatter layer hooks; without them the layers are hooked
    for the calling thread only (tests/test_joint.py). Both give the same joint estimate."""
    from captum.attr import LayerIntegratedGradients

    from noisegrad.estimators.joint_ig import joint_integrated_gradients

    model, x = make_cnn().cuda(), torch.rand(3, 3, 16, 16, device="cuda")
    common = dict(nt_samples=6, nt_samples_batch_size=4, stdevs=0.1, target=2, seed=1, return_convergence_delta=True)
    alone = joint_integrated_gradients(LayerIntegratedGradients(model, model[1]), x, **common)
    scattered = joint_integrated_gradients(LayerIntegratedGradients(model, model[1], device_ids=[0]), x, **common)
    torch.testing.assert_close(scattered, alone, rtol=1e-5, atol=1e-6)

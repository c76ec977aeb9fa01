"""smoothgrad / smoothgrad_sq / vargrad: NoiseTunnel(Saliency) with the best measured defaults."""

import re

import pytest
import torch
from captum.attr import Saliency

from conftest import make_mlp
from noisegrad import NoiseTunnel, SmoothedAttribution, relative, smoothgrad, smoothgrad_sq, vargrad
from noisegrad.frontends import AUTO_SAMPLER, BEST_SAMPLER, FALLBACK_SAMPLER

X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


FUNCTIONS = [(smoothgrad, "smoothgrad", False), (smoothgrad, "smoothgrad", True),
             (smoothgrad_sq, "smoothgrad_sq", False), (vargrad, "vargrad", False)]


@pytest.mark.parametrize("function, nt_type, absolute", FUNCTIONS)
def test_front_ends_are_the_tunnel_with_relative_noise_50_samples_and_the_best_sampler(function, nt_type, absolute):
    model = make_mlp()
    extra = {"absolute": absolute} if function is smoothgrad else {}
    ours = function(model, X, target=1, seed=3, **extra)
    expected = NoiseTunnel(Saliency(model)).attribute(
        X, nt_type=nt_type, nt_samples=50, stdevs=relative(0.15), sampler=BEST_SAMPLER[(nt_type, absolute)],
        target=1, abs=absolute, seed=3,
    )
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-15)


def test_the_tunnel_itself_keeps_captums_iid_default():
    model = make_mlp()
    default = NoiseTunnel(Saliency(model)).attribute(X, target=0, seed=1)
    iid = NoiseTunnel(Saliency(model)).attribute(X, target=0, seed=1, sampler="iid")
    assert torch.equal(default, iid)


def _front_end_and_tunnel(function, nt_type, absolute, sampler, **options):
    model = make_mlp()
    extra = {"absolute": absolute} if function is smoothgrad else {}
    result = function(model, X, target=0, seed=0, **extra, **options)
    expected = NoiseTunnel(Saliency(model)).attribute(
        X, **{"nt_samples": 50, **options}, nt_type=nt_type, stdevs=relative(0.15), sampler=sampler, target=0,
        abs=absolute, seed=0,
    )
    assert isinstance(result, SmoothedAttribution)
    torch.testing.assert_close(result.attributions, expected.attributions, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(result.stderr, expected.stderr, rtol=1e-12, atol=1e-15)
    return result


@pytest.mark.parametrize("function, nt_type, absolute", FUNCTIONS)
def test_standard_errors_swap_the_latin_hypercube_for_the_fallback(function, nt_type, absolute):
    """A fixed-count hypercube's standard error would rest on 4 replicates (3 dof); the fallback's has 8 groups."""
    result = _front_end_and_tunnel(function, nt_type, absolute, FALLBACK_SAMPLER[nt_type], return_stderr=True)
    assert int(result.dof) == 7  # 8 groups: of antithetic pairs, or of i.i.d. samples (the jackknife's)


@pytest.mark.parametrize("function, nt_type, absolute", FUNCTIONS)
def test_auto_samples_take_the_auto_sampler(function, nt_type, absolute):
    result = _front_end_and_tunnel(function, nt_type, absolute, AUTO_SAMPLER[(nt_type, absolute)],
                                   nt_samples="auto", tol=0.2)
    assert AUTO_SAMPLER[(nt_type, absolute)] in ("lhs", FALLBACK_SAMPLER[nt_type])
    if AUTO_SAMPLER[(nt_type, absolute)] == "lhs":  # blocks of 4: checks after whole blocks
        assert bool((result.nt_samples % 4 == 0).all())


@pytest.mark.parametrize("draws", ["auto", 4])
@pytest.mark.parametrize("function, nt_type", [(smoothgrad, "smoothgrad"), (smoothgrad_sq, "smoothgrad_sq"),
                                               (vargrad, "vargrad")])
def test_weight_draws_until_converged_take_the_fallback_too(function, nt_type, draws):
    """weight_noise(draws="auto") stops on a standard error as nt_samples="auto" does: a hypercube would spread one
    design over all draws (refused, naming a sampler the caller never gave); with a fixed number of draws it stays."""
    from noisegrad import weight_noise

    model = make_mlp()
    options = dict(nt_samples=2, target=0, seed=0, weight_noise=weight_noise(0.2, draws=draws))
    if draws == "auto":
        options.update(tol=0.3, max_samples=64)
    result = function(model, X, **options)
    sampler = FALLBACK_SAMPLER[nt_type] if draws == "auto" else BEST_SAMPLER[(nt_type, False)]
    expected = NoiseTunnel(Saliency(model)).attribute(X, nt_type=nt_type, stdevs=relative(0.15), sampler=sampler,
                                                      abs=False, **options)
    if draws == "auto":
        assert isinstance(result, SmoothedAttribution) and torch.equal(result.nt_samples, expected.nt_samples)
        result, expected = result.attributions, expected.attributions
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-15)


#: Each front-end setting, (nt_type, absolute), as the benchmark tables name it.
SETTINGS = {("smoothgrad", False): "SmoothGrad, signed", ("smoothgrad", True): "SmoothGrad, absolute",
            ("smoothgrad_sq", False): "SmoothGrad²", ("vargrad", False): "VarGrad"}


def _samples_needed_at_32() -> dict:
    """benchmarks/SAMPLERS.md's first table: (setting, sampler) → samples needed for i.i.d.'s error at 32, summed
    over the models."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "SAMPLERS.md").read_text()
    table = text.split("## Samples needed to match i.i.d. at 32 and 64", 1)[1].split("\n## ", 1)[0]
    needed: dict = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.match(r"^[0-9.]+ \(", cells[3]):
            key = (cells[1], cells[2])
            needed[key] = needed.get(key, 0.0) + float(cells[3].split()[0])
    return needed


def test_the_default_samplers_are_the_ones_samplers_md_measured_best():
    """The front-ends' defaults follow the published measurement: if a re-run of bench_samplers.py changes the
    winner, this fails until BEST_SAMPLER (and the README) follow it."""
    needed = _samples_needed_at_32()
    assert len(needed) == 12, sorted(needed)  # 4 settings × 3 samplers, each on both models
    for key, setting in SETTINGS.items():
        best = min(("antithetic", "qmc", "lhs"), key=lambda sampler: needed[(setting, sampler)])
        assert BEST_SAMPLER[key] == best, (key, {s: needed[(setting, s)] for s in ("antithetic", "qmc", "lhs")})
        # the fallback: antithetic pairs (8 jackknife groups) where they beat i.i.d. noise (32 per model), else i.i.d.
        beats_iid = needed[(setting, "antithetic")] < 2 * 32
        assert FALLBACK_SAMPLER[key[0]] == ("antithetic" if beats_iid else "iid"), needed[(setting, "antithetic")]


def _auto_lhs_table() -> dict:
    """benchmarks/AUTO_LHS.md: (statistic, sampler) → [(samples, error)] over its workloads and targets."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "AUTO_LHS.md").read_text()
    rows: dict = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[5].isdigit():
            rows.setdefault((cells[1], cells[4]), []).append((float(cells[5]), float(cells[6])))
    return rows


def test_the_auto_samplers_are_the_ones_auto_lhs_md_measured_better():
    """The hypercube blocks as shipped (B = AUTO_BLOCK, first check as tunnel._first_check) are the default with
    "auto" exactly where benchmarks/AUTO_LHS.md has them needing fewer samples in total than the fallback over its
    workloads and targets, with no more samples × error² (the samples for a given error, as error² ∝ 1/n)."""
    from noisegrad.sampling.samplers import AUTO_BLOCK, NoiseSampler
    from noisegrad.tunnel import _first_check
    from noisegrad import SampleSeeds

    rows = _auto_lhs_table()
    shipped = f"lhs, B = {AUTO_BLOCK}, first check {_first_check(NoiseSampler('lhs', SampleSeeds(0), 1, blocks=True))}"
    for key, setting in SETTINGS.items():
        fallback, blocks = rows[(setting, FALLBACK_SAMPLER[key[0]])], rows[(setting, shipped)]
        assert len(fallback) == len(blocks) >= 3, (setting, fallback, blocks)  # every workload and target
        fewer = sum(n for n, _ in blocks) < sum(n for n, _ in fallback)
        no_worse = sum(n * e**2 for n, e in blocks) <= sum(n * e**2 for n, e in fallback)
        assert AUTO_SAMPLER[key] == ("lhs" if fewer and no_worse else FALLBACK_SAMPLER[key[0]]), (setting, blocks,
                                                                                                  fallback)
    assert AUTO_SAMPLER[("smoothgrad_sq", True)] == AUTO_SAMPLER[("smoothgrad_sq", False)]  # abs changes nothing
    assert AUTO_SAMPLER[("vargrad", True)] == AUTO_SAMPLER[("vargrad", False)]


def test_saliencys_abs_keyword_points_to_absolute():
    import pytest
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(TypeError, match="absolute=True"):
        smoothgrad(model, torch.rand(2, 4), target=0, abs=True)


@pytest.mark.parametrize("function, wanted", [(smoothgrad_sq, "the square"), (vargrad, r"NoiseTunnel\(Saliency")])
def test_absolute_given_to_a_front_end_without_it_is_refused_naming_it(function, wanted):
    """smoothgrad_sq and vargrad square the signed gradient; absolute= used to fail inside a private function."""
    with pytest.raises(TypeError, match=rf"{function.__name__}\(\) takes no absolute=.*{wanted}"):
        function(make_mlp(), X, target=0, absolute=True)


@pytest.mark.parametrize("call, expected", [
    (dict(nt_samples="auto", tol=0.2), AUTO_SAMPLER[("smoothgrad", False)]),
    (dict(nt_samples="auto", tol=0.2, absolute=True), AUTO_SAMPLER[("smoothgrad", True)]),
    (dict(nt_samples=8, return_stderr=True), FALLBACK_SAMPLER["smoothgrad"]),
    (dict(nt_samples=8, return_stderr=True, sampler="qmc"), "qmc"),
])
def test_a_front_end_result_says_which_sampler_it_drew_with(call, expected, tmp_path):
    model = make_mlp()
    result = smoothgrad(model, torch.randn(3, 5, dtype=torch.float64), target=0, seed=0, **call)
    said = {"nt_type": "smoothgrad", "absolute": call.get("absolute", False), "sampler": expected}
    assert said.items() <= result.config.items()
    result.save(tmp_path / "r")
    assert SmoothedAttribution.load(tmp_path / "r").config == result.config


@pytest.mark.parametrize("function, wanted", [(smoothgrad_sq, "the square"), (vargrad, r"NoiseTunnel\(Saliency")])
def test_abs_given_to_a_front_end_without_absolute_does_not_point_to_absolute(function, wanted):
    # pointing to absolute=, which the same front-end then refuses, sends the user in a circle
    with pytest.raises(TypeError) as refused:
        function(make_mlp(), X, target=0, abs=True)
    assert "absolute=True" not in str(refused.value)
    assert re.search(rf"{function.__name__}\(\) takes no abs=.*{wanted}", str(refused.value))


@pytest.mark.parametrize("function", [smoothgrad, smoothgrad_sq, vargrad])
def test_nt_type_given_to_a_front_end_is_refused_naming_the_front_end(function):
    # each front-end is one nt_type; the error used to name a private function (_smooth() got multiple values)
    with pytest.raises(TypeError, match=rf"{function.__name__}\(\) takes no nt_type= \(it is nt_type="
                                        rf"'{function.__name__}'\); got nt_type='vargrad'") as refused:
        function(make_mlp(), X, target=0, nt_type="vargrad")
    assert "_smooth" not in str(refused.value)


@pytest.mark.parametrize("function, call", [
    (smoothgrad, dict(nt_samples=8, return_stderr=True, seed=3)),
    (smoothgrad, dict(nt_samples="auto", tol=0.3, max_samples=64, seed=1, stdevs=0.2, absolute=True)),
    (smoothgrad_sq, dict(nt_samples=6, return_stderr=True, seed=0, stdevs=relative(0.1, of="std"))),
    (vargrad, dict(nt_samples="auto", tol=0.5, seed=2)),
])
def test_a_front_end_results_config_is_enough_to_redo_the_call(function, call, tmp_path):
    """The config named only nt_type, absolute and sampler: a saved result did not say its seed, noise or count."""
    model, x = make_mlp(), torch.randn(3, 5, dtype=torch.float64)
    result = function(model, x, target=0, **call)
    result.save(tmp_path / "r")
    config = SmoothedAttribution.load(tmp_path / "r").config
    noise = config["stdevs"]
    again = function(model, x, target=0, nt_samples=config["nt_samples"], seed=config["seed"],
                     stdevs=relative(noise["relative"], of=noise["of"]) if isinstance(noise, dict) else noise,
                     sampler=config["sampler"], return_stderr=True,
                     **({"absolute": config["absolute"]} if function is smoothgrad else {}),
                     **{k: config[k] for k in ("tol", "max_samples") if k in config})
    assert torch.equal(again.attributions, result.attributions) and torch.equal(again.stderr, result.stderr)


def test_a_front_end_config_from_numpy_scalars_is_plain_json(tmp_path):
    """absolute=np.bool_ (which the tunnel takes) went into the config as is: not JSON, so save() failed."""
    np = pytest.importorskip("numpy")
    model, x = make_mlp(), torch.randn(3, 5, dtype=torch.float64)
    result = smoothgrad(model, x, target=0, nt_samples=np.int64(4), seed=np.int64(2), stdevs=np.float64(0.25),
                        absolute=np.bool_(True), return_stderr=True)
    expected = {"nt_type": "smoothgrad", "absolute": True, "nt_samples": 4, "stdevs": 0.25, "seed": 2}
    assert expected.items() <= result.config.items()
    assert all(type(result.config[k]) is type(v) for k, v in expected.items())
    result.save(tmp_path / "r")
    assert SmoothedAttribution.load(tmp_path / "r").config == result.config


@pytest.mark.parametrize("stdevs, recorded", [
    (torch.tensor(0.25, dtype=torch.float64), 0.25),
    ((0.25, relative(0.1, of="std")), [0.25, {"relative": 0.1, "of": "std"}]),
])
def test_a_front_end_config_records_a_scalar_tensor_or_per_input_noise(stdevs, recorded, tmp_path):
    """A 0-d tensor or one σ per input was 'not recorded': the saved result no longer said how to redo the call."""
    model = make_mlp()
    x = (torch.randn(3, 5, dtype=torch.float64),)
    x = x * len(stdevs) if isinstance(stdevs, tuple) else x
    twice = (lambda a, b: model(a + b)) if len(x) == 2 else model
    result = smoothgrad(twice, x, target=0, nt_samples=4, seed=0, stdevs=stdevs, return_stderr=True)
    assert result.config["stdevs"] == recorded
    result.save(tmp_path / "r")
    assert SmoothedAttribution.load(tmp_path / "r").config["stdevs"] == recorded

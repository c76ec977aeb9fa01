"""``python -m noisegrad explain`` on a user's model: TorchScript, torch.export and module:function; clear errors."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency

import noisegrad
from noisegrad.app.cli import main
from noisegrad.app.explain import parse_target

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    def make_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.a, self.b = nn.Linear(5, 3), nn.Linear(2, 3)

        def forward(self, features, extra):
            return self.a(features) + self.b(extra)


    def two_inputs():
        return TwoInputs()


    NOT_A_MODEL = 3


    def broken():
        raise RuntimeError("no weights here")
    """
)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with user_models.py, images.pt (4 × 1×6×6) and the model saved as TorchScript and torch.export."""
    (tmp_path / "user_models.py").write_text(MODEL_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_models", None)
    import user_models

    model = user_models.make_model().eval()
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "images.pt")
    torch.jit.save(torch.jit.script(model), tmp_path / "model_script.pt")
    batch = {"input": {0: torch.export.Dim("batch")}}  # noisy copies are stacked along the batch
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=batch), tmp_path / "model_export.pt2")
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "static_export.pt2")
    yield tmp_path, model, x
    sys.modules.pop("user_models", None)


def _expected(model, x, target, sampler="iid"):
    return noisegrad.NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=6, stdevs=noisegrad.relative(0.15), seed=0, target=target, abs=False,
        sampler=sampler)


@pytest.mark.parametrize("model_arg", ["model_script.pt", "model_export.pt2", "user_models:make_model"])
def test_each_kind_of_model_gives_the_library_result_and_a_figure(workdir, model_arg):
    folder, model, x = workdir
    out = folder / "out"
    code = main(["explain", "--model", model_arg, "--inputs", "images.pt", "--target", "2", "--samples", "6",
                 "--out", str(out), "--quiet"])
    assert code == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    attr = saved["attributions"]
    assert attr.shape == x.shape and saved["target"].tolist() == [2, 2, 2, 2]
    assert saved["options"]["samples"] == 6 and saved["options"]["nt_type"] == "smoothgrad"
    # each example is explained on its own with seed 0 and its own id: what the library gives the whole batch
    assert torch.allclose(attr, _expected(model, x, 2), atol=1e-5)
    assert (out / "attributions.png").stat().st_size > 1000


@pytest.mark.parametrize("sampler", ["antithetic", "qmc", "lhs"])
def test_a_sampler_gives_the_library_result_with_that_sampler(workdir, sampler):
    folder, model, x = workdir
    out = folder / sampler
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--target", "2",
                 "--samples", "6", "--sampler", sampler, "--out", str(out), "--no-figures", "--quiet"]) == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    expected = _expected(model, x, 2, sampler)
    assert torch.allclose(saved["attributions"], expected, atol=1e-5)
    assert not torch.allclose(expected, _expected(model, x, 2), atol=1e-5)  # the sampler changed the noise
    assert saved["options"]["sampler"] == sampler


def test_pred_target_ig_delta_and_stderr(workdir):
    folder, model, x = workdir
    out = folder / "ig"
    assert main(["explain", "--model", "model_script.pt", "--inputs", "images.pt", "--method", "ig", "--n-steps",
                 "8", "--samples", "4", "--stderr", "--out", str(out), "--quiet"]) == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    assert saved["target"].tolist() == model(x).argmax(dim=1).tolist()
    assert saved["delta"].shape == (4,) and torch.isfinite(saved["delta"]).all()
    rel = saved["relative_stderr"]
    assert rel.shape == (4,) and ((rel > 0) & (rel < 5)).all()


def test_dict_inputs_are_keyword_arguments_and_tabular_figures(workdir):
    folder, _, _ = workdir
    inputs = {"features": torch.randn(3, 5), "extra": torch.randn(3, 2)}
    torch.save(inputs, folder / "table.pt")
    out = folder / "tab"
    assert main(["explain", "--model", "user_models:two_inputs", "--inputs", "table.pt", "--nt-type", "vargrad",
                 "--method", "input_x_gradient", "--samples", "4", "--stderr", "--out", str(out), "--quiet"]) == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    assert set(saved["attributions"]) == {"features", "extra"}
    assert saved["attributions"]["features"].shape == (3, 5) and (saved["attributions"]["extra"] >= 0).all()
    assert set(saved["relative_stderr"]) == {"features", "extra"}  # VarGrad has a standard error too
    assert all(r.shape == (3,) and bool(((r > 0) & (r < 5)).all()) for r in saved["relative_stderr"].values())
    assert (out / "attributions_features.png").is_file() and (out / "attributions_extra.png").is_file()


def test_several_targets_give_the_library_result_for_each_output_and_a_figure_per_output(workdir):
    folder, model, x = workdir
    out = folder / "targets"
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--targets", "2,0",
                 "--samples", "6", "--stderr", "--out", str(out), "--quiet"]) == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    assert saved["outputs"] == [2, 0] and saved["target"] is None
    assert saved["attributions"].shape == x.shape + (2,) and saved["relative_stderr"].shape == (4, 2)
    for j, k in enumerate((2, 0)):
        assert torch.allclose(saved["attributions"][..., j], _expected(model, x, k), atol=1e-5)
    assert (out / "attributions_output2.png").is_file() and (out / "attributions_output0.png").is_file()


@pytest.mark.parametrize("reduce", ["mean", "abs-sum"])
def test_reduce_combines_the_channels_after_smoothing_as_the_library_does(workdir, reduce):
    folder, model, _ = workdir
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    torch.save(x, folder / "one_channel.pt")
    out = folder / "reduced"
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "one_channel.pt", "--target", "1",
                 "--samples", "6", "--reduce", reduce, "--stderr", "--out", str(out), "--quiet"]) == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    channels = _expected(model, x, 1)
    by_hand = channels.mean(1) if reduce == "mean" else channels.abs().sum(1)
    assert saved["attributions"].shape == (2, 6, 6) and torch.allclose(saved["attributions"], by_hand, atol=1e-5)
    assert saved["stderr"] is None  # none for combined channels; the relative one is the channels', as the library's
    channels_rse = torch.cat([noisegrad.NoiseTunnel(Saliency(model)).attribute(
        x[i:i + 1], nt_samples=6, stdevs=noisegrad.relative(0.15), seed=0, target=1, abs=False, example_ids=[i],
        return_stderr=True).relative_stderr for i in range(2)])
    torch.testing.assert_close(saved["relative_stderr"], channels_rse, rtol=1e-5, atol=1e-7)
    assert (out / "attributions.png").is_file()


@pytest.mark.parametrize("times_input", ["clean", "noisy"])
def test_times_input_is_the_library_result(workdir, times_input):
    folder, model, x = workdir
    out = folder / "times"
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--target", "1",
                 "--samples", "6", "--times-input", times_input, "--out", str(out), "--quiet", "--no-figures"]) == 0
    attr = torch.load(out / "attributions.pt", weights_only=True)["attributions"]
    expected = noisegrad.NoiseTunnel(Saliency(model)).attribute(
        x, nt_samples=6, stdevs=noisegrad.relative(0.15), seed=0, target=1, abs=False, times_input=times_input)
    assert torch.allclose(attr, expected, atol=1e-5)


@pytest.mark.parametrize("extra, message", [
    (["--targets", "0,1", "--target", "1"], "give --target .* or --targets"),
    (["--targets", "0,7"], "--targets 0,7: the model returns shape \\(4, 3\\)"),
    (["--times-input", "clean", "--method", "ig"], "--times-input .* needs --method saliency"),
])
def test_output_options_that_do_not_fit_are_named(workdir, capsys, extra, message):
    folder, _, _ = workdir
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--out", str(folder / "bad"),
              "--quiet", *extra])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (folder / "bad").exists()


def test_no_noise_runs_the_method_once(workdir):
    folder, model, x = workdir
    out = folder / "plain"
    assert main(["explain", "--model", "model_export.pt2", "--inputs", "images.pt", "--nt-type", "none",
                 "--target", "0,1,2,0", "--out", str(out), "--quiet", "--no-figures"]) == 0
    attr = torch.load(out / "attributions.pt", weights_only=True)["attributions"]
    expected = Saliency(model).attribute(x.clone().requires_grad_(), target=[0, 1, 2, 0], abs=False)
    assert torch.allclose(attr, expected, atol=1e-6)
    assert not (out / "attributions.png").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": "missing.pt"}, "no such file"),
        ({"--model": "images.pt"}, "neither a TorchScript nor a torch.export"),
        ({"--model": "notes.txt"}, "neither a TorchScript nor a torch.export"),
        ({"--model": "no_such_module:make"}, "cannot import"),
        ({"--model": "user_models:nothing"}, "has no attribute"),
        ({"--model": "user_models:NOT_A_MODEL"}, "neither an nn.Module"),
        ({"--model": "user_models:broken"}, "no weights here"),
        ({"--model": "static_export.pt2"}, "dynamic batch dimension"),
        ({"--inputs": "missing.pt"}, "no such file"),
        ({"--inputs": "pickled.pt"}, "weights_only=True"),
        ({"--inputs": "labels.pt"}, "floating point"),
        ({"--inputs": "wrong_shape.pt"}, "the model failed on the inputs"),
        ({"--target": "7"}, "out of range"),
        ({"--target": "1,2"}, "one per example"),
        ({"--target": "cat"}, "expected an int"),
        ({"--target": "none"}, "one output value per example"),
        ({"--n-steps": "8"}, "--method ig only"),
        ({"--stderr": None, "--nt-type": "none"}, "needs --nt-type smoothgrad, smoothgrad_sq or vargrad"),
        ({"--out": "notes.txt"}, "not a directory"),
        ({"--samples": "0"}, "positive integer"),
        ({"--samples": "Auto"}, "expected a positive integer or 'auto', got 'Auto'"),
        ({"--batch-size": "1.5"}, "expected a positive integer or 'auto', got '1.5'"),
        ({"--noise": "-1"}, "number >= 0"),
        ({"--method": "lime"}, "invalid choice"),
        ({"--sampler": "sobol"}, "invalid choice"),
        ({"--sampler": "antithetic", "--samples": "5"}, "needs an even --samples, got 5"),
        ({"--sampler": "lhs", "--nt-type": "none"}, "--sampler lhs draws the noise"),
        ({"--sampler": "antithetic", "--stderr": None, "--samples": "2"},
         "needs 2 independent units of samples; --sampler antithetic with --samples 2 has 1"),
        ({"--stderr": None, "--samples": "1"}, "needs 2 independent units of samples; --sampler iid with --samples 1"),
    ],
)
def test_bad_arguments_exit_with_2_and_say_why(workdir, capsys, change, message):
    folder, _, _ = workdir
    (folder / "notes.txt").write_text("not a model")
    torch.save(torch.arange(4), folder / "labels.pt")
    torch.save(torch.randn(4, 1, 5, 5), folder / "wrong_shape.pt")
    torch.save({"x": torch.randn(4, 1, 6, 6), "why": _Pickled()}, folder / "pickled.pt")
    args = {"--model": "model_script.pt", "--inputs": "images.pt", "--out": str(folder / "o")}
    args.update(change)
    argv = ["explain"] + [item for k, v in args.items() for item in ([k] if v is None else [k, v])]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


class _Pickled:
    """An arbitrary object: torch.load(weights_only=True) must refuse it."""


def test_parse_target_forms():
    out = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert parse_target("pred", out).tolist() == [1, 0]
    assert parse_target("2", out).tolist() == [2, 2]
    assert parse_target("none", torch.zeros(2, 1)) is None


def test_command_line_help_and_exit_code(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "noisegrad", "explain", "--help"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0
    for option in ("--model", "--inputs", "--target", "--method", "--nt-type", "--samples", "--noise", "--out",
                   "weights_only", "module:function"):
        assert option in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "noisegrad", "explain", "--model", "nope.pt", "--inputs", "x.pt",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2 and "nope.pt" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("sampler", ["iid", "antithetic", "lhs"])
def test_samples_auto_stops_each_example_as_the_library_does_and_saves_its_count(workdir, sampler):
    folder, model, x = workdir
    out = folder / "auto"
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--target", "1",
                 "--samples", "auto", "--tol", "0.2", "--max-samples", "256", "--sampler", sampler, "--out", str(out),
                 "--quiet"]) == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    # each example alone, with its own id, as the command explains it
    direct = [noisegrad.NoiseTunnel(Saliency(model)).attribute(
        x[i:i + 1], nt_samples="auto", tol=0.2, max_samples=256, stdevs=noisegrad.relative(0.15), seed=0, target=1,
        abs=False, example_ids=[i], sampler=sampler) for i in range(x.shape[0])]
    torch.testing.assert_close(saved["attributions"], torch.cat([d.attributions for d in direct]))
    assert saved["nt_samples"].tolist() == [int(d.nt_samples) for d in direct]
    assert all(16 <= n <= 256 for n in saved["nt_samples"].tolist())
    assert saved["options"]["samples"] == "auto" and saved["options"]["tol"] == 0.2
    assert saved["options"]["sampler"] == sampler
    assert saved["converged"].tolist() == [bool(d.converged) for d in direct]


def test_samples_auto_saves_and_counts_the_examples_that_stopped_at_max_samples(workdir, capsys):
    """The library's per-example warning (once, naming a result.converged the command has not) is replaced."""
    folder, _, _ = workdir
    out = folder / "capped"
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--target", "1",
                 "--samples", "auto", "--tol", "0.001", "--max-samples", "16", "--out", str(out),
                 "--no-figures"]) == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    assert saved["converged"].tolist() == [False] * 4 and saved["nt_samples"].tolist() == [16] * 4
    err = capsys.readouterr().err
    assert ("4 of 4 examples did not reach --tol 0.001 within --max-samples 16 (saved as 'converged')" in err
            and "result.converged" not in err)


def test_samples_auto_says_the_tol_it_stops_at_also_by_default(workdir, capsys):
    folder, _, _ = workdir
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--target", "1",
                 "--samples", "auto", "--max-samples", "32", "--out", str(folder / "default_tol"),
                 "--no-figures"]) == 0
    assert "samples until the relative standard error is 0.05 (the default)" in capsys.readouterr().err


@pytest.mark.parametrize("nt_type, sampler, most, units, needed", [
    ("smoothgrad", "iid", "1", 1, 2), ("vargrad", "iid", "2", 2, 3), ("smoothgrad", "antithetic", "2", 1, 2),
    ("vargrad", "lhs", "8", 2, 3),
])
def test_a_max_samples_too_few_for_a_standard_error_is_refused_before_any_file_is_read(workdir, capsys, nt_type,
                                                                                      sampler, most, units, needed):
    # --samples auto stops on a standard error; the library refused it only inside the first example's call
    folder, _, _ = workdir
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", "missing.pt", "--inputs", "images.pt", "--samples", "auto", "--nt-type", nt_type,
              "--sampler", sampler, "--max-samples", most, "--out", str(folder / "refused"), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (f"with --nt-type {nt_type} needs {needed} independent units of samples; --sampler {sampler} with "
            f"--max-samples {most} has {units}") in err, err
    assert not (folder / "refused").exists()


def test_tol_without_samples_auto_and_auto_without_noise_are_refused(workdir, capsys):
    folder, _, _ = workdir
    for argv, expected in ((["--samples", "8", "--tol", "0.1"], "--tol applies to --samples auto only"),
                           (["--max-samples", "64"], "--max-samples applies to --samples auto only"),
                           (["--samples", "auto", "--nt-type", "none"], "needs --nt-type smoothgrad"),
                           (["--samples", "auto", "--tol", "1.5"], "between 0 and 1")):
        with pytest.raises(SystemExit) as exit_info:
            main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", *argv,
                  "--out", str(folder / "refused"), "--quiet"])
        assert exit_info.value.code == 2, argv
        assert expected in capsys.readouterr().err, argv
        assert not (folder / "refused").exists()  # refused before anything was written


@pytest.mark.parametrize("sampler", ["iid", "lhs"])
def test_the_run_says_which_sampler_draws_the_noise(workdir, capsys, sampler):
    """Four runs that differ only by --sampler printed the same line; the saved options were the only way to tell."""
    folder, _, _ = workdir
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--target", "1",
                 "--samples", "8", "--sampler", sampler, "--out", str(folder / sampler), "--no-figures"]) == 0
    assert f"(8 samples, {sampler} noise, σ = 0.15 of each example's range)" in capsys.readouterr().err


def test_samples_auto_saves_the_relative_standard_error_each_example_reached(workdir, capsys):
    """--samples auto computed each example's error to stop on it, then dropped it unless --stderr was given."""
    folder, model, x = workdir
    out = folder / "reached"
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--target", "1",
                 "--samples", "auto", "--tol", "0.2", "--max-samples", "64", "--out", str(out), "--no-figures"]) == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    direct = [noisegrad.NoiseTunnel(Saliency(model)).attribute(
        x[i:i + 1], nt_samples="auto", tol=0.2, max_samples=64, stdevs=noisegrad.relative(0.15), seed=0, target=1,
        abs=False, example_ids=[i]) for i in range(x.shape[0])]
    reached = torch.cat([d.relative_stderr for d in direct])
    torch.testing.assert_close(saved["relative_stderr"].reshape(-1).double(), reached.double())
    assert "stderr" not in saved  # the per-element errors only with --stderr, as before
    assert bool((saved["relative_stderr"].reshape(-1)[saved["converged"]] <= 0.2).all())
    assert "relative standard error ||SE||/||attr||: mean" in capsys.readouterr().err


@pytest.mark.parametrize("sampler", ["iid", "antithetic"])
def test_joint_gives_the_library_joint_estimator_with_that_noise(workdir, capsys, sampler):
    """--method ig ran only the nested estimator (samples x steps gradients); the README's joint one was not reachable."""
    folder, model, x = workdir
    out = folder / f"joint_{sampler}"
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--target", "1",
                 "--method", "ig", "--joint", "--samples", "16", "--sampler", sampler, "--stderr", "--out", str(out),
                 "--no-figures"]) == 0
    assert f"with ig + smoothgrad jointly (16 samples, {sampler} noise" in capsys.readouterr().err
    saved = torch.load(out / "attributions.pt", weights_only=True)
    direct = [noisegrad.NoiseTunnel(IntegratedGradients(model)).attribute(
        x[i:i + 1], nt_samples=16, stdevs=noisegrad.relative(0.15), seed=0, target=1, example_ids=[i],
        joint=True if sampler == "iid" else sampler, return_convergence_delta=True, return_stderr=True)
        for i in range(x.shape[0])]
    torch.testing.assert_close(saved["attributions"], torch.cat([d.attributions for d in direct]))
    torch.testing.assert_close(saved["delta"], torch.cat([d.delta for d in direct]))
    torch.testing.assert_close(saved["stderr"], torch.cat([d.stderr for d in direct]))
    assert saved["options"]["joint"] is True


def test_joint_with_the_adaptive_path_density_is_the_library_call(workdir, capsys):
    folder, model, x = workdir
    out = folder / "joint_adaptive"
    assert main(["explain", "--model", "user_models:make_model", "--inputs", "images.pt", "--target", "1",
                 "--method", "ig", "--joint", "--path-density", "adaptive", "--samples", "8", "--out", str(out),
                 "--no-figures"]) == 0
    assert "jointly, adaptive path density (8 samples + 28 pilot gradients" in capsys.readouterr().err
    saved = torch.load(out / "attributions.pt", weights_only=True)
    direct = [noisegrad.NoiseTunnel(IntegratedGradients(model)).attribute(
        x[i:i + 1], nt_samples=8, stdevs=noisegrad.relative(0.15), seed=0, target=1, example_ids=[i], joint=True,
        path_density="adaptive") for i in range(x.shape[0])]
    torch.testing.assert_close(saved["attributions"], torch.cat(direct))
    assert saved["options"]["path_density"] == "adaptive"


def test_the_adaptive_path_density_without_joint_is_refused_before_reading_files(workdir, capsys):
    folder, _, _ = workdir
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", "missing.pt", "--inputs", "missing.pt", "--method", "ig", "--path-density",
              "adaptive", "--out", str(folder / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--path-density adaptive applies to --joint only" in err and "missing.pt" not in err


@pytest.mark.parametrize("change, message", [
    (["--method", "saliency"], "--joint needs --method ig"),
    (["--method", "ig", "--n-steps", "8"], "--n-steps"),
    (["--method", "ig", "--samples", "auto"], "--samples auto"),
    (["--method", "ig", "--nt-type", "vargrad"], "--nt-type smoothgrad"),
    (["--method", "ig", "--targets", "0,1"], "--targets"),
])
def test_joint_refuses_what_the_joint_estimator_cannot_do_before_reading_files(workdir, capsys, change, message):
    folder, _, _ = workdir
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", "missing.pt", "--inputs", "missing.pt", "--joint", *change,
              "--out", str(folder / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "missing.pt" not in err and "Traceback" not in err


@pytest.mark.parametrize("method", [["--method", "ig"], ["--method", "ig", "--joint", "--samples", "4"],
                                    ["--method", "input_x_gradient"]])
def test_abs_with_a_method_other_than_saliency_is_refused_before_reading_files(workdir, capsys, method):
    """--abs was silently ignored by every method but saliency (attribute-dataset refuses it)."""
    folder, _, _ = workdir
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", "missing.pt", "--inputs", "missing.pt", "--abs", *method, "--out", str(folder / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--abs applies to --method saliency only, got --method {method[1]}" in err
    assert "missing.pt" not in err and not (folder / "o").exists()

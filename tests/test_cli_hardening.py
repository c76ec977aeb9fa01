"""Regressions from the command-line hardening issue: each test failed before its fix."""

import os
import re
import sys
import zipfile

import pytest
import torch
from captum.attr import Saliency

import noisegrad
from noisegrad.app import shapes
from noisegrad.app.cli import build_parser, main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

FACTORY = '''
import pathlib
import torch


def make_model():
    pathlib.Path("model_was_loaded").write_text("yes")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 3))
'''


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with a model factory that leaves a trace when called, and inputs of 4 examples."""
    (tmp_path / "traced_models.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "traced_models", raising=False)
    torch.save(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), tmp_path / "x.pt")
    return tmp_path


def _fails_with_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    return err


# --------------------------------------------------------------------------- --inputs with no examples


@pytest.mark.parametrize("inputs", [torch.empty(0, 5), (torch.empty(0, 5), torch.empty(0, 2)),
                                    {"features": torch.empty(0, 5)}])
def test_inputs_with_no_rows_are_refused_before_the_model_is_loaded(workdir, capsys, inputs):
    torch.save(inputs, workdir / "empty.pt")
    err = _fails_with_2(capsys, ["explain", "--model", "traced_models:make_model", "--inputs", "empty.pt",
                                 "--out", "out"])
    assert "--inputs 'empty.pt' holds no examples" in err
    assert not (workdir / "model_was_loaded").exists()


# --------------------------------------------------------------------------- demo --weights


def _corrupt_weights(folder):
    random_bytes = folder / "random.pt"
    random_bytes.write_bytes(os.urandom(4096))
    not_a_state_dict = folder / "tensor.pt"
    torch.save(torch.ones(3), not_a_state_dict)
    other_zip = folder / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("archive/readme.txt", "not weights")
    good = torch.load(shapes.WEIGHTS_PATH, weights_only=True)
    wrong_keys = folder / "wrong_keys.pt"
    torch.save({**good, "state_dict": {"conv.weight": torch.ones(1)}}, wrong_keys)
    wrong_shapes = folder / "wrong_shapes.pt"
    torch.save({**good, "state_dict": {k: torch.ones(2) for k in good["state_dict"]}}, wrong_shapes)
    no_format = folder / "plain_state_dict.pt"
    torch.save(shapes.make_cnn().state_dict(), no_format)
    return [random_bytes, not_a_state_dict, other_zip, wrong_keys, wrong_shapes, no_format]


def test_corrupt_weights_are_a_clear_error_naming_the_option(tmp_path, capsys):
    for weights in _corrupt_weights(tmp_path):
        err = _fails_with_2(capsys, ["demo", "--out", str(tmp_path / "out"), "--weights", str(weights)])
        assert f"--weights '{weights}'" in err, err
        assert not (tmp_path / "out").exists()  # nothing was written, so no folder is left behind


# --------------------------------------------------------------------------- no empty output folder


def test_a_failed_run_leaves_no_folder_it_created(workdir, capsys):
    _fails_with_2(capsys, ["explain", "--model", "missing.pt", "--inputs", "x.pt", "--out", "new/nested/out"])
    assert not (workdir / "new").exists()
    _fails_with_2(capsys, ["demo", "--out", str(workdir / "demo_out"), "--weights", "missing.pt"])
    assert not (workdir / "demo_out").exists()


def test_a_failed_run_keeps_folders_and_files_that_were_there(workdir, capsys):
    existing = workdir / "existing"
    (existing / "empty_inside").mkdir(parents=True)
    (existing / "notes.txt").write_text("mine")
    _fails_with_2(capsys, ["explain", "--model", "missing.pt", "--inputs", "x.pt", "--out", str(existing)])
    _fails_with_2(capsys, ["explain", "--model", "missing.pt", "--inputs", "x.pt",
                           "--out", str(existing / "empty_inside")])
    _fails_with_2(capsys, ["explain", "--model", "missing.pt", "--inputs", "x.pt",
                           "--out", str(existing / "new_child")])
    assert (existing / "notes.txt").read_text() == "mine" and (existing / "empty_inside").is_dir()
    assert not (existing / "new_child").exists()


def test_a_successful_run_creates_its_folder(workdir):
    assert main(["explain", "--model", "traced_models:make_model", "--inputs", "x.pt", "--samples", "2",
                 "--out", "made/here", "--quiet", "--no-figures"]) == 0
    assert (workdir / "made" / "here" / "attributions.pt").is_file()


# --------------------------------------------------------------------------- --stderr saves the standard errors


def test_stderr_saves_the_per_element_standard_errors(workdir):
    assert main(["explain", "--model", "traced_models:make_model", "--inputs", "x.pt", "--samples", "6",
                 "--target", "1", "--stderr", "--out", "se", "--quiet", "--no-figures"]) == 0
    saved = torch.load(workdir / "se" / "attributions.pt", weights_only=True)
    x = torch.load(workdir / "x.pt", weights_only=True)
    assert saved["stderr"].shape == saved["attributions"].shape == x.shape
    # the library's own standard error of the first example, computed independently
    import traced_models

    expected = noisegrad.NoiseTunnel(Saliency(traced_models.make_model())).attribute(
        x[0:1], nt_type="smoothgrad", nt_samples=6, stdevs=noisegrad.relative(0.15), seed=0, target=[1], abs=False,
        return_stderr=True)
    assert torch.allclose(saved["stderr"][0:1], expected.stderr, atol=1e-6)
    ratio = saved["stderr"].flatten(1).norm(dim=1) / saved["attributions"].flatten(1).norm(dim=1)
    assert torch.allclose(saved["relative_stderr"].float(), ratio, atol=1e-5)


def test_stderr_keys_are_documented_in_help():
    text = build_parser()._subparsers._group_actions[0].choices["explain"].format_help()
    assert '"stderr"' in " ".join(text.split()) and '"relative_stderr"' in " ".join(text.split())


# --------------------------------------------------------------------------- --help shows each default once


@pytest.mark.parametrize("command", ["demo", "explain"])
def test_help_shows_each_default_once(command):
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    text = parser.format_help()
    entries = re.split(r"\n  (?=-)", text.split("options:", 1)[1])
    for entry in entries:
        assert len(re.findall(r"default", entry)) <= 1, entry
    flat = " ".join(text.split())
    assert "(default: 32)" in flat and "(default: None)" not in flat and "(default: False)" not in flat
    if command == "explain":
        assert "only; default 32)" in flat


def test_identical_examples_get_independent_noise(tmp_path):
    """Examples are explained one by one; each gets its own seed, so their Monte-Carlo errors are independent."""
    import torch

    from noisegrad.app.cli import main

    torch.manual_seed(0)
    model = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)))
    torch.jit.save(model, str(tmp_path / "model.pt"))
    torch.save(torch.rand(1, 4).repeat(3, 1), tmp_path / "x.pt")
    code = main(["explain", "--model", str(tmp_path / "model.pt"), "--inputs", str(tmp_path / "x.pt"),
                 "--method", "saliency", "--samples", "8", "--target", "0", "--out", str(tmp_path / "out")])
    assert code == 0
    saved = torch.load(tmp_path / "out" / "attributions.pt", weights_only=True)
    attributions = saved["attributions"] if isinstance(saved, dict) else saved
    assert not torch.equal(attributions[0], attributions[1]) and not torch.equal(attributions[1], attributions[2])

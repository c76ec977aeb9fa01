"""``explain --model`` with crafted TorchScript and torch.save files, and ``--inputs`` with crafted pickles: the
pickled code never runs, and the command says why it stopped."""

import pickle
import zipfile

import pytest
import torch
from torch import nn

from noisegrad.app.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


class CreatesMarker:
    """Unpickling this creates the marker file: proof that the pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def files(tmp_path):
    model = nn.Sequential(nn.Linear(5, 3)).eval()
    torch.jit.save(torch.jit.script(model), tmp_path / "script.pt")
    torch.save(torch.randn(4, 5), tmp_path / "x.pt")
    return tmp_path


def _replace_member(source, target, suffix, data):
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info, data if info.filename.endswith(suffix) else old.read(info))
    return target


def _explain(files, capsys, model, inputs="x.pt"):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", str(model), "--inputs", str(files / inputs), "--out", str(files / "out"),
              "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    return err


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
def test_torchscript_with_a_pickle_payload_is_not_run(files, capsys, member):
    marker = files / "marker"
    for protocol in (2, 4):
        crafted = _replace_member(files / "script.pt", files / f"crafted_{protocol}.pt", member,
                                  pickle.dumps(CreatesMarker(marker), protocol=protocol))
        err = _explain(files, capsys, crafted)
        assert f"--model '{crafted}'" in err and "torch.jit.load" in err
        assert not marker.exists()


def test_a_torch_save_file_is_refused_before_it_is_read(files, capsys):
    marker = files / "marker"
    torch.save(CreatesMarker(marker), files / "pickled_model.pt")
    err = _explain(files, capsys, files / "pickled_model.pt")
    assert "torch.save file" in err and "would run its pickle" in err
    assert not marker.exists()


def test_inputs_with_a_pickle_payload_are_refused(files, capsys):
    marker = files / "marker"
    torch.save({"x": torch.randn(4, 5), "why": CreatesMarker(marker)}, files / "crafted_inputs.pt")
    err = _explain(files, capsys, files / "script.pt", inputs="crafted_inputs.pt")
    assert "--inputs" in err and "weights_only=True" in err
    assert not marker.exists()


def test_an_honest_torchscript_file_still_explains(files):
    assert main(["explain", "--model", str(files / "script.pt"), "--inputs", str(files / "x.pt"), "--samples", "4",
                 "--out", str(files / "out"), "--quiet", "--no-figures"]) == 0
    assert torch.load(files / "out" / "attributions.pt", weights_only=True)["attributions"].shape == (4, 5)

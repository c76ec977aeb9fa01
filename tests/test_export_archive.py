"""A crafted torch.export archive (.pt2) cannot run code through ``explain --model``: every place where
torch.export.load would unpickle, and the other ways its JSON reaches Python, are refused before anything loads,
and the load itself runs with every unpickler disabled. An honest archive still loads and explains."""

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from noisegrad.app import export_archive
from noisegrad.app.cli import main
from noisegrad.app.export_archive import UnsafeArchive, check_archive, load_exported_module

ROOT = "model"


class CreatesMarker:
    """Unpickling this creates (opens for writing) the marker file: proof that the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _torch_save(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """A torch.export archive of a small MLP with a dynamic batch, its model and inputs."""
    folder = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).eval()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    program = torch.export.export(model, (x,), dynamic_shapes={"input": {0: torch.export.Dim("batch")}})
    path = folder / "honest.pt2"
    torch.export.save(program, path)
    torch.save(x, folder / "x.pt")
    return path, model, x


def _rewrite(source: Path, target: Path, replace=None, add=None, drop=()) -> Path:
    """A copy of the archive ``source`` with members (paths below the root folder) replaced, added or dropped."""
    replace, add = dict(replace or {}), dict(add or {})
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        root = old.namelist()[0].split("/", 1)[0] + "/"
        for info in old.infolist():
            name = info.filename[len(root):]
            if name not in drop:
                new.writestr(info, replace.pop(name, None) or old.read(info))
        for name, data in {**replace, **add}.items():
            new.writestr(root + name, data)
    return target


def _config(archive: Path, name: str) -> dict:
    with zipfile.ZipFile(archive) as z:
        return json.loads(z.read(next(n for n in z.namelist() if n.endswith(name))))


def _model_json(archive: Path) -> dict:
    return _config(archive, "models/model.json")


def _pickle_payloads(honest_path: Path, folder: Path, marker: Path):
    """Each place torch.export.load unpickles, with the marker payload injected: (label, archive)."""
    payload, raw_pickle = _torch_save(CreatesMarker(marker)), pickle.dumps(CreatesMarker(marker), protocol=2)
    weights = _config(honest_path, "model_weights_config.json")
    first = next(iter(weights["config"]))
    weights["config"][first]["use_pickle"] = True
    pickled_weight = weights["config"][first]["path_name"]
    constant_meta = dict(weights["config"][first], is_param=False, use_pickle=True, path_name="tensor_0")

    def constants(entry_name, use_pickle):
        meta = dict(constant_meta, path_name=entry_name, use_pickle=use_pickle)
        return {"data/constants/model_constants_config.json": json.dumps({"config": {"c": meta}}).encode(),
                f"data/constants/{entry_name}": payload if entry_name.startswith("tensor") else raw_pickle}

    cases = {
        "sample inputs (torch.save zip)": {"replace": {"data/sample_inputs/model.pt": payload}},
        "sample inputs (raw pickle)": {"replace": {"data/sample_inputs/model.pt": raw_pickle}},
        "weight with use_pickle": {"replace": {"data/weights/model_weights_config.json": json.dumps(weights).encode(),
                                               f"data/weights/{pickled_weight}": payload}},
        "tensor constant with use_pickle": {"replace": constants("tensor_0", True)},
        "opaque object constant": {"replace": constants("opaque_obj_0", True)},
        "legacy pickled weights file": {"add": {"data/weights/model.pt": payload}},
    }
    return [(label, _rewrite(honest_path, folder / f"crafted_{i}.pt2", **edit)) for i, (label, edit) in
            enumerate(cases.items())]


def test_an_honest_archive_loads_and_explains(honest, tmp_path, capsys):
    path, model, x = honest
    check_archive(path)
    module = load_exported_module(path)
    assert torch.allclose(module(x), model(x)) and torch.allclose(module(x[:1]), model(x[:1]))  # any batch size
    out = tmp_path / "out"
    code = main(["explain", "--model", str(path), "--inputs", str(path.parent / "x.pt"), "--samples", "4",
                 "--out", str(out), "--quiet"])
    assert code == 0 and (out / "attributions.pt").is_file() and (out / "attributions.png").is_file()


def test_crafted_pickles_run_code_under_torch_export_load(honest, tmp_path):
    """The control: each crafted archive really runs its payload when torch.export.load reads it (torch 2.13)."""
    for label, archive in _pickle_payloads(honest[0], tmp_path, tmp_path / "marker"):
        try:
            torch.export.load(archive)
        except Exception:  # the payload ran before torch noticed the object is not a tensor
            pass
        assert (tmp_path / "marker").exists(), label
        (tmp_path / "marker").unlink()


def test_every_pickle_place_is_refused_before_anything_is_unpickled(honest, tmp_path, capsys):
    marker = tmp_path / "marker"
    for label, archive in _pickle_payloads(honest[0], tmp_path, marker):
        with pytest.raises(SystemExit) as exit_info:
            main(["explain", "--model", str(archive), "--inputs", str(honest[0].parent / "x.pt"),
                  "--out", str(tmp_path / "out"), "--quiet"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, label
        assert f"--model '{archive}' is refused" in err and "pickle" in err and "Traceback" not in err, (label, err)
        assert not marker.exists(), label


def test_the_load_is_guarded_even_if_the_check_misses_something(honest, tmp_path, monkeypatch):
    """A torch whose archive layout the check does not know: the unpickling guard still stops the payload."""
    marker = tmp_path / "marker"
    monkeypatch.setattr(export_archive, "check_archive", lambda path: None)
    for label, archive in _pickle_payloads(honest[0], tmp_path, marker):
        if label.startswith("sample inputs"):
            continue  # never read: nothing to guard
        with pytest.raises(UnsafeArchive, match="would unpickle"):
            load_exported_module(archive)
        assert not marker.exists(), label


def test_compiled_code_and_old_formats_are_refused(honest, tmp_path):
    aoti = _rewrite(honest[0], tmp_path / "aoti.pt2", add={"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(UnsafeArchive, match="AOTInductor"):
        check_archive(aoti)
    old = _rewrite(honest[0], tmp_path / "old.pt2", drop={"archive_format"})
    with pytest.raises(UnsafeArchive, match="older archives keep their weights as pickles"):
        check_archive(old)
    stray = _rewrite(honest[0], tmp_path / "stray.pt2", add={"extra/notes.bin": pickle.dumps(1, protocol=2)})
    with pytest.raises(UnsafeArchive, match="extra/notes.bin is a pickle"):
        check_archive(stray)


def _with_program(honest_path: Path, target: Path, edit) -> Path:
    program = _model_json(honest_path)
    edit(program)
    return _rewrite(honest_path, target, replace={"models/model.json": json.dumps(program).encode()})


def _first_node(program):
    return program["graph_module"]["graph"]["nodes"][0]


def test_a_shape_expression_that_is_python_code_is_refused(honest, tmp_path):
    """torch parses shape expressions with sympy.sympify, an eval: this one would create the marker."""
    marker = tmp_path / "marker"

    def inject(program):
        meta = program["graph_module"]["graph"]["tensor_values"]["input"]["sizes"][0]["as_expr"]
        meta["expr_str"] += f" + 0*len(open({str(marker)!r}, 'w').name)"

    archive = _with_program(honest[0], tmp_path / "expr.pt2", inject)
    with pytest.raises(UnsafeArchive, match="shape expression .* is not plain arithmetic"):
        load_exported_module(archive)
    assert not marker.exists()


def test_a_value_name_that_is_python_code_is_refused(honest, tmp_path):
    """torch writes value names into the source of the module it compiles: a name can smuggle in a statement."""
    marker = tmp_path / "marker"
    evil = f"input=open({str(marker)!r}, 'w')"

    def rename(node):
        if isinstance(node, dict):
            return {(evil if k == "input" else k): rename(v) for k, v in node.items()} if "dtype" not in node else node
        if isinstance(node, list):
            return [rename(v) for v in node]
        return node

    def inject(program):
        graph = program["graph_module"]["graph"]
        graph["tensor_values"] = rename(graph["tensor_values"])
        graph["inputs"][0]["as_tensor"]["name"] = evil

    archive = _with_program(honest[0], tmp_path / "name.pt2", inject)
    with pytest.raises(UnsafeArchive, match="is not a Python identifier"):
        load_exported_module(archive)
    assert not marker.exists()


def test_operators_that_reach_files_or_python_are_refused(honest, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("user data")

    def from_file(program):  # aten::from_file(shared=True) maps a file into a writable tensor
        node = _first_node(program)
        node["target"] = "torch.ops.aten.from_file.default"
        node["inputs"] = [{"name": "filename", "arg": {"as_string": str(victim)}, "kind": 1},
                          {"name": "shared", "arg": {"as_bool": True}, "kind": 1}]

    def python_call(program):
        _first_node(program)["target"] = "torch.os.system"

    for edit, message in ((from_file, "string argument 'filename' could name a file"),
                          (python_call, "the graph calls torch.os.system")):
        archive = _with_program(honest[0], tmp_path / f"{edit.__name__}.pt2", edit)
        with pytest.raises(UnsafeArchive, match=message):
            load_exported_module(archive)
    assert victim.read_text() == "user data"


def test_a_fixed_batch_dimension_is_refused_at_load_with_the_fix(tmp_path, capsys):
    static = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(nn.Linear(3, 2), (torch.ones(2, 3),)), static)
    torch.save(torch.ones(2, 3), tmp_path / "x.pt")
    with pytest.raises(SystemExit):
        main(["explain", "--model", str(static), "--inputs", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o")])
    assert "Dim('batch')" in capsys.readouterr().err

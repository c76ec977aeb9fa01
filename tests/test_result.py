"""The result object (#17): a tensor of the attributions wherever a tensor is expected, with the rest as named
fields, Captum's pair on request, a figure of itself, and a file that reads back bit for bit without pickle."""

import copy
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency

from noisegrad import NoiseTunnel, SmoothedAttribution, relative
from noisegrad.result import FIELDS
from noisegrad.stats.student_t import interval_halfwidth_factor

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def make_result(attributions=None, **fields):
    """A result around ``attributions`` with errors that differ from them (so a mix-up shows)."""
    if attributions is None:
        attributions = torch.tensor([[0.5, -2.0, 1.0, 0.0], [1.5, 0.25, -0.75, 3.0]], dtype=torch.float64)
    stderr = (tuple(a.abs() / 10 + 0.01 for a in attributions) if isinstance(attributions, tuple)
              else attributions.abs() / 10 + 0.01)
    fields = dict(dict(relative_stderr=torch.tensor([0.1, 0.2]), nt_samples=16, dof=15), **fields)
    return SmoothedAttribution(attributions, stderr, **fields)


# --------------------------------------------------------------------------- it is the attribution tensor

OTHER = torch.tensor([[1.0, 1.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)

# Each operation is applied to the result and to a separate copy of its tensor; both must give the same thing.
OPERATIONS = {
    "index": lambda a: a[0],
    "slice": lambda a: a[:, 1:3],
    "mask": lambda a: a[a > 0],
    "times two": lambda a: a * 2,
    "two times": lambda a: 2 * a,
    "minus other": lambda a: a - OTHER,
    "other minus": lambda a: OTHER - a,
    "one minus": lambda a: 1 - a,
    "divide": lambda a: a / 3,
    "power": lambda a: a ** 2,
    "negate": lambda a: -a,
    "abs()": lambda a: abs(a),
    "matmul": lambda a: a @ OTHER.T,
    "greater": lambda a: a > 0,
    "equal": lambda a: a == OTHER,
    "less than other": lambda a: OTHER < a,
    "torch.sum": lambda a: torch.sum(a),
    "relu": lambda a: torch.nn.functional.relu(a),
    "softmax": lambda a: torch.softmax(a, dim=1),
    "cat in a list": lambda a: torch.cat([a, OTHER]),
    "stack": lambda a: torch.stack((a, OTHER)),
    "where": lambda a: torch.where(OTHER > 0, a, OTHER),
    "abs max": lambda a: a.abs().max(),
    "sum over dim": lambda a: a.sum(dim=1),
    "detach": lambda a: a.detach(),
    "cpu": lambda a: a.cpu(),
    "clone": lambda a: a.clone(),
    "to float32": lambda a: a.to(torch.float32),
    "flatten": lambda a: a.flatten(),
    "unbind": lambda a: torch.stack(a.unbind(0)),
    "rows": lambda a: torch.stack(list(a)),
}


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_operations_give_what_they_give_on_the_plain_tensor_and_return_plain_tensors(name):
    result = make_result()
    reference = result.attributions.clone()
    got, expected = OPERATIONS[name](result), OPERATIONS[name](reference)
    assert type(got) is torch.Tensor, f"{name} returned {type(got).__name__}"
    assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_properties_conversions_and_python_protocols_are_the_tensors():
    result = make_result()
    reference = result.attributions.clone()
    assert (result.shape, result.dtype, result.device, result.ndim, result.requires_grad) == (
        reference.shape, reference.dtype, reference.device, reference.ndim, reference.requires_grad)
    assert len(result) == len(reference) == 2
    assert isinstance(result, torch.Tensor)
    for array in (np.asarray(result), result.numpy()):
        assert type(array) is np.ndarray and np.array_equal(array, reference.numpy())
    assert torch.equal(torch.as_tensor(result), reference)
    assert torch.equal(torch.as_tensor(result, dtype=torch.float32), reference.float())
    assert type(torch.as_tensor(result, dtype=torch.float32)) is torch.Tensor
    assert result[0, 1].item() == -2.0 and float(result[1, 3]) == 3.0
    assert result.tolist() == reference.tolist()
    assert f"{result[0, 0]:.2f}" == "0.50"


def test_assert_close_and_allclose_compare_the_attributions():
    result = make_result()
    reference = result.attributions.clone()
    torch.testing.assert_close(result, reference)
    torch.testing.assert_close(reference, result)
    assert torch.allclose(result, reference) and torch.equal(result, reference)
    nudged = reference.clone()
    nudged[1, 2] += 1e-3
    with pytest.raises(AssertionError, match="Mismatched elements: 1 / 8"):
        torch.testing.assert_close(result, nudged)
    assert not torch.allclose(result, nudged)


def test_in_place_writes_go_to_the_attributions():
    result = make_result()
    result[0] = 0.0
    assert torch.equal(result.attributions[0], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(result[0], torch.zeros(4, dtype=torch.float64))


def test_code_written_for_the_tensor_works_unchanged_with_return_stderr(mlp):
    x = torch.rand(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    nt = NoiseTunnel(Saliency(mlp))
    options = dict(nt_samples=8, stdevs=relative(0.15), target=0, abs=False, seed=0)

    def call_site(attr, reference):  # written against a tensor, before return_stderr existed
        top = attr.abs().flatten(1).argmax(dim=1)
        return ((attr - reference).abs().max().item(), torch.allclose(attr, reference), tuple(attr.shape),
                top.tolist(), np.asarray(attr).sum().round(12), torch.nn.functional.relu(attr).sum().item())

    plain = nt.attribute(x, **options)
    result = nt.attribute(x, return_stderr=True, **options)
    assert isinstance(result, SmoothedAttribution)
    got, expected = call_site(result, plain), call_site(plain, plain)
    assert got[0] < 1e-12 and got[1:3] == expected[1:3] and got[3] == expected[3]
    assert got[4] == pytest.approx(expected[4], abs=1e-10) and got[5] == pytest.approx(expected[5], abs=1e-10)


# --------------------------------------------------------------------------- several tensors

TENSOR_USES = {
    "times two": lambda r: r * 2,
    "tensor plus": lambda r: torch.ones(1) + r,
    "comparison": lambda r: r == 0,
    "torch.sum": lambda r: torch.sum(r),
    "relu": lambda r: torch.nn.functional.relu(r),
    "index": lambda r: r[0],
    "len": lambda r: len(r),
    "iterate": lambda r: list(r),
    "numpy": lambda r: np.asarray(r),
    "method": lambda r: r.abs(),
    "assert_close": lambda r: torch.testing.assert_close(r, torch.ones(1)),
}


@pytest.mark.parametrize("name", list(TENSOR_USES))
def test_tuple_and_list_attributions_refuse_tensor_use_naming_attributions(name):
    parts = (torch.ones(2, 3), torch.zeros(2, 4))
    for attributions in (parts, list(parts)):
        result = SmoothedAttribution(attributions, attributions, torch.ones(2), 8, dof=7)
        with pytest.raises(Exception) as raised:
            TENSOR_USES[name](result)
        error = raised.value
        while not isinstance(error, TypeError) and error.__cause__ is not None:  # assert_close wraps it
            error = error.__cause__
        # reading an attribute (assert_close reads .layout) is an AttributeError, so that hasattr() says False
        assert isinstance(error, (TypeError, AttributeError)), repr(raised.value)
        assert "result.attributions[i]" in str(error) and (isinstance(error, TypeError) or name == "assert_close")


def test_tuple_attributions_keep_their_fields_and_attribute_probes_say_no(two_input):
    inputs = (torch.rand(3, 4, dtype=torch.float64), torch.rand(3, 3, dtype=torch.float64))
    result = NoiseTunnel(Saliency(two_input)).attribute(inputs, nt_samples=8, stdevs=0.1, target=0, seed=0,
                                                        return_stderr=True)
    assert isinstance(result.attributions, tuple) and [tuple(a.shape) for a in result.attributions] == [(3, 4),
                                                                                                        (3, 3)]
    assert not hasattr(result, "shape") and getattr(result, "dtype", None) is None
    with pytest.raises(AttributeError, match=r"result\.attributions\[i\]"):
        result.shape
    low, high = result.interval(0.95)
    assert torch.all(low[1] <= result.attributions[1]) and torch.all(result.attributions[1] <= high[1])
    assert "attributions=(Tensor(3, 4) float64, Tensor(3, 3) float64)" in repr(result)
    assert result.as_captum() is result.attributions


# --------------------------------------------------------------------------- iteration, Captum's pair, fields


def test_iteration_goes_over_examples_unless_a_delta_would_be_unpacked_instead():
    result = make_result()
    assert [row.tolist() for row in result] == result.attributions.tolist()
    with_delta = make_result(delta=torch.tensor([0.01, -0.02]))
    with pytest.raises(TypeError, match=r"attr, delta = result\.as_captum\(\)"):
        attr, delta = with_delta
    attr, delta = with_delta.as_captum()
    assert attr is with_delta.attributions and torch.equal(delta, torch.tensor([0.01, -0.02]))
    assert len(with_delta) == 2


def test_as_captum_is_what_the_call_returns_without_return_stderr(mlp):
    x = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    nt = NoiseTunnel(IntegratedGradients(mlp))
    options = dict(nt_samples=8, stdevs=0.1, target=1, n_steps=8, seed=0, return_convergence_delta=True)
    captum_attr, captum_delta = nt.attribute(x, **options)
    pair = nt.attribute(x, return_stderr=True, **options).as_captum()
    assert isinstance(pair, tuple) and len(pair) == 2 and all(type(t) is torch.Tensor for t in pair)
    torch.testing.assert_close(pair[0], captum_attr, rtol=0, atol=1e-12)
    torch.testing.assert_close(pair[1], captum_delta, rtol=0, atol=1e-12)
    alone = nt.attribute(x, nt_samples=8, stdevs=0.1, target=1, n_steps=8, seed=0, return_stderr=True)
    assert type(alone.as_captum()) is torch.Tensor and alone.as_captum() is alone.attributions


def test_fields_keep_their_names_and_the_config_is_stored_as_given():
    config = {"nt_type": "smoothgrad", "stdevs": {"relative": 0.15}, "nt_samples": 16}
    result = make_result(delta=torch.zeros(2), converged=torch.tensor([True, False]), config=config)
    for name in ("attributions", "stderr", "relative_stderr", "nt_samples", "delta", "dof", "converged",
                 "delta_stderr", "config"):
        assert hasattr(result, name)
    assert result.config is config and result.delta_stderr is None and result.nt_samples == 16
    assert make_result().config is None
    assert "config={3 keys}" in repr(result)
    result.config = {"changed": True}  # filled in after the call, e.g. by a configuration's run
    assert result.config == {"changed": True}
    with pytest.raises(AttributeError):
        result.attributions = torch.zeros(2, 4)
    with pytest.raises(TypeError, match="config must be a dict"):
        make_result(config="smoothgrad")


def test_copies_and_pickles_keep_every_field():
    result = make_result(delta=torch.tensor([0.5, 0.25]), config={"seed": 0})
    deep = copy.deepcopy(result)
    result.stderr.add_(1.0)
    assert isinstance(deep, SmoothedAttribution) and deep.config == {"seed": 0} and deep.dof == 15
    assert torch.equal(deep.stderr + 1.0, result.stderr) and torch.equal(deep, result)
    shallow = copy.copy(result)
    assert shallow.stderr is result.stderr and shallow.attributions is result.attributions
    again = pickle.loads(pickle.dumps(result))
    assert isinstance(again, SmoothedAttribution) and torch.equal(again.delta, result.delta)


# --------------------------------------------------------------------------- files


def nan_with_payload(dtype=torch.float32):
    return torch.tensor([0x7FC00123], dtype=torch.int32).view(torch.float32).to(dtype)


def every_field_result():
    """Every field set, in several dtypes, with bits that a conversion would change (NaN payload, -0.0)."""
    attributions = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    attributions[0, 0, 0] = -0.0
    attributions[1, 2, 3] = float("nan")
    stderr = torch.rand(2, 3, 4, dtype=torch.float64)
    stderr[0, 1, 1] = nan_with_payload(torch.float32).double()
    return SmoothedAttribution(
        attributions, stderr.transpose(1, 2).contiguous().transpose(1, 2),  # not contiguous
        torch.tensor([0.125, float("inf")], dtype=torch.float32),
        torch.tensor([96, 256]), delta=torch.tensor([1e-300, -0.0], dtype=torch.float64),
        dof=torch.tensor([11, 31]), converged=torch.tensor([True, False]),
        delta_stderr=torch.tensor([0.5, 1.5], dtype=torch.bfloat16), outputs=(7, 0, 2, 5), channel_reducer="abs-sum",
        config={"nt_type": "vargrad", "stdevs": [0.1, None], "nested": {"seed": 7, "ratio": 0.1 + 0.2}},
    )


def few_field_result():
    """Tuple attributions in half precision, int counts, None fields."""
    a = torch.randn(2, 5).to(torch.float16)
    b = torch.randn(2, 1, 3, 3).to(torch.bfloat16)
    return SmoothedAttribution((a, b), (a.abs(), b.abs()), torch.tensor([0.3, 0.4]), 32, dof=7)


def layer_list_result():
    """A list of layers, one of which has a tuple of tensors (Captum's layer IG on a list of layers)."""
    first, second, third = torch.randn(2, 4), torch.randn(2, 6), torch.randn(2, 2)
    return SmoothedAttribution([first, (second, third)], [first.abs(), (second.abs(), third.abs())],
                               torch.tensor([0.1, 0.1]), 8, dof=7.0, delta=torch.zeros(2))


def assert_bit_identical(loaded, original, where="result"):
    assert type(loaded) is type(original), f"{where}: {type(loaded).__name__} != {type(original).__name__}"
    if isinstance(original, torch.Tensor):
        assert type(loaded) is torch.Tensor and loaded.dtype == original.dtype and loaded.shape == original.shape
        bits = [t.contiguous().reshape(-1).view(torch.uint8) for t in (loaded, original)]
        assert torch.equal(*bits), f"{where}: bits differ"
    elif isinstance(original, (tuple, list)):
        assert len(loaded) == len(original)
        for i, (x, y) in enumerate(zip(loaded, original)):
            assert_bit_identical(x, y, f"{where}[{i}]")
    else:
        assert loaded == original or (loaded != loaded and original != original), where


def assert_same_result(loaded, original):
    assert isinstance(loaded, SmoothedAttribution)
    for name in ("attributions", "stderr", "relative_stderr", "nt_samples", "delta", "dof", "converged",
                 "delta_stderr", "outputs", "channel_reducer"):
        assert_bit_identical(getattr(loaded, name), getattr(original, name), name)
    assert loaded.config == original.config


BUILDERS = {"every field": every_field_result, "tuple, None fields": few_field_result, "layer list": layer_list_result}


@pytest.mark.parametrize("file_format", ["safetensors", "torch"])
@pytest.mark.parametrize("builder", list(BUILDERS))
def test_save_and_load_give_every_field_back_bit_for_bit(tmp_path, file_format, builder):
    if file_format == "safetensors":
        pytest.importorskip("safetensors")
    original = BUILDERS[builder]()
    path = original.save(tmp_path / "result.bin", file_format=file_format)
    assert path == tmp_path / "result.bin"
    loaded = SmoothedAttribution.load(path)
    assert_same_result(loaded, original)
    if isinstance(original.attributions, torch.Tensor):
        assert torch.equal(loaded[0, 0], original.attributions[0, 0]) and loaded.shape == original.shape


def test_a_file_written_before_outputs_and_channel_reducer_existed_reads_them_as_none(tmp_path):
    from noisegrad import _result_io

    original = few_field_result()
    fields = {name: getattr(original, name) for name in FIELDS if name not in ("outputs", "channel_reducer")}
    path = _result_io.save_result(tmp_path / "old.pt", fields, None, "torch")  # the header of an older noisegrad
    loaded = SmoothedAttribution.load(path)
    assert loaded.outputs is None and loaded.channel_reducer is None
    assert_bit_identical(loaded.attributions, original.attributions)


def test_a_call_with_several_outputs_saves_and_loads_them_and_plots_one(tmp_path, mlp):
    x = torch.randn(3, 5, dtype=torch.float64)
    result = NoiseTunnel(Saliency(mlp)).attribute(x, outputs=[2, 0], nt_samples=4, stdevs=0.1, seed=0,
                                                  return_stderr=True)
    assert result.outputs == (2, 0) and result.attributions.shape == (3, 5, 2)
    loaded = SmoothedAttribution.load(result.save(tmp_path / "r.pt", file_format="torch"))
    assert_same_result(loaded, result)
    fig, axes = loaded.plot(output=0)
    assert len(axes) == 3
    with pytest.raises(ValueError, match=r"holds 2 outputs \(outputs=\[2, 0\]\): choose one with output="):
        loaded.plot()
    with pytest.raises(ValueError, match=r"output=1 is not one of this result's outputs=\[2, 0\]"):
        loaded.plot(output=1)


def test_a_result_with_reduced_channels_plots_as_images(cnn):
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    result = NoiseTunnel(Saliency(cnn)).attribute(x, target=1, nt_samples=4, stdevs=0.1, seed=0, return_stderr=True,
                                                  channel_reducer="mean")
    fig, axes = result.plot()
    assert result.attributions.shape == (2, 5, 5) and len(axes) == 2


def test_the_bit_comparison_sees_a_changed_nan_payload_or_sign_of_zero():
    original = every_field_result()
    changed = copy.deepcopy(original)
    changed.stderr[0, 1, 1] = float("nan")  # the default NaN, not the payload
    with pytest.raises(AssertionError, match="stderr: bits differ"):
        assert_same_result(changed, original)
    changed = copy.deepcopy(original)
    changed.delta[1] = 0.0
    with pytest.raises(AssertionError, match="delta: bits differ"):
        assert_same_result(changed, original)


def hide_safetensors(monkeypatch):
    for name in [m for m in sys.modules if m == "safetensors" or m.startswith("safetensors.")] + ["safetensors"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import safetensors` now raises ImportError


def test_without_safetensors_auto_writes_torchs_format_read_with_weights_only(tmp_path, monkeypatch):
    hide_safetensors(monkeypatch)
    original = every_field_result()
    path = original.save(tmp_path / "result.pt")
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    content = torch.load(path, weights_only=True)
    assert set(content) == {"noisegrad", "tensors"} and json.loads(content["noisegrad"])["config"] == original.config
    assert_same_result(SmoothedAttribution.load(path), original)
    with pytest.raises(ImportError, match="pip install safetensors"):
        original.save(tmp_path / "result.safetensors", file_format="safetensors")


def test_with_safetensors_auto_writes_a_safetensors_file_and_it_needs_the_package_to_read(tmp_path, monkeypatch):
    safetensors = pytest.importorskip("safetensors")
    original = few_field_result()
    path = original.save(tmp_path / "result.safetensors")
    with safetensors.safe_open(str(path), framework="pt") as file:
        assert json.loads(file.metadata()["noisegrad"])["format"] == "noisegrad.SmoothedAttribution"
        assert sorted(file.keys()) == ["attributions.0", "attributions.1", "relative_stderr", "stderr.0", "stderr.1"]
    hide_safetensors(monkeypatch)
    with pytest.raises(ImportError, match="pip install safetensors"):
        SmoothedAttribution.load(path)


class Payload:
    """Unpickling this creates a folder: the stand-in for code a crafted file would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_crafted_pickle_under_a_results_name_runs_no_code(tmp_path):
    marker = tmp_path / "code ran"
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload does run when unpickled
    assert marker.exists()
    marker.rmdir()

    path = make_result().save(tmp_path / "result.pt", file_format="torch")
    header = torch.load(path, weights_only=True)["noisegrad"]
    with open(path, "wb") as file:  # a bare pickle
        pickle.dump({"noisegrad": header, "tensors": {}, "x": Payload(marker)}, file)
    with pytest.raises(ValueError, match="it was not read"):
        SmoothedAttribution.load(path)
    assert not marker.exists()

    torch.save({"noisegrad": header, "tensors": {"attributions": Payload(marker)}}, path)  # torch's zip format
    with pytest.raises(ValueError, match="refused.*weights_only"):
        SmoothedAttribution.load(path)
    assert not marker.exists()


def test_files_that_are_not_a_saved_result_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"attributions": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="not a saved SmoothedAttribution"):
        SmoothedAttribution.load(path)
    result = make_result()
    good = result.save(tmp_path / "good.pt", file_format="torch")
    content = torch.load(good, weights_only=True)
    content["tensors"]["smuggled"] = torch.zeros(1)
    torch.save(content, path)
    with pytest.raises(ValueError, match="does not name: \\['smuggled'\\]"):
        SmoothedAttribution.load(path)
    header = json.loads(content["noisegrad"])
    header["version"] = 2
    torch.save({"noisegrad": json.dumps(header), "tensors": content["tensors"]}, path)
    with pytest.raises(ValueError, match="format version 2"):
        SmoothedAttribution.load(path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a saved SmoothedAttribution"):
        SmoothedAttribution.load(path)
    if pytest.importorskip("safetensors"):
        from safetensors.torch import save_file

        save_file({"attributions": torch.ones(2)}, str(path))
        with pytest.raises(ValueError, match="no noisegrad.SmoothedAttribution header"):
            SmoothedAttribution.load(path)


def test_a_config_that_json_cannot_hold_is_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="config must be JSON-serialisable"):
        make_result(config={"model": torch.nn.Linear(2, 2)}).save(tmp_path / "r.pt")
    with pytest.raises(ValueError, match="file_format must be one of"):
        make_result().save(tmp_path / "r.pt", file_format="pickle")
    loaded = SmoothedAttribution.load(make_result(config={"shape": (3, 4)}).save(tmp_path / "r.pt"))
    assert loaded.config == {"shape": [3, 4]}  # JSON has lists, not tuples (documented)


# --------------------------------------------------------------------------- figures


def test_an_image_result_plots_one_panel_per_example_titled_with_its_error():
    result = SmoothedAttribution(torch.randn(3, 3, 8, 8), torch.rand(3, 3, 8, 8), torch.tensor([0.05, 0.1, 0.2]),
                                 16, dof=15)
    fig, axes = result.plot()
    assert len(fig.axes) == len(axes) == 3
    assert [ax.get_title() for ax in axes] == ["example 0: rel. SE 5.0%", "example 1: rel. SE 10.0%",
                                               "example 2: rel. SE 20.0%"]
    fig, ax = result.plot(example=2, images=torch.rand(3, 3, 8, 8), method="blended_heat_map", colorbar=False)
    assert len(fig.axes) == 1 and ax.get_title() == "example 2: rel. SE 20.0%"
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_tabular_result_plots_bars_with_t_intervals_one_panel_per_example():
    result = make_result(dof=torch.tensor([3, 15]))
    plot = result.plot(feature_names=["a", "b", "c", "d"])
    fig, axes = plot
    assert len(fig.axes) == len(axes) == 2 and plot._repr_png_()[:4] == b"\x89PNG"
    for i, ax in enumerate(axes):
        (bars,) = [c for c in ax.containers if getattr(c, "errorbar", None) is not None]
        half_widths = sorted(float(s[1][0] - s[0][0]) / 2 for s in bars.errorbar.lines[2][0].get_segments())
        t = interval_halfwidth_factor(0.95, [3, 15][i])
        assert half_widths == pytest.approx(sorted(t * result.stderr[i].tolist()[k] for k in range(4)))
        assert ax.get_title() == f"example {i}"
    fig, ax = result.plot(example=1, feature_names=["a", "b", "c", "d"], level=None)
    assert len(fig.axes) == 1 and [t.get_text() for t in ax.get_yticklabels()] == ["d", "a", "c", "b"]
    assert "± 1 standard error" in ax.get_xlabel()


def test_a_token_result_plots_one_examples_token_scores():
    attributions = torch.tensor([[[1.0, -3.0], [0.5, 0.5], [2.0, 0.0]], [[0.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]])
    result = SmoothedAttribution(attributions, attributions.abs(), torch.tensor([0.1, 0.1]), 8, dof=7)
    tokens = [["not", "so", "good"], ["fine", "by", "me"]]
    fig, ax = result.plot(tokens=tokens, example=1)
    assert [t.get_text() for t in ax.texts] == ["fine", "by", "me"]
    with pytest.raises(ValueError, match="choose one with example="):
        result.plot(tokens=tokens)
    with pytest.raises(ValueError, match="pass kind='image', or tokens="):
        result.plot()
    fig, axes = result.plot(kind="image", colorbar=False)
    assert len(axes) == 2


def test_plotting_several_tensors_takes_an_index_and_bad_options_are_named():
    result = SmoothedAttribution((torch.randn(2, 4), torch.randn(2, 1, 6, 6)), (torch.rand(2, 4),
                                 torch.rand(2, 1, 6, 6)), torch.tensor([0.1, 0.2]), 8, dof=7)
    with pytest.raises(ValueError, match="choose one with index="):
        result.plot()
    fig, axes = result.plot(index=1)
    assert len(axes) == 2
    fig, axes = result.plot(index=0)
    assert [ax.get_title() for ax in axes] == ["example 0", "example 1"]
    with pytest.raises(ValueError, match="images= does not apply to a 'features' plot"):
        result.plot(index=0, images=torch.rand(2, 4))
    with pytest.raises(ValueError, match="kind must be one of"):
        result.plot(index=0, kind="bars")
    with pytest.raises(ValueError, match="example must be an int"):
        result.plot(index=0, example=2)


# --------------------------------------------------------------------------- figures stay lazy

PROBE = textwrap.dedent(
    """
    import json, sys, tempfile, torch
    import noisegrad
    result = noisegrad.SmoothedAttribution(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2), 4, dof=3)
    _ = (result * 2, torch.sum(result), result.as_captum(), repr(result))
    with tempfile.TemporaryDirectory() as folder:
        noisegrad.SmoothedAttribution.load(result.save(folder + "/r"))
    before = sorted(m for m in sys.modules if m.startswith("noisegrad.viz"))
    result.plot()
    print(json.dumps({"before": before, "after": "noisegrad.viz" in sys.modules}))
    """
)


def test_using_a_result_loads_no_figures_until_it_is_plotted():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=PACKAGE_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"before": [], "after": True}


def test_a_checkpoint_holding_a_result_reads_back_with_torch_loads_defaults(tmp_path):
    """torch.save(result) names one callable, the result's constructor, which torch.load allows (weights_only)."""
    import noisegrad

    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).double()
    result = noisegrad.SmoothGrad(model, nt_samples=4, seed=0).attribute(torch.randn(2, 4, dtype=torch.float64),
                                                                       target=0)
    torch.save({"step": 3, "explanation": result}, tmp_path / "checkpoint.pt")
    back = torch.load(tmp_path / "checkpoint.pt")["explanation"]
    assert isinstance(back, noisegrad.SmoothedAttribution) and back.config == result.config
    assert torch.equal(back.attributions, result.attributions) and torch.equal(back.stderr, result.stderr)

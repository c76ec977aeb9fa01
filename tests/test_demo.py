"""The ``python -m noisegrad demo``, run at reduced size: figure, summary, a real quality check, CLI errors."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from noisegrad.__main__ import main
from noisegrad.demo import METHODS, SHAPES, figure_size, make_shapes, mask_mass_fraction, run_demo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "nested" / "out"  # created by the demo
    result = run_demo(
        out, samples=4, noise=0.15, seed=0, n_train=1024, train_steps=150, n_test=300, n_images=3, ig_steps=8,
        print_fn=None,
    )
    return out, result


def test_generated_shapes_have_known_masks():
    x, y, m = make_shapes(64, torch.Generator().manual_seed(1))
    assert x.shape == m.shape == (64, 1, 16, 16) and m.dtype == torch.bool
    assert set(y.tolist()) <= set(range(len(SHAPES)))
    assert (m.sum(dim=(1, 2, 3)) == 9).all()  # every shape has 9 pixels: brightness does not give the class
    assert x[m].mean() > x[~m].mean() + 0.8  # the shape is bright on the noise


def test_mask_mass_of_a_uniform_map_is_the_mask_area():
    _, _, m = make_shapes(8, torch.Generator().manual_seed(2))
    assert mask_mass_fraction(torch.ones(m.shape), m) == pytest.approx(9 / 256)
    assert mask_mass_fraction(-m.double(), m) == pytest.approx(1.0)


def test_figure_is_written_with_one_row_per_image_and_real_content(small_demo):
    out, result = small_demo
    path = out / "comparison.png"
    assert result.figure_path == path and path.is_file()
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    inches_w, inches_h = figure_size(3)
    assert (width, height) == (round(inches_w * 100), round(inches_h * 100))
    assert width / height == pytest.approx(6 / 3, rel=0.15)  # 6 columns (input + 5 methods), 3 rows
    rgb = pixels[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05 and len(np.unique(rgb, axis=0)) > 200  # images and colour maps, not a blank canvas


def test_summary_has_one_row_per_method(small_demo):
    out, result = small_demo
    with open(out / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(METHODS)
    for r in rows:
        assert float(r["time_s"]) >= 0 and 0 <= float(r["mask_mass"]) <= 1
        assert int(r["samples"]) == (1 if r["method"] == "Saliency" else 4)
        has_delta = r["method"] == "IG + SmoothGrad"
        assert (r["mean_abs_delta"] != "") == has_delta
    ig = rows[-1]
    assert math.isfinite(float(ig["mean_abs_delta"]))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [m["method"] for m in summary["methods"]] == list(METHODS)
    assert summary["options"]["samples"] == 4 and summary["mask_area_fraction"] == pytest.approx(9 / 256)


def test_smoothgrad_of_a_trained_model_beats_a_uniform_map(small_demo):
    _, result = small_demo
    assert result.accuracy > 0.8
    mass = {r.method: r.mask_mass for r in result.rows}
    assert mass["SmoothGrad"] > result.mask_area
    assert mass["IG + SmoothGrad"] > result.mask_area


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--samples", "--noise", "--seed", "comparison.png"):
        assert option in text


def test_out_that_is_a_file_exits_with_2_and_names_it(tmp_path, capsys):
    not_a_folder = tmp_path / "taken.txt"
    not_a_folder.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(not_a_folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(not_a_folder) in err and "not a directory" in err
    assert not_a_folder.read_text() == "x"


def test_out_under_a_file_fails_from_the_command_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "sub"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "noisegrad", "demo", "--out", str(target)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert str(target) in proc.stderr and "Traceback" not in proc.stderr

"""Every notebook in tutorials/ runs top to bottom, and is committed with the outputs the current code makes.

``python tutorials/execute.py`` regenerates them. Outputs are compared by what a reader sees, not by pixels: each
cell's number of images and their sizes.
"""

import base64
import struct
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' installs the notebook runners")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
#: Seconds one cell may take before nbclient gives up (each notebook takes a few seconds).
TIMEOUT = 120
#: The most a committed tutorial may weigh, outputs included.
MAX_BYTES = 1_000_000


def images(book) -> list:
    """Per code cell, the (width, height) of every PNG output, read from the PNG header."""
    sizes = []
    for cell in book.cells:
        if cell.cell_type != "code":
            continue
        pngs = [base64.b64decode(out["data"]["image/png"]) for out in cell.get("outputs", [])
                if "image/png" in out.get("data", {})]
        sizes.append([struct.unpack(">II", png[16:24]) for png in pngs])
    return sizes


def test_there_are_tutorials():
    assert {p.name for p in NOTEBOOKS} >= {"01_quick_start.ipynb", "02_wrapping_captum.ipynb",
                                           "03_noise_and_samples.ipynb", "04_errors_samplers_auto.ipynb",
                                           "05_joint_smoothgrad_ig.ipynb", "06_tabular_and_command_line.ipynb",
                                           "07_text.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_with_its_pictures_and_is_small(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), f"run python tutorials/execute.py {path.name}"
    assert sum(len(cell_images) for cell_images in images(book)) >= 1, f"{path.name} shows no figure"
    assert path.stat().st_size < MAX_BYTES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_makes_the_committed_pictures(path, this_python_kernel, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(this_python_kernel))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as a reader's Jupyter: no backend chosen for them
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    committed = nbformat.read(path, as_version=4)
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=TIMEOUT, kernel_name="noisegrad-test",
                                     resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    assert images(book) == images(committed), f"outputs are stale: run python tutorials/execute.py {path.name}"

"""Every notebook in tutorials/ runs top to bottom (with nbclient), and is committed without outputs."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' installs the notebook runners")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
#: Seconds one cell may take before nbclient gives up (each notebook takes a few seconds).
TIMEOUT = 120


def test_there_are_tutorials():
    assert {p.name for p in NOTEBOOKS} >= {"01_quick_start.ipynb", "02_wrapping_captum.ipynb",
                                           "03_noise_and_samples.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"strip the outputs of {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, this_python_kernel, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(this_python_kernel))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=TIMEOUT, kernel_name="noisegrad-test",
                                     resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()  # raises CellExecutionError with the failing cell and its traceback

"""viz figures draw inline in a notebook with no set-up, and stay headless outside one."""

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' installs the notebook runners")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CELLS = [
    # no %matplotlib, no pyplot: the value of a plot_* call, the figure alone, and display(...)
    "import torch, matplotlib\nbackend = matplotlib.get_backend()\nfrom noisegrad import viz",
    "viz.plot_feature_attr(torch.tensor([0.5, -2.0, 1.0]), ['a', 'b', 'c'])",
    "fig, ax = viz.plot_image_attr(torch.rand(1, 6, 6) - 0.5, torch.rand(1, 6, 6))\nfig",
    "display(viz.plot_attr_comparison({'map': torch.rand(2, 1, 6, 6)}))",
    "fig, ax = viz.plot_feature_attr(torch.tensor([1.0, 2.0]))\nax",  # an Axes alone is not a figure: text
    "print(matplotlib.get_backend() == backend)",
]


def test_figures_render_inline_in_a_real_kernel_with_no_backend_set(this_python_kernel, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("JUPYTER_PATH", str(this_python_kernel))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    nbclient.NotebookClient(book, timeout=120, kernel_name="noisegrad-test").execute()
    images = [sum("image/png" in out.get("data", {}) for out in cell.outputs) for cell in book.cells]
    assert images == [0, 1, 1, 1, 0, 0]
    assert book.cells[-1].outputs[0]["text"].strip() == "True"  # the user's backend is left as it was


def test_outside_a_notebook_a_plot_is_a_plain_tuple_with_a_headless_figure():
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from noisegrad import viz

    result = viz.plot_feature_attr(torch.tensor([1.0, -1.0]))
    fig, ax = result
    assert isinstance(result, tuple) and result.fig is fig and result.ax is ax
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert result._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_on_the_users_own_axes_is_left_to_their_backend():
    import torch
    from matplotlib.figure import Figure

    from noisegrad import viz

    own = Figure().add_subplot()
    assert viz.plot_feature_attr(torch.tensor([1.0, -1.0]), ax=own)._repr_png_() is None

"""Figures of attributions: image heat maps and overlays, feature bars, coloured tokens, convergence.

Every helper draws with matplotlib's object-oriented API on an Agg canvas (no
display, no pyplot state), accepts tensors on any device and numpy arrays,
returns the figure and axes, and writes PNG/SVG/PDF with ``save=``.

Examples
--------
>>> import torch
>>> from noisegrad import viz
>>> fig, ax = viz.plot_image_attr(torch.randn(1, 8, 8), sign="all")
>>> viz.figure_to_array(fig).dtype
dtype('uint8')
"""

from noisegrad.viz._canvas import FORMATS, figure_to_array
from noisegrad.viz._normalize import SIGNS, attribution_scale, normalize_attr
from noisegrad.viz._panel import METHODS
from noisegrad.viz.convergence import ConvergenceRun, measure_convergence
from noisegrad.viz.convergence_plots import plot_convergence_curve, plot_convergence_delta, plot_convergence_maps
from noisegrad.viz.grid import plot_attr_comparison, plot_image_attr_grid
from noisegrad.viz.image import plot_image_attr
from noisegrad.viz.tabular import plot_feature_attr
from noisegrad.viz.text import TokenHTML, plot_token_attr, token_attr_html

__all__ = [
    "plot_image_attr",
    "plot_image_attr_grid",
    "plot_attr_comparison",
    "plot_feature_attr",
    "plot_token_attr",
    "token_attr_html",
    "TokenHTML",
    "measure_convergence",
    "ConvergenceRun",
    "plot_convergence_maps",
    "plot_convergence_curve",
    "plot_convergence_delta",
    "attribution_scale",
    "normalize_attr",
    "figure_to_array",
    "SIGNS",
    "METHODS",
    "FORMATS",
]

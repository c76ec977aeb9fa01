"""The application built on the noisegrad library: the ``demo``, ``explain`` and ``attribute-dataset`` commands.

* :mod:`noisegrad.app.cli` — the ``python -m noisegrad`` argument parser;
* :mod:`noisegrad.app.demo` — ``demo``: smoothed attributions of the shipped CNN;
* :mod:`noisegrad.app.shapes` — the demo's generated images with known masks, its CNN and shipped weights
  (``data/demo_cnn.pt``);
* :mod:`noisegrad.app.explain` — ``explain``: smoothed attributions of your own model;
* :mod:`noisegrad.app.attribute_dataset` — ``attribute-dataset``: a whole data set into shards
  (:mod:`noisegrad.app.data_folder` reads a folder of example files).

The app imports the library; no library module imports the app.
"""

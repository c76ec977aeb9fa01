"""Where the noise goes: a perturbation gives a chunk's rows for given sample ids.

A perturbation has three parts, and a new place for noise is a new file
implementing them, not a branch in the loop:

* ``rows(sample_ids) -> tuple of Tensor``: the inputs of the wrapped call for
  a chunk, sample-major (copy 0 of every example, then copy 1, ...);
* ``select(keep)``: keep only some examples (``nt_samples="auto"``);
* ``applied()``: a context the wrapped call runs in, which installs and
  always removes whatever the perturbation needs (a forward hook on a
  module for noise at a layer, a functional parameter swap for noise on
  weights; nothing for noise on the inputs).

:class:`noisegrad.perturb.inputs.InputNoise` is the one implemented today.
"""

"""Other libraries' parameter names and defaults as :class:`~noisegrad.SmoothingConfig` constructors.

Vertex AI's ``SmoothGradConfig``, innsight's ``torch_smoothgrad``, pnpxai's
SmoothGrad/VarGrad and Xplique's SmoothGrad/SquareGrad/VarGrad, each with
that library's argument names, defaults and ranges (``docs/migration.md``).
They are classmethods of ``SmoothingConfig`` (``SmoothingConfig.from_vertex``
and so on); ``cls`` is that class.
"""

import numbers
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Type

from noisegrad._validate import as_int

if TYPE_CHECKING:
    from noisegrad.config import SmoothingConfig

__all__ = ["from_vertex", "from_innsight", "from_pnpxai", "from_xplique"]


def from_vertex(
    cls: Type["SmoothingConfig"],
    noise_sigma: Optional[float] = None,
    feature_noise_sigma: Any = None,
    noisy_sample_count: int = 3,
    feature_names: Optional[Sequence[str]] = None,
) -> "SmoothingConfig":
    """Vertex AI's ``SmoothGradConfig``: ``noise_sigma`` or ``feature_noise_sigma`` (one of them), 1–50 samples.

    ``feature_noise_sigma`` is Vertex's ``{"noise_sigma": [{"name": ..., "sigma": ...}, ...]}``, that list
    alone, or a ``{name: sigma}`` mapping; features not named get no noise. Without ``feature_names`` the
    names are taken from it, in order (name them all then, or give ``feature_names``).

    Examples
    --------
    >>> from noisegrad import SmoothingConfig
    >>> SmoothingConfig.from_vertex(noise_sigma=0.1).nt_samples
    3
    """
    if (noise_sigma is None) == (feature_noise_sigma is None):
        raise ValueError("give exactly one of noise_sigma and feature_noise_sigma (a oneof in Vertex AI)")
    count = as_int("noisy_sample_count", noisy_sample_count, least=None)
    if not 1 <= count <= 50:
        raise ValueError(f"noisy_sample_count must be in [1, 50] (Vertex AI's range), got {count}")
    if noise_sigma is not None:
        return cls(nt_samples=count, noise=noise_sigma)
    entries = feature_noise_sigma
    if isinstance(entries, Mapping) and "noise_sigma" in entries:
        entries = entries["noise_sigma"]
    if isinstance(entries, Mapping):
        pairs = list(entries.items())
    elif isinstance(entries, (list, tuple)) and all(isinstance(e, Mapping) for e in entries):
        pairs = [(entry["name"], entry["sigma"]) for entry in entries]
    else:  # the configuration says what it takes
        return cls(nt_samples=count, feature_noise=entries)
    names = tuple(feature_names) if feature_names is not None else tuple(name for name, _ in pairs)
    return cls(nt_samples=count, feature_noise=tuple(pairs), feature_names=names)


def from_innsight(
    cls: Type["SmoothingConfig"], n: int = 50, noise_level: float = 0.1, dtype: str = "float",
    output_idx: Optional[Sequence[int]] = None, times_input: bool = False,
) -> "SmoothingConfig":
    """innsight's ``torch_smoothgrad``: σ = ``noise_level`` × (max − min) of the whole data tensor.

    ``output_idx`` are R's indices, counted from 1: they become
    ``outputs`` counted from 0. innsight's default (``NULL``, every
    output) needs the model's output count, which a configuration does
    not know: give ``output_idx=range(1, n_outputs + 1)``, or a ``target``
    per call. ``times_input=True`` is innsight's SmoothGrad×Input,
    mean(∇f(x+ε)) ⊙ x: ``times_input="clean"``.

    Examples
    --------
    >>> from noisegrad import SmoothingConfig
    >>> config = SmoothingConfig.from_innsight(noise_level=0.2, output_idx=[1, 3], times_input=True)
    >>> config.scope, config.outputs, config.times_input
    ('data', (0, 2), 'clean')
    """
    if dtype not in ("float", "double"):
        raise ValueError(f"dtype must be 'float' or 'double' (innsight's names), got {dtype!r}")
    if not isinstance(times_input, bool):
        raise TypeError(f"times_input must be True or False (innsight's logical), got {times_input!r}")
    outputs = None
    if output_idx is not None:
        indices = [output_idx] if isinstance(output_idx, numbers.Integral) else list(output_idx)
        if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < 1 for i in indices):
            raise ValueError(f"output_idx holds innsight's (R's) output indices, counted from 1; got {indices!r}")
        if len(set(indices)) != len(indices):
            raise ValueError(f"output_idx={indices!r} has repeated indices")
        outputs = tuple(int(i) - 1 for i in indices)
    return cls(nt_samples=as_int("n", n), noise_level=noise_level, scope="data", dtype=dtype,
               outputs=outputs, times_input="clean" if times_input else None)


def from_pnpxai(
    cls: Type["SmoothingConfig"], noise_level: float = 0.1, n_iter: int = 20, layer: Optional[str] = None,
    nt_type: str = "smoothgrad",
) -> "SmoothingConfig":
    """pnpxai's SmoothGrad / VarGrad: ``noise_level`` (read as a fraction of each example's range), ``n_iter``
    samples, ``layer`` the module that receives the noise (by dotted name).

    Examples
    --------
    >>> from noisegrad import SmoothingConfig
    >>> SmoothingConfig.from_pnpxai(n_iter=30, nt_type="vargrad").nt_samples
    30
    """
    if layer is not None and not isinstance(layer, str):
        raise TypeError("from_pnpxai(layer=...) takes the layer's dotted name (e.g. 'embeddings'), which a "
                        "configuration can save; to pass the module itself, use VarGrad(model, layer=module)")
    return cls(nt_type=nt_type, nt_samples=as_int("n_iter", n_iter), noise_level=noise_level,
               noise_layer=layer)


def from_xplique(
    cls: Type["SmoothingConfig"], nb_samples: int = 50, noise: float = 0.2, batch_size: Optional[int] = 32,
    nt_type: str = "smoothgrad",
    operator: Any = None, reducer: Optional[str] = "mean",
) -> "SmoothingConfig":
    """Xplique's SmoothGrad / SquareGrad / VarGrad: ``noise`` an absolute σ, ``batch_size`` rows per forward.

    ``operator`` g(f, x, y) becomes ``objective`` (the same arguments:
    the model, the inputs, the targets); Xplique's default and
    ``"classification"`` select the target's logit, which is our default
    (one-hot target rows are read as indices). Its other task names are
    refused: pass the operator function. ``reducer`` (default
    ``"mean"``, as Xplique's) becomes ``channel_reducer``: it combines the
    channels of image attributions after smoothing and leaves others as
    they are, as Xplique does.

    Examples
    --------
    >>> from noisegrad import SmoothingConfig
    >>> config = SmoothingConfig.from_xplique(nb_samples=10, nt_type="smoothgrad_sq")
    >>> config.max_batch_rows, config.channel_reducer
    (32, 'mean')
    """
    if isinstance(operator, str) or (operator is not None and not callable(operator)):
        name = getattr(operator, "name", operator)
        if str(name).lower() not in ("classification", "tasks.classification"):
            raise ValueError(f"operator={operator!r}: only Xplique's classification operator maps to a name "
                             "here (our default target selection); for any other task pass the operator "
                             "function g(model, inputs, targets)")
        operator = None
    return cls(nt_type=nt_type, nt_samples=as_int("nb_samples", nb_samples), noise=noise,
               max_batch_rows=batch_size, nt_samples_batch_size="auto" if batch_size is None else None,
               objective=operator, channel_reducer=reducer)

"""``python -m noisegrad explain``: noise-smoothed attributions of your own model from the command line.

The model is one of (:mod:`noisegrad.app.models` says what loading each one trusts)

* a TorchScript file (``torch.jit.save``), loaded with ``torch.jit.load``;
* a ``torch.export`` program (``torch.export.save``, usually ``.pt2``), checked
  and loaded without unpickling anything (:mod:`noisegrad.app.export_archive`)
  and run through ``.module()``;
* ``package.module:function``: the module is imported (the current folder is on
  the import path) and ``function()`` must return a ``torch.nn.Module`` (or any
  callable model); an attribute that already is an ``nn.Module`` is used as is.
  Only this kind takes ``--noise-layer`` (noise at a submodule's output, for
  token ids: :mod:`noisegrad.app.explain_layer`).

The inputs file is read with ``torch.load(..., weights_only=True)`` — no
arbitrary pickles — and holds a tensor, a tuple/list of tensors (the model's
positional arguments) or a dict of tensors (its keyword arguments). The first
dimension of every tensor is the batch. Integer tensors (token ids, masks) need
``--noise-layer``.

Outputs in ``--out``: ``attributions.pt`` (a dict with the attributions in the
inputs' layout, the targets, the options and, on request, relative standard
errors; readable with ``weights_only=True``) and one figure per input tensor.

Examples
--------
>>> from noisegrad.app.cli import main
>>> main(["explain", "--model", "model.pt", "--inputs", "x.pt", "--out", "explained/"])  # doctest: +SKIP
0
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import Tensor

import noisegrad
from noisegrad._progress import progress_bar
from noisegrad.app import explain_layer
from noisegrad.app.errors import ExplainError
from noisegrad.app.models import DYNAMIC_BATCH_HINT, is_model_file, load_model
from noisegrad.app.output import output_folder
from noisegrad.sampling.samplers import units_for_stderr
from noisegrad.stats.grouped import relative_stderr

__all__ = ["METHODS", "NT_TYPES", "ExplainError", "add_arguments", "load_model", "load_inputs", "parse_target",
           "explain", "run"]

#: ``--method`` choices → Captum class (``ig`` is IntegratedGradients).
METHODS = {"saliency": Saliency, "input_x_gradient": InputXGradient, "ig": IntegratedGradients}

#: ``--nt-type`` choices; ``none`` runs the method once, without noise.
NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad", "none")

#: ``--n-steps`` when not given.
DEFAULT_IG_STEPS = 32

#: Examples drawn per figure, and token figures written.
MAX_FIGURE_EXAMPLES = 8

DESCRIPTION = """\
Explain your own model with a Captum method smoothed by noisegrad.NoiseTunnel.
MODEL is a TorchScript file, a torch.export program file (.pt2, loaded
without unpickling anything: refused if it would need pickle or calls an
operator that can reach a file), or package.module:function returning an
nn.Module (imported from the current folder or the installed packages).
INPUTS is a file written by torch.save holding a tensor, a tuple of tensors
(positional arguments of the model) or a dict of tensors (keyword arguments);
it is read with weights_only=True, so no pickled code is ever run. Writes
DIR/attributions.pt, a dict readable with torch.load(weights_only=True):
"attributions" (in the layout of INPUTS), "target", "options", "delta" (one
IntegratedGradients convergence delta per example, --method ig), and with
--stderr "stderr" (the Monte-Carlo standard error of every attribution
element, same layout) and "relative_stderr" (||stderr|| / ||attribution|| per
example); and one figure per input tensor (image grid for (N, C, H, W) or
(N, H, W) tensors, feature bars for (N, F) tensors). Argument errors exit with
status 2; a folder DIR created by a run that fails is removed again.

""" + explain_layer.DESCRIPTION


@dataclass
class Explanation:
    """What :func:`explain` computed."""

    attributions: Tuple[Tensor, ...]
    target: Optional[Tensor]
    delta: Optional[Tensor]
    relative_stderr: Optional[Tuple[Tensor, ...]]
    seconds: float
    stderr: Optional[Tuple[Tensor, ...]] = None
    token_scores: Optional[Tensor] = None  # --noise-layer: (batch, tokens), when the layer has a row per token
    tokens: Optional[Tensor] = None  # the token ids those scores belong to
    token_mask: Optional[Tensor] = None  # the --noise-mask input: tokens not drawn where it is 0


# --------------------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``explain`` options."""
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="TorchScript file, torch.export file, or package.module:function")
    parser.add_argument("--inputs", required=True, metavar="FILE",
                        help="torch.save file: a tensor, a tuple of tensors or a dict of tensors (batch first)")
    parser.add_argument("--target", default="pred", metavar="T",
                        help="output index to explain: an int, comma-separated ints (one per example), "
                             "'pred' (each example's top output) or 'none' (model returns one value per example)")
    parser.add_argument("--method", choices=sorted(METHODS), default="saliency", help="Captum method to smooth")
    parser.add_argument("--nt-type", choices=NT_TYPES, default="smoothgrad",
                        help="SmoothGrad (mean), SmoothGrad² (mean of squares), VarGrad (variance), or no noise")
    parser.add_argument("--samples", type=positive_int, default=32, metavar="N", help="noisy copies per example")
    parser.add_argument("--noise", type=non_negative_float, default=0.15, metavar="FRACTION",
                        help="noise standard deviation as a fraction of each example's range (noisegrad.relative); "
                             "with --noise-layer, of the range of that layer's output over the tokens --noise-mask "
                             "keeps")
    parser.add_argument("--batch-size", type=_batch_size, default="auto", metavar="K",
                        help="noisy copies per example in one forward pass (nt_samples_batch_size), or 'auto'")
    parser.add_argument("--n-steps", type=positive_int, default=None, metavar="S",
                        help=f"IntegratedGradients steps per noisy copy (--method ig only; default {DEFAULT_IG_STEPS})")
    parser.add_argument("--abs", action="store_true",
                        help="Saliency of |gradient| (Captum's default) instead of the signed gradient (not with "
                             "--noise-layer)")
    parser.add_argument("--stderr", action="store_true",
                        help="also estimate the Monte-Carlo standard error of every attribution element from the "
                             "same samples (no extra gradients); saved as 'stderr' and, relative to the "
                             "attribution, 'relative_stderr'")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the noise; example i is explained with example_ids=[i], so it gets the noise "
                             "it would get in a batch, independent of the other examples'")
    parser.add_argument("--out", default="explained/", metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--no-figures", action="store_true", help="write attributions.pt only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no messages")
    explain_layer.add_arguments(parser)


positive_int = explain_layer.int_at_least(1, "a positive integer")


def non_negative_float(text: str) -> float:
    """argparse type: a finite float ≥ 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _batch_size(text: str) -> Union[int, str]:
    return "auto" if text == "auto" else positive_int(text)


# --------------------------------------------------------------------------- loading


def load_inputs(path_text: str, discrete: bool = False) -> Tuple[Tuple[Tensor, ...], Optional[List[str]], bool]:
    """The ``--inputs`` file as (tensors, keyword names or None, was a single tensor).

    ``discrete``: the noise goes on a layer (``--noise-layer``), so integer and
    boolean tensors (token ids, masks) are accepted.

    Raises
    ------
    ExplainError
        If the file is missing, is not loadable with ``weights_only=True``, or
        does not hold tensors with one common batch size, floating point unless ``discrete``.
    """
    path = Path(path_text)
    if not path.is_file():
        raise ExplainError(f"--inputs '{path}': no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExplainError(f"--inputs '{path}' cannot be read with torch.load(weights_only=True) (only tensors, "
                           f"tuples and dicts of tensors are accepted; no pickled objects): {first}") from err
    names: Optional[List[str]] = None
    single = isinstance(data, Tensor)
    if single:
        tensors = (data,)
    elif isinstance(data, (tuple, list)):
        tensors = tuple(data)
    elif isinstance(data, dict):
        names, tensors = [str(k) for k in data], tuple(data.values())
    else:
        raise ExplainError(f"--inputs '{path}' holds a {type(data).__name__}; expected a tensor, a tuple of tensors "
                           "or a dict of tensors")
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise ExplainError(f"--inputs '{path}' must hold only tensors (got {[type(t).__name__ for t in tensors]})")
    if any(t.is_complex() for t in tensors):
        raise ExplainError(f"--inputs '{path}': complex tensors cannot be explained (got "
                           f"{[str(t.dtype) for t in tensors]})")
    if not (discrete or all(t.is_floating_point() for t in tensors)):
        raise ExplainError(f"--inputs '{path}': every input tensor must be floating point to add noise and take "
                           f"gradients (got {[str(t.dtype) for t in tensors]}); for integer inputs such as token "
                           "ids, add the noise at the embedding layer instead with --noise-layer NAME "
                           "(a package.module:function model)")
    if any(t.dim() == 0 for t in tensors) or len({t.shape[0] for t in tensors}) != 1:
        raise ExplainError(f"--inputs '{path}': every tensor needs the same batch size as its first dimension "
                           f"(got shapes {[tuple(t.shape) for t in tensors]})")
    if tensors[0].shape[0] == 0:
        raise ExplainError(f"--inputs '{path}' holds no examples: its tensors have 0 rows "
                           f"(shapes {[tuple(t.shape) for t in tensors]})")
    return tensors, names, single


def parse_target(text: str, outputs: Tensor) -> Optional[Tensor]:
    """``--target`` → Captum's ``target`` for a batch whose model outputs are ``outputs``.

    Examples
    --------
    >>> parse_target("pred", torch.tensor([[0.1, 0.9], [0.8, 0.2]])).tolist()
    [1, 0]
    >>> parse_target("1,0", torch.zeros(2, 3)).tolist()
    [1, 0]
    """
    batch = outputs.shape[0]
    if text == "none":
        if outputs.dim() > 1 and outputs[0].numel() != 1:
            raise ExplainError(f"--target none needs one output value per example; the model returns shape "
                               f"{tuple(outputs.shape)}: give an output index or 'pred'")
        return None
    if outputs.dim() != 2:
        raise ExplainError(f"--target {text}: the model's output has shape {tuple(outputs.shape)}; an output index "
                           "needs (batch, outputs) (use 'none' for one value per example)")
    if text == "pred":
        return outputs.argmax(dim=1)
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ExplainError(f"--target {text!r}: expected an int, comma-separated ints, 'pred' or 'none'") from None
    if len(values) not in (1, batch):
        raise ExplainError(f"--target {text!r}: give one index or {batch} (one per example), not {len(values)}")
    bad = [v for v in values if not 0 <= v < outputs.shape[1]]
    if bad:
        raise ExplainError(f"--target {text!r}: indices {bad} out of range for {outputs.shape[1]} outputs")
    return torch.tensor(values * batch if len(values) == 1 else values)


# --------------------------------------------------------------------------- attribution


def explain(
    model: Callable[..., Any],
    inputs: Tuple[Tensor, ...],
    names: Optional[Sequence[str]],
    target: Optional[Tensor],
    args: argparse.Namespace,
    progress: Optional[Any] = None,
) -> Explanation:
    """Attribute ``inputs`` with the options in ``args``, one example at a time (so the progress bar moves).

    Without ``--noise-layer`` every input tensor is attributed; with it, the layer's output is
    (:mod:`noisegrad.app.explain_layer`).
    """
    layered = args.noise_layer is not None
    setup = explain_layer.layer_setup(model, inputs, names, args) if layered else _InputSetup(model, names, args)
    method = setup.method
    extra: Dict[str, Any] = {}
    if args.method == "saliency" and not layered:
        extra["abs"] = args.abs
    if args.method == "ig":
        extra["n_steps"] = args.n_steps or DEFAULT_IG_STEPS
    with_delta = args.method == "ig"
    batch = inputs[0].shape[0]
    parts: List[Tuple[Tensor, ...]] = []
    deltas: List[Tensor] = []
    errors: List[Tuple[Tensor, ...]] = []
    relative_errors: List[Tuple[Tensor, ...]] = []
    start = time.perf_counter()
    for i in range(batch):
        one, method_kwargs, smoothing = setup.example(inputs, i)
        kwargs = dict(extra, **method_kwargs, target=None if target is None else target[i : i + 1].tolist())
        if args.nt_type == "none":
            out = method.attribute(setup.clean(one), **kwargs,
                                   **({"return_convergence_delta": True} if with_delta else {}))
        else:
            nt = noisegrad.NoiseTunnel(method)
            # example i alone, with its own id: the noise it gets in a batch, not that of every example's first row
            smooth = dict(nt_samples=args.samples, nt_samples_batch_size=args.batch_size, seed=args.seed,
                          example_ids=[i],
                          stdevs=noisegrad.relative(args.noise), **smoothing, **kwargs)
            out = nt.attribute(one, nt_type=args.nt_type, return_stderr=args.stderr, **smooth,
                               **({"return_convergence_delta": True} if with_delta else {}))
            if args.stderr:
                stderr, attributions = _as_tuple(out.stderr), _as_tuple(out.attributions)
                errors.append(tuple(e.detach() for e in stderr))
                relative_errors.append(tuple(relative_stderr([e], [a]) for e, a in zip(stderr, attributions)))
                out = (out.attributions, out.delta) if with_delta else out.attributions
        if with_delta:
            out, delta = out
            deltas.append(delta.detach().reshape(-1))
        parts.append(tuple(a.detach() for a in _as_tuple(out)))
        if progress is not None:
            progress.update(1)
    attributions = tuple(torch.cat([p[k] for p in parts]) for k in range(len(parts[0])))

    def joined(per_example: List[Tuple[Tensor, ...]]) -> Optional[Tuple[Tensor, ...]]:
        if not per_example:
            return None
        return tuple(torch.cat([e[k] for e in per_example]) for k in range(len(per_example[0])))

    result = Explanation(attributions, target, torch.cat(deltas) if deltas else None, joined(relative_errors),
                         time.perf_counter() - start, stderr=joined(errors))
    if layered:
        result.tokens = explain_layer.token_ids(setup, inputs, attributions[0])
        if result.tokens is not None:
            result.token_scores = noisegrad.token_scores(attributions[0], reduce=args.token_reduce or "sum")
            result.token_mask = None if setup.mask is None else inputs[setup.mask]
    return result


def _as_tuple(out: Any) -> Tuple[Tensor, ...]:
    """Captum returns a tuple for tuple inputs, but a layer method returns one tensor for one layer."""
    return (out,) if isinstance(out, Tensor) else tuple(out)


class _InputSetup:
    """How ``explain`` calls an input method: every input tensor is attributed, and gets the noise."""

    def __init__(self, model: Callable[..., Any], names: Optional[Sequence[str]], args: argparse.Namespace) -> None:
        self.method = METHODS[args.method](_forward_of(model, names))

    @staticmethod
    def example(inputs: Tuple[Tensor, ...], i: int) -> Tuple[Tuple[Tensor, ...], Dict[str, Any], Dict[str, Any]]:
        return tuple(t[i : i + 1] for t in inputs), {}, {}

    @staticmethod
    def clean(inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        return tuple(t.clone().requires_grad_() for t in inputs)


def _forward_of(model: Callable[..., Any], names: Optional[Sequence[str]]) -> Callable[..., Any]:
    """The forward function Captum sees: positional tensors, bound to keyword names when the inputs were a dict.

    A TorchScript module is wrapped in a plain function too: it refuses the
    forward hooks that ``nt_samples_batch_size="auto"`` uses to measure activations.
    """
    if names is None and not isinstance(model, torch.jit.ScriptModule):
        return model
    if names is None:
        return lambda *tensors: model(*tensors)

    def forward(*tensors: Tensor) -> Any:
        return model(**dict(zip(names, tensors)))

    return forward


def _outputs(model: Callable[..., Any], inputs: Tuple[Tensor, ...], names: Optional[Sequence[str]]) -> Tensor:
    try:
        with torch.no_grad():
            out = _forward_of(model, names)(*inputs)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExplainError(f"the model failed on the inputs {[tuple(t.shape) for t in inputs]}: "
                           f"{type(err).__name__}: {first}") from err
    if not isinstance(out, Tensor):
        raise ExplainError(f"the model returned {type(out).__name__}; it must return one tensor (batch, outputs)")
    return out


# --------------------------------------------------------------------------- outputs


def save_outputs(out_dir: Path, result: Explanation, names: Optional[Sequence[str]], single: bool,
                 inputs: Tuple[Tensor, ...], args: argparse.Namespace,
                 vocab: Optional[List[str]] = None) -> List[Path]:
    """Write ``attributions.pt`` and the figures; returns the written paths."""
    labels = list(names) if names is not None else [f"input{k}" for k in range(len(inputs))]
    layered = args.noise_layer is not None

    def layout(tensors: Tuple[Tensor, ...]) -> Any:
        if single or layered:  # a layer method attributes one tensor: the layer's output
            return tensors[0]
        return dict(zip(labels, tensors)) if names is not None else tensors

    options = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in vars(args).items()
               if k not in ("command",)}
    payload: Dict[str, Any] = {"attributions": layout(result.attributions), "target": result.target,
                               "options": options}
    if result.delta is not None:
        payload["delta"] = result.delta
    if result.stderr is not None:
        payload["stderr"] = layout(result.stderr)
    if result.relative_stderr is not None:
        payload["relative_stderr"] = layout(result.relative_stderr)
    if result.token_scores is not None:
        payload["token_scores"] = result.token_scores
    written = [out_dir / "attributions.pt"]
    torch.save(payload, written[0])
    if args.no_figures:
        return written
    if result.token_scores is not None:
        written += explain_layer.token_figures(out_dir, result, vocab, _title(args), args, MAX_FIGURE_EXAMPLES)
    elif layered:  # a layer without one row per token: drawn by its shape, with nothing to blend with
        path = _figure(out_dir, "", result.attributions[0], None, args)
        written += [path] if path is not None else []
    else:
        for label, attr, x in zip(labels, result.attributions, inputs):
            path = _figure(out_dir, label if len(labels) > 1 else "", attr, x, args)
            if path is not None:
                written.append(path)
    return written


def _title(args: argparse.Namespace) -> str:
    return f"{args.method} + {args.nt_type}" if args.nt_type != "none" else args.method


def _figure(out_dir: Path, label: str, attr: Tensor, x: Optional[Tensor], args: argparse.Namespace) -> Optional[Path]:
    from noisegrad import viz

    title = _title(args)
    suffix = f"_{label}" if label else ""
    n = min(attr.shape[0], MAX_FIGURE_EXAMPLES)
    if attr.dim() in (3, 4):  # images (N, C, H, W) or (N, H, W)
        path = out_dir / f"attributions{suffix}.png"
        blend = x is not None and attr.dim() == 4 and attr.shape[1] in (1, 3)
        viz.plot_image_attr_grid(attr[:n], x[:n] if blend else None, method="blended_heat_map" if blend else "heat_map",
                                 titles=[f"example {i}" for i in range(n)], suptitle=f"{title}{' ' + label if label else ''}",
                                 save=path)
        return path
    if attr.dim() == 2:  # features (N, F): one bar chart per example, side by side
        path = out_dir / f"attributions{suffix}.png"
        from noisegrad.viz._canvas import new_figure, save_figure

        fig = new_figure((4.2 * min(n, 4), 0.25 * min(attr.shape[1], 20) + 1.5))
        axes = fig.subplots(1, min(n, 4), squeeze=False)[0]
        for i, ax in enumerate(axes):
            viz.plot_feature_attr(attr[i], max_features=20, title=f"example {i}", ax=ax)
        fig.suptitle(f"{title}{' ' + label if label else ''}")
        save_figure(fig, path)
        return path
    return None


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    """Run ``explain`` with parsed arguments; raises :class:`ExplainError` (or ``DemoOutputError``) on bad input.

    The inputs are read before the model is loaded (they are cheap, and an unusable file should not wait for a
    large model); ``--out`` is created before both, and removed again if this run created it and then fails.
    """
    say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.method != "ig" and args.n_steps is not None:
        raise ExplainError("--n-steps applies to --method ig only")
    if args.stderr and args.nt_type == "none":
        raise ExplainError("--stderr is the Monte-Carlo error of the noise: it needs --nt-type smoothgrad, "
                           "smoothgrad_sq or vargrad")
    if args.stderr and args.samples < units_for_stderr(args.nt_type):
        raise ExplainError(f"--stderr with --nt-type {args.nt_type} needs --samples {units_for_stderr(args.nt_type)} "
                           "or more")
    model_is_file = is_model_file(args.model)  # a mistyped --model fails before anything is read
    explain_layer.check_layer_options(args, model_is_file)
    with output_folder(args.out) as out_dir:
        inputs, names, single = load_inputs(args.inputs, discrete=args.noise_layer is not None)
        vocab = None
        if args.noise_layer is not None:  # a wrong --noise-mask or --vocab fails before the model is loaded
            tokens, _, _ = explain_layer.input_roles(names, len(inputs), args.noise_mask)
            vocab = None if args.vocab is None else explain_layer.load_vocab(args.vocab, inputs[tokens])
        model = load_model(args.model)
        return _explain_into(out_dir, model, inputs, names, single, args, say, vocab)


def _explain_into(out_dir: Path, model: Callable[..., Any], inputs: Tuple[Tensor, ...], names: Optional[List[str]],
                  single: bool, args: argparse.Namespace, say: Callable[[str], None],
                  vocab: Optional[List[str]] = None) -> int:
    if args.noise_layer is not None:
        explain_layer.resolve_noise_layer(model, args.noise_layer)  # a wrong name fails before the model runs
        if args.noise_mask is None and names is not None and "attention_mask" in names:
            say("note: the inputs have an 'attention_mask'; --noise-mask attention_mask keeps padding free of noise")
    outputs = _outputs(model, inputs, names)
    target = parse_target(args.target, outputs)
    where = "" if args.noise_layer is None else f" at {args.noise_layer}"
    say(f"Explaining {inputs[0].shape[0]} example(s) {[tuple(t.shape[1:]) for t in inputs]} with {args.method}"
        f"{'' if args.nt_type == 'none' else f' + {args.nt_type} ({args.samples} samples, noise {args.noise})'}"
        f"{where}")
    with progress_bar(inputs[0].shape[0], "explaining", unit="ex", enabled=False if args.quiet else None) as bar:
        try:
            result = explain(model, inputs, names, target, args, progress=bar)
        except ExplainError:
            raise
        except (AssertionError, IndexError, RuntimeError, TypeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            hint = ""
            if "Guard failed" in first or "size()[0]" in first:
                hint = f"; {DYNAMIC_BATCH_HINT}"
            raise ExplainError(f"attribution failed: {type(err).__name__}: {first}{hint}") from err
    written = save_outputs(out_dir, result, names, single, inputs, args, vocab)
    if result.delta is not None:
        say(f"mean |convergence delta| {float(result.delta.abs().mean()):.4g}")
    if result.relative_stderr is not None:
        rel = torch.cat([r.reshape(-1) for r in result.relative_stderr])
        say(f"relative standard error ||SE||/||attr||: mean {float(rel.nanmean()):.3f}")
    say(f"Wrote {', '.join(str(p) for p in written)} in {result.seconds:.1f} s")
    return 0

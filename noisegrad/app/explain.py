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

The command is four modules: the options (:mod:`noisegrad.app.explain_options`),
what it reads (:mod:`noisegrad.app.explain_inputs`), the attribution (this
one) and what it writes (:mod:`noisegrad.app.explain_results`).

Examples
--------
>>> from noisegrad.app.cli import main
>>> main(["explain", "--model", "model.pt", "--inputs", "x.pt", "--out", "explained/"])  # doctest: +SKIP
0
"""

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import noisegrad
from noisegrad._progress import progress_bar
from noisegrad._request import DEFAULT_MAX_SAMPLES, DEFAULT_TOL
from noisegrad.app import explain_layer
from noisegrad.app.errors import ExplainError
from noisegrad.app.explain_inputs import forward_of, load_inputs, model_outputs, parse_target
from noisegrad.app.explain_options import (
    DEFAULT_IG_STEPS,
    DESCRIPTION,
    METHODS,
    NT_TYPES,
    add_arguments,
    check_options,
    non_negative_float,
    positive_int,
)
from noisegrad.app.explain_results import Explanation, save_outputs
from noisegrad.app.models import DYNAMIC_BATCH_HINT, is_model_file, load_model
from noisegrad.app.output import output_folder
from noisegrad.estimators.path_density import PILOT_GRADIENTS
from noisegrad.stats.grouped import relative_stderr

__all__ = ["METHODS", "NT_TYPES", "DESCRIPTION", "ExplainError", "Explanation", "add_arguments", "load_model",
           "load_inputs", "parse_target", "explain", "save_outputs", "run", "positive_int", "non_negative_float"]


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
    if args.method == "ig" and not args.joint:
        extra["n_steps"] = args.n_steps or DEFAULT_IG_STEPS
    with_delta = args.method == "ig"
    batch = inputs[0].shape[0]
    parts: List[Tuple[Tensor, ...]] = []
    deltas: List[Tensor] = []
    errors: List[Tuple[Tensor, ...]] = []
    relative_errors: List[Tuple[Tensor, ...]] = []
    start = time.perf_counter()
    outputs = None if args.targets is None else list(args.targets)
    until = {} if args.samples != "auto" else {
        name: value for name, value in (("tol", args.tol), ("max_samples", args.max_samples)) if value is not None}
    samples: List[Tensor] = []
    converged: List[Tensor] = []
    for i in range(batch):
        one, method_kwargs, smoothing = setup.example(inputs, i)
        kwargs = dict(extra, **method_kwargs, target=None if target is None else target[i : i + 1].tolist())
        if outputs is not None:
            kwargs.update(target=None, outputs=outputs)
        # --nt-type none: one copy without noise, which is the method itself, with every option above
        noise = dict(nt_type="smoothgrad", nt_samples=1, stdevs=0.0) if args.nt_type == "none" else dict(
            nt_type=args.nt_type, nt_samples=args.samples, stdevs=noisegrad.relative(args.noise), **until,
            # joint: one gradient per (noise, path point), the noise drawn by the sampler the estimator is named by
            **({"joint": True if args.sampler == "iid" else args.sampler,
                "path_density": args.path_density or "uniform"} if args.joint else {"sampler": args.sampler}))
        # example i alone, with its own id: the noise it gets in a batch, not that of every example's first row
        with warnings.catch_warnings():  # an example that stops at max_samples is counted below, not warned about
            warnings.filterwarnings("ignore", message='nt_samples="auto": ', category=RuntimeWarning)
            out = noisegrad.NoiseTunnel(method).attribute(
                one, **noise, nt_samples_batch_size=args.batch_size, seed=args.seed, example_ids=[i],
                return_stderr=args.stderr, channel_reducer=args.reduce, times_input=args.times_input, **smoothing,
                **kwargs, **({"return_convergence_delta": True} if with_delta else {}))
        if args.samples == "auto":  # a SmoothedAttribution, with the samples this example used
            samples.append(out.nt_samples.detach().reshape(1))
            converged.append(out.converged.detach().reshape(1))
        if args.stderr or args.samples == "auto":  # "auto" keeps the relative error it stopped at, too
            stderr, attributions = _as_tuple(out.stderr), _as_tuple(out.attributions)
            if args.stderr:
                errors.append(tuple(None if e is None else e.detach() for e in stderr))
            # per input; where --reduce combined the channels (no standard error), the library's, of the channels
            relative_errors.append(tuple(
                out.relative_stderr.detach() if e is None else relative_stderr([e], [a], per_output=bool(outputs))
                for e, a in zip(stderr, attributions)))
            out = (out.attributions, out.delta) if with_delta else out.attributions
        if with_delta:
            out, delta = out
            deltas.append(delta.detach().reshape((1,) + tuple(delta.shape[1:])))
        parts.append(tuple(a.detach() for a in _as_tuple(out)))
        if progress is not None:
            progress.update(1)
    attributions = tuple(torch.cat([p[k] for p in parts]) for k in range(len(parts[0])))

    def joined(per_example: List[Tuple[Any, ...]]) -> Optional[Tuple[Any, ...]]:
        if not per_example:
            return None
        return tuple(None if per_example[0][k] is None else torch.cat([e[k] for e in per_example])
                     for k in range(len(per_example[0])))

    result = Explanation(attributions, target, torch.cat(deltas) if deltas else None, joined(relative_errors),
                         time.perf_counter() - start, stderr=joined(errors), outputs=outputs,
                         nt_samples=torch.cat(samples) if samples else None,
                         converged=torch.cat(converged) if converged else None)
    if layered:
        result.tokens = explain_layer.token_ids(setup, inputs, attributions[0])
        if result.tokens is not None:
            result.token_scores = noisegrad.token_scores(attributions[0], reduce=args.token_reduce or "sum",
                                                         per_output=outputs is not None)
            result.token_mask = None if setup.mask is None else inputs[setup.mask]
    return result


def _as_tuple(out: Any) -> Tuple[Tensor, ...]:
    """Captum returns a tuple for tuple inputs, but a layer method returns one tensor for one layer."""
    return (out,) if isinstance(out, Tensor) else tuple(out)


class _InputSetup:
    """How ``explain`` calls an input method: every input tensor is attributed, and gets the noise."""

    def __init__(self, model: Callable[..., Any], names: Optional[Sequence[str]], args: argparse.Namespace) -> None:
        self.method = METHODS[args.method](forward_of(model, names))

    @staticmethod
    def example(inputs: Tuple[Tensor, ...], i: int) -> Tuple[Tuple[Tensor, ...], Dict[str, Any], Dict[str, Any]]:
        return tuple(t[i : i + 1] for t in inputs), {}, {}


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    """Run ``explain`` with parsed arguments; raises :class:`ExplainError` (or ``DemoOutputError``) on bad input.

    The inputs are read before the model is loaded (they are cheap, and an unusable file should not wait for a
    large model); ``--out`` is created before both, and removed again if this run created it and then fails.
    """
    say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    check_options(args)
    model_is_file = is_model_file(args.model)  # a mistyped --model fails before anything is read
    explain_layer.check_layer_options(args, model_is_file)
    with output_folder(args.out) as out_dir:
        inputs, names, single = load_inputs(args.inputs, discrete=args.noise_layer is not None, joint=args.joint)
        vocab = None
        if args.noise_layer is not None:  # a wrong --noise-mask or --vocab fails before the model is loaded
            tokens, _, _ = explain_layer.input_roles(names, len(inputs), args.noise_mask)
            vocab = None if args.vocab is None else explain_layer.load_vocab(args.vocab, inputs[tokens])
        model = load_model(args.model)
        return _explain_into(out_dir, model, inputs, names, single, args, say, vocab)


def _samples_text(args: argparse.Namespace) -> str:
    if args.samples != "auto":
        pilot = f" + {PILOT_GRADIENTS} pilot gradients" if args.path_density == "adaptive" else ""
        return f"{args.samples} samples{pilot}"
    tol = args.tol if args.tol is not None else f"{DEFAULT_TOL} (the default)"
    return f"samples until the relative standard error is {tol}"


def _explain_into(out_dir: Path, model: Callable[..., Any], inputs: Tuple[Tensor, ...], names: Optional[List[str]],
                  single: bool, args: argparse.Namespace, say: Callable[[str], None],
                  vocab: Optional[List[str]] = None) -> int:
    if args.noise_layer is not None:
        explain_layer.resolve_noise_layer(model, args.noise_layer)  # a wrong name fails before the model runs
        if args.noise_mask is None and names is not None and "attention_mask" in names:
            say("note: the inputs have an 'attention_mask'; --noise-mask attention_mask keeps padding free of noise")
    outputs = model_outputs(model, inputs, names)
    target = None if args.targets is not None else parse_target(args.target, outputs)
    if args.targets is not None and (outputs.dim() != 2 or max(args.targets) >= outputs.shape[1]):
        raise ExplainError(f"--targets {','.join(map(str, args.targets))}: the model returns shape "
                           f"{tuple(outputs.shape)}; every index must name a column of its (batch, outputs) output")
    where = "" if args.noise_layer is None else f" at {args.noise_layer}"
    which = "" if args.targets is None else f" for outputs {args.targets}"
    noise = "" if args.nt_type == "none" else (
        f" + {args.nt_type}{' jointly' if args.joint else ''}"
        f"{', adaptive path density' if args.path_density == 'adaptive' else ''}"
        f" ({_samples_text(args)}, {args.sampler} noise, "
        f"σ = {args.noise} of each example's range)")
    say(f"Explaining {inputs[0].shape[0]} example(s) {[tuple(t.shape[1:]) for t in inputs]}{which} with {args.method}"
        f"{noise}{where}")
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
    if result.nt_samples is not None:
        used = result.nt_samples.float()
        say(f"noisy copies used per example (--samples auto): median {float(used.median()):.0f}, "
            f"{int(used.min())} to {int(used.max())}")
    if result.converged is not None and not bool(result.converged.all()):
        tol = DEFAULT_TOL if args.tol is None else args.tol
        most = DEFAULT_MAX_SAMPLES if args.max_samples is None else args.max_samples
        say(f"{int((~result.converged).sum())} of {result.converged.numel()} examples did not reach --tol {tol} "
            f"within --max-samples {most} (saved as 'converged')")
    if result.relative_stderr is not None:
        rel = torch.cat([r.reshape(-1) for r in result.relative_stderr if r is not None] or [torch.zeros(0)])
        before = " (of the channels, before --reduce combined them)" if args.reduce else ""
        say(f"relative standard error ||SE||/||attr||{before}: mean {float(rel.nanmean()):.3f}")
    say(f"Wrote {', '.join(str(p) for p in written)} in {result.seconds:.1f} s")
    return 0

"""The ``explain`` command's options: what each means, how its text is parsed, and which go together."""

import argparse
from typing import List, Union

from captum.attr import InputXGradient, IntegratedGradients, Saliency

from noisegrad._explained import TIMES_INPUT
from noisegrad._request import DEFAULT_MAX_SAMPLES, DEFAULT_TOL
from noisegrad.app import explain_layer
from noisegrad.app.errors import ExplainError
from noisegrad.estimators.path_density import PATH_DENSITIES, PILOT_GRADIENTS
from noisegrad.reducers import CHANNEL_REDUCERS
from noisegrad.sampling.samplers import SAMPLERS, independent_units, units_for_stderr

__all__ = ["METHODS", "NT_TYPES", "DEFAULT_IG_STEPS", "MAX_FIGURE_EXAMPLES", "DESCRIPTION", "add_arguments",
           "positive_int", "non_negative_float", "count_or_auto", "output_list", "check_options"]

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
element, same layout) and, with --stderr or --samples auto,
"relative_stderr" (||stderr|| / ||attribution|| per example, one per input
tensor; --samples auto stops on that of all input tensors together); and one figure per input tensor (image grid for (N, C, H, W) or
(N, H, W) tensors, feature bars for (N, F) tensors; with --targets one figure
per output). --targets explains several outputs at once: every attribution
gets a last dimension, one entry per output, in the order given. Argument
errors exit with status 2; a folder DIR created by a run that fails is
removed again.

""" + explain_layer.DESCRIPTION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``explain`` options."""
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="TorchScript file, torch.export file, or package.module:function")
    parser.add_argument("--inputs", required=True, metavar="FILE",
                        help="torch.save file: a tensor, a tuple of tensors or a dict of tensors (batch first)")
    parser.add_argument("--target", default=None, metavar="T",
                        help="output index to explain: an int, comma-separated ints (one per example), "
                             "'pred' (each example's top output, the default) or 'none' (model returns one value "
                             "per example)")
    parser.add_argument("--targets", type=output_list, default=None, metavar="K1,K2,...",
                        help="several outputs explained at once for every example (outputs=): attributions get a "
                             "last dimension, one entry per output, in this order; not with --target")
    parser.add_argument("--method", choices=sorted(METHODS), default="saliency", help="Captum method to smooth")
    parser.add_argument("--nt-type", choices=NT_TYPES, default="smoothgrad",
                        help="SmoothGrad (mean), SmoothGrad² (mean of squares), VarGrad (variance), or no noise")
    parser.add_argument("--samples", type=count_or_auto, default=32, metavar="N",
                        help="noisy copies per example, or 'auto': draw until each example's relative standard "
                             "error reaches --tol (the count each used is saved as 'nt_samples', "
                             "whether it got there within --max-samples as 'converged', the relative "
                             "standard error it stopped at as 'relative_stderr', per input tensor)")
    parser.add_argument("--tol", type=open_unit_float, default=None, metavar="TOL",
                        help=f"with --samples auto: the relative standard error to reach (default {DEFAULT_TOL})")
    parser.add_argument("--max-samples", type=positive_int, default=None, metavar="N",
                        help=f"with --samples auto: the most noisy copies any example gets (default {DEFAULT_MAX_SAMPLES})")
    parser.add_argument("--sampler", choices=SAMPLERS, default="iid",
                        help="how the noise is drawn: iid (NoiseTunnel's default), antithetic pairs (an even "
                             "--samples), qmc or lhs; under --samples auto, antithetic pairs or lhs need fewer "
                             "samples for the same error (README: 'Fewer samples for the same accuracy')")
    parser.add_argument("--noise", type=non_negative_float, default=0.15, metavar="FRACTION",
                        help="noise standard deviation as a fraction of each example's range (noisegrad.relative); "
                             "with --noise-layer, of the range of that layer's output over the tokens --noise-mask "
                             "keeps")
    parser.add_argument("--batch-size", type=count_or_auto, default="auto", metavar="K",
                        help="noisy copies per example in one forward pass (nt_samples_batch_size), or 'auto'")
    parser.add_argument("--n-steps", type=positive_int, default=None, metavar="S",
                        help=f"IntegratedGradients steps per noisy copy (--method ig only; default {DEFAULT_IG_STEPS})")
    parser.add_argument("--joint", action="store_true",
                        help="--method ig only: SmoothGrad x IntegratedGradients sampled jointly, one gradient per "
                             "(noise, path point) sample (NoiseTunnel's joint=, with --sampler's noise), so --samples "
                             "counts gradients per example instead of noisy copies of --n-steps gradients each; "
                             "--nt-type smoothgrad and a fixed --samples (README: 'SmoothGrad x Integrated "
                             "Gradients, jointly')")
    parser.add_argument("--path-density", choices=PATH_DENSITIES, default=None,
                        help=f"--joint only: where the path points go; 'adaptive' spends {PILOT_GRADIENTS} pilot "
                             "gradients per "
                             "example (on top of --samples) to find where IG's contributions are large and samples "
                             "there, unbiased "
                             "(NoiseTunnel's path_density=; worth it for a model that normalises its input, "
                             "explained from a zero baseline). Default: uniform")
    parser.add_argument("--abs", action="store_true",
                        help="Saliency of |gradient| (Captum's default) instead of the signed gradient (--method "
                             "saliency only, not with --noise-layer)")
    parser.add_argument("--reduce", choices=CHANNEL_REDUCERS, default=None,
                        help="combine the channels (dimension 1) of image attributions (N, C, H, W) into (N, H, W) "
                             "maps after smoothing (channel_reducer=); other inputs are left as they are")
    parser.add_argument("--times-input", choices=TIMES_INPUT, default=None,
                        help="--method saliency only: each noisy gradient times the clean input x (innsight's "
                             "SmoothGrad x Input, mean(grad f(x+e)) * x) or times its noisy input x+e (Captum's "
                             "NoiseTunnel over InputXGradient)")
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


def open_unit_float(text: str) -> float:
    """argparse type: a float strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value}")
    return value


_positive_count = explain_layer.int_at_least(1, "a positive integer or 'auto'")


def count_or_auto(text: str) -> Union[int, str]:
    """argparse type for ``--samples``, ``--batch-size`` and ``--chunk``: a positive integer or ``auto``."""
    return "auto" if text == "auto" else _positive_count(text)


def output_list(text: str) -> List[int]:
    """argparse type for ``--targets``: distinct output indices >= 0, separated by commas.

    Examples
    --------
    >>> output_list("0,3,7")
    [0, 3, 7]
    """
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated output indices such as 0,3,7, got {text!r}") from None
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct output indices >= 0, got {text!r}")
    return values


def check_options(args: argparse.Namespace) -> None:
    """Options that do not go together, refused before any file is read; ``--target`` defaults to ``pred``."""
    if args.targets is not None and args.target is not None:
        raise ExplainError("give --target (one output per example) or --targets (several outputs for every "
                           "example), not both")
    if args.target is None:
        args.target = "pred"
    if args.method != "ig" and args.n_steps is not None:
        raise ExplainError("--n-steps applies to --method ig only")
    if args.abs and args.method != "saliency":
        raise ExplainError(f"--abs applies to --method saliency only, got --method {args.method} (whose "
                           "attributions are signed)")
    if args.joint:
        _check_joint(args)
    elif args.path_density == "adaptive":
        raise ExplainError(f"--path-density {args.path_density} applies to --joint only (the nested estimator "
                           "integrates the path on --n-steps fixed points)")
    if args.stderr and args.nt_type == "none":
        raise ExplainError("--stderr is the Monte-Carlo error of the noise: it needs --nt-type smoothgrad, "
                           "smoothgrad_sq or vargrad")
    auto = args.samples == "auto"
    if not auto and (args.tol is not None or args.max_samples is not None):
        given = " and ".join(f"--{n.replace('_', '-')}" for n in ("tol", "max_samples") if getattr(args, n) is not None)
        raise ExplainError(f"{given} applies to --samples auto only (drawing until the error reaches --tol), "
                           f"not to --samples {args.samples}")
    if args.sampler != "iid" and args.nt_type == "none":
        raise ExplainError(f"--sampler {args.sampler} draws the noise: it needs --nt-type smoothgrad, smoothgrad_sq "
                           "or vargrad")
    if args.sampler == "antithetic" and not auto and args.samples % 2:
        raise ExplainError(f"--sampler antithetic pairs each noise with its negative: it needs an even --samples, "
                           f"got {args.samples}")
    if auto and args.nt_type == "none":
        raise ExplainError("--samples auto draws noisy copies until they agree: it needs --nt-type smoothgrad, "
                           "smoothgrad_sq or vargrad")
    if auto and args.max_samples is not None:
        units = independent_units(args.sampler, args.max_samples, blocks=args.sampler == "lhs")
        if units < units_for_stderr(args.nt_type):
            raise ExplainError(f"--samples auto stops on a standard error, which with --nt-type {args.nt_type} needs "
                               f"{units_for_stderr(args.nt_type)} independent units of samples; --sampler "
                               f"{args.sampler} with --max-samples {args.max_samples} has {units}")
    if args.stderr and not auto:
        units = independent_units(args.sampler, args.samples)
        if units < units_for_stderr(args.nt_type):
            raise ExplainError(f"--stderr with --nt-type {args.nt_type} needs {units_for_stderr(args.nt_type)} "
                               f"independent units of samples; --sampler {args.sampler} with --samples {args.samples} "
                               f"has {units}")
    if args.times_input is not None and (args.method != "saliency" or args.noise_layer is not None):
        raise ExplainError(f"--times-input multiplies input gradients by the inputs: it needs --method saliency "
                           f"without --noise-layer ({args.method} already multiplies by the inputs)"
                           if args.noise_layer is None else "--times-input does not apply to --noise-layer, whose "
                           "attributions belong to the layer's output")
    if args.reduce is not None and args.noise_layer is not None:
        raise ExplainError("--reduce combines image channels; with --noise-layer the attributions are the layer's "
                           "(use --token-reduce for one score per token)")


def _check_joint(args: argparse.Namespace) -> None:
    """What the joint SmoothGrad x IG estimator cannot do (NoiseTunnel refuses the same), said up front."""
    if args.method != "ig":
        raise ExplainError(f"--joint needs --method ig (it samples IntegratedGradients' path), "
                           f"got --method {args.method}")
    refused = [
        (args.n_steps is not None, "--n-steps: each joint sample is one gradient at a random path point, so --samples "
                                   "alone sets the cost"),
        (args.samples == "auto", "--samples auto: the joint estimator takes a fixed --samples (--stderr reports the "
                                 "error it reaches)"),
        (args.nt_type != "smoothgrad", f"--nt-type {args.nt_type}: the joint estimator needs --nt-type smoothgrad "
                                       "(SmoothGrad² and VarGrad need whole per-noise IG values)"),
        (args.targets is not None, "--targets: the joint estimator explains one --target per example"),
        (args.noise_layer is not None, "--noise-layer: the joint estimator adds its noise to the inputs"),
    ]
    for given, why in refused:
        if given:
            raise ExplainError(f"--joint does not take {why}")

"""Command line: ``python -m noisegrad demo``, ``explain`` and ``attribute-dataset``.

``noisegrad/__main__.py`` only calls :func:`main`.

Examples
--------
>>> main(["demo", "--out", "demo/", "--samples", "16"])  # doctest: +SKIP
0
"""

import argparse
import sys
from typing import List, Optional

from noisegrad.app import attribute_dataset, explain
from noisegrad.app.demo import DemoOutputError, run_demo
from noisegrad.app.explain import ExplainError, non_negative_float, positive_int
from noisegrad.app.shapes import DemoWeightsError

__all__ = ["build_parser", "main"]

_DEMO_HELP = """\
Load the tiny CNN shipped with noisegrad (trained by scripts/train_demo_model.py
on generated 16x16 images of noise with one shape: square, plus or cross, whose
pixels are known), check its accuracy on freshly generated images, and explain
a few of them with Saliency, SmoothGrad, SmoothGrad², VarGrad and
IntegratedGradients + SmoothGrad through noisegrad.NoiseTunnel. Prints a table
(time, samples, mean |convergence delta|, relative standard error from the
same samples, share of the attribution mass on the true shape pixels) and
writes DIR/comparison.png, DIR/summary.csv and DIR/summary.json. Offline, a
few seconds on a CPU; a progress bar on stderr when it is a terminal.
"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's ``(default: ...)`` once per option: not when the help text already gives the default, nor for
    an option without one (``None``) or a flag (``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``noisegrad`` argument parser, with the ``demo``, ``explain`` and ``attribute-dataset`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m noisegrad",
        description="noisegrad: SmoothGrad, SmoothGrad² and VarGrad for any Captum attribution.",
        epilog="Run 'python -m noisegrad COMMAND --help' for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    demo = commands.add_parser(
        "demo",
        help="compare smoothed attributions of the shipped tiny CNN on shapes with known pixels",
        description=_DEMO_HELP,
        formatter_class=HelpFormatter,
    )
    demo.add_argument("--out", default="demo/", metavar="DIR", help="output folder (created if missing)")
    demo.add_argument("--samples", type=positive_int, default=32, metavar="N",
                      help="noisy copies per image (nt_samples)")
    demo.add_argument("--noise", type=non_negative_float, default=0.15, metavar="FRACTION",
                      help="noise standard deviation as a fraction of each image's range (noisegrad.relative)")
    demo.add_argument("--images", type=positive_int, default=4, metavar="K", help="test images explained and drawn")
    demo.add_argument("--ig-steps", type=positive_int, default=50, metavar="S",
                      help="IntegratedGradients steps per noisy copy")
    demo.add_argument("--seed", type=int, default=0, help="seed of the test images and the noise")
    demo.add_argument("--weights", default=None, metavar="FILE",
                      help="weights from scripts/train_demo_model.py instead of the shipped ones")
    demo.add_argument("--quiet", action="store_true", help="no progress bar and no messages, only the table")
    for name, summary, command in (
        ("explain", "smoothed attributions of your own model (TorchScript, torch.export or module:function)", explain),
        ("attribute-dataset", "smoothed attributions of a whole data set into shards: resumable, on any number of "
                              "processes", attribute_dataset),
    ):
        command.add_arguments(commands.add_parser(name, help=summary, description=command.DESCRIPTION,
                                                  formatter_class=HelpFormatter))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit code (argument, file and output-folder errors exit with 2).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``None`` reads ``sys.argv``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "explain":
            return explain.run(args)
        if args.command == "attribute-dataset":
            return attribute_dataset.run(args)
        printer = None if args.quiet else print
        result = run_demo(out=args.out, samples=args.samples, noise=args.noise, seed=args.seed,
                          n_images=args.images, ig_steps=args.ig_steps, weights=args.weights,
                          print_fn=printer, progress=False if args.quiet else None)
        if args.quiet:
            from noisegrad.app.demo import format_table

            print(format_table(result.rows, result.mask_area))
    except (DemoOutputError, ExplainError) as err:
        parser.exit(2, f"{parser.prog} {args.command}: error: {err}\n")
    except DemoWeightsError as err:
        parser.exit(2, f"{parser.prog} demo: error: {'--weights' if args.weights else 'the shipped weights'} {err}\n")
    except FileNotFoundError as err:
        message = f"--weights '{args.weights}': no such file" if getattr(args, "weights", None) else str(err)
        parser.exit(2, f"{parser.prog} {args.command}: error: {message}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

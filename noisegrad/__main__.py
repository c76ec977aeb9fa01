"""Command line: ``python -m noisegrad demo --out demo/``.

Examples
--------
>>> main(["demo", "--out", "demo/", "--samples", "16"])  # doctest: +SKIP
0
"""

import argparse
import sys
from typing import List, Optional

from noisegrad.demo import DemoOutputError, run_demo

__all__ = ["build_parser", "main"]

_DEMO_HELP = """\
Generate 16x16 images of noise with one shape (square, plus or cross) whose
pixels are known, train a tiny CNN on them for a few seconds, and explain a few
test images with Saliency, SmoothGrad, SmoothGrad², VarGrad and
IntegratedGradients + SmoothGrad through noisegrad.NoiseTunnel. Prints a table
(time, samples, mean |convergence delta|, share of the attribution mass on the
true shape pixels) and writes DIR/comparison.png, DIR/summary.csv and
DIR/summary.json. Runs offline on a CPU in well under a minute.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``noisegrad`` argument parser, with the ``demo`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m noisegrad",
        description="noisegrad: SmoothGrad, SmoothGrad² and VarGrad for any Captum attribution.",
        epilog="Run 'python -m noisegrad demo --help' for the demo's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    demo = commands.add_parser(
        "demo",
        help="train a tiny CNN on generated shapes and compare smoothed attributions",
        description=_DEMO_HELP,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--out", default="demo/", metavar="DIR", help="output folder (created if missing)")
    demo.add_argument("--samples", type=_positive_int, default=32, metavar="N",
                      help="noisy copies per image (nt_samples)")
    demo.add_argument("--noise", type=_non_negative_float, default=0.15, metavar="FRACTION",
                      help="noise standard deviation as a fraction of each image's range (noisegrad.relative)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data, the training and the noise")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit code (argument and output-folder errors exit with 2).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``None`` reads ``sys.argv``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run_demo(out=args.out, samples=args.samples, noise=args.noise, seed=args.seed)
    except DemoOutputError as err:
        parser.exit(2, f"{parser.prog} {args.command}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

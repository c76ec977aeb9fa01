"""``python -m noisegrad attribute-dataset``: smoothed attributions of a whole data set into a folder of shards.

The command line of :func:`noisegrad.attribute_dataset`: ``--model`` as ``explain`` takes it, ``--data`` a folder
of example files or ``package.module:function`` returning a Dataset (:mod:`noisegrad.app.data_folder`). Run it
again after an interruption and it finishes what is missing; run it under ``torchrun`` and each process takes its
share (``docs/datasets.md``).

Examples
--------
>>> from noisegrad.app.cli import main
>>> main(["attribute-dataset", "--model", "pkg.models:net", "--data", "images/", "--out", "attr/"])  # doctest: +SKIP
0
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

import noisegrad
from noisegrad.app.data_folder import FolderDataset, load_data
from noisegrad.app.errors import ExplainError
from noisegrad.app.explain_inputs import forward_of
from noisegrad.app.explain_options import DEFAULT_IG_STEPS, METHODS, count_or_auto, non_negative_float, positive_int
from noisegrad.app.explain_layer import int_at_least
from noisegrad.app.models import load_model
from noisegrad.datasets._ranks import local_device
from noisegrad.datasets.attribute import DEFAULT_SHARD_SIZE

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = """\
Smoothed attributions of every example of a data set, written to DIR in
shards (safetensors files: attributions, standard errors, deltas, samples
used, targets and example indices) with DIR/manifest.json (configuration,
seed, versions, finished shards and their SHA-256). Each example's noise is
keyed by its index, so results do not depend on the batch size or the number
of processes. Interrupted? Run the same command again: finished shards are
checked and kept, the rest is computed. Under torchrun (torchrun
--nproc_per_node=K -m noisegrad attribute-dataset ...) each process takes every
K-th shard, on its own GPU (cuda:LOCAL_RANK) when there are GPUs. Read the
results with noisegrad.DatasetAttributions(DIR)[index]. DATA is a folder of
.pt/.npy tensors or images (one example per file, sorted by name; subfolders
are classes, for --target label) or package.module:function returning a
Dataset whose items are a tensor or (inputs, label).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``attribute-dataset`` options."""
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="TorchScript file, torch.export file, or package.module:function (as for explain)")
    parser.add_argument("--data", required=True, metavar="DATA",
                        help="folder of .pt/.npy/image files (class subfolders give labels), or "
                             "package.module:function returning a Dataset")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--target", default="pred", metavar="T",
                        help="'pred' (each example's top output), 'label' (its label), an int, or 'none'")
    parser.add_argument("--method", choices=sorted(METHODS), default="saliency", help="Captum method to smooth")
    parser.add_argument("--nt-type", choices=noisegrad.NT_TYPES, default="smoothgrad",
                        help="SmoothGrad (mean), SmoothGrad² (mean of squares) or VarGrad (variance)")
    parser.add_argument("--samples", type=positive_int, default=32, metavar="N", help="noisy copies per example")
    parser.add_argument("--noise", type=non_negative_float, default=0.15, metavar="FRACTION",
                        help="noise standard deviation as a fraction of each example's range")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the noise (default: chosen on the first run and kept in the manifest)")
    parser.add_argument("--n-steps", type=positive_int, default=None, metavar="S",
                        help=f"IntegratedGradients steps per noisy copy (--method ig only; default {DEFAULT_IG_STEPS})")
    parser.add_argument("--abs", action="store_true", help="Saliency of |gradient| instead of the signed gradient")
    parser.add_argument("--stderr", action="store_true",
                        help="also the Monte-Carlo standard error of every element, from the same samples")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="B", help="examples per call")
    parser.add_argument("--chunk", type=count_or_auto, default="auto", metavar="K",
                        help="noisy copies per example in one forward pass (nt_samples_batch_size), or 'auto'")
    parser.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE, metavar="S",
                        help="examples per shard file: the most work an interrupted process loses")
    parser.add_argument("--num-workers", type=int_at_least(0, "an int >= 0"), default=0, metavar="W",
                        help="data loading processes per rank")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="'auto': cuda:LOCAL_RANK when there are GPUs, else the CPU")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an earlier run's shards and manifest in DIR (nothing else) and start afresh")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no messages")


def _target(text: str) -> Any:
    if text in ("pred", "label"):
        return text
    if text == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ExplainError(f"--target {text!r}: expected 'pred', 'label', 'none' or an output index") from None
    if value < 0:
        raise ExplainError(f"--target {text!r}: an output index is >= 0")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``attribute-dataset`` with parsed arguments; raises :class:`ExplainError` on bad input. Ctrl-C ends it
    with exit status 130 and a line on how to resume."""
    quiet = args.quiet or os.environ.get("RANK", "0") != "0"  # under torchrun, rank 0 speaks for all
    say = (lambda _msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.method != "ig" and args.n_steps is not None:
        raise ExplainError("--n-steps applies to --method ig only")
    if args.method != "saliency" and args.abs:
        raise ExplainError("--abs applies to --method saliency only")
    target = _target(args.target)
    device = local_device() if args.device == "auto" else torch.device(args.device)
    if device.type == "cuda" and args.device == "cuda":
        device = local_device()
        if device.type != "cuda":
            raise ExplainError("--device cuda: CUDA is not available")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ExplainError(f"--out '{args.out}' is a file, not a folder")
    if Path(args.data).is_dir() and _inside(out, Path(args.data)):
        raise ExplainError(f"--out '{args.out}' is inside --data '{args.data}': its files would become examples "
                           "(or a class) of the next run; give a folder outside the data")
    model = load_model(args.model)
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
    data = load_data(args.data, _floating_dtype(model))
    if target == "label" and isinstance(data, FolderDataset) and data.classes is None:
        raise ExplainError(f"--target label: '{args.data}' has no class subfolders, so its examples have no labels")
    method_kwargs = {"abs": args.abs} if args.method == "saliency" else {}
    if args.method == "ig":
        method_kwargs["n_steps"] = args.n_steps or DEFAULT_IG_STEPS
    config = noisegrad.SmoothingConfig(nt_type=args.nt_type, nt_samples=args.samples, noise_level=args.noise,
                                       seed=args.seed, nt_samples_batch_size=args.chunk, return_stderr=args.stderr)
    explainer = noisegrad.Smoothed(forward_of(model, None), METHODS[args.method], config,
                                   method_kwargs=method_kwargs)
    say(f"Attributing {len(data)} examples with {args.method} + {args.nt_type} ({args.samples} samples, noise "
        f"{args.noise}) on {device} into {args.out}")
    if not args.overwrite:
        say(_resume_note(out))
    try:
        results = noisegrad.attribute_dataset(explainer, data, args.out, target=target, batch_size=args.batch_size,
                                              shard_size=args.shard_size, num_workers=args.num_workers,
                                              overwrite=args.overwrite, show_progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume (finished shards in {args.out} are kept)",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as err:
        raise ExplainError(_one_line(err)) from err
    except RuntimeError as err:
        raise ExplainError(f"attribution failed: {_one_line(err)}") from err
    last = results.manifest["runs"][-1]
    if last.get("shards_computed", 1) == 0:
        say(f"Nothing to do: all {results.manifest['shards_total']} shards in {args.out} were already written")
    else:
        say(f"Wrote {last.get('examples_computed', len(results))} examples in {last.get('shards_computed')} shards "
            f"to {args.out} ({len(results)} examples in all, seed {results.manifest['seed']})")
    return 0


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _floating_dtype(model: Any) -> torch.dtype:
    """The dtype a folder's examples take: the model's first floating parameter's, else float32."""
    for tensor in model.parameters() if isinstance(model, torch.nn.Module) else ():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _resume_note(out: Path) -> str:
    """What an earlier run left in ``out``, as the shards it recorded (checked by the run itself)."""
    if not (out / "manifest.json").is_file():
        return "Starting a new run"
    try:
        earlier = noisegrad.DatasetAttributions(out, verify=False)
    except (ValueError, OSError):
        return "Starting: the folder's manifest is checked by the run"
    done = earlier.manifest["shards_total"] - len(earlier.missing)
    return f"Resuming: {done} of {earlier.manifest['shards_total']} shards done"


def _one_line(err: BaseException) -> str:
    """An error's message in one line; from a data loader's worker, the worker's own error (its last line)."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if "Original Traceback" in str(err):
        return lines[-1].split(": ", 1)[-1]
    return lines[0] if not isinstance(err, OSError) or not err.filename else f"{err.filename}: {err.strerror}"

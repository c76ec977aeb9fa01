"""``explain --noise-layer``: noise at a submodule's output, attributions of that output, one score per token.

With ``--noise-layer NAME`` the noise goes on the output of the submodule ``NAME`` of a ``package.module:function``
model (``NoiseTunnel.attribute(..., noise_layer=)``), so the inputs may be integer token ids, and ``--method``
attributes that output (``LAYER_METHODS``):

* ``saliency``: the gradient at the layer (``LayerGradientXActivation(multiply_by_inputs=False)``);
* ``input_x_gradient``: gradient × the layer's output (``LayerGradientXActivation``);
* ``ig``: ``LayerIntegratedGradients`` from the layer output of ``--baseline-token`` ids (default 0).

One input holds the tokens: the first one that ``--noise-mask`` does not name. Captum gets it as its input (the IG
baseline replaces it by ``--baseline-token``); every other input (the attention mask, token type ids) reaches the
model unchanged in every noisy copy and every IG step, as Captum's ``additional_forward_args``. ``--noise-mask KEY``
names an input, typically ``attention_mask``, whose zero entries get no noise (``noise_mask=``).

TorchScript and ``torch.export`` models are refused: their layers are compiled into one graph, with no Python
submodule to hook.

Examples
--------
>>> model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2))
>>> resolve_noise_layer(model, "0")
Embedding(10, 4)
>>> resolve_noise_layer(model, "embed")
Traceback (most recent call last):
...
noisegrad.app.errors.ExplainError: --noise-layer 'embed': Sequential has no submodule of that name; its embedding \
layers: 0; its top-level submodules: 0, 1, 2
"""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from torch import Tensor, nn

from noisegrad.app.errors import ExplainError

__all__ = ["DESCRIPTION", "LAYER_METHODS", "NO_SUBMODULES", "TOKEN_REDUCTIONS", "LayerSetup", "add_arguments",
           "check_layer_options", "input_roles", "layer_setup", "load_vocab", "non_negative_int",
           "resolve_noise_layer", "token_figures", "token_ids"]

#: ``--method`` → (Captum layer method, its constructor options) with ``--noise-layer``.
LAYER_METHODS = {
    "saliency": (LayerGradientXActivation, {"multiply_by_inputs": False}),
    "input_x_gradient": (LayerGradientXActivation, {}),
    "ig": (LayerIntegratedGradients, {}),
}

#: ``--token-reduce`` choices (noisegrad.token_scores' ``reduce``).
TOKEN_REDUCTIONS = ("sum", "l2")

#: The ``--help`` paragraph on text models.
DESCRIPTION = """\
Text models: --noise-layer NAME adds the noise to the output of the submodule
NAME (a dotted name, e.g. embeddings) of a package.module:function model
instead of to the inputs, so INPUTS may hold integer token ids; --method then
attributes that output (saliency: the layer gradient, LayerGradientXActivation
without the multiplication; input_x_gradient: LayerGradientXActivation; ig:
LayerIntegratedGradients from --baseline-token ids). TorchScript and
torch.export models cannot take --noise-layer: their layers are compiled into
one graph, with no Python submodule to hook. The token ids are the first input
(of a dict, the first key) that --noise-mask does not name; every other input,
such as "attention_mask", reaches the model unchanged in every noisy copy and
IG step (as Captum's additional_forward_args), and --noise-mask attention_mask
keeps the noise off its zero entries (padding). "attributions" then holds the
layer's attributions, e.g. (batch, tokens, hidden), and "token_scores" one
score per token (batch, tokens), the sum (or --token-reduce l2 norm) over the
other dimensions, computed for padding too; DIR/tokens_<i>.png draws example
i's tokens (ids, or lines of --vocab) coloured by score, leaving out those
whose --noise-mask entry is 0.
"""

NO_SUBMODULES = ("--noise-layer needs a package.module:function model: TorchScript and torch.export programs have "
                 "no Python submodules to hook (their layers are compiled into one graph); give the Python model as "
                 "package.module:function, or leave --noise-layer out to add the noise to the inputs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``explain`` options for noise at a layer, as a group of their own in ``--help``."""
    text = parser.add_argument_group("noise at a layer (token ids, text models)")
    text.add_argument("--noise-layer", default=None, metavar="NAME",
                      help="add the noise to the output of this submodule of a package.module:function model (dotted "
                           "name, e.g. embeddings or bert.embeddings) instead of to the inputs, and attribute that "
                           "output; the inputs may then be integer token ids. Not for TorchScript or torch.export "
                           "models: they have no Python submodules to hook")
    text.add_argument("--noise-mask", default=None, metavar="KEY",
                      help="the input (dict key, or position in a tuple) whose zero entries get no noise, e.g. "
                           "attention_mask; it still reaches the model, as every input but the token ids does")
    text.add_argument("--baseline-token", type=non_negative_int, default=None, metavar="ID",
                      help="--method ig: the baseline replaces every token id by ID (default 0; e.g. the padding "
                           "id, so padding itself gets no attribution)")
    text.add_argument("--token-reduce", choices=TOKEN_REDUCTIONS, default=None,
                      help="'token_scores' per token: the signed sum over the hidden dimension (default; with --method "
                           "ig the scores add up to the change of the output from the baseline) or its l2 norm "
                           "(unsigned, e.g. for the saliency gradient)")
    text.add_argument("--vocab", default=None, metavar="FILE",
                      help="text file with one token per line (line i for id i, like a tokenizer's vocab.txt): the "
                           "token figures show these strings instead of the ids")


def int_at_least(least: int, words: str) -> Callable[[str], int]:
    """An argparse type: an int ≥ ``least``, described as ``words`` in its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {words}, got {value}")
        return value

    return parse


non_negative_int = int_at_least(0, "an integer >= 0")


def check_layer_options(args: argparse.Namespace, model_is_file: bool) -> None:
    """Refuse option combinations that mean nothing, before any file is read.

    Raises
    ------
    ExplainError
        Naming the option.
    """
    if args.noise_layer is None:
        for option, value in (("--noise-mask", args.noise_mask), ("--baseline-token", args.baseline_token),
                              ("--vocab", args.vocab), ("--token-reduce", args.token_reduce)):
            if value is not None:
                raise ExplainError(f"{option} applies with --noise-layer only (noise at a layer of a text model)")
        return
    if model_is_file:
        raise ExplainError(NO_SUBMODULES)
    if not args.noise_layer:
        raise ExplainError("--noise-layer needs the dotted name of a submodule, e.g. embeddings")
    if args.abs:
        raise ExplainError("--abs applies to Saliency of the inputs; with --noise-layer the layer gradient is signed "
                           "(use --token-reduce l2 for an unsigned score per token)")
    if args.baseline_token is not None and args.method != "ig":
        raise ExplainError("--baseline-token applies to --method ig only")


def resolve_noise_layer(model: Any, name: str) -> nn.Module:
    """The submodule ``name`` (dotted) of ``model``, which must be an eager ``nn.Module``.

    Raises
    ------
    ExplainError
        If ``model`` is TorchScript or not an ``nn.Module``, or has no such submodule (the message lists the
        embedding layers and top-level submodules it has).
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise ExplainError(f"{NO_SUBMODULES} (the function returned a TorchScript module)")
    if not isinstance(model, nn.Module):
        raise ExplainError(f"--noise-layer {name!r}: the model is a {type(model).__name__}, not an nn.Module, so it "
                           "has no submodules; return the nn.Module itself from the function")
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        # a wrapper around a Hugging Face model nests its names one level deeper (bert.bert.embeddings)
        deeper = [n for n, _ in model.named_modules() if n.endswith("." + name)]
        embeddings = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
        children = [n for n, _ in model.named_children()]
        raise ExplainError(f"--noise-layer {name!r}: {type(model).__name__} has no submodule of that name"
                           f"{'' if not deeper else f' (did you mean {deeper[0]!r}?)'}; its embedding layers: "
                           f"{', '.join(embeddings) or 'none'}; its top-level submodules: "
                           f"{', '.join(children) or 'none'}") from None
    if isinstance(layer, torch.jit.ScriptModule):
        raise ExplainError(f"{NO_SUBMODULES} (--noise-layer {name!r} is a TorchScript module)")
    return layer


@dataclass
class LayerSetup:
    """How ``explain`` calls a layer method: which input holds the tokens, which are context, which is the mask."""

    method: Any
    layer: nn.Module
    tokens: int  # position of the token input: Captum's input
    context: Tuple[int, ...]  # positions of the other inputs: Captum's additional_forward_args, in this order
    mask: Optional[int]  # position of the --noise-mask input
    baseline_token: Optional[int]  # IG's baseline id; None for the other methods

    def example(self, inputs: Tuple[Tensor, ...], i: int) -> Tuple[Tuple[Tensor, ...], Dict[str, Any], Dict[str, Any]]:
        """Example ``i`` as (Captum inputs, the method's keyword arguments, NoiseTunnel's noise-layer arguments)."""
        one = [t[i : i + 1] for t in inputs]
        method_kwargs: Dict[str, Any] = {}
        if self.context:
            method_kwargs["additional_forward_args"] = tuple(one[k] for k in self.context)
        if self.baseline_token is not None:
            method_kwargs["baselines"] = torch.full_like(one[self.tokens], self.baseline_token)
        smoothing: Dict[str, Any] = {"noise_layer": self.layer}
        if self.mask is not None:
            smoothing["noise_mask"] = one[self.mask]
        return (one[self.tokens],), method_kwargs, smoothing


def layer_setup(model: Any, inputs: Tuple[Tensor, ...], names: Optional[Sequence[str]],
                args: argparse.Namespace) -> LayerSetup:
    """The layer method of ``args.method`` on ``args.noise_layer`` of ``model``, with its inputs sorted."""
    layer = resolve_noise_layer(model, args.noise_layer)
    tokens, context, mask = input_roles(names, len(inputs), args.noise_mask)
    cls, options = LAYER_METHODS[args.method]
    method = cls(_forward((tokens,) + context, model, names), layer, **options)
    baseline = (args.baseline_token or 0) if args.method == "ig" else None
    return LayerSetup(method, layer, tokens, context, mask, baseline)


def input_roles(names: Optional[Sequence[str]], count: int,
                mask_key: Optional[str]) -> Tuple[int, Tuple[int, ...], Optional[int]]:
    """(position of the token ids, positions of the other inputs, position of the ``--noise-mask`` input).

    Examples
    --------
    >>> input_roles(["attention_mask", "input_ids", "token_type_ids"], 3, "attention_mask")
    (1, (0, 2), 0)
    """
    mask = None if mask_key is None else _input_position(mask_key, names, count)
    rest = [k for k in range(count) if k != mask]
    if not rest:
        raise ExplainError(f"--noise-mask {mask_key!r} names the only input; the token ids must be an input too")
    return rest[0], tuple(k for k in range(count) if k != rest[0]), mask


def _input_position(key: str, names: Optional[Sequence[str]], count: int) -> int:
    if names is not None:
        if key not in names:
            raise ExplainError(f"--noise-mask {key!r}: the inputs have no such key (keys: {', '.join(names)})")
        return list(names).index(key)
    if key.isdigit() and int(key) < count:
        return int(key)
    raise ExplainError(f"--noise-mask {key!r}: for a tuple of inputs give the position of the mask, 0 to {count - 1} "
                       "(for a dict, its key)")


def _forward(order: Tuple[int, ...], model: Callable[..., Any], names: Optional[Sequence[str]]) -> Callable[..., Any]:
    """``forward(tokens, *context)`` as Captum calls it, back in the inputs' own positions (or keywords)."""

    def forward(*tensors: Tensor) -> Any:
        placed: List[Any] = [None] * len(order)
        for position, tensor in zip(order, tensors):
            placed[position] = tensor
        return model(**dict(zip(names, placed))) if names is not None else model(*placed)

    return forward


def token_ids(setup: LayerSetup, inputs: Tuple[Tensor, ...], attributions: Tensor) -> Optional[Tensor]:
    """The token input if the layer's attributions have one row per token of it (``(batch, tokens, ...)``)."""
    ids = inputs[setup.tokens]
    if ids.is_floating_point() or ids.dim() != 2 or attributions.dim() < 3:
        return None
    return ids if tuple(attributions.shape[:2]) == tuple(ids.shape) else None


def load_vocab(path_text: str, ids: Tensor) -> List[str]:
    """``--vocab``: one token per line, line ``i`` (from 0) for token id ``i`` (a tokenizer's ``vocab.txt``).

    Raises
    ------
    ExplainError
        If the file is missing, not UTF-8 text, or has no line for one of the token ``ids``.
    """
    path = Path(path_text)
    if not path.is_file():
        raise ExplainError(f"--vocab '{path}': no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ExplainError(f"--vocab '{path}' is not UTF-8 text: {err.reason}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line starts no token
        lines.pop()
    if ids.is_floating_point():
        raise ExplainError("--vocab names token ids, but the token input is floating point")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= len(lines):
        raise ExplainError(f"--vocab '{path}' has {len(lines)} lines, but the token ids run from {low} to {high}")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def token_figures(out_dir: Path, result: Any, vocab: Optional[List[str]], method: str, args: argparse.Namespace,
                  count: int) -> List[Path]:
    """``tokens_<i>.png`` for the first ``count`` examples of ``result`` (an ``explain.Explanation`` with token
    scores): each token (its id, or its ``--vocab`` line) on a box coloured by its score; tokens whose
    ``--noise-mask`` entry is 0 (padding) are left out."""
    from noisegrad import viz

    scores, ids, mask, target = result.token_scores, result.tokens, result.token_mask, result.target
    norm = ", l2 norm" if args.token_reduce == "l2" else ""
    # with --targets, one figure per example and output: tokens_<i>_output<k>.png
    columns = [(None, scores)] if result.outputs is None else [(k, scores[..., j]) for j, k in enumerate(result.outputs)]
    written = []
    for i in range(min(count, scores.shape[0])):
        keep = torch.ones(ids.shape[1], dtype=torch.bool) if mask is None else mask[i] != 0
        if not bool(keep.any()):
            keep = torch.ones_like(keep)
        shown = ids[i][keep].tolist()
        tokens = [vocab[t] for t in shown] if vocab is not None else [str(t) for t in shown]
        for output, column in columns:
            which = f", target {int(target[i])}" if target is not None else "" if output is None else f", output {output}"
            title = f"example {i}{which}: {method} at {args.noise_layer}{norm}"
            path = out_dir / (f"tokens_{i}.png" if output is None else f"tokens_{i}_output{output}.png")
            viz.plot_token_attr(tokens, column[i][keep], title=title, save=path)
            written.append(path)
    return written

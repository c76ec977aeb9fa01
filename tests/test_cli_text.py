"""``python -m noisegrad explain --noise-layer``: token ids, noise at a submodule's output, attributions of that output.

The expected values are the library calls the command line promises to make, on the whole batch with the same seed:
``NoiseTunnel(<layer method>).attribute(ids, noise_layer=..., noise_mask=..., seed=0)``.
"""

import re
import sys
import textwrap

import pytest
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

import noisegrad
from noisegrad.app.cli import build_parser, main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

TEXT_SOURCE = textwrap.dedent(
    """
    from typing import Optional

    import torch
    from torch import nn


    class TinyText(nn.Module):
        \"\"\"Embeddings, a per-token layer and a pooled head; padding counts a quarter, so it still matters.\"\"\"

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embed, self.token, self.head = nn.Embedding(12, 4), nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, input_ids, attention_mask: Optional[torch.Tensor] = None):
            h = torch.tanh(self.token(self.embed(input_ids)))
            if attention_mask is None:
                w = torch.ones_like(h[..., :1])
            else:
                w = 0.25 + attention_mask.unsqueeze(-1).to(h.dtype)
            return self.head((h * w).sum(1) / w.sum(1))


    def make_text():
        return TinyText().eval()


    def scripted_text():
        return torch.jit.script(TinyText().eval())


    def wrapped_text():
        return nn.Sequential(TinyText()).eval()
    """
)

IDS = torch.tensor([[3, 7, 1, 9, 0, 0], [5, 2, 8, 8, 4, 11], [6, 1, 10, 2, 7, 0]])
MASK = (IDS != 0).long()  # examples 0 and 2 end in padding (id 0)


@pytest.fixture
def textdir(tmp_path, monkeypatch):
    """text_models.py, ids.pt (3 × 6 token ids), batch.pt ({"input_ids", "attention_mask"}) and vocab.txt."""
    (tmp_path / "text_models.py").write_text(TEXT_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("text_models", None)
    import text_models

    torch.save(IDS, tmp_path / "ids.pt")
    torch.save({"input_ids": IDS, "attention_mask": MASK}, tmp_path / "batch.pt")
    (tmp_path / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(12)), encoding="utf-8")
    yield tmp_path, text_models.make_text()
    sys.modules.pop("text_models", None)


def _run(folder, *options):
    out = folder / "out"
    assert main(["explain", "--model", "text_models:make_text", "--target", "1", "--samples", "6", "--out", str(out),
                 "--quiet", *options]) == 0
    return out, torch.load(out / "attributions.pt", weights_only=True)


def _fails_with_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


@pytest.mark.parametrize("method, make, options, kwargs, reduce", [
    ("saliency", lambda m: LayerGradientXActivation(m, m.embed, multiply_by_inputs=False), ["--token-reduce", "l2"],
     {}, "l2"),
    ("input_x_gradient", lambda m: LayerGradientXActivation(m, m.embed), [], {}, "sum"),
    ("ig", lambda m: LayerIntegratedGradients(m, m.embed), ["--baseline-token", "3", "--n-steps", "8"],
     {"baselines": torch.full_like(IDS, 3), "n_steps": 8, "return_convergence_delta": True}, "sum"),
])
def test_token_ids_with_a_noise_layer_give_the_library_result(textdir, method, make, options, kwargs, reduce):
    folder, model = textdir
    out, saved = _run(folder, "--inputs", "ids.pt", "--noise-layer", "embed", "--method", method, *options)
    expected = noisegrad.NoiseTunnel(make(model)).attribute(
        IDS, nt_samples=6, stdevs=noisegrad.relative(0.15), seed=0, target=1, noise_layer=model.embed, **kwargs)
    if method == "ig":
        expected, delta = expected
        torch.testing.assert_close(saved["delta"], delta, rtol=0, atol=1e-6)
    assert saved["attributions"].shape == (3, 6, 4)  # the embedding's output, not the ids
    torch.testing.assert_close(saved["attributions"], expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(saved["token_scores"], noisegrad.token_scores(expected, reduce), rtol=1e-5, atol=1e-7)
    assert saved["options"]["noise_layer"] == "embed"
    assert all((out / f"tokens_{i}.png").stat().st_size > 1000 for i in range(3))


def test_several_targets_at_a_layer_give_token_scores_and_figures_per_output(textdir):
    folder, model = textdir
    out = folder / "targets"
    assert main(["explain", "--model", "text_models:make_text", "--targets", "1,0", "--samples", "6", "--out",
                 str(out), "--quiet", "--inputs", "ids.pt", "--noise-layer", "embed", "--method", "input_x_gradient"]) == 0
    saved = torch.load(out / "attributions.pt", weights_only=True)
    expected = noisegrad.NoiseTunnel(LayerGradientXActivation(model, model.embed)).attribute(
        IDS, nt_samples=6, stdevs=noisegrad.relative(0.15), seed=0, outputs=[1, 0], noise_layer=model.embed)
    torch.testing.assert_close(saved["attributions"], expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(saved["token_scores"], noisegrad.token_scores(expected, per_output=True),
                               rtol=1e-5, atol=1e-7)
    assert all((out / f"tokens_{i}_output{k}.png").is_file() for i in range(3) for k in (1, 0))


def test_the_attention_mask_reaches_the_model_and_keeps_padding_free_of_noise(textdir, monkeypatch):
    folder, model = textdir
    drawn = []
    from noisegrad import viz

    real_plot = viz.plot_token_attr
    monkeypatch.setattr(viz, "plot_token_attr", lambda tokens, attr, **kw: (drawn.append((tokens, attr)),
                                                                            real_plot(tokens, attr, **kw))[1])
    _, saved = _run(folder, "--inputs", "batch.pt", "--noise-layer", "embed", "--noise-mask", "attention_mask",
                    "--method", "input_x_gradient", "--stderr", "--vocab", "vocab.txt")
    nt = noisegrad.NoiseTunnel(LayerGradientXActivation(
        lambda ids, mask: model(input_ids=ids, attention_mask=mask), model.embed))
    common = dict(nt_samples=6, stdevs=noisegrad.relative(0.15), seed=0, target=1, noise_layer=model.embed,
                  additional_forward_args=(MASK,))
    expected = nt.attribute(IDS, noise_mask=MASK, return_stderr=True, **common)
    torch.testing.assert_close(saved["attributions"], expected.attributions, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(saved["stderr"], expected.stderr, rtol=1e-5, atol=1e-7)
    scores = noisegrad.token_scores(expected.attributions)
    torch.testing.assert_close(saved["token_scores"], scores, rtol=1e-5, atol=1e-7)
    # padding still has scores, made from its clean embeddings: with noise on it they would differ
    noisy_padding = noisegrad.token_scores(nt.attribute(IDS, **common))
    padding = MASK == 0
    assert bool((saved["token_scores"][padding] != 0).all())
    assert not torch.allclose(noisy_padding[padding], saved["token_scores"][padding], rtol=1e-3, atol=0)
    # the figures show the real tokens only, as --vocab spells them
    assert [tokens for tokens, _ in drawn] == [["w3", "w7", "w1", "w9"], [f"w{t}" for t in IDS[1].tolist()],
                                               ["w6", "w1", "w10", "w2", "w7"]]
    torch.testing.assert_close(torch.as_tensor(drawn[0][1]), scores[0, :4])


def test_no_noise_at_a_layer_runs_the_layer_method_once(textdir):
    folder, model = textdir
    _, saved = _run(folder, "--inputs", "ids.pt", "--noise-layer", "embed", "--nt-type", "none", "--no-figures")
    expected = LayerGradientXActivation(model, model.embed, multiply_by_inputs=False).attribute(IDS, target=1)
    torch.testing.assert_close(saved["attributions"], expected, rtol=1e-6, atol=1e-8)


def test_integer_inputs_without_a_noise_layer_are_refused_naming_it(textdir, capsys):
    folder, _ = textdir
    for inputs in ("ids.pt", "batch.pt"):
        err = _fails_with_2(capsys, ["explain", "--model", "text_models:make_text", "--inputs", inputs,
                                     "--out", str(folder / "o")])
        assert "floating point" in err and "--noise-layer NAME" in err
    assert not (folder / "o").exists()


def test_integer_inputs_with_joint_are_told_to_leave_out_joint_not_just_to_add_a_noise_layer(textdir, capsys):
    # --joint refuses --noise-layer, so a hint naming only --noise-layer sent the user in a circle
    folder, _ = textdir
    err = _fails_with_2(capsys, ["explain", "--model", "text_models:make_text", "--inputs", "ids.pt", "--method",
                                 "ig", "--joint", "--out", str(folder / "o")])
    assert "floating point" in err and "--joint adds its noise to the inputs" in err
    assert "without --joint" in err and "--noise-layer NAME" in err
    assert not (folder / "o").exists()


def test_a_noise_layer_is_refused_for_torchscript_and_exported_models(textdir, capsys):
    folder, model = textdir
    torch.jit.save(torch.jit.script(model), folder / "text_script.pt")
    batch = {"input_ids": {0: torch.export.Dim("batch")}}
    torch.export.save(torch.export.export(model, (IDS,), dynamic_shapes=batch), folder / "text_export.pt2")
    for model_arg in ("text_script.pt", "text_export.pt2", "text_models:scripted_text"):
        err = _fails_with_2(capsys, ["explain", "--model", model_arg, "--inputs", "ids.pt", "--noise-layer", "embed",
                                     "--out", str(folder / "o")])
        assert "--noise-layer needs a package.module:function model" in err
        assert "TorchScript and torch.export programs have no Python submodules to hook" in err


def test_help_says_which_models_take_a_noise_layer():
    text = build_parser()._subparsers._group_actions[0].choices["explain"].format_help()
    entry = re.search(r"\n  --noise-layer NAME(.*?)\n  --", text, re.S).group(1)
    assert "Not for TorchScript or torch.export models: they have no Python submodules to hook" in " ".join(
        entry.split())
    flat = " ".join(text.split())
    for promise in ("--noise-mask attention_mask", '"token_scores"', "additional_forward_args", "--baseline-token"):
        assert promise in flat


@pytest.mark.parametrize("options, message", [
    (["--noise-layer", "embedding"], "has no submodule of that name; its embedding layers: embed; its top-level "
                                     "submodules: embed, token, head"),
    (["--model", "text_models:wrapped_text", "--noise-layer", "embed"], "(did you mean '0.embed'?)"),
    (["--noise-layer", "embed", "--noise-mask", "mask"], "no such key (keys: input_ids, attention_mask)"),
    (["--noise-mask", "attention_mask"], "--noise-mask applies with --noise-layer only"),
    (["--vocab", "vocab.txt"], "--vocab applies with --noise-layer only"),
    (["--noise-layer", "embed", "--abs"], "--abs applies to Saliency of the inputs"),
    (["--noise-layer", "embed", "--baseline-token", "1"], "--baseline-token applies to --method ig only"),
    (["--noise-layer", "embed", "--vocab", "short.txt"], "has 5 lines, but the token ids run from 0 to 11"),
    (["--noise-layer", "embed", "--method", "ig", "--baseline-token", "12"], "attribution failed: IndexError"),
])
def test_bad_text_options_exit_with_2_and_say_why(textdir, capsys, options, message):
    folder, _ = textdir
    (folder / "short.txt").write_text("a\nb\nc\nd\ne\n")
    err = _fails_with_2(capsys, ["explain", "--model", "text_models:make_text", "--inputs", "batch.pt",
                                 "--out", str(folder / "o"), *options])
    assert message in err

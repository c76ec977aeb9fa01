"""Noise at a module's output (``noise_layer=``): what it means, proven against Captum on the split model.

For a model ``tail(embed(ids))``, smoothing with ``noise_layer=embed`` must equal Captum's own NoiseTunnel over the
matching input method applied to ``tail`` with ``embed(ids)`` as the input, given the same noise:
LayerIntegratedGradients ↔ IntegratedGradients, LayerGradientXActivation ↔ InputXGradient, and the layer gradient
(LayerGradientXActivation without the multiplication) ↔ Saliency with ``abs=False``.
"""

import threading

import pytest
import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    Saliency,
)
from captum.attr import NoiseTunnel as CaptumNoiseTunnel
from torch import nn

from noisegrad import NoiseTunnel, SampleSeeds, plan_chunks, relative
from noisegrad.sampling.samplers import NoiseSampler
from noisegrad.sampling.streams import LAYER_OUTPUT

SEED, VOCAB, HIDDEN, TOKENS = 5, 11, 4, 6


class Tail(nn.Module):
    """Everything after the embedding: per-token features, mean over tokens, classes."""

    def __init__(self):
        super().__init__()
        self.token, self.head = nn.Linear(HIDDEN, 5), nn.Linear(5, 3)

    def forward(self, e):
        return self.head(torch.tanh(self.token(e)).mean(1))


class Split(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.tail = nn.Embedding(VOCAB, HIDDEN), Tail()
        self.double().eval()

    def forward(self, ids):
        return self.tail(self.embed(ids))


IDS = torch.randint(1, VOCAB, (3, TOKENS), generator=torch.Generator().manual_seed(1))
BASE = torch.zeros_like(IDS)


def example_major(rows, n):
    rest = tuple(rows.shape[1:])
    return rows.reshape((n, -1) + rest).transpose(0, 1).reshape((-1,) + rest)


def layer_noise(shape, nt_samples, batch_size, sigma, sampler="iid"):
    """noisegrad's noise for the layer output, chunk by chunk (sample-major rows)."""
    draws = NoiseSampler(sampler, SampleSeeds(SEED), nt_samples)
    chunks = []
    for ids in plan_chunks(nt_samples, batch_size):
        out = torch.empty((len(ids),) + tuple(shape), dtype=torch.float64)
        draws.fill(out, ids, torch.arange(shape[0]), LAYER_OUTPUT)
        chunks.append(out.mul_(sigma).reshape((-1,) + tuple(shape[1:])))
    return chunks


def captum_on_tail(monkeypatch, method, embedded, nt_samples, batch_size, sigma, sampler="iid", **kwargs):
    """Captum's NoiseTunnel on ``tail`` with the embeddings as input, given noisegrad's layer noise."""
    queue = [example_major(noise, noise.shape[0] // embedded.shape[0])
             for noise in layer_noise(embedded.shape, nt_samples, batch_size, sigma, sampler)]

    def injected(input, stdev, partition):
        noise = queue.pop(0)
        return input.repeat_interleave(partition, dim=0) + noise

    monkeypatch.setattr(CaptumNoiseTunnel, "_add_noise_to_input", staticmethod(injected))
    result = CaptumNoiseTunnel(method).attribute(embedded, nt_samples=nt_samples, nt_samples_batch_size=batch_size,
                                                 stdevs=1.0, **kwargs)
    assert not queue
    return result


PAIRS = {
    "layer IG ↔ IG": (lambda m: LayerIntegratedGradients(m, m.embed), lambda t: IntegratedGradients(t),
                      {"n_steps": 6, "baselines": BASE}, lambda m: {"n_steps": 6, "baselines": m.embed(BASE).detach()}),
    "layer gradient × activation ↔ input × gradient": (
        lambda m: LayerGradientXActivation(m, m.embed), lambda t: InputXGradient(t), {}, lambda m: {}),
    "layer gradient ↔ saliency": (
        lambda m: LayerGradientXActivation(m, m.embed, multiply_by_inputs=False), lambda t: Saliency(t), {},
        lambda m: {"abs": False}),
}


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_equals_captum_on_the_split_model_given_the_same_noise(monkeypatch, pair, nt_type, batch_size):
    make_ours, make_theirs, our_kwargs, their_kwargs = PAIRS[pair]
    model = Split()
    ours = NoiseTunnel(make_ours(model)).attribute(
        IDS, nt_type=nt_type, nt_samples=5, nt_samples_batch_size=batch_size, stdevs=0.4, target=1, seed=SEED,
        noise_layer=model.embed, **our_kwargs)
    embedded = model.embed(IDS).detach()
    theirs = captum_on_tail(monkeypatch, make_theirs(model.tail), embedded, 5, batch_size, 0.4, nt_type=nt_type,
                            target=1, **their_kwargs(model))
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_layer_ig_deltas_and_antithetic_noise_match_captum(monkeypatch):
    model = Split()
    ours, delta = NoiseTunnel(LayerIntegratedGradients(model, "embed" and model.embed)).attribute(
        IDS, nt_samples=4, stdevs=0.3, target=2, seed=SEED, noise_layer="embed", sampler="antithetic",
        baselines=BASE, n_steps=5, return_convergence_delta=True)
    embedded, base = model.embed(IDS).detach(), model.embed(BASE).detach()
    theirs, their_delta = captum_on_tail(monkeypatch, IntegratedGradients(model.tail), embedded, 4, None, 0.3,
                                         sampler="antithetic", target=2, n_steps=5, baselines=base,
                                         return_convergence_delta=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(delta, their_delta.reshape(3, 4).mean(1), rtol=1e-10, atol=1e-12)


class Recording(Split):
    """Records what the tail is given: the (noisy) embeddings."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, ids):
        e = self.embed(ids)
        self.seen.append(e.detach().clone())
        return self.tail(e)


def noise_seen(model, ids, **kwargs):
    model.seen.clear()
    NoiseTunnel(LayerGradientXActivation(model, model.embed)).attribute(
        ids, nt_samples=3, target=0, seed=SEED, noise_layer=model.embed, **kwargs)
    noisy = torch.cat(model.seen[1:])  # the first forward measures the clean layer output
    return noisy - model.embed(ids).detach().repeat(3, 1, 1)


def test_padding_gets_no_noise_and_does_not_change_the_noise_of_real_tokens():
    model = Recording()
    mask = torch.ones(3, TOKENS, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 1:] = 0
    noise = noise_seen(model, IDS, stdevs=0.5, noise_mask=mask).view(3, 3, TOKENS, HIDDEN)
    assert bool((noise[:, mask == 0] == 0).all())
    assert bool((noise[:, mask == 1] != 0).all())
    padded = torch.cat([IDS, torch.zeros(3, 4, dtype=IDS.dtype)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 4, dtype=mask.dtype)], dim=1)
    padded_noise = noise_seen(model, padded, stdevs=0.5, noise_mask=padded_mask).view(3, 3, TOKENS + 4, HIDDEN)
    assert torch.equal(padded_noise[:, :, :TOKENS], noise)
    assert bool((padded_noise[:, :, TOKENS:] == 0).all())


def test_relative_noise_is_measured_over_the_real_tokens_only():
    model = Recording()
    mask = torch.ones(3, TOKENS, dtype=torch.bool)
    mask[1, 3:] = False
    noise = noise_seen(model, IDS, stdevs=relative(1.0, of="std"), noise_mask=mask).view(3, 3, TOKENS, HIDDEN)
    embedded = model.embed(IDS).detach()
    unit = noise_seen(model, IDS, stdevs=1.0, noise_mask=mask).view(3, 3, TOKENS, HIDDEN)
    for i in range(3):
        real = embedded[i][mask[i]]
        expected = real.std(correction=0)
        torch.testing.assert_close(noise[:, i], unit[:, i] * expected, rtol=1e-12, atol=0)


def test_sigma_per_hidden_feature_broadcasts_over_tokens():
    model = Recording()
    sigma = torch.tensor([0.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    noise = noise_seen(model, IDS, stdevs=sigma)
    unit = noise_seen(model, IDS, stdevs=1.0)
    torch.testing.assert_close(noise, unit * sigma, rtol=1e-12, atol=1e-15)  # noisy − clean: one rounding
    assert bool((noise[..., [0, 2]] == 0).all())


class FloatModel(nn.Module):
    """Float inputs → hidden → output, with the hidden layer as the noise layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.first, self.rest = nn.Sequential(nn.Linear(5, 6), nn.Tanh()), nn.Sequential(nn.Linear(6, 2), nn.Tanh())
        self.double().eval()

    def forward(self, x):
        return self.rest(self.first(x))


@pytest.mark.parametrize("make, kwargs", [
    (Saliency, {"abs": False}),
    (IntegratedGradients, {"n_steps": 16}),
])
def test_input_attributions_with_noise_at_a_hidden_layer_average_the_perturbed_models(make, kwargs):
    """Reference: for each copy k the model f_k(x) = rest(first(x) + ε_k), attributed with Captum, averaged."""
    model = FloatModel()
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ours = NoiseTunnel(make(model)).attribute(x, nt_samples=5, nt_samples_batch_size=2, stdevs=0.3, target=1,
                                              seed=SEED, noise_layer=model.first, **kwargs)
    noise = torch.cat([chunk.view(-1, 4, 6) for chunk in layer_noise((4, 6), 5, 2, 0.3)])
    reference = torch.zeros_like(x)
    for k in range(5):
        perturbed = lambda t, k=k: model.rest(model.first(t) + noise[k][: t.shape[0]].repeat(t.shape[0] // 4, 1))  # noqa: E731
        reference += make(perturbed).attribute(x, target=1, **kwargs).detach() / 5
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


def test_integrated_gradients_with_noise_at_a_hidden_layer_is_complete():
    """Each copy's noise is the same at every path point and at the baseline, so completeness holds per copy."""
    model = FloatModel()
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, delta = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_samples=4, stdevs=0.5, target=0, seed=SEED, noise_layer=model.first, n_steps=200,
        method="gausslegendre", return_convergence_delta=True)
    assert float(delta.abs().max()) < 1e-8


def test_results_do_not_depend_on_the_chunk_size_and_stderr_and_auto_carry_over():
    model = Split()
    nt = NoiseTunnel(LayerIntegratedGradients(model, model.embed))
    common = dict(stdevs=0.3, target=1, seed=SEED, noise_layer=model.embed, baselines=BASE, n_steps=4,
                  sampler="lhs", return_stderr=True, nt_samples=8)
    whole = nt.attribute(IDS, **common)
    chunked = nt.attribute(IDS, nt_samples_batch_size=3, **common)
    torch.testing.assert_close(chunked.attributions, whole.attributions, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(chunked.stderr, whole.stderr, rtol=1e-10, atol=1e-14)
    auto = nt.attribute(IDS, stdevs=0.3, target=1, seed=SEED, noise_layer="embed", baselines=BASE, n_steps=4,
                        nt_samples="auto", max_samples=64, tol=0.5)
    assert auto.attributions.shape == (3, TOKENS, HIDDEN) and bool(auto.converged.all())
    alone = nt.attribute(IDS[1:2], stdevs=0.3, target=1, seed=SEED, noise_layer="embed", baselines=BASE[1:2],
                         n_steps=4, nt_samples="auto", max_samples=64, tol=0.5, example_ids=[1])
    torch.testing.assert_close(alone.attributions[0], auto.attributions[1], rtol=1e-12, atol=1e-14)


class Exploding(Split):
    def __init__(self, error):
        super().__init__()
        self.error, self.calls = error, 0

    def forward(self, ids):
        e = self.embed(ids)
        self.calls += 1
        if self.calls == 3:  # the measuring forward, then chunk 1 runs, then chunk 2 raises
            raise self.error
        return self.tail(e)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_the_hook_is_removed_after_an_exception_or_an_interrupt(error):
    model = Exploding(error)
    with pytest.raises(type(error)):
        NoiseTunnel(LayerGradientXActivation(model, model.embed)).attribute(
            IDS, nt_samples=4, nt_samples_batch_size=2, stdevs=0.3, target=0, seed=SEED, noise_layer=model.embed)
    assert model.calls == 3
    assert not model.embed._forward_hooks and not model.embed._forward_pre_hooks
    assert torch.equal(model(IDS), Split()(IDS))  # clean again: the same weights give the same output


def test_other_threads_forwards_through_the_same_model_get_no_noise():
    """The hook acts in the thread that installed it only. (Saliency: a Captum layer method's own capturing hooks
    would also fire in the other thread's forwards, which is Captum's, not the noise's, doing.)"""
    model = FloatModel()
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    rows = x.repeat(4, 1)  # as many rows as the noisy copies: noise would fit them
    clean = model(rows).detach()
    stop, mismatches = threading.Event(), []

    def plain_forwards():
        while not stop.is_set():
            try:
                with torch.no_grad():
                    if not torch.equal(model(rows), clean):
                        mismatches.append("noisy output")
            except Exception as error:  # noqa: BLE001  (a hook failing in this thread is a mismatch too)
                mismatches.append(repr(error))

    worker = threading.Thread(target=plain_forwards)
    worker.start()
    try:
        results = [NoiseTunnel(Saliency(model)).attribute(x, nt_samples=4, stdevs=1.0, target=0, seed=SEED,
                                                         noise_layer=model.first, abs=False) for _ in range(20)]
    finally:
        stop.set()
        worker.join()
    assert not mismatches
    assert all(torch.equal(r, results[0]) for r in results)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(noise_layer="nope"), ValueError, "noise_layer='nope' names no submodule of the model"),
    (dict(noise_layer=3), TypeError, "noise_layer must be an nn.Module of the model or its dotted name, got int"),
    (dict(noise_layer=nn.Linear(2, 2)), ValueError, r"noise_layer \(Linear\) was not run by the model's forward"),
    (dict(noise_mask=torch.ones(3, TOKENS)), ValueError, "noise_mask applies to noise at a layer"),
    (dict(noise_layer="embed", noise_mask=torch.ones(3, TOKENS + 1)), ValueError,
     r"noise_mask has shape \(3, 7\), which does not match the leading dimensions"),
    (dict(noise_layer="embed", noise_mask=torch.ones(2, TOKENS)), ValueError, "noise_mask must have one row per"),
    (dict(noise_layer="embed", stdevs=torch.ones(5)), ValueError, r"does not broadcast.*noise_layer's output"),
    (dict(noise_layer="embed", stdevs=(0.1,)), TypeError, "with noise_layer, stdevs must be a float"),
    (dict(noise_layer="embed", stdevs=-1.0), ValueError, "stdevs must be finite and >= 0"),
    (dict(), TypeError, "noise_layer=model.embeddings"),
])
def test_bad_arguments_are_refused_before_the_noisy_copies_run(kwargs, error, match):
    model = Split()
    kwargs = dict(dict(stdevs=0.1), **kwargs)
    with pytest.raises(error, match=match):
        NoiseTunnel(LayerGradientXActivation(model, model.embed)).attribute(IDS, nt_samples=2, target=0, **kwargs)
    assert not model.embed._forward_hooks


def test_joint_sampling_refuses_a_noise_layer():
    model = Split()
    with pytest.raises(ValueError, match="noise_layer= needs the nested estimator"):
        NoiseTunnel(LayerIntegratedGradients(model, model.embed)).attribute(
            IDS, nt_samples=2, target=0, joint=True, noise_layer="embed")


def test_path_steps_split_by_internal_batch_size_keep_each_copys_noise():
    """Captum splits IG's steps whole, so every forward holds a multiple of the chunk's copies."""
    model = FloatModel()
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    kwargs = dict(nt_samples=2, stdevs=0.3, target=0, seed=SEED, noise_layer=model.first, n_steps=6)
    whole = NoiseTunnel(IntegratedGradients(model)).attribute(x, **kwargs)
    split = NoiseTunnel(IntegratedGradients(model)).attribute(x, internal_batch_size=9, **kwargs)
    torch.testing.assert_close(split, whole, rtol=1e-12, atol=1e-14)


def test_a_layer_that_does_not_see_one_row_per_example_is_refused():
    model = FloatModel()
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="noise_layer's output has 3 rows for a batch of 4"):
        NoiseTunnel(Saliency(lambda t: model.rest(model.first(t[1:])).sum(0, keepdim=True).expand(4, 2))).attribute(
            x, nt_samples=2, target=0, noise_layer=model.first)


class Encoder(nn.Module):
    """A small torch.nn.TransformerEncoder classifier taking a padding mask as an extra forward argument."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.embed = nn.Embedding(VOCAB, 8)
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, 2)
        self.double().eval()

    def forward(self, ids, padding):
        hidden = self.encoder(self.embed(ids), src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * keep).sum(1) / keep.sum(1))


def test_a_transformer_encoder_with_a_padding_mask():
    model = Encoder()
    padding = torch.zeros(3, TOKENS, dtype=torch.bool)
    padding[0, 4:] = True
    nt = NoiseTunnel(LayerIntegratedGradients(model, model.embed))
    kwargs = dict(nt_samples=6, stdevs=relative(0.2, of="std"), target=1, seed=SEED, noise_layer="embed",
                  noise_mask=~padding, additional_forward_args=(padding,), baselines=BASE, n_steps=8,
                  return_convergence_delta=True)
    attr, delta = nt.attribute(IDS, **kwargs)
    attr_chunked, _ = nt.attribute(IDS, nt_samples_batch_size=4, **kwargs)
    assert attr.shape == (3, TOKENS, 8) and bool(torch.isfinite(attr).all())
    torch.testing.assert_close(attr_chunked, attr, rtol=1e-10, atol=1e-12)
    assert delta.shape == (3,) and float(delta.abs().max()) < 0.05


def test_a_hugging_face_model_built_from_a_config():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).double().eval()

    def logits(ids, attention_mask):
        return model(input_ids=ids, attention_mask=attention_mask).logits

    attention = torch.ones(3, TOKENS, dtype=torch.long)
    attention[1, 3:] = 0
    embeddings = model.get_input_embeddings()
    seen = []
    probe = model.bert.encoder.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(
        args[0].detach().clone() if args else kwargs["hidden_states"].detach().clone()), with_kwargs=True)
    try:
        attr, delta = NoiseTunnel(LayerIntegratedGradients(logits, embeddings)).attribute(
            IDS, nt_samples=4, stdevs=relative(0.1, of="std"), target=1, seed=SEED, noise_layer=embeddings,
            noise_mask=attention, additional_forward_args=(attention,), baselines=BASE, n_steps=8,
            return_convergence_delta=True)
    finally:
        probe.remove()
    assert attr.shape == (3, TOKENS, 8) and bool(torch.isfinite(attr).all())
    assert delta.shape == (3,) and bool(torch.isfinite(delta).all())
    assert not embeddings._forward_hooks


def test_token_scores_sum_or_take_the_norm_over_the_hidden_dimensions():
    from noisegrad import token_scores

    attr = torch.randn(2, 5, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(token_scores(attr), attr.sum(dim=(2, 3)))
    torch.testing.assert_close(token_scores(attr, "l2"), attr.pow(2).sum(dim=(2, 3)).sqrt())
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert bool((token_scores(attr, mask=mask)[0, 3:] == 0).all())
    per_output = token_scores(attr, mask=mask, per_output=True)  # the last dimension as outputs (outputs=)
    torch.testing.assert_close(per_output, attr.sum(dim=2) * mask.unsqueeze(-1))
    with pytest.raises(ValueError, match="reduce must be one of"):
        token_scores(attr, "mean")
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 5\)"):
        token_scores(attr, mask=mask[:, :4])


def test_token_scores_of_a_result_with_several_outputs_keep_them_apart():
    from noisegrad import token_scores

    model = Split()
    result = NoiseTunnel(LayerGradientXActivation(model, model.embed)).attribute(
        IDS, nt_samples=4, stdevs=0.1, outputs=[0, 1], seed=SEED, noise_layer=model.embed, return_stderr=True)
    with pytest.raises(ValueError, match=r"2 outputs \(outputs=\[0, 1\]\).*per_output=True"):
        token_scores(result)
    torch.testing.assert_close(token_scores(result, per_output=True), result.attributions.sum(dim=2))


def test_integrated_gradients_token_scores_add_up_to_the_change_in_the_output():
    from noisegrad import token_scores

    model = Split()
    attr, delta = NoiseTunnel(LayerIntegratedGradients(model, model.embed)).attribute(
        IDS, nt_samples=3, stdevs=0.0, target=1, seed=SEED, noise_layer=model.embed, baselines=BASE, n_steps=64,
        method="gausslegendre", return_convergence_delta=True)
    change = (model(IDS) - model(BASE))[:, 1].detach()
    torch.testing.assert_close(token_scores(attr).sum(1), change, rtol=1e-6, atol=1e-8)


class Deep(nn.Module):
    """Token ids → embedding → hidden → head: layer IG on the embedding, noise at the hidden layer downstream."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.embed, self.hidden, self.head = nn.Embedding(VOCAB, HIDDEN), nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, 2)
        self.double().eval()

    def forward(self, ids):
        return self.head(torch.tanh(self.hidden(self.embed(ids)))).mean(1)


def test_layer_ig_with_the_noise_downstream_of_its_layer_averages_the_perturbed_models():
    """Each copy is the model with its noise at the hidden layer, in every forward (path points and baselines)."""
    model = Deep()
    ours = NoiseTunnel(LayerIntegratedGradients(model, model.embed)).attribute(
        IDS, nt_samples=3, stdevs=0.5, target=1, seed=SEED, noise_layer=model.hidden, baselines=BASE, n_steps=6)
    noise = torch.cat([chunk.view(-1, 3, TOKENS, HIDDEN) for chunk in layer_noise((3, TOKENS, HIDDEN), 3, None, 0.5)])
    reference = torch.zeros_like(ours)
    for k in range(3):
        def add(_module, _args, output, k=k):
            return output + noise[k].repeat(output.shape[0] // 3, 1, 1)

        handle = model.hidden.register_forward_hook(add)
        try:
            reference += LayerIntegratedGradients(model, model.embed).attribute(
                IDS, target=1, baselines=BASE, n_steps=6).detach() / 3
        finally:
            handle.remove()
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


def test_methods_that_repeat_each_example_in_place_and_an_empty_name_are_refused():
    from captum.attr import GradientShap

    model = FloatModel()
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="not available with GradientShap"):
        NoiseTunnel(GradientShap(model)).attribute(x, nt_samples=2, target=0, noise_layer=model.first,
                                                   baselines=torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="names the whole model"):
        NoiseTunnel(Saliency(model)).attribute(x, nt_samples=2, target=0, noise_layer="")


def test_a_noise_layer_that_runs_twice_per_forward_with_other_shapes_is_named():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.act = nn.Linear(5, 8), nn.Linear(8, 3), nn.Tanh()
            self.double()

        def forward(self, x):
            return self.act(self.b(self.act(self.a(x))))

    model = Shared()
    with pytest.raises(ValueError, match="runs more than once per forward"):
        NoiseTunnel(Saliency(model)).attribute(torch.randn(4, 5, dtype=torch.float64), nt_samples=2, target=0,
                                               noise_layer=model.act)


@pytest.mark.parametrize("method", [Saliency, InputXGradient, IntegratedGradients])
def test_token_ids_with_an_input_gradient_method_are_refused_before_any_forward_naming_the_layer_methods(method):
    # the noise goes on the embedding, but the method differentiates the ids: autograd's "One of the differentiated
    # Tensors does not require grad" came at the first backward (at a training monitor's first snapshot)
    model = Split()
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    tunnel = NoiseTunnel(method(model))
    for call in (tunnel.check_arguments, tunnel.attribute):
        with pytest.raises(TypeError, match=rf"input 0 has dtype torch.int64, and {method.__name__} takes gradients "
                                            r"with respect to its inputs.*LayerIntegratedGradients\(model, "
                                            r"model.embeddings\)"):
            call(IDS, target=0, nt_samples=2, stdevs=0.1, seed=SEED, noise_layer="embed")
    assert calls == []

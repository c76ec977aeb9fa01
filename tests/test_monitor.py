"""The training monitor: training is bit-identical with and without it; its records equal direct calls; it costs
nothing between snapshots; bad arguments fail before any forward pass."""

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GradientShap, IntegratedGradients, LayerGradientXActivation, Occlusion, Saliency
from torch import nn

import noisegrad
from noisegrad import AttributionMonitor, NoiseTunnel, SmoothingConfig, relative
from conftest import ForwardCounter
from test_monitor_metrics import ref_entropy, ref_gini, ref_share, ref_spearman

STEPS = 4


class Net(nn.Module):
    """Dropout (draws from the global RNG in training) and BatchNorm (running statistics) in one tiny CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x):
        return self.head(self.features(x))


def data(n=48):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = torch.randint(3, (n,), generator=g)
    return x, y, x > 0.5


def train(steps=STEPS, monitor_for=None, form="step", between=None):
    """SGD with momentum under CPU autocast; every RNG takes part (batches: torch, flips: Python, scale: numpy)."""
    x, y, _ = data()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = monitor_for(model) if monitor_for else None

    def training_step(step):
        batch = torch.randint(len(x), (16,))
        images = x[batch].flip(-1) if random.random() < 0.5 else x[batch]
        images = images * float(np.random.uniform(0.9, 1.1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), y[batch])
            optimizer.zero_grad(set_to_none=False)  # .grad tensors live on: the monitor must give back these ones
            loss.backward()
            optimizer.step()
            grads = [p.grad for p in model.parameters()]
            if monitor is not None and form == "step":
                monitor.step(step)  # inside autocast, with gradients present
            assert all(p.grad is g for p, g in zip(model.parameters(), grads))
        if between is not None:
            between()

    if monitor is not None and form == "decorator":
        training_step = monitor(training_step)
    for step in range(steps):
        if monitor is not None and form == "context":
            with monitor:
                training_step(step)
        else:
            training_step(step)
    state = {name: t.clone() for name, t in model.state_dict().items()}
    state.update({f"momentum.{i}": s["momentum_buffer"].clone() for i, s in enumerate(optimizer.state.values())})
    rngs = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    return state, rngs, model, monitor


def assert_identical(a, b):
    (state_a, rngs_a), (state_b, rngs_b) = a[:2], b[:2]
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert torch.equal(rngs_a[0], rngs_b[0]) and np.array_equal(rngs_a[1], rngs_b[1]) and rngs_a[2] == rngs_b[2]


@pytest.fixture(scope="module")
def unmonitored():
    return train()


@pytest.mark.parametrize("form", ["step", "decorator", "context"])
def test_training_is_bit_identical_with_a_snapshot_at_every_step(unmonitored, form, tmp_path):
    x, y, masks = data(8)
    monitored = train(monitor_for=lambda m: AttributionMonitor(Saliency(m), x, y, masks=masks, every=1,
                                                               figures_every=2, log_dir=tmp_path),
                      form=form)
    assert_identical(unmonitored, monitored)
    monitor = monitored[3]
    assert [row["step"] for row in monitor.history] == list(range(STEPS))
    assert monitor.last.attributions.dtype == torch.float32  # autocast was off for the snapshot
    assert monitor.history[-1]["spearman_first"] < 1  # the model did change under the monitor's eyes


@pytest.mark.parametrize("rng", ["torch", "numpy", "python"])
def test_the_comparison_sees_one_draw_from_any_global_rng(unmonitored, rng):
    draw = {"torch": lambda: torch.rand(1), "numpy": np.random.rand, "python": random.random}[rng]
    state, rngs, _, _ = train(between=draw)
    differs = [name for name in state if not torch.equal(state[name], unmonitored[0][name])]
    assert differs, f"one {rng} draw per step left training as it was: the bit-identity test could not fail"


def test_a_snapshot_leaves_modes_flags_grads_buffers_and_rngs_as_found_also_after_an_error():
    model = Net()
    model.train()
    model.head.eval()  # mixed modes come back mixed
    model.features[0].bias.requires_grad_(False)
    x, y, _ = data(8)
    F.cross_entropy(model(x), y).backward()
    grads = {name: (p.grad, p.grad.clone() if p.grad is not None else None) for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rngs = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()

    def check():
        assert model.training and not model.head.training and model.features[3].training
        assert not model.features[0].bias.requires_grad and model.features[0].weight.requires_grad
        for name, p in model.named_parameters():
            assert p.grad is grads[name][0]
            assert (p.grad is None and grads[name][1] is None) or torch.equal(p.grad, grads[name][1])
        for name, b in model.named_buffers():
            assert torch.equal(b, buffers[name]), name
        assert torch.equal(torch.get_rng_state(), rngs[0]) and np.array_equal(np.random.get_state()[1], rngs[1])
        assert random.getstate() == rngs[2]

    monitor = AttributionMonitor(Saliency(model), x, y, every=1)
    seen = []
    hook = model.features.register_forward_hook(lambda m, i, o: seen.append(m.training))
    monitor.step(0)
    assert seen and not any(seen)  # every forward of the snapshot ran in eval mode
    check()

    def explode(module, args):
        raise RuntimeError("boom")

    hook.remove()
    handle = model.head.register_forward_pre_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        monitor.step(1)
    handle.remove()
    check()


def test_records_equal_direct_calls_and_the_metrics_file_loads_in_one_line(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    x, y, masks = data(4)
    monitor = AttributionMonitor(Saliency(model), x, y, masks=masks, every=3, log_dir=tmp_path, figures_every=2)
    direct = []
    for step in range(7):
        if step % 3 == 0:
            result = NoiseTunnel(Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=8, stdevs=relative(0.15), sampler="antithetic", target=y,
                seed=0, return_stderr=True)
            direct.append(result)
        monitor.step(step)
        with torch.no_grad():
            model[0].weight.add_(0.3 * torch.randn_like(model[0].weight))  # "training"

    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [r["step"] for r in monitor.history] == [0, 3, 6]
    for k, (row, result) in enumerate(zip(rows, direct)):
        assert row == pytest.approx(monitor.history[k], nan_ok=True)
        a = result.attributions.double().numpy().reshape(4, -1)
        m = np.broadcast_to(masks.numpy(), x.shape).reshape(4, -1)
        expected = {
            "mass_in_mask": np.mean([(np.abs(a[i]) * m[i]).sum() / np.abs(a[i]).sum() for i in range(4)]),
            "gini": np.mean([ref_gini(a[i]) for i in range(4)]),
            "entropy": np.mean([ref_entropy(a[i]) for i in range(4)]),
            "relative_stderr": float(result.relative_stderr.double().mean()),
            "nt_samples": 8,
        }
        if k:
            previous = direct[k - 1].attributions.double().numpy().reshape(4, -1)
            first = direct[0].attributions.double().numpy().reshape(4, -1)
            expected["spearman_previous"] = np.mean([ref_spearman(a[i], previous[i]) for i in range(4)])
            expected["spearman_first"] = np.mean([ref_spearman(a[i], first[i]) for i in range(4)])
        else:
            assert row["spearman_previous"] is None and row["spearman_first"] is None  # nothing to compare with
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-9), name
    assert torch.equal(monitor.first.attributions, direct[0].attributions)  # the same noise: the same numbers
    assert torch.equal(monitor.last.attributions, direct[-1].attributions)
    histograms = [json.loads(line) for line in open(tmp_path / "histograms.jsonl")]
    assert [h["step"] for h in histograms] == [0, 3, 6]
    assert all(sum(h["counts"]) == x.numel() for h in histograms)
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["attribution_00000000.png",
                                                                     "attribution_00000006.png"]


def test_between_snapshots_step_runs_no_forward_and_the_counter_counts_blocks_and_calls():
    model = Net().eval()
    x, y, _ = data(2)
    monitor = AttributionMonitor(Saliency(model), x, y, every=3, nt_samples=4)
    forwards = ForwardCounter(model)
    for step in (1, 2, 4, 5, 7):
        assert monitor.step(step) is None
    assert forwards.calls == 0
    assert monitor.step(6).step == 6 and forwards.calls > 0

    counted = AttributionMonitor(Saliency(model), x, y, every=2, nt_samples=4)
    with counted:
        pass
    with pytest.raises(KeyError):
        with counted:  # a failed training step is not a step
            raise KeyError("x")
    train_step = counted(lambda: None)
    train_step()
    train_step()
    assert [row["step"] for row in counted.history] == [0, 2]


def test_after_a_snapshot_of_the_untrained_model_the_counted_steps_go_on_from_1_and_a_step_recorded_again_warns():
    # monitor.snapshot(0) before the loop, as the README says, then `with monitor:` (or step(i) after the i-th
    # update) recorded a second step 0, the model after one update, with no word
    model = Net().eval()
    x, y, _ = data(2)
    monitor = AttributionMonitor(Saliency(model), x, y, every=2, nt_samples=4)
    monitor.snapshot(0)
    for _ in range(4):
        with monitor:
            pass
    assert [row["step"] for row in monitor.history] == [0, 2, 4]
    with pytest.warns(UserWarning, match=r"step 4 recorded after step 4: the records repeat or go back") as caught:
        monitor.step(4)
    assert caught[0].filename == __file__
    assert [row["step"] for row in monitor.history] == [0, 2, 4, 4]


def test_the_probe_its_labels_and_masks_stay_as_given_when_the_data_set_they_were_sliced_from_changes_in_place():
    model = Net().eval()
    x, y, masks = data(6)
    monitor = AttributionMonitor(Saliency(model), x[:3], y[:3], masks=masks[:3], every=1, nt_samples=4)
    before = monitor.snapshot(0)
    x.mul_(-2.0).add_(1.0)  # the training normalises its data in place; relabels; new masks
    y.copy_((y + 1) % 3)
    masks.logical_not_()
    after = monitor.snapshot(1)
    assert torch.equal(before.attributions, after.attributions)
    assert before.row()["mass_in_mask"] == after.row()["mass_in_mask"]


def test_without_a_seed_the_monitor_uses_its_own_and_leaves_the_global_rng_alone():
    model = Net().eval()
    x, y, _ = data(3)
    config = SmoothingConfig(nt_samples=4)  # seed=None
    before = torch.get_rng_state()
    one = AttributionMonitor(Saliency(model), x, y, config=config).snapshot(0)
    torch.manual_seed(123)
    two = AttributionMonitor(Saliency(model), x, y, config=config).snapshot(0)
    assert torch.equal(one.attributions, two.attributions)
    torch.manual_seed(0)
    torch.set_rng_state(before)
    AttributionMonitor(Saliency(model), x, y, config=config).snapshot(0)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("joint", [True, "antithetic"])
def test_joint_sampling_is_taken_with_the_monitors_defaults_and_equals_the_direct_call(joint):
    # the monitor's default sampler="antithetic" is the nested estimator's: with attribute_kwargs={"joint": True}
    # the monitor was refused, the error naming a sampler the user never gave
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.rand(3, 5, generator=torch.Generator().manual_seed(0))
    snap = AttributionMonitor(IntegratedGradients(model), x, 1, attribute_kwargs={"joint": joint}).snapshot(0)
    direct = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, target=1, nt_samples=8, stdevs=relative(0.15), seed=0, joint=joint, return_stderr=True,
        nt_samples_batch_size=None, return_convergence_delta=True)
    assert torch.equal(snap.attributions, direct.attributions)
    with pytest.raises(ValueError, match="sampler='antithetic' applies to the nested estimator"):  # when asked for
        AttributionMonitor(IntegratedGradients(model), x, 1, sampler="antithetic", attribute_kwargs={"joint": joint})


def test_a_method_class_and_the_model_and_a_convergence_delta():
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.rand(3, 5)
    monitor = AttributionMonitor(IntegratedGradients, x, 1, model=model, nt_samples=4,
                                 attribute_kwargs={"n_steps": 8})
    row = monitor.snapshot(0).row()
    direct = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_samples=4, stdevs=relative(0.15), sampler="antithetic", target=1, seed=0, n_steps=8,
        return_convergence_delta=True, return_stderr=True)
    assert row["abs_mean_delta"] == pytest.approx(float(direct.delta.abs().double().mean()), rel=1e-9)
    assert "delta" not in row  # it is not the mean |delta| of the noisy copies, which can be much larger:
    _, per_copy = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_samples=4, stdevs=relative(0.15), sampler="antithetic", target=1, seed=0, n_steps=8,
        return_convergence_delta=True, delta_reduction="none")
    per_copy = per_copy.double().reshape(3, 4)  # one chunk: (example, copy)
    assert row["abs_mean_delta"] == pytest.approx(float(per_copy.mean(dim=1).abs().mean()), rel=1e-9)
    assert monitor.figure() is not None  # tabular: feature bars


def test_layer_attributions_and_text_figures():
    torch.manual_seed(0)
    embed = nn.Embedding(10, 4)
    model = nn.Sequential(embed, nn.Flatten(), nn.Linear(3 * 4, 2))
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    method = LayerGradientXActivation(model, embed)
    tokens = [["a", "b", "c"], ["d", "e", "f"]]
    monitor = AttributionMonitor(method, ids, 0, nt_samples=4, noise_level=0.1, noise_layer="0", tokens=tokens)
    snap = monitor.snapshot(0)
    assert snap.attributions.shape == (2, 3, 4)
    fig = monitor.figure()
    assert [t.get_text() for t in fig.axes[0].texts] == tokens[0]


def test_tokens_are_checked_when_the_monitor_is_built_and_padding_may_be_left_out(tmp_path):
    # a row longer than the probe's tokens, or a str where a list of tokens belongs, made the text figure fail at
    # the first snapshot drawn, inside training
    torch.manual_seed(0)
    embed = nn.Embedding(10, 4)
    model = nn.Sequential(embed, nn.Flatten(), nn.Linear(3 * 4, 2))
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    method = LayerGradientXActivation(model, embed)
    forwards = ForwardCounter(model)
    options = dict(nt_samples=4, noise_level=0.1, noise_layer="0", log_dir=tmp_path)
    with pytest.raises(ValueError, match=r"tokens\[1\] has 4 tokens and the probe \(2, 3\) has 3 per example"):
        AttributionMonitor(method, ids, 0, tokens=[["a", "b", "c"], ["d", "e", "f", "g"]], **options)
    with pytest.raises(TypeError, match=r"tokens must be one sequence of str per probe example \(a list of lists\)"):
        AttributionMonitor(method, ids, 0, tokens=["a b c", "d e"], **options)
    assert forwards.calls == 0
    tokens = [["a", "b", "c"], ["d", "e"]]  # the second example's padding left out
    monitor = AttributionMonitor(method, ids, 0, tokens=tokens, **options)
    monitor.snapshot(0)
    assert [t.get_text() for t in monitor.figure().axes[1].texts] == tokens[1]
    assert len(list((tmp_path / "maps").glob("*.png"))) == 1


def test_several_outputs_give_one_number_per_example_and_metric():
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    monitor = AttributionMonitor(Saliency(model), x, every=1, outputs=[0, 2])
    snap = monitor.step(0)
    assert tuple(snap.result.relative_stderr.shape) == (3, 2)
    assert all(tuple(v.shape) == (3,) for v in snap.per_example.values())
    expected = snap.result.relative_stderr.double().mean().item()
    assert monitor.history[0]["relative_stderr"] == pytest.approx(expected, rel=1e-12)


def test_mass_in_mask_is_the_mean_over_examples_whose_mask_is_not_empty():
    model = Net().eval()
    x, y, masks = data(3)
    masks[1] = False
    snap = AttributionMonitor(Saliency(model), x, y, masks=masks.float(), nt_samples=4).snapshot(0)
    shares = [ref_share(snap.attributions[i], masks[i].expand(snap.attributions[i].shape)) for i in (0, 2)]
    assert snap.row()["mass_in_mask"] == pytest.approx(sum(shares) / 2, rel=1e-12)


def test_a_per_token_mask_of_layer_attributions_is_refused_until_it_has_their_dimensions():
    torch.manual_seed(0)
    embed = nn.Embedding(10, 3)  # probe size = tokens = hidden: a (batch, tokens) mask would broadcast wrongly
    model = nn.Sequential(embed, nn.Flatten(), nn.Linear(3 * 3, 2))
    ids = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    per_token = ids % 2 == 1
    monitor = AttributionMonitor(LayerGradientXActivation(model, embed), ids, 0, masks=per_token, nt_samples=4,
                                 noise_level=0.1, noise_layer="0")
    with pytest.raises(ValueError, match=r"masks\[\.\.\., None\]"):
        monitor.snapshot(0)
    monitor = AttributionMonitor(LayerGradientXActivation(model, embed), ids, 0, masks=per_token[..., None],
                                 nt_samples=4, noise_level=0.1, noise_layer="0")
    snap = monitor.snapshot(0)
    shares = [ref_share(snap.attributions[i], per_token[i][:, None].expand(3, 3)) for i in range(3)]
    assert snap.row()["mass_in_mask"] == pytest.approx(sum(shares) / 3, rel=1e-12)


def test_with_several_outputs_a_mask_without_their_dimension_is_refused_when_the_monitor_is_built():
    # outputs= gives the attributions a last dimension: a mask shaped like the probe was accepted and failed at the
    # first snapshot, hours into training; one with that dimension was refused when the monitor was built
    model = Net().eval()
    x, y, masks = data(3)
    outputs = {"outputs": [0, 2]}
    forwards = ForwardCounter(model)
    with pytest.raises(ValueError, match=r"masks\[0\] of shape \(3, 1, 6, 6\) must broadcast to the attributions' "
                                         r"shape \(3, 1, 6, 6, 2\).*outputs=\[0, 2\] adds a last dimension of 2\); "
                                         r"give masks\[0\]\[\.\.\., None\]"):
        AttributionMonitor(Saliency(model), x, masks=masks, nt_samples=4, **outputs)
    assert forwards.calls == 0
    snap = AttributionMonitor(Saliency(model), x, masks=masks[..., None], nt_samples=4, **outputs).snapshot(0)
    assert snap.attributions.shape == (3, 1, 6, 6, 2)
    shares = [ref_share(snap.attributions[i], masks[i][..., None].expand(1, 6, 6, 2)) for i in range(3)]
    assert snap.row()["mass_in_mask"] == pytest.approx(sum(shares) / 3, rel=1e-12)


def test_with_channels_combined_a_mask_with_a_channel_dimension_is_refused_when_the_monitor_is_built():
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    masks = x[:, :1] > 0.5
    forwards = ForwardCounter(model)
    with pytest.raises(ValueError, match=r"masks\[0\] of shape \(3, 1, 6, 6\) must broadcast to the attributions' "
                                         r"shape \(3, 6, 6\).*channel_reducer='mean' combines its channels\); "
                                         r"give masks\[0\]\[:, 0\]"):
        AttributionMonitor(Saliency(model), x, 0, masks=masks, nt_samples=4, channel_reducer="mean")
    with pytest.raises(ValueError, match=r"shape \(3, 6, 6, 2\).*give masks\[0\]\[:, 0\]\[\.\.\., None\]"):
        AttributionMonitor(Saliency(model), x, masks=masks, nt_samples=4, channel_reducer="sum", outputs=[0, 1])
    assert forwards.calls == 0
    snap = AttributionMonitor(Saliency(model), x, 0, masks=masks[:, 0], nt_samples=4,
                              channel_reducer="mean").snapshot(0)
    shares = [ref_share(snap.attributions[i], masks[i, 0]) for i in range(3)]
    assert snap.row()["mass_in_mask"] == pytest.approx(sum(shares) / 3, rel=1e-12)


def test_a_method_built_on_another_model_is_refused_and_one_on_a_part_of_it_is_taken():
    model, other = Net(), Net()
    x, y, _ = data(3)
    with pytest.raises(ValueError, match=r"model being trained \(Net\) shares no parameter .* Saliency\(model\)"):
        AttributionMonitor(Saliency(other), x, y, model=model)
    head = nn.Sequential(model, nn.Softmax(dim=1))  # trained as a whole, explained through a part: fine
    assert AttributionMonitor(Saliency(model), x, y, model=head).models == [head]


def test_what_captum_or_the_model_would_refuse_at_the_first_snapshot_is_refused_when_the_monitor_is_built():
    model = Net().eval()
    x, y, _ = data(3)
    forwards = ForwardCounter(model)
    with pytest.raises(TypeError, match=r"GradientShap.attribute needs baselines: give attribute_kwargs=\{'baselines'"):
        AttributionMonitor(GradientShap(model), x, y)
    with pytest.raises(TypeError, match=r"Occlusion.attribute needs sliding_window_shapes"):
        AttributionMonitor(Occlusion(model), x, y)
    with pytest.raises(TypeError, match=r"did you mean attribute_kwargs=\{'baselines': \.\.\.\}\?"):
        AttributionMonitor(IntegratedGradients(model), x, y, baseline=0.0)
    with pytest.raises(TypeError, match=r"n_steps= is an argument of IntegratedGradients.attribute"):
        AttributionMonitor(IntegratedGradients(model), x, y, n_steps=8)
    for dtype in (torch.float64, torch.float16):
        with pytest.raises(TypeError, match=rf"the probe \(inputs\) is {dtype} and the model's parameters are "
                                            r"torch.float32: give inputs.to\(torch.float32\)"):
            AttributionMonitor(Saliency(model), x.to(dtype), y)
    assert forwards.calls == 0


def test_noise_layer_may_be_the_module_itself():
    torch.manual_seed(0)
    embed = nn.Embedding(10, 4)
    model = nn.Sequential(embed, nn.Flatten(), nn.Linear(3 * 4, 2))
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    by_module, by_name = (AttributionMonitor(LayerGradientXActivation(model, embed), ids, 0, nt_samples=4,
                                             noise_level=0.1, noise_layer=layer) for layer in (embed, "0"))
    assert by_module.config.noise_layer == "0"  # a configuration holds names, so that it can be saved
    assert torch.equal(by_module.snapshot(0).attributions, by_name.snapshot(0).attributions)
    with pytest.raises(ValueError, match=r"noise_layer \(Embedding\) is not a submodule of the model behind method"):
        AttributionMonitor(LayerGradientXActivation(model, embed), ids, 0, noise_layer=nn.Embedding(10, 4))


def test_errors_at_a_snapshot_speak_of_the_monitor_and_the_probe():
    model = Net().eval()
    x, y, _ = data(3)
    monitor = AttributionMonitor(Saliency(model), x, None, nt_samples=4)
    with pytest.raises(ValueError, match=r"target is needed: the model returns 3 outputs per example \(shape \(3,\) each\)"):
        monitor.step(0)
    monitor = AttributionMonitor(Saliency(model), x, y, nt_samples=4)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="call monitor.step outside it"):
        monitor.step(0)
    with pytest.raises(ValueError, match=r"global_step must be an int >= 0, got -3"):
        monitor.step(-3)
    for step in ("7", 7.0, -7):  # snapshot() took any of them as the step of a record
        with pytest.raises((TypeError, ValueError), match=r"global_step must be an int >= 0"):
            monitor.snapshot(step)
    assert monitor.history == []
    monitor.snapshot(np.int64(7))
    assert type(monitor.history[0]["step"]) is int and json.dumps(monitor.history[0]["step"]) == "7"


def test_a_snapshot_prints_in_one_line_with_its_means():
    model = Net().eval()
    x, y, masks = data(6)
    snap = AttributionMonitor(Saliency(model), x, y, masks=masks, nt_samples=4).snapshot(3)
    text = repr(snap)
    assert "\n" not in text and text.startswith("Snapshot(step=3, ")
    assert f"gini={snap.metrics['gini']:.4g}" in text and "spearman_first=None" in text


def test_feature_names_are_refused_for_a_probe_that_is_not_tabular():
    model = Net().eval()
    x, y, _ = data(3)
    with pytest.raises(ValueError, match=r"feature_names are for a tabular probe, \(batch, features\); the probe is "
                                         r"\(3, 1, 6, 6\)"):
        AttributionMonitor(Saliency(model), x, y, feature_names=["a", "b"])
    table = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"feature_names must name the probe's 3 features, got 2"):
        AttributionMonitor(Saliency(table), torch.rand(2, 3), 0, feature_names=["a", "b"])


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(every=0), ValueError, "every must be a positive int"),
    (dict(every=1.5), TypeError, "every must be a positive int"),
    (dict(figures_every=-1), ValueError, "figures_every must be an int >= 0"),
    (dict(masks=torch.ones(3, 1, 5, 5)), ValueError, r"masks\[0\] of shape \(3, 1, 5, 5\) must broadcast"),
    (dict(masks=torch.ones(3, 1, 6, 6, dtype=torch.uint8) * 255), ValueError, r"masks\[0\] must hold only 0 and 1"),
    (dict(writer=object()), TypeError, "writer must be a TensorBoard SummaryWriter"),
    (dict(sinks=[object()]), TypeError, "sinks must have scalars"),
    (dict(inputs=torch.where(torch.arange(3)[:, None, None, None] == 1, math.nan, torch.ones(3, 1, 6, 6))),
     ValueError, r"the probe \(inputs\) holds 36 NaN or infinite value\(s\), in examples \[1\]"),
    (dict(sinks=object()), TypeError, r"sinks must be a list or tuple of sinks, got object \(for one sink, give "
                                      r"sinks=\[sink\]\)"),
    (dict(config=SmoothingConfig(dtype="double")), ValueError, "dtype='double'"),
    (dict(attribute_kwargs={"seed": 3}), TypeError, r"attribute_kwargs got \['seed'\], which the configuration decides"),
    (dict(attribute_kwargs={"target": 1}), TypeError, r"attribute_kwargs may not set 'target': the monitor sets it"),
    (dict(attribute_kwargs=[("nt_samples", 3)]), TypeError, r"attribute_kwargs must be a dict of argument names and "
                                                            r"values, got list"),  # pairs slipped past the checks
    (dict(nt_samples=0), ValueError, r"nt_samples must be a positive int or \"auto\", got 0"),
    (dict(nt_samples=2), ValueError, "return_stderr=True with nt_type='smoothgrad' needs at least 2"),
    (dict(attribute_kwargs={"abs": False, "n_steps": 3}), TypeError, "n_steps"),
    (dict(tokens=[["a"]]), ValueError, "tokens must be one sequence of str per probe example"),
    (dict(log_dir=3), TypeError, "log_dir must be a str or a pathlib.Path"),
    (dict(nt_sample=8), TypeError, "unexpected keyword argument 'nt_sample': did you mean nt_samples="),
    (dict(abs=False), TypeError, r"abs= is an argument of Saliency.attribute, not of the monitor: give attribute_kwargs=\{'abs': \.\.\.\}"),
    (dict(noise_sigma=0.1), TypeError, r"unexpected keyword argument 'noise_sigma'; that is not how the noise is given: "
                                       r".* the monitor's keyword arguments.* as its noise= \(σ itself\)"),  # not noise_mask
])
def test_bad_arguments_fail_before_any_forward(kwargs, error, words):
    model = Net().eval()
    x, y, _ = data(3)
    forwards = ForwardCounter(model)
    kwargs = dict(kwargs)
    x = kwargs.pop("inputs", x)
    with pytest.raises(error, match=words):
        AttributionMonitor(Saliency(model), x, y, **kwargs)
    with pytest.raises(TypeError, match="needs model="):
        AttributionMonitor(Saliency, x, y)
    with pytest.raises(TypeError, match="must be a Captum Attribution"):
        AttributionMonitor(model, x, y)
    with pytest.raises(ValueError, match="give model="):
        AttributionMonitor(Saliency(lambda t: t.sum(dim=(1, 2, 3)).unsqueeze(1)), x, 0)
    assert forwards.calls == 0


@pytest.mark.parametrize("given", [{"nt_samples": 64}, {"stdevs": 2.0}, {"outputs": [0]}, {"max_batch_rows": 10},
                                   {"sampler": "lhs"}, {"generator": torch.Generator()}])
def test_what_the_configuration_decides_is_refused_in_attribute_kwargs_so_that_monitor_config_is_what_runs(given):
    """attribute_kwargs={"nt_samples": 64} used to run 64 samples at every snapshot while monitor.config said 8."""
    model = Net().eval()
    x, y, _ = data(3)
    forwards = ForwardCounter(model)
    (name, value), = given.items()
    with pytest.raises(TypeError, match=rf"attribute_kwargs got \['{name}'\], which the configuration decides "
                                        r"\(recorded in monitor.config\)"):
        AttributionMonitor(Saliency(model), x, y, attribute_kwargs=given)
    if name in ("stdevs", "generator"):  # not fields: the monitor names the ones to give
        with pytest.raises(TypeError, match=r"the monitor got .*\(recorded in monitor.config\).*"
                                            r"(for stdevs noise= .* or feature_noise=|for generator seed=)"):
            AttributionMonitor(Saliency(model), x, y, **given)
    assert forwards.calls == 0
    monitor = AttributionMonitor(Saliency(model), x, y, nt_samples=6)  # the field instead: recorded and run
    rows = []
    model.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]) if args[0].requires_grad else None)
    monitor.snapshot(0)
    assert monitor.config.nt_samples == 6 and sum(rows) == 6 * 3, rows
    with pytest.raises(AttributeError):  # read-only: a configuration set later would not be what runs (helper-65)
        monitor.config = monitor.config.replace(nt_samples=16)


@pytest.mark.parametrize("kwargs", [dict(attribute_kwargs={"return_stderr": False}), dict(return_stderr=False)])
def test_the_monitor_refuses_to_turn_its_standard_errors_off_rather_than_ignore_it(kwargs):
    model = Net().eval()
    x, y, _ = data(3)
    with pytest.raises(TypeError, match="the monitor always takes standard errors, from the same samples"):
        AttributionMonitor(Saliency(model), x, y, **kwargs)
    assert AttributionMonitor(Saliency(model), x, y, return_stderr=True).config.return_stderr is True


def test_import_noisegrad_loads_neither_lightning_nor_tensorboard():
    probe = ("import sys, noisegrad; print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('lightning', 'pytorch_lightning', 'tensorboard')))")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert {"AttributionMonitor", "AttributionMonitorCallback"} <= set(noisegrad.__all__)


def test_the_delta_of_several_outputs_is_each_outputs_gap_in_size_not_their_signed_mean():
    # abs_mean_delta is the size of each output's completeness gap: gaps of opposite signs on two outputs of one
    # example must not cancel (the metric before the one-transfer stack: the mean of |delta| over examples × outputs)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) * 4
    monitor = AttributionMonitor(IntegratedGradients(model), x, every=1, outputs=[0, 2], attribute_kwargs={
        "n_steps": 2, "method": "riemann_left", "return_convergence_delta": True})
    snap = monitor.step(0)
    delta = snap.result.delta.double()
    assert tuple(delta.shape) == (3, 2)
    assert (delta[:, 0] * delta[:, 1] < 0).any()  # a pair of gaps that a signed mean would cancel
    assert monitor.history[0]["abs_mean_delta"] == pytest.approx(delta.abs().mean().item(), rel=1e-12)

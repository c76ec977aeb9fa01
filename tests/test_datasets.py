"""attribute_dataset: a data set into checksummed shards, keyed by example index, resumable, on several processes.

References are independent of the shard machinery: one NoiseTunnel call on the whole data set with
``example_ids=arange(N)``, and runs that were never interrupted, on one process.
"""

import datetime
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from captum.attr import IntegratedGradients, Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import noisegrad
from noisegrad import DatasetAttributions, NoiseTunnel, SmoothingConfig, attribute_dataset
from noisegrad.datasets import _shard_file
from noisegrad.datasets._shard_file import CorruptShard

from conftest import ForwardCounter, make_mlp

REPO = Path(__file__).resolve().parents[1]

#: A data set whose examples are made from their index, a model, and the run every test compares against. The
#: script kills its own process (SIGKILL: no clean-up runs) when it reaches example KILL_AT.
CASE = textwrap.dedent(
    """
    import os
    import signal
    import sys

    import torch
    from captum.attr import IntegratedGradients
    from torch import nn
    from torch.utils.data import Dataset

    import noisegrad

    EXAMPLES, SHARD_SIZE, BATCH_SIZE = 11, 4, 3


    class Examples(Dataset):
        def __init__(self, kill_at=None, log=None):
            self.kill_at, self.log = kill_at, log

        def __len__(self):
            return EXAMPLES

        def __getitem__(self, index):
            if self.log is not None:
                self.log.append(index)
            if index == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            x = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(index), dtype=torch.float64)
            return x, torch.tensor(index % 4)


    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(75, 4)).double().eval()


    def explainer(net=None):
        return noisegrad.Smoothed(net if net is not None else model(), IntegratedGradients, nt_samples=6, seed=5,
                                  sampler="antithetic", noise_level=0.2, method_kwargs={"n_steps": 4})


    def run(out, kill_at=None, log=None, **options):
        options = dict(dict(target="label", batch_size=BATCH_SIZE, shard_size=SHARD_SIZE), **options)
        return noisegrad.attribute_dataset(explainer(), Examples(kill_at, log), out, **options)


    if __name__ == "__main__":
        run(sys.argv[1], kill_at=int(sys.argv[2]))
    """
)


@pytest.fixture
def case(tmp_path, monkeypatch):
    (tmp_path / "dataset_case.py").write_text(CASE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("dataset_case", None)
    import dataset_case

    return dataset_case


def _shard_bytes(folder):
    return {path.name: path.read_bytes() for path in sorted(Path(folder).glob("shard-*.safetensors"))}


def _reference(case):
    """One NoiseTunnel call on the whole data set, each example's noise keyed by its index."""
    examples = [case.Examples()[i] for i in range(case.EXAMPLES)]
    x = torch.stack([e[0] for e in examples])
    labels = torch.stack([e[1] for e in examples])
    return NoiseTunnel(IntegratedGradients(case.model())).attribute(
        x, nt_samples=6, seed=5, sampler="antithetic", stdevs=noisegrad.relative(0.2), n_steps=4, target=labels,
        return_stderr=True, return_convergence_delta=True, example_ids=torch.arange(case.EXAMPLES)), labels


# --------------------------------------------------------------------------- the results


def test_results_equal_one_noisetunnel_call_on_the_whole_data_set_keyed_by_example_index(case, tmp_path):
    results = case.run(tmp_path / "out")
    expected, labels = _reference(case)

    assert results.complete and len(results) == case.EXAMPLES and results.missing == []
    everything = torch.arange(case.EXAMPLES)
    torch.testing.assert_close(results[everything], expected.attributions, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results.get("stderr", everything), expected.stderr, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(results.get("delta", everything), expected.delta, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(results.get("relative_stderr", everything), expected.relative_stderr)
    assert results.get("nt_samples", everything).tolist() == [6] * case.EXAMPLES
    assert torch.equal(results.get("target", everything), labels)
    assert results.get("example_index", everything).tolist() == list(range(case.EXAMPLES))
    # any order, single examples, negative indices
    torch.testing.assert_close(results[[9, 2, -1]], expected.attributions[[9, 2, 10]], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[3], expected.attributions[3], rtol=1e-10, atol=1e-12)


@settings(max_examples=6, deadline=None)
@given(batch_size=st.integers(1, 7), shard_size=st.integers(1, 8))
def test_batch_and_shard_sizes_change_the_results_only_by_rounding(tmp_path_factory, batch_size, shard_size):
    model = make_mlp()
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    folder = tmp_path_factory.mktemp("run")
    results = attribute_dataset(Saliency(model), x, folder, config=SmoothingConfig(nt_samples=5, seed=2, noise=0.3),
                                method_kwargs={"abs": False}, target=1, batch_size=batch_size, shard_size=shard_size)
    expected = NoiseTunnel(Saliency(model)).attribute(x, nt_samples=5, seed=2, stdevs=0.3, abs=False, target=1,
                                                      return_stderr=True)
    torch.testing.assert_close(results[:], expected.attributions, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(results.get("stderr", slice(None)), expected.stderr, rtol=1e-10, atol=1e-14)


def test_a_data_loader_gives_its_batch_size_and_collate_function_and_its_shuffling_changes_nothing(tmp_path):
    model = make_mlp()
    data = TensorDataset(torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
                         torch.tensor([0, 1, 2, 0, 1, 2]))
    config = SmoothingConfig(nt_samples=4, seed=1, noise=0.2)
    collated = []

    def collate(examples):
        collated.append(len(examples))
        return torch.utils.data.default_collate(examples)

    loader = DataLoader(data, batch_size=4, shuffle=True, collate_fn=collate)
    shuffled = attribute_dataset(Saliency(model), loader, tmp_path / "a", config=config, target="label")
    plain = attribute_dataset(Saliency(model), data, tmp_path / "b", config=config, target="label", batch_size=4)
    assert collated == [4, 2] and shuffled.manifest["runs"][0]["batch_size"] == 4 and plain.complete
    assert _shard_bytes(tmp_path / "a") == _shard_bytes(tmp_path / "b")
    assert shuffled.get("target", slice(None)).tolist() == [0, 1, 2, 0, 1, 2]


def test_pred_targets_are_the_models_top_outputs_and_several_inputs_come_back_as_a_tuple(tmp_path, two_input):
    a = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    b = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    data = [((a[i], b[i]),) for i in range(5)]
    results = attribute_dataset(Saliency(two_input), data, tmp_path, target="pred",
                                config=SmoothingConfig(nt_samples=4, seed=0, noise=0.1, return_stderr=False))
    predicted = two_input(a, b).argmax(dim=1)
    assert torch.equal(results.get("target", slice(None)), predicted)
    expected = NoiseTunnel(Saliency(two_input)).attribute((a, b), nt_samples=4, seed=0, stdevs=0.1, target=predicted)
    got = results[:]
    assert isinstance(got, tuple) and len(got) == 2
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)


def test_without_a_seed_one_is_chosen_on_the_first_run_and_kept_for_the_next(tmp_path):
    model = make_mlp()
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    config = SmoothingConfig(nt_samples=4, noise=0.2)
    first = attribute_dataset(Saliency(model), x, tmp_path, config=config, target=0, shard_size=2)
    seed = first.manifest["seed"]
    assert isinstance(seed, int) and first.config["config"]["seed"] == seed
    before = _shard_bytes(tmp_path)
    (tmp_path / "shard-000001.safetensors").unlink()
    with pytest.warns(RuntimeWarning, match="shard-000001.safetensors is missing"):
        again = attribute_dataset(Saliency(model), x, tmp_path, config=config, target=0, shard_size=2)
    assert again.manifest["seed"] == seed and _shard_bytes(tmp_path) == before
    expected = NoiseTunnel(Saliency(model)).attribute(x, nt_samples=4, stdevs=0.2, target=0, seed=seed)
    torch.testing.assert_close(again[:], expected, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- nothing is lost


def test_a_run_killed_mid_shard_resumes_to_the_uninterrupted_result_bit_for_bit(case, tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    case.run(uninterrupted)
    resumed = tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])}
    killed = subprocess.run([sys.executable, str(tmp_path / "dataset_case.py"), str(resumed), "9"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr  # SIGKILL while in the third shard
    assert sorted(_shard_bytes(resumed)) == ["shard-000000.safetensors", "shard-000001.safetensors"]
    assert not json.loads((resumed / "manifest.json").read_text())["complete"]
    assert DatasetAttributions(resumed).missing == [range(8, 11)]

    log = []
    results = case.run(resumed, log=log)
    assert log[:3] == [0, 5, 10]  # the data set's fingerprint: its first, middle and last examples
    assert log[3:] == [8, 9, 10]  # the two written shards were kept, not recomputed
    assert results.complete
    assert _shard_bytes(resumed) == _shard_bytes(uninterrupted)
    assert not list(resumed.glob(".*.tmp"))


def test_a_truncated_shard_is_detected_never_read_and_recomputed(case, tmp_path):
    case.run(tmp_path)
    before = _shard_bytes(tmp_path)
    shard = tmp_path / "shard-000001.safetensors"
    shard.write_bytes(before[shard.name][: len(before[shard.name]) // 2])

    with pytest.raises(CorruptShard, match="SHA-256"):
        DatasetAttributions(tmp_path)[5]
    with pytest.raises(CorruptShard, match="truncated"):
        DatasetAttributions(tmp_path, verify=False)[5]  # the size check alone catches a cut
    assert DatasetAttributions(tmp_path)[0].shape == (2, 5, 5)  # the other shards stay readable

    log = []
    with pytest.warns(RuntimeWarning, match="shard-000001.safetensors is truncated or damaged"):
        case.run(tmp_path, log=log)
    assert sorted(set(log[3:])) == [4, 5, 6, 7]  # after the fingerprint's examples 0, 5, 10
    assert _shard_bytes(tmp_path) == before


def test_a_damaged_shard_of_the_right_size_is_caught_by_its_checksum(case, tmp_path):
    case.run(tmp_path)
    before = _shard_bytes(tmp_path)
    shard = tmp_path / "shard-000002.safetensors"
    damaged = bytearray(before[shard.name])
    damaged[-3] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    with pytest.raises(CorruptShard):
        DatasetAttributions(tmp_path)[9]
    with pytest.warns(RuntimeWarning, match="shard-000002"):
        case.run(tmp_path)
    assert _shard_bytes(tmp_path) == before


def test_a_full_disk_leaves_no_partial_file_and_the_next_run_finishes(case, tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(handle):  # the disk fills up while the second shard is written
        if ".shard-000001.safetensors" in os.readlink(f"/proc/self/fd/{handle}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(handle)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file is synced")
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="No space left"):
        case.run(tmp_path / "out")
    monkeypatch.setattr(os, "fsync", real_fsync)
    folder = tmp_path / "out"
    assert not list(folder.glob(".*"))  # no temporary file left
    assert sorted(_shard_bytes(folder)) == ["shard-000000.safetensors"]

    results = case.run(folder)
    case.run(tmp_path / "reference")
    assert results.complete and _shard_bytes(folder) == _shard_bytes(tmp_path / "reference")


def test_a_folder_made_with_another_configuration_is_refused_unless_overwrite(case, tmp_path):
    case.run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = _shard_bytes(tmp_path)
    with pytest.raises(ValueError, match=r"config\.nt_samples: 6 in the folder, 3 now.*overwrite=True"):
        noisegrad.attribute_dataset(case.explainer().set_kwargs(nt_samples=3), case.Examples(), tmp_path,
                                    target="label", batch_size=3, shard_size=4)
    other_weights = case.model()
    with torch.no_grad():
        other_weights[0].bias.add_(1.0)
    with pytest.raises(ValueError, match="model: "):
        noisegrad.attribute_dataset(case.explainer(other_weights), case.Examples(), tmp_path, target="label",
                                    batch_size=3, shard_size=4)
    with pytest.raises(ValueError, match="data.shard_size: 4 in the folder, 5 now"):
        case.run(tmp_path, shard_size=5)
    with pytest.raises(ValueError, match="target"):
        case.run(tmp_path, target=0)
    assert _shard_bytes(tmp_path) == before  # refused before anything was touched

    results = case.run(tmp_path, shard_size=5, overwrite=True)
    assert results.complete and results.manifest["shard_size"] == 5
    assert sorted(_shard_bytes(tmp_path)) == [f"shard-00000{k}.safetensors" for k in range(3)]
    assert (tmp_path / "notes.txt").read_text() == "mine"  # overwrite deletes only the run's own files
    # a different batch size is the same computation (to rounding): it resumes, it is not refused
    assert case.run(tmp_path, shard_size=5, batch_size=2).complete


def test_bad_arguments_are_refused_before_any_forward_pass(tmp_path):
    model = make_mlp()
    counter = ForwardCounter(model)
    x = torch.randn(4, 5, dtype=torch.float64)
    method = Saliency(model)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(x)

    with pytest.raises(TypeError, match="IterableDataset"):
        attribute_dataset(method, Stream(), tmp_path)
    with pytest.raises(ValueError, match="scope='data'"):
        attribute_dataset(method, x, tmp_path, config=SmoothingConfig(noise_level=0.1, scope="data"))
    with pytest.raises(TypeError, match="target must be"):
        attribute_dataset(method, x, tmp_path, target="first")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        attribute_dataset(method, x, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        attribute_dataset(method, x[:0], tmp_path)
    with pytest.raises(TypeError, match="Smoothed explainer .* or a Captum Attribution"):
        attribute_dataset(model, x, tmp_path)
    with pytest.raises(TypeError, match="example_ids"):
        attribute_dataset(method, x, tmp_path, method_kwargs={"example_ids": [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="scope='example'"):  # an explainer's configuration is checked the same way
        attribute_dataset(noisegrad.SmoothGrad(model, noise_level=0.1, scope="data"), x, tmp_path)
    assert counter.calls == 0
    assert not list(tmp_path.iterdir())


def test_the_loader_names_a_shard_that_is_not_written_yet(case, tmp_path):
    case.run(tmp_path, kill_at=None)
    for journal in (tmp_path / "journal").iterdir():  # as if the last shard had never been written
        journal.unlink()
    (tmp_path / "shard-000002.safetensors").unlink()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:2]
    manifest["complete"] = False
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    results = DatasetAttributions(tmp_path)
    assert not results.complete and results.missing == [range(8, 11)]
    with pytest.raises(KeyError, match="examples 8-10 are in shard 2, which is not written yet"):
        results[9]
    with pytest.raises(IndexError, match="example index 11 is out of range for a data set of 11"):
        results[11]


# --------------------------------------------------------------------------- the shard format


def test_shards_are_safetensors_files_that_the_safetensors_package_reads(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    tensors = {"f32": torch.randn(3, 2), "bf16": torch.randn(3, 4).to(torch.bfloat16),
               "i64": torch.arange(3), "flag": torch.tensor([True, False, True]), "f16": torch.randn(3).half()}
    digest, size = _shard_file.write_shard(tmp_path / "s.safetensors", tensors, {"first": "0"})
    assert size == (tmp_path / "s.safetensors").stat().st_size
    assert digest == _shard_file.file_sha256(tmp_path / "s.safetensors")
    with safetensors.safe_open(str(tmp_path / "s.safetensors"), framework="pt") as file:
        assert file.metadata() == {"first": "0"}
        for name, tensor in tensors.items():
            assert torch.equal(file.get_tensor(name), tensor), name
    shard = _shard_file.ShardFile(tmp_path / "s.safetensors")
    for name, tensor in tensors.items():
        assert torch.equal(shard.rows(name, [2, 0]), tensor[[2, 0]]), name
        assert shard.rows(name, [1]).dtype == tensor.dtype


# --------------------------------------------------------------------------- several processes


def _attribute_on_rank(rank, rendezvous, directory):
    sys.path.insert(0, str(directory))
    import dataset_case

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = dataset_case.run(directory / "two")
        torch.save({"complete": results.complete}, directory / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_write_the_single_process_shards_bit_for_bit(case, tmp_path):
    from test_distributed import run_on_two_processes

    ranks = run_on_two_processes(tmp_path, _attribute_on_rank)
    assert all(rank["complete"] for rank in ranks)  # no rank returned before the manifest was complete
    case.run(tmp_path / "one")
    assert _shard_bytes(tmp_path / "two") == _shard_bytes(tmp_path / "one")
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["complete"] and [s["rank"] for s in manifest["shards"]] == [0, 1, 0]
    assert manifest["runs"][0]["world_size"] == 2


MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn


    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 6, 3))
    """
)


@pytest.fixture
def cli_folder(tmp_path, monkeypatch):
    """user_models.py and data/ with two class subfolders of .npy and .pt examples."""
    (tmp_path / "user_models.py").write_text(MODELS)
    generator = torch.Generator().manual_seed(0)
    for label in ("cat", "dog"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(4):
            example = torch.rand(1, 6, 6, generator=generator)
            if i % 2:
                torch.save(example, tmp_path / "data" / label / f"{i}.pt")
            else:
                import numpy as np

                np.save(tmp_path / "data" / label / f"{i}.npy", example.numpy())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


CLI_ARGS = ["--model", "user_models:net", "--data", "data", "--samples", "4", "--seed", "3", "--stderr",
            "--target", "label", "--shard-size", "3", "--batch-size", "2", "--quiet"]


def test_torchrun_runs_the_command_line_on_two_processes_with_the_one_process_result(cli_folder):
    from noisegrad.app.cli import main

    assert main(["attribute-dataset", "--out", "one", *CLI_ARGS]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(cli_folder)]), "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "noisegrad",
         "attribute-dataset", "--out", "two", *CLI_ARGS], cwd=cli_folder, env=env, capture_output=True, text=True,
        timeout=240)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert _shard_bytes(cli_folder / "two") == _shard_bytes(cli_folder / "one")
    assert json.loads((cli_folder / "two" / "manifest.json").read_text())["complete"]

    # the files were read as the library reads them: example i is the i-th file, labels from the subfolders
    from noisegrad.app.data_folder import FolderDataset

    data = FolderDataset(cli_folder / "data")
    results = DatasetAttributions(cli_folder / "one")
    x = torch.stack([data[i][0] for i in range(len(data))])
    model = __import__("user_models").net().eval()
    expected = noisegrad.SmoothGrad(model, nt_samples=4, seed=3, noise_level=0.15).attribute(
        x, target=torch.tensor([0] * 4 + [1] * 4), example_ids=torch.arange(8))
    torch.testing.assert_close(results[:], expected.attributions, rtol=1e-5, atol=1e-6)
    assert data.files[:2] == [os.path.join("cat", "0.npy"), os.path.join("cat", "1.pt")]


def test_the_command_line_refuses_another_configuration_and_a_target_without_labels(cli_folder, capsys):
    from noisegrad.app.cli import main

    assert main(["attribute-dataset", "--out", "one", *CLI_ARGS]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["attribute-dataset", "--out", "one", *CLI_ARGS, "--noise", "0.3"])
    assert exit_info.value.code == 2
    assert "config.noise_level: 0.15 in the folder, 0.3 now" in capsys.readouterr().err
    (cli_folder / "flat").mkdir()
    torch.save(torch.rand(1, 6, 6), cli_folder / "flat" / "a.pt")
    with pytest.raises(SystemExit):
        main(["attribute-dataset", "--out", "flat_out", *CLI_ARGS[:3], "flat", "--target", "label"])
    assert "has no class subfolders" in capsys.readouterr().err


# --------------------------------------------------------------------------- progress


def test_the_progress_bar_draws_only_when_asked_or_on_a_terminal(tmp_path, capsys):
    model = make_mlp()
    x = torch.randn(4, 5, dtype=torch.float64)
    config = SmoothingConfig(nt_samples=4, seed=0, noise=0.1)
    attribute_dataset(Saliency(model), x, tmp_path / "a", config=config, target=0)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    attribute_dataset(Saliency(model), x, tmp_path / "b", config=config, target=0, show_progress=True)
    assert "attributing" in capsys.readouterr().err


def test_noisetunnel_show_progress_draws_the_samples_and_changes_nothing(capsys):
    model = make_mlp()
    x = torch.randn(3, 5, dtype=torch.float64)
    nt = NoiseTunnel(Saliency(model))
    plain = nt.attribute(x, nt_samples=12, nt_samples_batch_size=5, stdevs=0.1, target=0, seed=1)
    assert capsys.readouterr().err == ""
    shown = nt.attribute(x, nt_samples=12, nt_samples_batch_size=5, stdevs=0.1, target=0, seed=1, show_progress=True)
    assert "NoiseTunnel" in capsys.readouterr().err and torch.equal(shown, plain)
    auto = nt.attribute(x, nt_samples="auto", tol=0.5, max_samples=64, stdevs=0.1, target=0, seed=1,
                        show_progress=True)
    assert "/64" in capsys.readouterr().err and bool(auto.converged.all())
    with pytest.raises(TypeError, match="show_progress must be True or False, got 'yes'"):
        nt.attribute(x, nt_samples=4, stdevs=0.1, target=0, show_progress="yes")


# --------------------------------------------------------------------------- what a resumed run may not mix


def _half_done(folder, run):
    """A folder as an interrupted run leaves it: shard 0 written, shard 1 not."""
    run(folder)
    (folder / "shard-000001.safetensors").unlink()
    for journal in (folder / "journal").glob("*.jsonl"):
        journal.unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"], manifest["complete"] = manifest["shards"][:1], False
    (folder / "manifest.json").write_text(json.dumps(manifest))


_X = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
_LABELLED = [(_X[i], torch.tensor(i % 3)) for i in range(4)]
_CONFIG = SmoothingConfig(nt_samples=2, seed=0, noise=0.1, return_stderr=False)
_NET = make_mlp()


def _captum(method, **options):
    return lambda out: attribute_dataset(method, _X, out, config=_CONFIG, target=0, shard_size=2, **options)


def _smoothed(forward=_NET, data=_LABELLED, target=0, **options):
    return lambda out: attribute_dataset(noisegrad.Smoothed(forward, Saliency, _CONFIG, **options), data, out,
                                         target=target, shard_size=2)


@pytest.mark.parametrize("first, second, differs", [
    (_captum(IntegratedGradients(_NET, multiply_by_inputs=True), method_kwargs={"n_steps": 2}),
     _captum(IntegratedGradients(_NET, multiply_by_inputs=False), method_kwargs={"n_steps": 2}),
     r"method_state\.state\._multiply_by_inputs: true in the folder, false now"),
    (_captum(__import__("captum.attr", fromlist=["LayerGradCam"]).LayerGradCam(_NET, _NET[0])),
     _captum(__import__("captum.attr", fromlist=["LayerGradCam"]).LayerGradCam(_NET, _NET[2])),
     r'method_state\.state\.layer\.layer: "0" in the folder, "2" now'),
    (_smoothed(), _smoothed(lambda t: _NET(t).softmax(-1)), "forward"),
    (_smoothed(lambda t: _NET(t)), _smoothed(lambda t: _NET(t).softmax(-1)), r"forward\.code"),
    (_smoothed(target=lambda b: b[1]), _smoothed(target=lambda b: (b[1] + 1) % 3), r"target\.code"),
    (_smoothed(forward_arg_extractor=lambda b: b[0]), _smoothed(forward_arg_extractor=lambda b: b[0] * 2),
     r"forward_arg_extractor\.code"),
    (_smoothed(), _smoothed(data=[(2 * x, y) for x, y in _LABELLED]), r"data\.sampled\.0"),
    (_smoothed(), _smoothed(data=[(x.float(), y) for x, y in _LABELLED]), r"data\.sampled"),
], ids=["multiply_by_inputs", "layer", "forward-function", "forward-code", "target-code", "extractor",
        "data-values", "data-dtype"])
def test_a_resume_that_would_mix_two_computations_is_refused(tmp_path, first, second, differs):
    _half_done(tmp_path, first)
    with pytest.raises(ValueError, match="another configuration.*" + differs):
        second(tmp_path)
    first(tmp_path)  # the same computation again (new lambdas, same code) resumes
    assert DatasetAttributions(tmp_path).complete


def test_every_rank_must_compute_the_same_thing():
    from noisegrad.datasets import attribute
    from noisegrad.datasets._ranks import Ranks

    class TwoRanks(Ranks):
        def gather(self, value):
            return [value, dict(value, model="another")]

    attribute._same_on_every_rank(Ranks(0, 1), {"model": "a"})
    with pytest.raises(ValueError, match="rank 1 of 2 computes something else than rank 0.*model"):
        attribute._same_on_every_rank(TwoRanks(0, 2), {"model": "a"})


def test_a_first_run_that_failed_before_any_shard_does_not_bind_the_folder(tmp_path):
    with pytest.raises(ValueError, match="target=7 is out of range"):
        attribute_dataset(Saliency(_NET), _X, tmp_path, config=_CONFIG, target=7)
    assert attribute_dataset(Saliency(_NET), _X, tmp_path, config=_CONFIG, target=1).complete


def test_overwrite_deletes_no_manifest_noisegrad_did_not_write_and_out_must_be_a_path(tmp_path):
    (tmp_path / "manifest.json").write_text('{"name": "my experiment"}')
    with pytest.raises(ValueError, match="not written by noisegrad"):
        attribute_dataset(Saliency(_NET), _X, tmp_path, config=_CONFIG, target=0, overwrite=True)
    assert (tmp_path / "manifest.json").read_text() == '{"name": "my experiment"}'
    with pytest.raises(TypeError, match="out must be a folder path"):
        attribute_dataset(Saliency(_NET), _X, "", config=_CONFIG, target=0)


# --------------------------------------------------------------------------- the run leaves the user's state alone


def test_pred_is_the_prediction_of_the_explained_call_and_changes_nothing_in_the_model(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin, self.norm = torch.nn.Linear(5, 3).double(), torch.nn.BatchNorm1d(3).double()

        def forward(self, x, bias):
            return self.norm(self.lin(x)) + bias

    net = Net()  # left in training mode, as a user may
    bias = torch.zeros(4, 3, dtype=torch.float64)
    bias[:, 2] = 50.0  # makes class 2 the prediction, but only with the additional argument
    data = [(_X[i], bias[i]) for i in range(4)]
    buffers = {name: value.clone() for name, value in net.named_buffers()}
    explainer = noisegrad.Smoothed(net, Saliency, _CONFIG, forward_arg_extractor=lambda b: b[0],
                                   additional_forward_arg_extractor=lambda b: (b[1],))
    with pytest.warns(UserWarning, match="BatchNorm layers in training mode"):
        results = attribute_dataset(explainer, data, tmp_path, target="pred", batch_size=2)
    assert results.get("target", slice(None)).tolist() == [2, 2, 2, 2]
    assert net.training and all(torch.equal(value, buffers[name]) for name, value in net.named_buffers())


def test_a_seeded_run_moves_no_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    attribute_dataset(Saliency(_NET), _X, tmp_path, config=_CONFIG, target=0)
    assert torch.equal(torch.rand(3), expected)


def test_one_target_per_example_is_taken_by_example_index(tmp_path):
    targets = torch.tensor([2, 0, 1, 2])
    results = attribute_dataset(Saliency(_NET), _X, tmp_path, config=_CONFIG, target=targets, batch_size=3)
    assert torch.equal(results.get("target", slice(None)), targets)
    expected = NoiseTunnel(Saliency(_NET)).attribute(_X, nt_samples=2, seed=0, stdevs=0.1, target=targets,
                                                     example_ids=torch.arange(4))
    torch.testing.assert_close(results[:], expected, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"one class index per example.*shape \(4,\)"):
        attribute_dataset(Saliency(_NET), _X, tmp_path / "b", config=_CONFIG, target=torch.tensor([0, 1]))


def test_auto_chunking_is_fixed_for_the_folder_whatever_memory_is_free_later(tmp_path, monkeypatch):
    from noisegrad import plan

    config = SmoothingConfig(nt_samples=8, seed=0, noise=0.1)  # nt_samples_batch_size="auto"
    run = lambda out: attribute_dataset(Saliency(_NET), _X, out, config=config, target=0, shard_size=2)  # noqa: E731
    monkeypatch.setattr(plan, "_auto_budget", lambda device: 1500)
    uninterrupted = run(tmp_path / "a")
    assert uninterrupted.manifest["memory_budget"] == 1500
    _half_done(tmp_path / "b", run)
    monkeypatch.setattr(plan, "_auto_budget", lambda device: 10**9)  # a resumed process finds more free memory
    resumed = run(tmp_path / "b")
    assert resumed.manifest["memory_budget"] == 1500
    assert _shard_bytes(tmp_path / "b") == _shard_bytes(tmp_path / "a")


# --------------------------------------------------------------------------- data loaders and batches


def test_a_data_loaders_worker_options_are_kept_and_unbatched_loaders_refused(tmp_path):
    loader = DataLoader(_NeedsWorkerInit(), batch_size=2, num_workers=1, worker_init_fn=_open_worker)
    assert attribute_dataset(Saliency(_NET), loader, tmp_path, config=_CONFIG, target=0).complete
    with pytest.raises(ValueError, match="batch_size=None"):
        attribute_dataset(Saliency(_NET), DataLoader(TensorDataset(_X), batch_size=None), tmp_path / "b",
                          config=_CONFIG, target=0)


class _NeedsWorkerInit(torch.utils.data.Dataset):
    """A data set whose worker processes need the loader's worker_init_fn (a file handle, say)."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        from torch.utils.data import get_worker_info

        worker = get_worker_info()
        if worker is not None and not getattr(worker.dataset, "opened", False):
            raise RuntimeError("worker_init_fn was not run")
        return _X[i]


def _open_worker(worker_id):
    from torch.utils.data import get_worker_info

    get_worker_info().dataset.opened = True


def test_namedtuple_examples_are_batches_like_tuples(tmp_path):
    from collections import namedtuple

    Example = namedtuple("Example", ["x", "label"])
    data = [Example(_X[i], torch.tensor(i % 3)) for i in range(4)]
    results = attribute_dataset(Saliency(_NET), data, tmp_path, config=_CONFIG, target="label", batch_size=3)
    assert results.get("target", slice(None)).tolist() == [0, 1, 2, 0]


# --------------------------------------------------------------------------- reading damaged or partial folders


def test_the_reader_handles_empty_and_negative_indices_and_lost_shards(tmp_path, monkeypatch):
    from noisegrad.datasets import loader

    attribute_dataset(Saliency(_NET), _X, tmp_path, config=_CONFIG, target=0, shard_size=1)
    results = DatasetAttributions(tmp_path)
    assert results[[]].shape == (0, 5) and results[range(0)].shape == (0, 5) and results[-4].shape == (5,)
    with pytest.raises(IndexError, match=r"example index -5 is out of range for a data set of 4 examples"):
        results[-5]
    monkeypatch.setattr(loader, "OPEN_SHARDS", 2)
    torch.testing.assert_close(results[:], DatasetAttributions(tmp_path)[[0, 1, 2, 3]])
    assert len(results._open) == 2  # no more shards mapped (each holds a file descriptor) than allowed

    shard0 = tmp_path / "shard-000000.safetensors"
    shard0.write_bytes(shard0.read_bytes()[:50])  # damaged: the others still read, and the fields are known
    damaged = DatasetAttributions(tmp_path)
    assert damaged[3].shape == (5,) and "attributions" in damaged.fields
    with pytest.raises(CorruptShard, match="shard-000000"):
        damaged[0]
    shard0.unlink()
    assert not damaged.complete and damaged.missing == [range(0, 1)]
    with pytest.raises(CorruptShard, match="was deleted after it was written"):
        DatasetAttributions(tmp_path, verify=False)[0]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        DatasetAttributions(tmp_path / "nowhere")


def test_several_inputs_get_attributions_as_a_tuple(tmp_path, two_input):
    data = [((_X[i, :4], _X[i, :3]),) for i in range(4)]
    results = attribute_dataset(Saliency(two_input), data, tmp_path, config=_CONFIG, target=0)
    pair = results.get("attributions", [1, 2])
    assert isinstance(pair, tuple) and torch.equal(pair[1], results.get("attributions.1", [1, 2]))


@pytest.mark.parametrize("header, payload", [
    (b"[1, 2]", b""), (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}', b"\0" * 8),
    (b'{"a": {"dtype": "F32", "shape": [-2], "data_offsets": [8, 0]}}', b""),
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], '
     b'"data_offsets": [0, 8]}}', b"\0" * 8),
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}', b"\0" * 16),
    (b"[" * 100000 + b"]" * 100000, b""), (b'{"__metadata__": 5}', b""),
], ids=["list", "string-offsets", "negative-shape", "overlap", "gap", "deep", "metadata"])
def test_a_crafted_shard_header_is_a_corrupt_shard(tmp_path, header, payload):
    import struct

    path = tmp_path / "shard.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)
    with pytest.raises(CorruptShard):
        _shard_file.ShardFile(path)


def test_damaged_manifests_are_value_errors_and_journal_junk_is_skipped(tmp_path):
    run = lambda: attribute_dataset(Saliency(_NET), _X, tmp_path, config=_CONFIG, target=0, shard_size=2)  # noqa
    run()
    journal = tmp_path / "journal" / "rank-0.jsonl"
    with open(journal, "ab") as file:  # junk, and a line cut short by a kill
        file.write(b'\xff\xfe\n{"shard": "1", "file": 1}\n{"shard": [1]}\n[[[[\n{"shard": 1, "fi')
    assert DatasetAttributions(tmp_path).complete
    from noisegrad.datasets._manifest import append_journal, journal_records

    append_journal(tmp_path, 0, dict(json.loads(journal.read_bytes().splitlines()[0]), seconds=9.0))
    assert [record.get("seconds") for record in journal_records(tmp_path)][-1] == 9.0  # not swallowed

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for damage in ({"seed": "7"}, {"shards": {"a": 1}}, {"identity": None}, {"shards": [{"shard": 0}]}):
        (tmp_path / "manifest.json").write_text(json.dumps(dict(manifest, **damage)))
        with pytest.raises(ValueError, match="manifest.json is damaged"):
            DatasetAttributions(tmp_path)
        with pytest.raises(ValueError, match="manifest.json is damaged"):
            run()


# --------------------------------------------------------------------------- folders of files, the command line


def _png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def test_folder_images_have_one_channel_count_and_the_scaling_of_their_npy_twins(tmp_path):
    import numpy as np

    from noisegrad.app.data_folder import FolderDataset
    from noisegrad.app.errors import ExplainError

    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    (tmp_path / "gray").mkdir()
    _png(tmp_path / "gray" / "a.png", pixels)
    _png(tmp_path / "gray" / "b16.png", pixels.astype(np.uint16) * 257)  # 16-bit: the same values scaled
    np.save(tmp_path / "gray" / "c.npy", pixels[None])  # uint8, as the PNG
    gray = FolderDataset(tmp_path / "gray", dtype=torch.float64)
    expected = torch.from_numpy(pixels[None].astype(np.float64)) / 255
    for i in range(3):
        assert gray[i].dtype == torch.float64
        torch.testing.assert_close(gray[i], expected, rtol=0, atol=1e-6)

    (tmp_path / "mixed").mkdir()
    _png(tmp_path / "mixed" / "a.png", pixels)
    _png(tmp_path / "mixed" / "b.png", np.stack([pixels] * 4, axis=-1))  # RGBA: the alpha is dropped
    mixed = FolderDataset(tmp_path / "mixed")
    assert mixed[0].shape == mixed[1].shape == (3, 3, 4)  # grayscale among colour images becomes RGB
    torch.testing.assert_close(mixed[0], mixed[1])

    (tmp_path / "eps").mkdir()  # PostScript named .png: refused, not handed to the EPS decoder (Ghostscript)
    (tmp_path / "eps" / "a.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n")
    with pytest.raises(ExplainError, match=r"a\.png is not a readable PNG image"):
        FolderDataset(tmp_path / "eps")

    (tmp_path / "classes" / "cat").mkdir(parents=True)
    (tmp_path / "classes" / "_empty").mkdir()
    np.save(tmp_path / "classes" / "cat" / "a.npy", pixels)
    with pytest.raises(ExplainError, match="_empty hold no example files"):
        FolderDataset(tmp_path / "classes")


def test_the_command_line_says_what_it_resumes_and_reports_errors_in_one_line(cli_folder, capsys, monkeypatch):
    from noisegrad.app.cli import main

    talk = [arg for arg in CLI_ARGS if arg != "--quiet"]
    assert main(["attribute-dataset", "--out", "one", *talk]) == 0
    assert "Wrote 8 examples in 3 shards" in capsys.readouterr().err
    (cli_folder / "one" / "shard-000001.safetensors").unlink()
    with pytest.warns(RuntimeWarning, match="missing"):
        assert main(["attribute-dataset", "--out", "one", *talk]) == 0
    err = capsys.readouterr().err
    assert "Resuming: 2 of 3 shards done" in err and "Wrote 3 examples in 1 shards" in err
    assert main(["attribute-dataset", "--out", "one", *talk]) == 0
    assert "Nothing to do: all 3 shards" in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(noisegrad, "attribute_dataset", interrupted)
        assert main(["attribute-dataset", "--out", "two", *CLI_ARGS]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err

    (cli_folder / "broken.py").write_text("def data():\n    raise OSError('the share is not mounted')\n")
    (cli_folder / "data" / "dog" / "9.npy").write_bytes(b"\x93NUMPY garbage")
    for args, says in [(["--data", "broken:data"], "--data 'broken:data' raised OSError: the share is not mounted"),
                       (["--out", "data/out"], "is inside --data"),
                       (["--out", "user_models.py"], "is a file, not a folder"),
                       ([], r"9.npy is not an array of numbers")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["attribute-dataset", "--out", "three", *CLI_ARGS, *args])
        assert exit_info.value.code == 2
        message = capsys.readouterr().err
        assert says in message and "Traceback" not in message

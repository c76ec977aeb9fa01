"""``attribute_dataset``: smoothed attributions of a whole data set into a folder of shards, resumable, on any
number of processes.

The data set is cut into shards of ``shard_size`` consecutive examples; shard ``k`` holds examples
``k·shard_size … (k+1)·shard_size − 1`` whoever computes it. A run

1. checks that every rank computes the same thing (the identity: method and its state, configuration, forward
   function, extractors, target, model weights, data set), then the folder (rank 0): a manifest with finished shards
   made with another identity is refused unless ``overwrite=True``;
2. finds the shards already done: each one the manifest or a journal claims is checked against its SHA-256 (the
   ranks share the reading), and one that is missing, truncated or damaged is computed again;
3. gives each rank every ``world``-th of the shards still to do, so no example is left out or done twice;
4. computes each shard batch by batch, every example's noise keyed by its index in the data set
   (``example_ids``), and writes it atomically, then notes it in its rank's journal;
5. gathers every rank's shards, and rank 0 completes the manifest.

Which examples share a batch depends only on the shard and batch sizes, so a resumed run, or a run on another number
of processes, gives the bits an uninterrupted single-process run gives (where the model is deterministic).
"""

import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Union

import torch
from torch import Tensor

from noisegrad import plan
from noisegrad._caller import user_stacklevel
from noisegrad._progress import progress_bar
from noisegrad._validate import as_int
from noisegrad.config import SmoothingConfig
from noisegrad.datasets import _manifest as manifest_io
from noisegrad.datasets._batches import DataSource, as_data_source, as_fields, to_device
from noisegrad.datasets._explainer import BatchExplainer, check_target
from noisegrad.datasets._identity import data_fingerprint
from noisegrad.datasets._ranks import Ranks, join, my_share
from noisegrad.datasets._shard_file import file_sha256, write_shard
from noisegrad.datasets.loader import DatasetAttributions

__all__ = ["attribute_dataset", "DEFAULT_SHARD_SIZE"]

#: Examples per shard unless told otherwise: the most work an interrupted rank loses.
DEFAULT_SHARD_SIZE = 256


def attribute_dataset(
    method_or_config: Any,
    dataset_or_dataloader: Any,
    out: Union[str, "os.PathLike[str]"],
    *,
    config: Optional[SmoothingConfig] = None,
    method_kwargs: Optional[Dict[str, Any]] = None,
    target: Any = None,
    batch_size: Optional[int] = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_workers: Optional[int] = None,
    overwrite: bool = False,
    show_progress: Optional[bool] = None,
) -> DatasetAttributions:
    """Smoothed attributions of every example of a data set, written to ``out`` in shards; safe to interrupt.

    Run it again with the same arguments after an interruption (Ctrl-C, a killed job, a full disk) and it
    computes only what is missing. Under ``torchrun`` each process takes its share of the shards; the result is
    the same as one process's.

    Parameters
    ----------
    method_or_config : Smoothed explainer, or Captum Attribution
        A configured explainer (``noisegrad.SmoothGrad(model, config)``, ``Smoothed(model,
        IntegratedGradients, config)``, ...), or a Captum method (or ``NoiseTunnel``) smoothed with ``config``.
        The model must already be on the device it should run on (under torchrun, ``cuda:LOCAL_RANK``).
    dataset_or_dataloader : Dataset, DataLoader or Tensor
        A map-style data set whose item ``i`` is a tensor or ``(inputs, label, ...)``; a data loader gives its
        batch size, collate function, workers and their options (its sampler is not used); a tensor is a data set
        of its rows. Each example's noise is keyed by its index ``i``. Its length and first, middle and last
        examples are part of the folder's identity.
    out : str or path
        The folder of shards and ``manifest.json`` (created if missing; shared by every process of the run).
    config : SmoothingConfig, optional
        With a Captum method: the smoothing (default ``SmoothingConfig()``). Without a seed, one is chosen on the
        folder's first run and kept in the manifest for every later run. ``scope="data"`` is refused (its σ
        depends on the batch).
    method_kwargs : dict, optional
        With a Captum method: arguments of its ``attribute`` (``n_steps``, ``baselines``, ...).
    target : None, int, Tensor, "label", "pred" or callable
        What to explain: Captum's ``target`` for every example, one class index per example of the data set (a
        tensor of its length), each example's label (its second element), the model's top output (on the inputs
        and additional arguments the method sees), or a function of the collated batch. Stored in the shards as
        ``target``.
    batch_size : int, optional
        Examples per call (default: the data loader's, else 32). Results do not depend on it beyond float
        rounding (with ``nt_samples="auto"``, also on when a batch is checked); keep it fixed to resume bit for bit.
    shard_size : int
        Examples per shard file (default 256): the most work an interrupted process loses.
    num_workers : int, optional
        Data loading processes (default: the data loader's, else 0).
    overwrite : bool
        Delete what an earlier run wrote in ``out`` (shards, manifest, journals; nothing else) and start afresh,
        instead of refusing a folder made with another configuration.
    show_progress : bool, optional
        A progress bar (examples per second, time left) on rank 0's stderr; default: when it is a terminal.

    Returns
    -------
    DatasetAttributions
        The results by example index, read lazily from the shards.

    Raises
    ------
    ValueError
        If ``out`` holds finished shards of a run made with another method (or method state), configuration,
        seed, model, forward function, extractor, target, data set or shard size (the message lists what
        differs), unless ``overwrite=True``; or if the ranks of the run compute different things.

    Examples
    --------
    >>> import tempfile
    >>> from torch.utils.data import TensorDataset
    >>> import noisegrad
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    >>> data = TensorDataset(torch.rand(10, 4), torch.randint(0, 3, (10,)))
    >>> explainer = noisegrad.SmoothGrad(model, nt_samples=8, seed=0)
    >>> folder = tempfile.mkdtemp()
    >>> result = noisegrad.attribute_dataset(explainer, data, folder, target="label", shard_size=4)
    >>> result[7].shape, result.get("nt_samples", [0, 9]).tolist(), result.complete
    (torch.Size([4]), [8, 8], True)
    """
    # ---- every argument checked before any work
    explain = BatchExplainer(method_or_config, config, method_kwargs, target)
    source = as_data_source(dataset_or_dataloader,
                            None if batch_size is None else as_int("batch_size", batch_size, least=1),
                            None if num_workers is None else as_int("num_workers", num_workers, least=0))
    shard_size = as_int("shard_size", shard_size, least=1)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if show_progress is not None and not isinstance(show_progress, bool):
        raise TypeError(f"show_progress must be True, False or None, got {show_progress!r}")
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise TypeError(f"out must be a folder path (a non-empty str or os.PathLike), got {out!r}")
    examples = len(source)
    if examples == 0:
        raise ValueError("the data set is empty: there is nothing to attribute")
    check_target(target, examples)
    folder = Path(out)
    device = _model_device(explain.model)
    identity = dict(explain.identity(explain.config.seed),
                    data=dict(data_fingerprint(source.dataset), shard_size=shard_size))
    ranks = join(device)
    try:
        _same_on_every_rank(ranks, identity)
        budgets = ranks.gather(plan._auto_budget(device) if explain.wants_memory_budget() else None)
        budget = None if budgets[0] is None else min(budgets)
        manifest = _open_folder(ranks, folder, identity, examples, shard_size, source, budget, overwrite)
        explain.memory_budget = manifest.get("memory_budget")
        done = _verified_shards(ranks, folder, manifest)
        shards = [range(k * shard_size, min((k + 1) * shard_size, examples))
                  for k in range(-(-examples // shard_size))]
        pending = [k for k in range(len(shards)) if k not in done]
        mine = my_share(pending, ranks.rank, ranks.world)
        records = _compute(ranks, folder, explain, source, [(k, shards[k]) for k in mine], manifest, device,
                           show_progress)
        _complete(ranks, folder, manifest, done, records, len(shards))
    finally:
        ranks.close()
    return DatasetAttributions(folder)


def _model_device(model: Any) -> torch.device:
    """Where the model's parameters are (the inputs go there); the CPU for a model without any."""
    from noisegrad._state import modules_of

    for module in modules_of(model):
        for tensor in module.parameters():
            return tensor.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- 1. the folder


def _same_on_every_rank(ranks: Ranks, identity: Dict[str, Any]) -> None:
    """Refuse, on every rank, a run whose ranks would compute different things (another model, data, config)."""
    identities = ranks.gather(identity)
    for rank, other in enumerate(identities):
        found = manifest_io.differences(identities[0], other, labels=("on rank 0", f"on rank {rank}"))
        if found:
            raise ValueError(f"rank {rank} of {ranks.world} computes something else than rank 0 ("
                             + "; ".join(found) + "): every process "
                             "of a run must get the same model, method, configuration, target and data set")


def _open_folder(ranks: Ranks, folder: Path, identity: Dict[str, Any], examples: int, shard_size: int,
                 source: DataSource, budget: Optional[int], overwrite: bool) -> Dict[str, Any]:
    """Rank 0 checks (or starts) the folder's manifest; every rank gets it, or rank 0's refusal as its own."""
    outcome: Any = None
    if ranks.rank == 0:
        try:
            outcome = _check_folder(folder, identity, examples, shard_size, source, budget, overwrite, ranks.world)
        except (ValueError, TypeError, OSError) as err:
            outcome = err
    outcome = ranks.share_from_0(outcome)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _check_folder(folder: Path, identity: Dict[str, Any], examples: int, shard_size: int, source: DataSource,
                  budget: Optional[int], overwrite: bool, world: int) -> Dict[str, Any]:
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out '{folder}' exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    if overwrite:
        manifest_io.remove_run_files(folder)
    stored = manifest_io.read_manifest(folder)
    if stored is not None and not stored["shards"] and not manifest_io.journal_records(folder):
        stored = None  # a run that failed before finishing any shard: nothing to keep, so nothing to protect
    elif stored is None and any(folder.glob("shard-*.safetensors")):
        raise ValueError(f"out '{folder}' holds shard files but no manifest.json: give another folder, or "
                         "overwrite=True (--overwrite) to delete them and start afresh")
    identity = dict(identity)
    if identity["config"]["seed"] is None:  # chosen once, then the folder's: a resumed run draws the same noise
        identity["config"] = dict(identity["config"], seed=stored["seed"] if stored is not None
                                  else secrets.randbits(62))
    if stored is not None:
        found = manifest_io.differences(stored["identity"], identity)
        if found:
            raise ValueError(f"out '{folder}' holds a run made with another configuration ("
                             + "; ".join(found) + "): give another folder, or overwrite=True (--overwrite) to "
                             "delete its shards and start afresh")
        budget = stored.get("memory_budget", budget)
    run = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "world_size": world, "batch_size": source.batch_size,
           "versions": manifest_io.versions()}
    manifest = {
        "format": manifest_io.FORMAT, "version": manifest_io.VERSION, "identity": identity,
        "seed": identity["config"]["seed"], "examples": examples, "shard_size": shard_size,
        "shards_total": -(-examples // shard_size), "versions": manifest_io.versions(), "complete": False,
        "shards": stored["shards"] if stored is not None else [],
        "runs": (stored["runs"] if stored is not None else []) + [run],
    }
    if budget is not None:  # nt_samples_batch_size="auto": the folder's chunking, whatever memory is free later
        manifest["memory_budget"] = budget
    manifest_io.write_manifest(folder, manifest)
    return manifest


# --------------------------------------------------------------------------- 2. what is done already


def _verified_shards(ranks: Ranks, folder: Path, manifest: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    """The shards the manifest or a journal claims whose file matches its checksum; the ranks share the hashing."""
    shard_size, examples = manifest["shard_size"], manifest["examples"]
    claims: Dict[int, List[Dict[str, Any]]] = {}
    for record in manifest["shards"] + manifest_io.journal_records(folder):
        k = record["shard"]
        expected = (k * shard_size, min((k + 1) * shard_size, examples))
        if isinstance(k, int) and 0 <= k < manifest["shards_total"] and (record["first"], record["stop"]) == expected:
            claims.setdefault(k, []).append(record)
    verified: Dict[int, Dict[str, Any]] = {}
    for k in my_share(sorted(claims), ranks.rank, ranks.world):
        path = folder / manifest_io.shard_file_name(k)
        digest = file_sha256(path) if path.is_file() else None
        match = [record for record in claims[k] if record["sha256"] == digest]
        if match:
            verified[k] = match[-1]
        else:
            state = "missing" if digest is None else "truncated or damaged (its SHA-256 is not the one recorded)"
            warnings.warn(f"{path} is {state}: it is computed again", RuntimeWarning, stacklevel=user_stacklevel())
    done: Dict[int, Dict[str, Any]] = {}
    for part in ranks.gather(verified):
        done.update(part)
    return done


# --------------------------------------------------------------------------- 3-4. this rank's shards


def _compute(ranks: Ranks, folder: Path, explain: BatchExplainer, source: DataSource, mine: List[Any],
             manifest: Dict[str, Any], device: torch.device, show_progress: Optional[bool]) -> List[Dict[str, Any]]:
    """Attribute this rank's shards batch by batch and write each one when its last batch is done."""
    records: List[Dict[str, Any]] = []
    total = sum(len(shard) for _, shard in mine)
    label = "attributing" if ranks.world == 1 else f"attributing (rank 0 of {ranks.world})"
    enabled = False if ranks.rank != 0 else show_progress
    cuda = device.type == "cuda"
    parts: List[Dict[str, Tensor]] = []
    copying: Set[torch.device] = set()  # the CUDA devices whose results are being copied to the host
    started = time.perf_counter()
    seed = manifest["seed"]
    with progress_bar(total, label, unit="ex", enabled=enabled) as bar:
        for position, indices, batch in source.batches([shard for _, shard in mine], pin_memory=cuda, seed=seed):
            batch = to_device(batch, device)
            ids = torch.tensor(indices, dtype=torch.int64).to(device, non_blocking=cuda)  # MPS: not from pageable
            target = explain.batch_target(batch, ids, seed)
            result = explain(batch, target, ids, seed)
            fields = as_fields(result, ids, target)
            copying.update(value.device for value in fields.values() if value.device.type == "cuda")
            parts.append({name: _to_host(value) for name, value in fields.items()})
            bar.update(len(indices))
            k, shard = mine[position]
            if indices[-1] == shard.stop - 1:  # the shard's last batch
                for where in copying:  # the copies to the host have landed, from every device (a split model)
                    torch.cuda.synchronize(where)
                records.append(_write(folder, k, shard, parts, manifest, ranks.rank, source.batch_size,
                                      time.perf_counter() - started))
                parts, copying, started = [], set(), time.perf_counter()
    return records


def _to_host(value: Tensor) -> Tensor:
    """A batch's result on the host: from CUDA, an asynchronous copy into pinned memory (no wait per batch)."""
    if value.device.type != "cuda":
        return value.detach().to("cpu")
    host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
    return host.copy_(value.detach(), non_blocking=True)


def _write(folder: Path, k: int, shard: range, parts: List[Dict[str, Tensor]], manifest: Dict[str, Any],
           rank: int, batch_size: int, seconds: float) -> Dict[str, Any]:
    name = manifest_io.shard_file_name(k)
    tensors = {field: torch.cat([part[field] for part in parts]) for field in parts[0]}
    metadata = {"format": manifest_io.FORMAT, "shard": str(k), "first": str(shard.start), "stop": str(shard.stop),
                "seed": str(manifest["seed"])}
    digest, size = write_shard(folder / name, tensors, metadata)
    record = {"shard": k, "file": name, "first": shard.start, "stop": shard.stop, "sha256": digest, "bytes": size,
              "rank": rank, "batch_size": batch_size, "seconds": round(seconds, 3),
              "fields": {field: {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape[1:])}
                         for field, t in tensors.items()}}
    manifest_io.append_journal(folder, rank, record)
    return record


# --------------------------------------------------------------------------- 5. the manifest, completed


def _complete(ranks: Ranks, folder: Path, manifest: Dict[str, Any], done: Dict[int, Dict[str, Any]],
              records: List[Dict[str, Any]], shards_total: int) -> None:
    """Rank 0 writes every rank's shards into the manifest; no rank returns before it has."""
    everything = dict(done)
    for part in ranks.gather(records):
        everything.update({record["shard"]: record for record in part})
    if ranks.rank == 0:
        manifest["shards"] = [everything[k] for k in sorted(everything)]
        manifest["complete"] = len(everything) == shards_total
        manifest["runs"][-1].update(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), shards_kept=len(done),
                                    shards_computed=len(everything) - len(done),
                                    examples_computed=sum(everything[k]["stop"] - everything[k]["first"]
                                                          for k in everything if k not in done))
        manifest_io.write_manifest(folder, manifest)
    ranks.gather(None)  # a barrier: the manifest is complete when any rank returns

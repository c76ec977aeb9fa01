"""Where a data-set run's examples come from: the data set, its batches aligned to shards, and each batch's parts.

An example is what ``dataset[i]`` returns: a tensor (the input), or a tuple or list whose first element is the
input (a tensor or a tuple of tensors) and whose second, if any, is the label; a data loader's collate function
stacks them into batches. The batches of a shard are consecutive indices, ``batch_size`` at a time, so which
examples share a batch depends only on the shard size and the batch size, never on the rank or on where a run
resumed.

Examples
--------
>>> list(shard_batches(range(10, 17), 3))
[[10, 11, 12], [13, 14, 15], [16]]
>>> inputs_of((torch.zeros(2, 3), torch.tensor([0, 1]))).shape, label_of((torch.zeros(2, 3), torch.tensor([0, 1])))
(torch.Size([2, 3]), tensor([0, 1]))
"""

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

__all__ = ["DataSource", "as_data_source", "shard_batches", "inputs_of", "label_of", "to_device"]

#: Batch size when the data set is not given as a data loader.
DEFAULT_BATCH_SIZE = 32


#: A data loader's options that a run keeps (its sampler, shuffling and batch size are replaced by the shards').
_LOADER_OPTIONS = ("collate_fn", "num_workers", "worker_init_fn", "generator", "multiprocessing_context",
                   "persistent_workers", "prefetch_factor", "timeout", "in_order")


class DataSource:
    """A map-style data set and how to load it: batch size, and a data loader's options (collate function,
    worker processes, their initialisation, ...)."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int = 0, **options: Any) -> None:
        self.dataset, self.batch_size, self.num_workers, self.options = dataset, batch_size, num_workers, options

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(self, shards: Sequence[range], pin_memory: bool, seed: int = 0
                ) -> Iterator[Tuple[int, List[int], Any]]:
        """(shard position in ``shards``, example indices, collated batch) for every batch of ``shards``, in order.

        One loader serves all of them, so worker processes start once and read ahead across shard boundaries.
        Its workers' seeds come from the data loader's generator if it had one, else from one seeded with
        ``seed``: the global RNG does not move.
        """
        plan = [(position, batch) for position, shard in enumerate(shards)
                for batch in shard_batches(shard, self.batch_size)]
        if not plan:
            return
        options = dict(self.options)
        if options.get("generator") is None:
            options["generator"] = torch.Generator().manual_seed(seed)
        if self.num_workers == 0:  # options of worker processes are refused by DataLoader without workers
            options = {k: v for k, v in options.items() if k in ("collate_fn", "generator", "in_order")}
        loader = DataLoader(self.dataset, batch_sampler=[batch for _, batch in plan], num_workers=self.num_workers,
                            pin_memory=pin_memory, **options)
        for (position, indices), batch in zip(plan, loader):
            yield position, indices, batch


def as_data_source(data: Any, batch_size: Optional[int], num_workers: Optional[int]) -> DataSource:
    """``data`` (a map-style Dataset, a DataLoader over one, or a tensor of examples) as a :class:`DataSource`.

    A data loader gives its data set, batch size, collate function and worker count; its sampler is not used,
    since every example is visited once, in shards, whatever the order.
    """
    options: Dict[str, Any] = {}
    if isinstance(data, DataLoader):
        if data.batch_sampler is None:
            raise ValueError("dataset_or_dataloader is a DataLoader with batch_size=None (no batching): its collate "
                             "function does not stack examples into batches; give a DataLoader with a batch size, "
                             "or the data set itself with batch_size=")
        loader_batch = data.batch_size if data.batch_size is not None else getattr(data.batch_sampler, "batch_size",
                                                                                  None)
        batch_size = batch_size if batch_size is not None else loader_batch
        num_workers = num_workers if num_workers is not None else data.num_workers
        options = {name: getattr(data, name) for name in _LOADER_OPTIONS if hasattr(data, name)}
        options.pop("num_workers")
        data = data.dataset
    if isinstance(data, Tensor):
        data = TensorDataset(data)
    if isinstance(data, IterableDataset):
        raise TypeError("dataset_or_dataloader must be a map-style Dataset (with __len__ and __getitem__): an "
                        "IterableDataset has no example indices, which key each example's noise and let a run resume")
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError("dataset_or_dataloader must be a torch Dataset with __len__ and __getitem__, a DataLoader "
                        f"over one, or a tensor of examples; got {type(data).__name__}")
    return DataSource(data, DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
                      0 if num_workers is None else num_workers, **options)


def shard_batches(shard: range, batch_size: int) -> Iterator[List[int]]:
    """The example indices of each batch of a shard, ``batch_size`` at a time."""
    for start in range(shard.start, shard.stop, batch_size):
        yield list(range(start, min(start + batch_size, shard.stop)))


def inputs_of(batch: Any) -> Any:
    """The inputs of a collated batch: the batch itself if it is a tensor, else its first element."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        first = batch[0]
        return tuple(first) if isinstance(first, list) else first
    raise TypeError(f"a batch of the data set is a {type(batch).__name__}; attribute_dataset takes examples that are "
                    "a tensor or a tuple (inputs, label, ...): for other batches give a Smoothed explainer with "
                    "forward_arg_extractor= and a target function")


def label_of(batch: Any) -> Tensor:
    """The labels of a collated batch of ``(inputs, label, ...)`` examples (``target="label"``)."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[1], Tensor):
        return batch[1]
    raise ValueError("target='label' takes each example's label from its second element, but the data set's "
                     f"examples are {_kind(batch)}: give target='pred', an int, or a function of the batch")


def _kind(batch: Any) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} ({', '.join(type(b).__name__ for b in batch)})"
    return f"a {type(batch).__name__}"


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it on ``device`` (without waiting, from pinned memory; pageable memory is copied
    before returning: a non-blocking copy from it can read freed memory on some devices, MPS)."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=value.is_pinned())
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(to_device(v, device) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def as_fields(result: Any, ids: Tensor, target: Any) -> Dict[str, Tensor]:
    """One batch's result as the named tensors a shard stores, each with one row per example."""
    batch = ids.shape[0]
    fields: Dict[str, Tensor] = {"example_index": ids}
    for name in ("attributions", "stderr"):
        value = getattr(result, name)
        if isinstance(value, (tuple, list)):
            fields.update({f"{name}.{i}": v.detach() for i, v in enumerate(value)})
        elif value is not None:
            fields[name] = value.detach()
    for name in ("relative_stderr", "delta", "converged"):
        value = getattr(result, name)
        if isinstance(value, Tensor):
            fields[name] = value.detach()
    used = result.nt_samples
    fields["nt_samples"] = (used if isinstance(used, Tensor) else torch.tensor(used)).to(ids).expand(batch)
    if isinstance(target, int):
        fields["target"] = torch.full_like(ids, target)
    elif isinstance(target, Tensor) and target.shape == (batch,):
        fields["target"] = target.to(ids.device, torch.int64)
    return fields

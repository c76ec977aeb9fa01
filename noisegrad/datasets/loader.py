"""Reading a folder written by :func:`noisegrad.attribute_dataset`: results by example index, lazily, without pickle.

Only the manifest is read up front; a shard is opened (its SHA-256 checked against the manifest, its bytes
memory-mapped) the first time one of its examples is asked for, and only the rows asked for are copied out. At most
:data:`OPEN_SHARDS` shards stay mapped (each holds a file descriptor); the least recently used one is closed first.
"""

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from noisegrad.datasets import _manifest as manifest_io
from noisegrad.datasets._shard_file import CorruptShard, ShardFile, file_sha256

__all__ = ["DatasetAttributions", "OPEN_SHARDS"]

#: How many shards a reader keeps memory-mapped at once.
OPEN_SHARDS = 64

Index = Union[int, slice, range, Sequence[int], Tensor, np.ndarray]


class DatasetAttributions:
    """The attributions (and deltas, standard errors, samples used, targets) of a data set, by example index.

    Parameters
    ----------
    folder : str or path
        A folder written by :func:`noisegrad.attribute_dataset`.
    verify : bool
        Check each shard's SHA-256 against the manifest when it is opened (reads the whole shard); ``False``
        checks only that its size matches its header.

    Examples
    --------
    >>> import tempfile
    >>> import noisegrad
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    >>> folder = tempfile.mkdtemp()
    >>> _ = noisegrad.attribute_dataset(noisegrad.SmoothGrad(model, nt_samples=4, seed=0), torch.rand(6, 3),
    ...                                 folder, target=1, shard_size=4)
    >>> results = DatasetAttributions(folder)
    >>> len(results), results[[5, 0]].shape, results.fields[:3]
    (6, torch.Size([2, 3]), ['attributions', 'example_index', 'nt_samples'])
    >>> results.get("example_index", slice(2, 5)).tolist()
    [2, 3, 4]
    """

    def __init__(self, folder: Union[str, "os.PathLike[str]"], verify: bool = True) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: no such folder")
        manifest = manifest_io.read_manifest(self.folder)
        if manifest is None:
            raise FileNotFoundError(f"{self.folder} has no manifest.json: not a folder written by attribute_dataset")
        self.manifest: Dict[str, Any] = manifest
        self.verify = verify
        # the manifest's shards, and those the ranks' journals name (a run that was stopped before completing it)
        size, total = manifest["shard_size"], manifest["examples"]
        self._records: Dict[int, List[Dict[str, Any]]] = {}
        for record in manifest["shards"] + manifest_io.journal_records(self.folder):
            k = record["shard"]
            if 0 <= k < manifest["shards_total"] and (record["first"], record["stop"]) == (
                    k * size, min((k + 1) * size, total)):
                self._records.setdefault(k, []).append(record)
        self._open: "OrderedDict[int, ShardFile]" = OrderedDict()

    def __len__(self) -> int:
        return int(self.manifest["examples"])

    def _written(self) -> List[int]:
        """The shards recorded as finished whose file is there."""
        return [k for k in sorted(self._records) if (self.folder / manifest_io.shard_file_name(k)).is_file()]

    @property
    def complete(self) -> bool:
        """Whether every shard is written (a run that was interrupted, or is still going, leaves some missing; so
        does a shard file deleted since)."""
        return len(self._written()) == self.manifest["shards_total"]

    @property
    def missing(self) -> List[range]:
        """The example ranges of the shards not written (or whose file is gone)."""
        size, total, written = self.manifest["shard_size"], len(self), set(self._written())
        return [range(k * size, min((k + 1) * size, total)) for k in range(self.manifest["shards_total"])
                if k not in written]

    @property
    def fields(self) -> List[str]:
        """What each example has: ``attributions`` (``attributions.i`` for the i-th of several inputs), and as the
        run produced them ``stderr``, ``relative_stderr``, ``delta``, ``converged``, ``nt_samples``, ``target``,
        ``example_index``."""
        return sorted(self._layout())

    def _layout(self) -> Dict[str, Tuple[torch.dtype, Tuple[int, ...]]]:
        """Each field's dtype and shape of one example, from the shard records (no shard is opened), or, for a
        folder written before records held them, from the first shard that opens."""
        for k in sorted(self._records):
            for record in self._records[k]:
                layout = record.get("fields")
                if isinstance(layout, dict) and all(
                        isinstance(v, dict) and isinstance(getattr(torch, str(v.get("dtype")), None), torch.dtype)
                        and isinstance(v.get("shape"), list) for v in layout.values()):
                    return {name: (getattr(torch, v["dtype"]), tuple(v["shape"])) for name, v in layout.items()}
        for k in self._written():
            try:
                shard = self._shard(k)
            except (CorruptShard, OSError):
                continue
            return {name: (shard.rows(name, []).dtype, shard.shape(name)[1:]) for name in shard.names}
        return {}

    @property
    def config(self) -> Dict[str, Any]:
        """The run's configuration (with its seed), method and target, as the manifest records them."""
        return self.manifest["identity"]

    def __getitem__(self, index: Index) -> Any:
        """The attributions of example ``index`` (an int) or examples (a slice, range, list or integer tensor);
        a tuple of tensors when the model took several inputs."""
        return self.get("attributions", index)

    def get(self, field: str, index: Index) -> Any:
        """Field ``field`` (see :attr:`fields`) of the examples ``index``, in the order asked. ``"attributions"``
        (and ``"stderr"``) of a model with several inputs is a tuple, one tensor per input (``"attributions.0"``,
        ``"attributions.1"``, ... one of them).

        Raises
        ------
        KeyError
            If an example's shard is not written yet (the message names the shard), or the field does not exist.
        CorruptShard
            If an example's shard is damaged, replaced or deleted since it was written.
        """
        layout = self._layout()
        if field not in layout:
            parts = sorted((name for name in layout if name.startswith(field + ".")),
                           key=lambda name: int(name.rsplit(".", 1)[1]) if name.rsplit(".", 1)[1].isdigit() else -1)
            if parts:
                return tuple(self.get(name, index) for name in parts)
            if not layout:
                raise KeyError("no shard is written yet")
            raise KeyError(f"no field {field!r}; the shards hold {sorted(layout)}")
        single = isinstance(index, (int, np.integer)) or (isinstance(index, (Tensor, np.ndarray)) and index.ndim == 0)
        wanted = self._indices(index)
        dtype, shape = layout[field]
        out = torch.empty((len(wanted),) + shape, dtype=dtype)
        shard_size = self.manifest["shard_size"]
        by_shard: Dict[int, List[Tuple[int, int]]] = {}
        for position, example in enumerate(wanted.tolist()):
            by_shard.setdefault(example // shard_size, []).append((position, example))
        for k, items in by_shard.items():
            rows = self._shard(k).rows(field, [example - k * shard_size for _, example in items])
            out[[position for position, _ in items]] = rows
        return out[0] if single else out

    def _indices(self, index: Index) -> Tensor:
        total = len(self)
        if isinstance(index, slice):
            return torch.arange(total)[index]
        if isinstance(index, (bool, np.bool_)):
            raise TypeError("an example index must be an integer, not a bool")
        wanted = torch.as_tensor(np.asarray(index) if not isinstance(index, Tensor) else index).reshape(-1)
        if wanted.numel() == 0:  # [] and range(0): no example (numpy makes them float)
            return torch.zeros(0, dtype=torch.int64)
        if wanted.is_floating_point() or wanted.dtype == torch.bool:
            raise TypeError(f"example indices must be integers, got dtype {wanted.dtype}")
        wanted = wanted.to(torch.int64)
        bad = wanted[(wanted < -total) | (wanted >= total)]
        if bad.numel():
            raise IndexError(f"example index {int(bad[0])} is out of range for a data set of {total} examples "
                             f"(-{total} … {total - 1})")
        return torch.where(wanted < 0, wanted + total, wanted)

    def _shard(self, k: int) -> ShardFile:
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        records = self._records.get(k)
        size = self.manifest["shard_size"]
        examples = f"examples {k * size}-{min((k + 1) * size, len(self)) - 1}"
        if records is None:
            raise KeyError(f"{examples} are in shard {k}, which is not written yet: run attribute_dataset again "
                           "with the same arguments to finish it")
        path = self.folder / manifest_io.shard_file_name(k)
        try:
            if self.verify and file_sha256(path) not in {record["sha256"] for record in records}:
                raise CorruptShard(f"{path} does not match the SHA-256 in the manifest (damaged or replaced); run "
                                   "attribute_dataset again with the same arguments to recompute it")
            shard = ShardFile(path)
        except FileNotFoundError:
            raise CorruptShard(f"{path} ({examples}) was deleted after it was written; run attribute_dataset again "
                               "with the same arguments to recompute it") from None
        self._open[k] = shard
        if len(self._open) > OPEN_SHARDS:
            self._open.popitem(last=False)[1].close()
        return shard

    def __repr__(self) -> str:
        done = len(self._written())
        return (f"DatasetAttributions('{self.folder}', {len(self)} examples, {done} of "
                f"{self.manifest['shards_total']} shards)")

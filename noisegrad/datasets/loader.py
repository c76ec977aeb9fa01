"""Reading a folder written by :func:`noisegrad.attribute_dataset`: results by example index, lazily, without pickle.

Only the manifest is read up front; a shard is opened (its SHA-256 checked against the manifest, its bytes
memory-mapped) the first time one of its examples is asked for, and only the rows asked for are copied out.
"""

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from noisegrad.datasets import _manifest as manifest_io
from noisegrad.datasets._shard_file import CorruptShard, ShardFile, file_sha256

__all__ = ["DatasetAttributions"]

Index = Union[int, slice, range, Sequence[int], Tensor, np.ndarray]


class DatasetAttributions:
    """The attributions (and deltas, standard errors, samples used, targets) of a data set, by example index.

    Parameters
    ----------
    folder : str or path
        A folder written by :func:`noisegrad.attribute_dataset`.
    verify : bool
        Check each shard's SHA-256 against the manifest when it is first opened (reads the whole shard once);
        ``False`` checks only that its size matches its header.

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
        manifest = manifest_io.read_manifest(self.folder)
        if manifest is None:
            raise FileNotFoundError(f"{self.folder} has no manifest.json: not a folder written by attribute_dataset")
        self.manifest: Dict[str, Any] = manifest
        self.verify = verify
        # the manifest's shards, and those the ranks' journals name (a run that was stopped before completing it)
        self._records: Dict[int, List[Dict[str, Any]]] = {}
        for record in manifest["shards"] + manifest_io.journal_records(self.folder):
            self._records.setdefault(record["shard"], []).append(record)
        self._open: Dict[int, ShardFile] = {}

    def __len__(self) -> int:
        return int(self.manifest["examples"])

    @property
    def complete(self) -> bool:
        """Whether every shard is written (a run that was interrupted, or is still going, leaves some missing)."""
        return len(self._records) == self.manifest["shards_total"]

    @property
    def missing(self) -> List[range]:
        """The example ranges of the shards not written yet."""
        size, total = self.manifest["shard_size"], len(self)
        return [range(k * size, min((k + 1) * size, total)) for k in range(self.manifest["shards_total"])
                if k not in self._records]

    @property
    def fields(self) -> List[str]:
        """What each example has: ``attributions`` (``attributions.i`` for the i-th of several inputs), and as the
        run produced them ``stderr``, ``relative_stderr``, ``delta``, ``converged``, ``nt_samples``, ``target``,
        ``example_index``."""
        if not self._records:
            return []
        return sorted(self._shard(min(self._records)).names)

    @property
    def config(self) -> Dict[str, Any]:
        """The run's configuration (with its seed), method and target, as the manifest records them."""
        return self.manifest["identity"]

    def __getitem__(self, index: Index) -> Any:
        """The attributions of example ``index`` (an int) or examples (a slice, range, list or integer tensor);
        a tuple of tensors when the model took several inputs."""
        names = [name for name in self.fields if name == "attributions" or name.startswith("attributions.")]
        if not names:
            raise KeyError("no shard is written yet")
        if names == ["attributions"]:
            return self.get("attributions", index)
        return tuple(self.get(f"attributions.{i}", index) for i in range(len(names)))

    def get(self, field: str, index: Index) -> Tensor:
        """Field ``field`` (see :attr:`fields`) of the examples ``index``, in the order asked.

        Raises
        ------
        KeyError
            If an example's shard is not written yet (the message names the shard), or the field does not exist.
        """
        single = isinstance(index, (int, np.integer)) or (isinstance(index, Tensor) and index.dim() == 0)
        wanted = self._indices(index)
        shard_size = self.manifest["shard_size"]
        by_shard: Dict[int, List[Tuple[int, int]]] = {}
        for position, example in enumerate(wanted.tolist()):
            by_shard.setdefault(example // shard_size, []).append((position, example))
        pieces: Dict[int, Tensor] = {}
        out = None
        for k, items in by_shard.items():
            shard = self._shard(k)
            if field not in shard.names:
                raise KeyError(f"no field {field!r}; the shards hold {sorted(shard.names)}")
            rows = shard.rows(field, [example - k * shard_size for _, example in items])
            for (position, _), row in zip(items, rows):
                pieces[position] = row
            if out is None:
                out = rows.new_empty((len(wanted),) + tuple(rows.shape[1:]))
        if out is None:  # no example asked for: the field's empty shape from any shard
            first = self._shard(min(self._records)) if self._records else None
            if first is None or field not in first.names:
                raise KeyError(f"no field {field!r} is written")
            return first.rows(field, [])
        for position, row in pieces.items():
            out[position] = row
        return out[0] if single else out

    def _indices(self, index: Index) -> Tensor:
        total = len(self)
        if isinstance(index, slice):
            return torch.arange(total)[index]
        if isinstance(index, (bool, np.bool_)):
            raise TypeError("an example index must be an integer, not a bool")
        wanted = torch.as_tensor(np.asarray(index) if not isinstance(index, Tensor) else index).reshape(-1)
        if wanted.is_floating_point() or wanted.dtype == torch.bool:
            raise TypeError(f"example indices must be integers, got dtype {wanted.dtype}")
        wanted = wanted.to(torch.int64)
        wanted = torch.where(wanted < 0, wanted + total, wanted)
        bad = wanted[(wanted < 0) | (wanted >= total)]
        if bad.numel():
            raise IndexError(f"example index {int(bad[0])} is out of range for a data set of {total} examples")
        return wanted

    def _shard(self, k: int) -> ShardFile:
        if k in self._open:
            return self._open[k]
        records = self._records.get(k)
        if records is None:
            size = self.manifest["shard_size"]
            raise KeyError(f"examples {k * size}-{min((k + 1) * size, len(self)) - 1} are in shard {k}, which is not "
                           "written yet: run attribute_dataset again with the same arguments to finish it")
        path = self.folder / manifest_io.shard_file_name(k)
        if self.verify and file_sha256(path) not in {record["sha256"] for record in records}:
            raise CorruptShard(f"{path} does not match the SHA-256 in the manifest (damaged or replaced); run "
                               "attribute_dataset again with the same arguments to recompute it")
        self._open[k] = ShardFile(path)
        return self._open[k]

    def __repr__(self) -> str:
        done = len(self._records)
        return (f"DatasetAttributions('{self.folder}', {len(self)} examples, {done} of "
                f"{self.manifest['shards_total']} shards)")

"""The record of a data-set run: ``manifest.json`` and the ranks' journals of the shards they finished.

``manifest.json`` says what was computed (the identity: method, configuration, seed, model fingerprint, data set,
shard size), with which versions, and which shards are complete, each with its SHA-256. While a run goes on, each
rank appends a line per finished shard to its own journal (``journal/rank-<r>.jsonl``, flushed and ``fsync``-ed),
so a run killed before the manifest is completed loses nothing that was written; rank 0 folds the journals into
the manifest when every rank is done. Every write of the manifest is atomic (temporary file, ``fsync``, rename).

Examples
--------
>>> differences({"config": {"nt_samples": 8, "seed": 0}}, {"config": {"nt_samples": 16, "seed": 0}})
['config.nt_samples: 8 in the folder, 16 now']
>>> shard_file_name(3)
'shard-000003.safetensors'
"""

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from noisegrad.datasets._shard_file import as_numpy, atomic_file

__all__ = ["FORMAT", "VERSION", "MANIFEST", "shard_file_name", "describe", "differences", "versions",
           "read_manifest", "write_manifest", "append_journal", "journal_records", "remove_run_files"]

FORMAT, VERSION = "noisegrad.attribute_dataset", 1
MANIFEST = "manifest.json"
_JOURNALS = "journal"
_RECORD_KEYS = ("shard", "file", "first", "stop", "sha256", "bytes")


def shard_file_name(index: int) -> str:
    return f"shard-{index:06d}.safetensors"


def describe(value: Any) -> Any:
    """``value`` as JSON: plain values as they are, a tensor by its shape, dtype and SHA-256, a function by name.

    Examples
    --------
    >>> describe({"n_steps": 8, "baselines": torch.zeros(2)})["baselines"]["shape"]
    [2]
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor):
        digest = hashlib.sha256(as_numpy(value).tobytes()).hexdigest()
        return {"shape": list(value.shape), "dtype": str(value.dtype), "sha256": digest}
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return repr(value)


def differences(stored: Any, now: Any, where: str = "") -> List[str]:
    """What differs between two identities, as ``"key: <stored> in the folder, <now> now"`` lines."""
    if isinstance(stored, dict) and isinstance(now, dict):
        found: List[str] = []
        for key in sorted(set(stored) | set(now)):
            found += differences(stored.get(key), now.get(key), f"{where}.{key}" if where else key)
        return found
    if stored == now:
        return []
    return [f"{where}: {_short(stored)} in the folder, {_short(now)} now"]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def versions() -> Dict[str, str]:
    """The versions a result depends on."""
    import captum
    import numpy

    import noisegrad

    return {"noisegrad": noisegrad.__version__, "torch": torch.__version__, "captum": captum.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def read_manifest(folder: Path) -> Optional[Dict[str, Any]]:
    """The manifest in ``folder``, or None if there is none.

    Raises
    ------
    ValueError
        If ``manifest.json`` exists but is not a manifest this version of noisegrad wrote.
    """
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not JSON ({err}); it was not written by noisegrad.attribute_dataset, or is "
                         "damaged: give another folder, or overwrite=True to start afresh") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a noisegrad.attribute_dataset manifest; give another folder")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path} has format version {manifest.get('version')!r}; this noisegrad reads {VERSION}")
    return manifest


def write_manifest(folder: Path, manifest: Dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically (temporary file, fsync, rename, fsync of the folder)."""
    with atomic_file(folder / MANIFEST, "w") as file:
        json.dump(manifest, file, indent=1, sort_keys=True)
        file.write("\n")


def append_journal(folder: Path, rank: int, record: Dict[str, Any]) -> None:
    """Append one finished shard's record to this rank's journal, flushed to disk before returning."""
    journals = folder / _JOURNALS
    journals.mkdir(exist_ok=True)
    with open(journals / f"rank-{rank}.jsonl", "a", encoding="utf-8") as file:
        file.write(json.dumps(record, sort_keys=True) + "\n")
        file.flush()
        os.fsync(file.fileno())


def journal_records(folder: Path) -> List[Dict[str, Any]]:
    """Every complete record in the journals (a line cut short by a kill is skipped)."""
    records = []
    for path in sorted((folder / _JOURNALS).glob("rank-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and all(key in record for key in _RECORD_KEYS):
                records.append(record)
    return records


def remove_run_files(folder: Path) -> None:
    """Delete what a run wrote in ``folder`` (shards, manifest, journals, temporary files), nothing else."""
    for pattern in ("shard-*.safetensors", ".shard-*.tmp", MANIFEST, f".{MANIFEST}.*.tmp"):
        for path in folder.glob(pattern):
            path.unlink()
    journals = folder / _JOURNALS
    if journals.is_dir():
        for path in journals.glob("rank-*.jsonl"):
            path.unlink()
        try:
            journals.rmdir()
        except OSError:  # something of the user's is in it: left alone
            pass

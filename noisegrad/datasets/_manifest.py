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

import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from noisegrad.datasets._shard_file import atomic_file

__all__ = ["FORMAT", "VERSION", "MANIFEST", "shard_file_name", "differences", "versions", "read_manifest",
           "write_manifest", "append_journal", "journal_records", "is_record", "remove_run_files"]

FORMAT, VERSION = "noisegrad.attribute_dataset", 1
MANIFEST = "manifest.json"
_JOURNALS = "journal"
#: What a finished shard's record must hold, and of which type.
_RECORD_TYPES = {"shard": int, "file": str, "first": int, "stop": int, "sha256": str, "bytes": int}
#: The manifest's fields a run reads, and their types.
_MANIFEST_TYPES = {"identity": dict, "seed": int, "examples": int, "shard_size": int, "shards_total": int,
                   "shards": list, "runs": list}


def shard_file_name(index: int) -> str:
    return f"shard-{index:06d}.safetensors"


def differences(stored: Any, now: Any, where: str = "", labels: Tuple[str, str] = ("in the folder", "now")
                ) -> List[str]:
    """What differs between two identities, as ``"key: <stored> in the folder, <now> now"`` lines."""
    if isinstance(stored, dict) and isinstance(now, dict):
        found: List[str] = []
        for key in sorted(set(stored) | set(now)):
            found += differences(stored.get(key), now.get(key), f"{where}.{key}" if where else key, labels)
        return found
    if stored == now:
        return []
    return [f"{where}: {_short(stored)} {labels[0]}, {_short(now)} {labels[1]}"]


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
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not JSON ({err}); it was not written by noisegrad.attribute_dataset, or is "
                         "damaged: give another folder, or overwrite=True to start afresh") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a noisegrad.attribute_dataset manifest; give another folder")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path} has format version {manifest.get('version')!r}; this noisegrad reads {VERSION}")
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{path} is damaged: its {key!r} is {_short(value)}, not a {kind.__name__}; give "
                             "another folder, or overwrite=True to start afresh")
    bad = [record for record in manifest["shards"] if not is_record(record)]
    if bad:
        raise ValueError(f"{path} is damaged: a shard record is {_short(bad[0])}; give another folder, or "
                         "overwrite=True to start afresh")
    return manifest


def is_record(record: Any) -> bool:
    """Whether ``record`` is a finished shard's record: each of its fields there, of its type."""
    return isinstance(record, dict) and all(
        isinstance(record.get(key), kind) and not isinstance(record.get(key), bool)
        for key, kind in _RECORD_TYPES.items())


def write_manifest(folder: Path, manifest: Dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically (temporary file, fsync, rename, fsync of the folder)."""
    with atomic_file(folder / MANIFEST, "w") as file:
        json.dump(manifest, file, indent=1, sort_keys=True)
        file.write("\n")


def append_journal(folder: Path, rank: int, record: Dict[str, Any]) -> None:
    """Append one finished shard's record to this rank's journal, flushed to disk before returning."""
    journals = folder / _JOURNALS
    journals.mkdir(exist_ok=True)
    path = journals / f"rank-{rank}.jsonl"
    with open(path, "a+b") as file:
        file.seek(0, os.SEEK_END)
        if file.tell() > 0:  # a line cut short by a kill must not swallow this record
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\n":
                file.write(b"\n")
        file.write(json.dumps(record, sort_keys=True).encode("utf-8") + b"\n")
        file.flush()
        os.fsync(file.fileno())


def journal_records(folder: Path) -> List[Dict[str, Any]]:
    """Every complete record in the journals (a line cut short by a kill is skipped)."""
    records = []
    for path in sorted((folder / _JOURNALS).glob("rank-*.jsonl")):
        for line in path.read_bytes().split(b"\n"):
            try:
                record = json.loads(line.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                continue
            if is_record(record):
                records.append(record)
    return records


def remove_run_files(folder: Path) -> None:
    """Delete what a run wrote in ``folder`` (shards, manifest, journals, temporary files), nothing else.

    Raises
    ------
    ValueError
        If ``folder`` holds a ``manifest.json`` that noisegrad did not write (nothing is deleted then).
    """
    path = folder / MANIFEST
    if path.exists():
        try:
            ours = json.loads(path.read_bytes()).get("format") == FORMAT
        except (ValueError, RecursionError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"{path} was not written by noisegrad.attribute_dataset: overwrite deletes only a "
                             "run's own files; give another folder")
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

"""One shard on disk: named tensors in the safetensors layout, written atomically, read lazily, never unpickled.

The layout (https://github.com/huggingface/safetensors, "Format"): 8 bytes, the little-endian length ``n`` of a
JSON header; the header, ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``;
then the tensors' raw little-endian bytes, in the header's order, offsets counted from the end of the header. It is
written here with the standard library (the ``safetensors`` package stays optional) and read with a memory map, so
a loader touches only the rows it is asked for; the ``safetensors`` package reads these files too.

A shard is written to a temporary file in the same folder, flushed and ``fsync``-ed, then renamed over its final
name and the folder ``fsync``-ed: a reader sees the old file, no file, or the whole new one, never a part. The
SHA-256 of the bytes is computed while they are written, for the manifest.

Examples
--------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "shard.safetensors"
>>> digest, size = write_shard(path, {"x": torch.arange(6.0).reshape(3, 2)}, {"first": "0"})
>>> shard = ShardFile(path)
>>> shard.rows("x", [2, 0])
tensor([[4., 5.],
        [0., 1.]])
>>> shard.metadata["first"], file_sha256(path) == digest
('0', True)
"""

import contextlib
import hashlib
import json
import os
import struct
import sys
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["write_shard", "ShardFile", "CorruptShard", "file_sha256", "as_numpy", "atomic_file"]

#: torch dtype ↔ the format's dtype name; bfloat16 has no numpy twin and is stored as its 16 bits.
_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}
_DTYPES = {name: dtype for dtype, name in _NAMES.items()}
_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.int16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit


class CorruptShard(ValueError):
    """A shard file that is truncated, damaged, or not a shard at all."""


def write_shard(path: Union[str, os.PathLike], tensors: Dict[str, Tensor], metadata: Dict[str, str]
                ) -> Tuple[str, int]:
    """Write ``tensors`` (CPU or not) and ``metadata`` to ``path`` atomically; returns (SHA-256 hex, bytes).

    A failure (a full disk, an interrupt) leaves no file at ``path`` but what was there before, and no
    temporary file.
    """
    if sys.byteorder != "little":  # the format is little-endian; numpy would write native order
        raise NotImplementedError("writing shards needs a little-endian machine")
    path = Path(path)
    header: Dict[str, Any] = {"__metadata__": dict(metadata)}
    payloads: List[np.ndarray] = []
    offset = 0
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.dtype not in _NAMES:
            raise TypeError(f"{name}: tensors of dtype {tensor.dtype} cannot be stored in a shard")
        data = as_numpy(tensor)
        header[name] = {"dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + data.nbytes]}
        payloads.append(data)
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the safetensors library writes it
    digest = hashlib.sha256()
    with atomic_file(path, "wb") as file:
        for piece in (struct.pack("<Q", len(text)), text, *(memoryview(p).cast("B") for p in payloads)):
            digest.update(piece)
            file.write(piece)
    return digest.hexdigest(), 8 + len(text) + offset


@contextlib.contextmanager
def atomic_file(path: Path, mode: str) -> Iterator[IO[Any]]:
    """A file to write that appears at ``path`` whole, or not at all: a temporary file in the same folder,
    flushed and ``fsync``-ed, renamed over ``path``, then the folder ``fsync``-ed; removed again on any failure."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def as_numpy(tensor: Tensor) -> np.ndarray:
    """A tensor's elements as a flat CPU numpy array of the same bytes (bfloat16 as its 16 bits)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return (flat.view(torch.int16) if flat.dtype == torch.bfloat16 else flat).numpy()


def sync_folder(folder: Path) -> None:
    """``fsync`` a folder, so that a rename in it survives a power cut (a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardFile:
    """A shard opened for reading: its header parsed and checked against the file's size, its bytes memory-mapped.

    Raises
    ------
    CorruptShard
        If the file is shorter than its header says, or the header is not a shard's.
    """

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as file:
            start = file.read(8)
            length = struct.unpack("<Q", start)[0] if len(start) == 8 else -1
            if not 0 < length <= min(_MAX_HEADER, size - 8):
                raise CorruptShard(f"{self.path} is truncated or not a shard (header length {length}, "
                                   f"file {size} bytes)")
            raw = file.read(length)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
            raise CorruptShard(f"{self.path}: its header is not JSON ({str(err)[:80]})") from None
        if not isinstance(header, dict):
            raise CorruptShard(f"{self.path}: its header is a JSON {type(header).__name__}, not an object")
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise CorruptShard(f"{self.path}: its header's __metadata__ is not an object of strings")
        self.metadata: Dict[str, str] = metadata
        self._entries = {name: self._checked_entry(name, entry) for name, entry in header.items()}
        self._start = 8 + length
        spans = sorted(entry["data_offsets"] for entry in self._entries.values())
        end = 0
        for begin, stop in spans:  # the tensors tile the data: no overlap, no gap
            if begin != end:
                raise CorruptShard(f"{self.path}: its tensors' byte ranges {'overlap' if begin < end else 'leave a gap'}"
                                   f" at byte {min(begin, end)}")
            end = stop
        if self._start + end != size:
            raise CorruptShard(f"{self.path} is {size} bytes but its header describes {self._start + end}: "
                               "truncated or damaged")
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size > self._start else np.zeros(0, np.uint8)

    def _checked_entry(self, name: str, entry: Any) -> Dict[str, Any]:
        """A header entry whose dtype is known, shape non-negative ints, offsets two ints as long as the shape."""
        def ints(value: Any) -> bool:
            return isinstance(value, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                   for n in value)
        if not isinstance(entry, dict) or entry.get("dtype") not in _NUMPY or not ints(entry.get("shape")) \
                or not ints(entry.get("data_offsets")) or len(entry["data_offsets"]) != 2:
            raise CorruptShard(f"{self.path}: the header's entry for {name!r} is not a tensor's "
                               "(a known dtype, a shape and two offsets, all integers >= 0)")
        begin, end = entry["data_offsets"]
        itemsize = np.dtype(_NUMPY[entry["dtype"]]).itemsize
        expected = int(np.prod(entry["shape"], dtype=object)) * itemsize  # Python ints: no overflow
        if end - begin != expected:
            raise CorruptShard(f"{self.path}: {name!r} has {end - begin} bytes, its shape {entry['shape']} needs "
                               f"{expected}")
        return entry

    def close(self) -> None:
        """Let go of the memory map (the last reference: its file descriptor is closed); rows copied out before
        stay valid."""
        self._map = np.zeros(0, np.uint8)

    @property
    def names(self) -> List[str]:
        return list(self._entries)

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def _array(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        begin, end = entry["data_offsets"]
        return self._map[self._start + begin:self._start + end].view(_NUMPY[entry["dtype"]]).reshape(entry["shape"])

    def rows(self, name: str, rows: Union[Sequence[int], np.ndarray, slice]) -> Tensor:
        """Rows of tensor ``name`` (positions within the shard), copied out of the map into a new tensor."""
        dtype = _DTYPES[self._entries[name]["dtype"]]
        picked = torch.from_numpy(np.array(self._array(name)[rows]))  # a copy: the map stays read-only
        return picked.view(dtype) if dtype == torch.bfloat16 else picked

    def tensor(self, name: str) -> Tensor:
        """The whole tensor ``name``."""
        return self.rows(name, slice(None))

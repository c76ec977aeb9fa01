"""A result on disk without pickle: its tensors as raw bytes (safetensors, or torch's zip), the rest as JSON.

The JSON header says what each field is: ``null``, a number, a tensor (by the
name it is stored under) or a tuple / list of those, so attributions of several
inputs or layers come back in their form. Reading never unpickles: a
safetensors file is a JSON header and bytes; a torch file is read by
``torch.load(weights_only=True)``, which rebuilds only tensors and plain
containers, and anything else is refused before it is read.
"""

import json
import os
import struct
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["FILE_FORMATS", "save_result", "load_result"]

#: ``file_format`` options of ``SmoothedAttribution.save``.
FILE_FORMATS = ("auto", "safetensors", "torch")

_FORMAT, _VERSION = "noisegrad.SmoothedAttribution", 1
#: Fields added to the format after version 1 was first written; a file without them reads them as None.
_ADDED_FIELDS = ("outputs", "channel_reducer")
_HEADER_KEY = "noisegrad"  # the JSON's key in the safetensors metadata and in the torch file's dict
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format
_INSTALL = "install it with `pip install safetensors` (or noisegrad's test extra)"

PathLike = Union[str, "os.PathLike[str]"]


def save_result(path: PathLike, fields: Dict[str, Any], config: Optional[Dict[str, Any]], file_format: str) -> Path:
    """Write ``fields`` (tensors, numbers, None, tuples and lists of tensors) and ``config`` to ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}")
    tensors: Dict[str, Tensor] = {}
    layout = {name: _encode(value, name, tensors) for name, value in fields.items()}
    try:
        header = json.dumps({"format": _FORMAT, "version": _VERSION, "fields": layout, "config": config})
    except (TypeError, ValueError) as err:
        raise TypeError(f"config must be JSON-serialisable (dicts, lists, str, numbers, bool, None): {err}") from err
    if file_format == "auto":
        file_format = "safetensors" if _safetensors() is not None else "torch"
    target = Path(path)
    if file_format == "safetensors":
        safetensors = _safetensors()
        if safetensors is None:
            raise ImportError(f"file_format='safetensors' needs the safetensors package: {_INSTALL}")
        safetensors.save_file(tensors, str(target), metadata={_HEADER_KEY: header})
    else:
        torch.save({_HEADER_KEY: header, "tensors": tensors}, target)
    return target


def load_result(path: PathLike, names: Sequence[str], device: Union[str, torch.device]) -> Tuple[Dict[str, Any], Any]:
    """The fields ``names`` and the config of a file :func:`save_result` wrote; never unpickles."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
    source = Path(path)
    with open(source, "rb") as file:
        start = file.read(9)
    if start[:4] == _ZIP_MAGIC:
        header, tensors = _read_torch(source, device)
    elif len(start) == 9 and start[8:9] == b"{" and struct.unpack("<Q", start[:8])[0] <= os.path.getsize(source):
        header, tensors = _read_safetensors(source, device)
    else:  # a pickle, or anything else: refused unread
        raise ValueError(f"{source} is not a saved SmoothedAttribution (neither a safetensors file nor "
                         "torch.save's zip format); it was not read")
    return _decode_all(header, tensors, names, source)


def _safetensors() -> Any:
    """``safetensors.torch``, or None where it is not installed (it is optional)."""
    try:
        import safetensors.torch
    except ImportError:
        return None
    return safetensors.torch


def _encode(value: Any, key: str, tensors: Dict[str, Tensor]) -> Any:
    """The JSON description of one field; its tensors go into ``tensors`` under ``key``-derived names."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        # Own contiguous CPU memory: safetensors refuses tensors that share storage, and writes raw bytes.
        tensors[key] = torch.Tensor.detach(value).to("cpu").contiguous().clone()
        return {"tensor": key}
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, float):
        return {"float": value}  # Python's float repr reads back to the same bits (inf and nan as JSON's extension)
    if isinstance(value, str):
        return {"str": value}
    if isinstance(value, (tuple, list)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [_encode(item, f"{key}.{i}", tensors) for i, item in enumerate(value)]}
    raise TypeError(f"{key.split('.')[0]} cannot be saved: {type(value).__name__} is not a tensor, number, "
                    "str, None, tuple or list")


def _decode(node: Any, tensors: Dict[str, Tensor], used: set, where: str) -> Any:
    if node is None:
        return None
    if isinstance(node, dict) and len(node) == 1:
        (kind, value), = node.items()
        if kind == "tensor" and isinstance(value, str) and value in tensors and value not in used:
            used.add(value)
            return tensors[value]
        if (kind, type(value)) in (("bool", bool), ("int", int), ("float", float), ("str", str)):
            return value
        if kind in ("tuple", "list") and isinstance(value, list):
            items = [_decode(item, tensors, used, where) for item in value]
            return tuple(items) if kind == "tuple" else items
    raise ValueError(f"{where}: the header's entry {json.dumps(node)[:80]} is not a tensor, number, None, tuple "
                     "or list written by SmoothedAttribution.save")


def _decode_all(header: Any, tensors: Dict[str, Tensor], names: Sequence[str], source: Path,
                ) -> Tuple[Dict[str, Any], Any]:
    try:
        content = json.loads(header) if isinstance(header, str) else None
    except ValueError:
        content = None
    if not isinstance(content, dict) or content.get("format") != _FORMAT:
        raise ValueError(f"{source} is not a saved SmoothedAttribution (no {_FORMAT} header)")
    if content.get("version") != _VERSION:
        raise ValueError(f"{source} has format version {content.get('version')!r}; this noisegrad reads "
                         f"version {_VERSION} (a newer noisegrad wrote it?)")
    layout = content.get("fields")
    if isinstance(layout, dict):  # files written before these fields existed: they were None
        layout = {**{name: None for name in _ADDED_FIELDS if name in names}, **layout}
    if not isinstance(layout, dict) or sorted(layout) != sorted(names):
        raise ValueError(f"{source}: the header's fields {sorted(layout) if isinstance(layout, dict) else layout} "
                         f"are not a SmoothedAttribution's {sorted(names)}")
    used: set = set()
    fields = {name: _decode(layout[name], tensors, used, str(source)) for name in names}
    if used != set(tensors):
        raise ValueError(f"{source} holds tensors its header does not name: {sorted(set(tensors) - used)}")
    config = content.get("config")
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"{source}: config must be a JSON object or null, got {type(config).__name__}")
    return fields, config


def _read_safetensors(source: Path, device: Union[str, torch.device]) -> Tuple[Any, Dict[str, Tensor]]:
    safetensors = _safetensors()
    if safetensors is None:
        raise ImportError(f"{source} is a safetensors file; reading it needs the safetensors package: {_INSTALL}")
    from safetensors import safe_open

    try:
        with safe_open(str(source), framework="pt", device=str(device)) as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"{source} is not a readable safetensors file: {err}") from err
    return metadata.get(_HEADER_KEY), tensors


def _read_torch(source: Path, device: Union[str, torch.device]) -> Tuple[Any, Dict[str, Tensor]]:
    try:
        # weights_only: torch's restricted unpickler, which rebuilds tensors, strings and containers, nothing else.
        content = torch.load(source, map_location=device, weights_only=True)
    except Exception as err:
        raise ValueError(f"{source} was refused: it is not a plain file of tensors and strings "
                         f"(torch.load(weights_only=True) says: {str(err).strip().splitlines()[0][:200]})") from err
    tensors = content.get("tensors") if isinstance(content, dict) else None
    if (not isinstance(content, dict) or set(content) != {_HEADER_KEY, "tensors"} or not isinstance(tensors, dict)
            or not all(isinstance(k, str) and type(v) is Tensor for k, v in tensors.items())):
        raise ValueError(f"{source} is not a saved SmoothedAttribution (not the dict SmoothedAttribution.save writes)")
    return content[_HEADER_KEY], tensors

"""``attribute-dataset --data``: a folder of example files, or ``package.module:function`` returning a Dataset.

A folder holds one example per file, read without unpickling anything:

* ``.pt`` — ``torch.load(weights_only=True)`` (a restricted unpickler that builds tensors only): one tensor;
* ``.npy`` — ``numpy.load(allow_pickle=False)``: one array (of numbers);
* images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``, ``.tif``, ``.tiff``, ``.webp``) — Pillow (which
  matplotlib brings), decoded only by the decoder its suffix names, as a float tensor ``(channels, height,
  width)`` in [0, 1]: one channel if every image of the folder is grayscale (16-bit ones scaled by 1/65535),
  else three (RGB; an alpha channel is dropped, a palette expanded).

Values: 8-bit data (images, and ``uint8`` arrays or tensors) are scaled by 1/255, so a PNG and its ``.npy`` export
give the same example; other integer arrays keep their values; everything becomes the model's floating dtype
(``dtype=``), so a ``float64`` ``.npy`` runs through a ``float32`` model.

Files directly in the folder are examples without labels; a folder of subfolders is one subfolder per class, as
torchvision's ``ImageFolder``: an example's label is its class's position in the sorted subfolder names (for
``--target label``); an empty subfolder is refused (it would shift every later label). Example ``i`` is the
``i``-th file in sorted order, so the indices (and the noise keyed by them) stay put while the folder does; the
names, sizes and modification times of the files are part of a run's identity.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> root = Path(tempfile.mkdtemp())
>>> for name in ("b.npy", "a.npy"):
...     np.save(root / name, np.ones((2, 3), dtype=np.float32))
>>> data = FolderDataset(root, dtype=torch.float64)
>>> len(data), data.files, data[0].shape, data[0].dtype
(2, ['a.npy', 'b.npy'], torch.Size([2, 3]), torch.float64)
"""

import hashlib
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from noisegrad.app.errors import ExplainError
from noisegrad.app.models import import_named

__all__ = ["FolderDataset", "load_data", "IMAGE_SUFFIXES"]

#: Each image suffix and the one Pillow decoder it may be read with (an EPS file named .png is not run).
_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF",
                  ".tiff": "TIFF", ".webp": "WEBP"}
IMAGE_SUFFIXES = tuple(_IMAGE_FORMATS)
_SUFFIXES = (".pt", ".npy") + IMAGE_SUFFIXES
_GRAYSCALE = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")


class FolderDataset(Dataset):
    """The example files of ``root`` (and its class subfolders), in sorted order, as ``dtype`` (default
    float32)."""

    def __init__(self, root: Union[str, Path], dtype: torch.dtype = torch.float32) -> None:
        self.root, self.dtype = Path(root), dtype
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.classes: Optional[List[str]] = [p.name for p in folders] if folders else None
        if folders:
            empty = [p.name for p in folders if not _example_files(p)]
            if empty:
                raise ExplainError(f"--data '{self.root}': the class subfolder(s) {', '.join(empty)} hold no example "
                                   f"files ({', '.join(_SUFFIXES)}); an empty class would shift the labels of the "
                                   "classes after it: remove it")
            self._items: List[Tuple[Path, int]] = [(path, label) for label, folder in enumerate(folders)
                                                   for path in _example_files(folder)]
        else:
            self._items = [(path, -1) for path in _example_files(self.root)]
        if not self._items:
            raise ExplainError(f"--data '{self.root}' holds no example files ({', '.join(_SUFFIXES)})")
        self.channels = 1 if all(_grayscale(path) for path, _ in self._items
                                 if path.suffix.lower() in IMAGE_SUFFIXES) else 3

    def _noisegrad_fingerprint(self) -> str:
        """SHA-256 of the classes and every file's name, size and modification time (a run's identity)."""
        sha = hashlib.sha256(repr(self.classes).encode())
        for path, label in self._items:
            stat = path.stat()
            sha.update(f"{path.relative_to(self.root)}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return sha.hexdigest()

    @property
    def files(self) -> List[str]:
        """Each example's file, relative to the folder (example ``i`` is ``files[i]``)."""
        return [str(path.relative_to(self.root)) for path, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Any:
        path, label = self._items[index]
        example = read_example(path, self.channels).to(self.dtype)
        return example if self.classes is None else (example, torch.tensor(label))


def _example_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)


def _grayscale(path: Path) -> bool:
    """Whether an image is grayscale, from its header (nothing is decoded)."""
    from PIL import Image

    try:
        with Image.open(path, formats=[_IMAGE_FORMATS[path.suffix.lower()]]) as image:
            return image.mode in _GRAYSCALE
    except Exception as err:
        raise ExplainError(f"--data: {path} is not a readable {_IMAGE_FORMATS[path.suffix.lower()]} image "
                           f"({_first_line(err)})") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_example(path: Path, channels: int = 3) -> Tensor:
    """One example file as a floating-point tensor (never unpickled); an image with ``channels`` (1 or 3)."""
    suffix = path.suffix.lower()
    if suffix == ".pt":
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ExplainError(f"--data: {path} cannot be read with torch.load(weights_only=True): "
                               f"{_first_line(err)}") from err
        if not isinstance(value, Tensor):
            raise ExplainError(f"--data: {path} holds a {type(value).__name__}; each .pt file must hold one tensor")
        return _as_float(value, path)
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ExplainError(f"--data: {path} is not an array of numbers ({_first_line(err)}); pickled arrays "
                               "are refused") from err
        if array.dtype.kind not in "biuf":
            raise ExplainError(f"--data: {path} holds an array of {array.dtype}, not of numbers")
        return _as_float(torch.from_numpy(np.ascontiguousarray(array)), path)
    from PIL import Image

    try:
        with Image.open(path, formats=[_IMAGE_FORMATS[suffix]]) as image:
            if channels == 1 and image.mode in ("I", "I;16", "I;16B", "I;16L"):
                array, scale = np.asarray(image.convert("I")).astype(np.float32), 65535.0
            elif channels == 1 and image.mode == "F":
                array, scale = np.asarray(image).astype(np.float32), 1.0
            else:
                array, scale = np.asarray(image.convert("L" if channels == 1 else "RGB")), 255.0
    except Exception as err:
        raise ExplainError(f"--data: {path} is not a readable {_IMAGE_FORMATS[suffix]} image ({_first_line(err)})"
                           ) from err
    tensor = torch.from_numpy(np.array(array, dtype=np.float32)).div(scale)
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def _as_float(tensor: Tensor, path: Path) -> Tensor:
    """8-bit data scaled by 1/255 (as images are), other integers by value, floats as they are."""
    if tensor.dtype == torch.uint8:
        return tensor.float().div(255.0)
    if tensor.dtype.is_complex:
        raise ExplainError(f"--data: {path} holds complex numbers")
    return tensor if tensor.is_floating_point() else tensor.float()


def load_data(spec: str, dtype: torch.dtype = torch.float32) -> Dataset:
    """``--data``: a folder of example files (as ``dtype``), or ``package.module:function`` returning a map-style
    Dataset."""
    path = Path(spec)
    if path.is_dir():
        try:
            return FolderDataset(path, dtype)
        except OSError as err:
            raise ExplainError(f"--data '{spec}': {err.strerror or err}") from err
    if path.exists():
        raise ExplainError(f"--data '{spec}' is a file; give a folder of example files or package.module:function")
    if ":" not in spec:
        raise ExplainError(f"--data '{spec}': no such folder, and not of the form package.module:function")
    factory = import_named(spec, "--data")
    try:
        data = factory() if callable(factory) and not isinstance(factory, Dataset) else factory
    except Exception as err:
        raise ExplainError(f"--data '{spec}' raised {type(err).__name__}: {_first_line(err)}") from err
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ExplainError(f"--data '{spec}' gave a {type(data).__name__}, not a map-style Dataset (with __len__ and "
                           "__getitem__)")
    return data

"""``attribute-dataset --data``: a folder of example files, or ``package.module:function`` returning a Dataset.

A folder holds one example per file, read without unpickling anything:

* ``.pt`` — ``torch.load(weights_only=True)``: one tensor;
* ``.npy`` — ``numpy.load(allow_pickle=False)``: one array (of numbers);
* images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``, ``.tif``, ``.tiff``, ``.webp``) — Pillow (which
  matplotlib brings), as a float tensor ``(channels, height, width)`` in [0, 1].

Files directly in the folder are examples without labels; a folder of subfolders is one subfolder per class, as
torchvision's ``ImageFolder``: an example's label is its class's position in the sorted subfolder names (for
``--target label``). Example ``i`` is the ``i``-th file in sorted order, so the indices (and the noise keyed by
them) stay put while the folder does.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> root = Path(tempfile.mkdtemp())
>>> for name in ("b.npy", "a.npy"):
...     np.save(root / name, np.ones((2, 3), dtype=np.float32))
>>> data = FolderDataset(root)
>>> len(data), data.files, data[0].shape
(2, ['a.npy', 'b.npy'], torch.Size([2, 3]))
"""

from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from noisegrad.app.errors import ExplainError
from noisegrad.app.models import import_named

__all__ = ["FolderDataset", "load_data", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_SUFFIXES = (".pt", ".npy") + IMAGE_SUFFIXES


class FolderDataset(Dataset):
    """The example files of ``root`` (and its class subfolders), in sorted order."""

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.classes: Optional[List[str]] = [p.name for p in folders] if folders else None
        if folders:
            self._items: List[Tuple[Path, int]] = [(path, label) for label, folder in enumerate(folders)
                                                   for path in _example_files(folder)]
        else:
            self._items = [(path, -1) for path in _example_files(self.root)]
        if not self._items:
            raise ExplainError(f"--data '{self.root}' holds no example files ({', '.join(_SUFFIXES)})")

    @property
    def files(self) -> List[str]:
        """Each example's file, relative to the folder (example ``i`` is ``files[i]``)."""
        return [str(path.relative_to(self.root)) for path, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Any:
        path, label = self._items[index]
        example = read_example(path)
        return example if self.classes is None else (example, torch.tensor(label))


def _example_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)


def read_example(path: Path) -> Tensor:
    """One example file as a floating-point tensor (never unpickled)."""
    suffix = path.suffix.lower()
    if suffix == ".pt":
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ExplainError(f"--data: {path} cannot be read with torch.load(weights_only=True): "
                               f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
                               ) from err
        if not isinstance(value, Tensor):
            raise ExplainError(f"--data: {path} holds a {type(value).__name__}; each .pt file must hold one tensor")
        return value if value.is_floating_point() else value.float()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ExplainError(f"--data: {path} is not an array of numbers ({err}); pickled arrays are "
                               "refused") from err
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor if tensor.is_floating_point() else tensor.float()
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode))
    tensor = torch.from_numpy(array.copy()).float().div(255.0)
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def load_data(spec: str) -> Dataset:
    """``--data``: a folder of example files, or ``package.module:function`` returning a map-style Dataset."""
    path = Path(spec)
    if path.is_dir():
        return FolderDataset(path)
    if path.exists():
        raise ExplainError(f"--data '{spec}' is a file; give a folder of example files or package.module:function")
    if ":" not in spec:
        raise ExplainError(f"--data '{spec}': no such folder, and not of the form package.module:function")
    factory = import_named(spec, "--data")
    data = factory() if callable(factory) and not isinstance(factory, Dataset) else factory
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ExplainError(f"--data '{spec}' gave a {type(data).__name__}, not a map-style Dataset (with __len__ and "
                           "__getitem__)")
    return data

"""Inputs of the plots as float64 numpy arrays: tensors on any device, numpy arrays, nested lists."""

from typing import Optional

import numpy as np
import torch

__all__ = ["as_array", "image_hwc", "batch_nhwc", "display_image"]


def as_array(values: object, name: str, allow_nan: bool = False) -> np.ndarray:
    """``values`` as a finite float64 numpy array on the CPU.

    Parameters
    ----------
    values : torch.Tensor, numpy.ndarray or nested sequence of numbers
        A tensor may live on any device and have any real dtype (bfloat16 too);
        it is detached and copied to the CPU.
    name : str
        The argument's name, for error messages.
    allow_nan : bool
        Accept NaN (meaning "undefined", e.g. a standard error from one sample).

    Raises
    ------
    TypeError
        If ``values`` is not numeric.
    ValueError
        If it holds NaN or infinite values.

    Examples
    --------
    >>> as_array(torch.tensor([1, 2], dtype=torch.bfloat16), "attr")
    array([1., 2.])
    """
    if isinstance(values, torch.Tensor):
        if values.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype {values.dtype}")
        array = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{name} must be a torch.Tensor or a numpy array of numbers, got {type(values).__name__}"
            ) from err
    if not (np.isfinite(array) | (allow_nan & np.isnan(array))).all():
        raise ValueError(f"{name} contains NaN or infinite values; only finite values can be drawn")
    return array


def _channels_last(shape: tuple, channels_last: Optional[bool]) -> bool:
    """Whether the channel axis of a 3-D image is the last one.

    Unless told, the channel axis is the shorter of the first and last (a tie
    means channel-first, PyTorch's layout): ``(3, 32, 32)`` is channel-first,
    ``(32, 32, 3)`` channel-last.
    """
    if channels_last is not None:
        if not isinstance(channels_last, bool):
            raise TypeError(f"channels_last must be True, False or None (guess), got {channels_last!r}")
        return channels_last
    return shape[-1] < shape[0]


def image_hwc(values: object, name: str, channels_last: Optional[bool] = None) -> np.ndarray:
    """One image or map, ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)``, as an ``(H, W, C)`` array.

    Examples
    --------
    >>> image_hwc(np.zeros((3, 8, 5)), "image").shape, image_hwc(np.zeros((8, 5, 3)), "image").shape
    ((8, 5, 3), (8, 5, 3))
    >>> image_hwc(np.zeros((8, 5)), "attr").shape
    (8, 5, 1)
    """
    array = as_array(values, name)
    if array.ndim == 3 and array.shape[0] == 1 and array.shape[-1] != 1 and channels_last is None:
        channels_last = False
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(
            f"{name} must be one image of shape (C, H, W), (H, W, C) or (H, W), got shape {tuple(array.shape)}"
        )
    return array if _channels_last(array.shape, channels_last) else np.moveaxis(array, 0, -1)


def batch_nhwc(values: object, name: str, channels_last: Optional[bool] = None) -> np.ndarray:
    """A batch, ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)``, as an ``(N, H, W, C)`` array.

    Examples
    --------
    >>> batch_nhwc(torch.zeros(4, 3, 8, 8), "attributions").shape
    (4, 8, 8, 3)
    """
    array = as_array(values, name)
    if array.ndim == 3:
        return array[..., None]
    if array.ndim != 4:
        raise ValueError(
            f"{name} must be a batch of shape (N, C, H, W), (N, H, W, C) or (N, H, W), "
            f"got shape {tuple(array.shape)}"
        )
    if _channels_last(array.shape[1:], channels_last):
        return array
    return np.moveaxis(array, 1, -1)


def display_image(hwc: np.ndarray) -> np.ndarray:
    """An ``(H, W, C)`` image as something ``imshow`` draws faithfully: values in [0, 1].

    Images already in [0, 1] are kept, [0, 255] images are divided by 255, and
    anything else (e.g. normalised with ImageNet means) is min-max scaled.
    One channel gives ``(H, W)`` (drawn in grey), 3 or 4 channels RGB(A);
    any other count is averaged to grey.

    Examples
    --------
    >>> display_image(np.array([[[0.0], [510.0]]])).tolist()
    [[0.0, 1.0]]
    """
    lo, hi = float(hwc.min()), float(hwc.max())
    if lo >= 0.0 and hi <= 1.0:
        scaled = hwc
    elif lo >= 0.0 and hi <= 255.0:
        scaled = hwc / 255.0
    elif hi > lo:
        scaled = (hwc - lo) / (hi - lo)
    else:  # a constant image outside [0, 255]
        scaled = np.full_like(hwc, 0.5)
    channels = scaled.shape[-1]
    if channels in (3, 4):
        return scaled
    return scaled[:, :, 0] if channels == 1 else scaled.mean(axis=-1)

"""The output folder of ``demo`` and ``explain``: checked before any work, and gone again if the run fails.

Examples
--------
>>> import tempfile
>>> base = Path(tempfile.mkdtemp())
>>> try:
...     with output_folder(base / "new" / "out") as folder:
...         raise RuntimeError("the run failed")
... except RuntimeError:
...     pass
>>> (base / "new").exists()   # created by this run, still empty: removed
False
"""

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, List, Union

__all__ = ["DemoOutputError", "output_folder", "prepare_output_dir"]


class DemoOutputError(OSError):
    """The output folder cannot be used (it is a file, or cannot be created or written)."""


@contextlib.contextmanager
def output_folder(out: Union[str, os.PathLike]) -> Iterator[Path]:
    """``out``, created if needed and checked writable, for the body of a run.

    If the body raises, the folders this call created are removed again as long as they are empty; a folder
    that existed before, and any file in a folder, are never removed.

    Raises
    ------
    DemoOutputError
        If ``out`` exists and is not a directory, cannot be created, or is not writable.
    """
    created = _missing_folders(Path(out))
    try:
        path = prepare_output_dir(out)
    except DemoOutputError:
        _remove_if_empty(created)
        raise
    try:
        yield path
    except BaseException:
        _remove_if_empty(created)
        raise


def prepare_output_dir(out: Union[str, os.PathLike]) -> Path:
    """Create ``out`` if needed and check that files can be written in it (left in place whatever happens next).

    Raises
    ------
    DemoOutputError
        If ``out`` exists and is not a directory, cannot be created, or is not writable.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise DemoOutputError(f"output folder '{path}' exists and is not a directory; give a folder with --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise DemoOutputError(f"cannot write to output folder '{path}': {reason}") from err
    return path


def _missing_folders(path: Path) -> List[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if os.path.lexists(folder):
            break
        missing.append(folder)
    return missing


def _remove_if_empty(folders: List[Path]) -> None:
    for folder in folders:  # deepest first, so a parent is empty once its child is gone
        try:
            folder.rmdir()  # refuses a folder that is not empty: files are never deleted
        except OSError:
            return

"""Run every tutorial notebook top to bottom and save it with its outputs, so a reader sees the results unrun.

    python tutorials/execute.py            # all of tutorials/*.ipynb, in place
    python tutorials/execute.py 01_quick_start.ipynb

The notebooks run in a kernel of this interpreter (so they use the noisegrad installed here), one thread, from the
tutorials folder. Figures are PNGs at the library's default 100 dpi; the test suite re-executes the notebooks and
checks that each cell still makes the committed number of images, of the committed sizes.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List

TUTORIALS = Path(__file__).resolve().parent
KERNEL = "noisegrad-tutorials"


def execute(paths: Iterable[Path], timeout: int = 300) -> List[Path]:
    """Execute each notebook in place, keeping its outputs; returns the paths written."""
    import nbclient
    import nbformat

    written = []
    with tempfile.TemporaryDirectory() as jupyter_path:
        spec_dir = Path(jupyter_path) / "kernels" / KERNEL
        spec_dir.mkdir(parents=True)
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "noisegrad tutorials", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        os.environ["JUPYTER_PATH"] = jupyter_path
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        for path in paths:
            book = nbformat.read(path, as_version=4)
            nbclient.NotebookClient(book, timeout=timeout, kernel_name=KERNEL,
                                    resources={"metadata": {"path": str(TUTORIALS)}}).execute()
            book.metadata.pop("kernelspec", None)  # the temporary kernel's name means nothing to a reader
            for cell in book.cells:  # Captum imports tqdm.auto, which warns when ipywidgets is not installed here
                if cell.cell_type == "code":
                    cell.outputs = [out for out in cell.outputs if "TqdmWarning" not in out.get("text", "")]
            nbformat.write(book, path)
            written.append(path)
    return written


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebook file names in tutorials/ (default: all)")
    args = parser.parse_args(argv)
    paths = [TUTORIALS / name for name in args.notebooks] or sorted(TUTORIALS.glob("*.ipynb"))
    for path in execute(paths):
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

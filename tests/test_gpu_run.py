"""benchmarks/gpu_run.sh on a machine where it cannot run: it stops at once, says why, and writes nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_run.sh"


def run_script(python: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=dict(os.environ, PYTHON=python),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run")
def test_without_a_gpu_it_stops_with_status_2_and_says_so(tmp_path):
    proc = run_script(sys.executable, tmp_path / "out")
    assert proc.returncode == 2
    assert "no CUDA GPU: torch.cuda.is_available() is False" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_python_without_torch_is_named_as_such_not_as_a_missing_gpu(tmp_path):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    python.chmod(0o755)
    proc = run_script(str(python), tmp_path / "out")
    assert proc.returncode == 2
    assert f"{python} cannot import torch" in proc.stderr and "no CUDA GPU" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_relative_folder_is_taken_from_where_the_script_is_called(tmp_path):
    """The script changes to the repository; a folder given as ``out`` still lands under the caller's directory."""
    python = tmp_path / "python"  # a stand-in that reports a GPU and runs every step as a no-op
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    proc = subprocess.run(["bash", str(SCRIPT), "rel/out"], cwd=tmp_path, env=dict(os.environ, PYTHON=str(python)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rel" / "out" / "environment.txt").exists()
    assert not (SCRIPT.parents[1] / "rel").exists()


def test_a_relative_python_is_taken_from_where_the_script_is_called(tmp_path):
    """PYTHON=venv/bin/python names a file under the caller's directory, as the folder does, not under the
    repository the script changes to (it was then reported as a Python that cannot import torch)."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    python = tmp_path / "venv" / "bin" / "python"  # a stand-in that reports a GPU and runs every step as a no-op
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    proc = subprocess.run(["bash", str(SCRIPT), "out dir"], cwd=tmp_path, env=dict(os.environ, PYTHON="venv/bin/python"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out dir" / "environment.txt").exists()

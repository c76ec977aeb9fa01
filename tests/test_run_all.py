"""benchmarks/run_all.sh: which allocator each benchmark runs under, whatever the calling shell exported."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run_quick(tmp_path, environ):
    """run_all.sh --quick with a stand-in ``python`` that logs its arguments and its malloc settings."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$* | mmap=${MALLOC_MMAP_THRESHOLD_-} trim=${MALLOC_TRIM_THRESHOLD_-} '
                    'pad=${MALLOC_TOP_PAD_-} tunables=${GLIBC_TUNABLES-}" >> "$CALLS_LOG"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "CALLS_LOG": str(log), "TMPDIR": str(tmp_path),
           **environ}
    done = subprocess.run(["bash", str(SCRIPT), "--quick"], capture_output=True, text=True, env=env)
    return done, log.read_text().splitlines() if log.exists() else []


def test_a_shell_that_exported_the_readmes_allocator_tip_still_gets_glibcs_default_where_published(tmp_path):
    # the README tells Linux users to export both thresholds: RESULTS.md and TIME_TO_ACCURACY.md must not inherit them
    done, calls = _run_quick(tmp_path, {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296",
                                        "MALLOC_TOP_PAD_": "1"})
    assert done.returncode == 0, done.stderr
    default = [c for c in calls if "RESULTS.md" in c or "TIME_TO_ACCURACY.md" in c]
    kept = [c for c in calls if "KEPT_MEMORY" in c or "ROW_ORDER" in c]
    assert len(default) == 2 and len(kept) == 3
    for call in default:
        assert call.endswith("| mmap= trim= pad= tunables="), call
    for call in kept:
        assert "mmap=4294967296 trim=4294967296 pad= " in call or "--keep-freed-memory" in call, call


def test_glibc_malloc_tunables_in_the_calling_shell_are_refused_before_anything_runs(tmp_path):
    done, calls = _run_quick(tmp_path, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"})
    assert done.returncode != 0 and calls == []
    assert "GLIBC_TUNABLES" in done.stderr

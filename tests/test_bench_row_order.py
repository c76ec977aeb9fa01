"""benchmarks/bench_row_order.py: both orders hold the same noisy rows, laid out as Captum's and as noisegrad's."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_row_order")


def test_example_major_repeats_each_example_and_sample_major_is_the_same_rows_copy_by_copy():
    x = torch.arange(3.0).view(3, 1) * 100
    rows = bench.rows_in_both_orders(x, 1.0, torch.Generator().manual_seed(0))
    k, batch = bench.COPIES, 3
    example_major, sample_major = rows["example-major"], rows["sample-major"]
    for i in range(batch):
        for j in range(k):
            # Captum's row i*k + j and noisegrad's row j*batch + i are example i's copy j
            assert torch.equal(example_major[i * k + j], sample_major[j * batch + i])
            assert abs(float(example_major[i * k + j]) - 100 * i) < 10
    assert sample_major.is_contiguous()


def test_the_report_does_not_call_the_trim_threshold_alone_glibcs_default(monkeypatch):
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "4294967296")  # alone: every activation mapped afresh
    result = {"workload": "mlp", "rows": 8, "sigma": 0.1, "ms": {"example-major": 1.0, "sample-major": 1.0},
              "ratios": [1.0]}
    args = bench.argparse.Namespace(warmup=0, repeats=1)
    report = bench.report([result], args, "cmd")
    assert "glibc keeps freed memory: no, and not glibc's default either: MALLOC_TRIM_THRESHOLD_=4294967296" in report

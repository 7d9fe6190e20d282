"""`make gpu-check` (benchmarks/gpu_check.py) on a machine without a GPU: it says so and exits
with status 2, rather than reporting checks that did not run."""

import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: make gpu-check runs")
def test_gpu_check_without_a_gpu_says_so_and_fails(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "no CUDA GPU" in result.stderr
    assert not (tmp_path / "report.md").exists()

"""benchmarks/gpu_check.sh runs here without a GPU: it says so and fills the CPU column."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash to run benchmarks/gpu_check.sh")
def test_gpu_check_runs_on_cpu_only_hardware(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "RELUGEOM_QUIET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--quick"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if not torch.cuda.is_available():
        assert lines[0] == "no CUDA device: CPU column only"
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.split() and ln.split()[0] in
            ("train", "reinit", "measures", "regions_on_segment")}  # fmt: skip
    assert set(rows) == {"train", "reinit", "measures", "regions_on_segment"}
    for name, cells in rows.items():
        assert float(cells[2]) > 0, name  # samples (or segments) per second on the CPU
        if not torch.cuda.is_available():
            assert cells[3] == "NaN" and cells[4] == "NaN"

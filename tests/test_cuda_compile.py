"""Every csrc/cuda/*.cu compiles with nvcc for sm_80 and sm_90, even on machines without a GPU."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import nvcc_check  # noqa: E402

SOURCES = nvcc_check.cuda_sources()


@pytest.mark.skipif(nvcc_check.nvcc_path() is None, reason="nvcc not installed")
def test_cuda_sources_compile():
    assert SOURCES, "no CUDA sources found"
    results = nvcc_check.check(SOURCES, jobs=os.cpu_count() or 2)
    failed = {f: log for f, (rc, log) in results.items() if rc != 0}
    assert not failed, "\n".join(f"{f}:\n{log}" for f, log in failed.items())

import os
import zlib

import pytest
import torch

import fastpose  # noqa: F401  (loads the extension: every op registered)

CUDA = torch.cuda.is_available()

# Parametrise tests over devices with `@pytest.mark.parametrize("device", DEVICES)`: CUDA cases carry
# the `cuda` marker, so the default run (CPU machines) deselects them and `pytest -m cuda` runs them.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                              pytest.mark.skipif(not CUDA, reason="needs CUDA")])]

ISAS = ["portable", "avx2", "avx512"]


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Runs a test once per CPU kernel path (FASTPOSE_ISA, read on every call, so one process runs them
    all); paths this CPU lacks are skipped (forcing them would raise)."""
    name = request.param
    if name != "portable" and not fastpose.build_info()[f"{name}_supported"]:
        pytest.skip(f"this CPU has no {name} (FASTPOSE_ISA={name} would raise)")
    monkeypatch.setenv("FASTPOSE_ISA", name)
    assert fastpose._C.cpu_isa() == name
    return name


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # Fresh random inputs each test, reproducible per test name (crc32: str hash() is salted per run).
    # FASTPOSE_TEST_SEED varies every test's inputs (a stress run: for s in 1 2 3; do ...).
    salt = int(os.environ.get("FASTPOSE_TEST_SEED", "0"))
    torch.manual_seed(zlib.crc32(os.environ.get("PYTEST_CURRENT_TEST", "").encode()) ^ salt)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # a test may set its own count without restoring it


@pytest.fixture(autouse=True)
def _split_small_problems(monkeypatch):
    # The XNOR ops give each thread >= 16 M binary MACs, so the tests' small shapes would run on one
    # thread: split them anyway, so every multi-threaded test exercises the parallel paths.
    monkeypatch.setenv("FASTPOSE_MIN_THREAD_MACS", "1")

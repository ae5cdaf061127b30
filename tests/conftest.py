import os

import pytest
import torch

import fastpose  # noqa: F401  (loads the extension: every op registered)

CUDA = torch.cuda.is_available()

# Parametrise tests over devices with `@pytest.mark.parametrize("device", DEVICES)`: CUDA cases carry
# the `cuda` marker, so the default run (CPU machines) deselects them and `pytest -m cuda` runs them.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                              pytest.mark.skipif(not CUDA, reason="needs CUDA")])]


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # Fresh random inputs each test, reproducible per test name.
    torch.manual_seed(hash(os.environ.get("PYTEST_CURRENT_TEST", "")) % (2**31))
    yield

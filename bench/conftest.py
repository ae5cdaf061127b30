"""Benchmark session set-up: machine info (devices, measured copy bandwidths) in the JSON, a fresh
dynamo per case, the `gpu_quick` marker (the subset `make gpu-check` runs), and a minimal stand-in
for pytest-benchmark's `benchmark` fixture where that plugin is not installed (FASTPOSE_BENCH_JSON
names the JSON it writes, in pytest-benchmark's layout, for bench/report.py)."""
import json
import os
import platform
import time

import pytest
import torch

import fastpose

from _common import measure_copy_bandwidth

try:
    import pytest_benchmark  # noqa: F401
    HAVE_PYTEST_BENCHMARK = True
except ImportError:  # pragma: no cover - exercised by tests/test_gpu_check.py in a subprocess
    HAVE_PYTEST_BENCHMARK = False


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _machine_info(machine_info):
    info = fastpose.build_info()
    machine_info["fastpose"] = {k: str(v) for k, v in info.items()}
    machine_info["cpu_name"] = _cpu_name()
    quick = os.environ.get("FASTPOSE_BENCH_QUICK", "0") == "1"
    bw = {"cpu:1": measure_copy_bandwidth("cpu", threads=1, reps=3 if quick else 5)}
    if not quick:
        bw[f"cpu:{torch.get_num_threads()}"] = measure_copy_bandwidth("cpu", threads=torch.get_num_threads())
    if torch.cuda.is_available():
        machine_info["gpu_name"] = torch.cuda.get_device_name()
        bw["cuda"] = measure_copy_bandwidth("cuda", nbytes=1 << 30, reps=20)
    machine_info["copy_bandwidth_gbs"] = bw
    machine_info["FASTPOSE_ISA"] = os.environ.get("FASTPOSE_ISA", "auto")


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """Stores the devices and their measured copy bandwidths in the JSON for bench/report.py."""
    _machine_info(machine_info)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu_quick: the CUDA cases of make gpu-check (one per target of issue 12)")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # One torch.compile shared by many cases would hit dynamo's recompile limit (8) and then run
    # eager under the "compile" label: every case starts from an empty cache.
    torch._dynamo.reset()
    yield


if not HAVE_PYTEST_BENCHMARK:
    _RESULTS = []

    class _Benchmark:
        """The part of pytest-benchmark's fixture the suites use: extra_info, __call__, pedantic."""

        def __init__(self, name):
            self.name = name
            self.extra_info = {}
            self.times = []

        def pedantic(self, target, args=(), kwargs=None, rounds=1, iterations=1, warmup_rounds=0):
            kwargs = kwargs or {}
            for _ in range(warmup_rounds):
                target(*args, **kwargs)
            result = None
            for _ in range(rounds):
                t0 = time.perf_counter()
                for _ in range(iterations):
                    result = target(*args, **kwargs)
                self.times.append((time.perf_counter() - t0) / iterations)
            return result

        def __call__(self, target, *args, **kwargs):
            return self.pedantic(target, args, kwargs, rounds=5)

    @pytest.fixture
    def benchmark(request):
        b = _Benchmark(request.node.name)
        yield b
        if b.times:
            ts = sorted(b.times)
            _RESULTS.append({"name": b.name, "fullname": request.node.nodeid, "extra_info": b.extra_info,
                             "stats": {"median": ts[len(ts) // 2], "min": ts[0], "max": ts[-1],
                                       "mean": sum(ts) / len(ts), "rounds": len(ts)}})

    def pytest_sessionfinish(session, exitstatus):
        path = os.environ.get("FASTPOSE_BENCH_JSON")
        if not path:
            return
        machine = {}
        try:
            _machine_info(machine)
        except Exception as e:  # the results matter more than the machine info
            machine["error"] = repr(e)
        with open(path, "w") as fh:
            json.dump({"machine_info": machine, "benchmarks": _RESULTS, "stand_in": "bench/conftest.py"}, fh, indent=1)

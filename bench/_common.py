"""Shared helpers of the benchmark suites (bench/bench_*.py).

Every benchmark tags itself with `tag(benchmark, ...)`: bench/report.py groups the results by
(op, case, dtype, device, threads), puts the implementations side by side, and reports the ratio
against the PyTorch eager and torch.compile baselines and the fraction of the hardware limit
(`bytes` moved over the measured copy bandwidth, or `macs` over a named peak).
"""
import contextlib
import time

import torch


def tag(benchmark, *, op, impl, case, dtype, device, threads=None, bytes=None, macs=None, note=None):
    """Attach the metadata report.py needs. impl: "fastpose", "eager", "compile", or another baseline."""
    info = benchmark.extra_info
    info.update(op=op, impl=impl, case=str(case), dtype=str(dtype).replace("torch.", ""),
                device=str(device), threads=threads if threads is not None else torch.get_num_threads())
    if bytes is not None:
        info["bytes"] = int(bytes)
    if macs is not None:
        info["macs"] = int(macs)
    if note:
        info["note"] = note


@contextlib.contextmanager
def num_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run(benchmark, fn, device, rounds=None, warmup=2):
    """Benchmark fn(); on CUDA, synchronise so the host clock measures finished work."""
    for _ in range(warmup):
        fn()
    sync(device)
    if str(device).startswith("cuda"):
        def timed():
            fn()
            torch.cuda.synchronize()
        target = timed
    else:
        target = fn
    if rounds:
        return benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=0)
    return benchmark(target)


def measure_copy_bandwidth(device, threads=None, nbytes=256 << 20, reps=5):
    """Copy bandwidth in GB/s counting bytes read plus bytes written, into a preallocated output."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    ctx = num_threads(threads) if threads else contextlib.nullcontext()
    best = float("inf")
    with ctx:
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            dst.copy_(src)
            sync(device)
            best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


CPU_THREADS = sorted({1, torch.get_num_threads()})


def implementations(fastpose_fn, reference_fn):
    """name -> callable for "fastpose", "eager" (the reference) and "compile" (torch.compile of the
    reference, compiled on first use)."""
    table = {"fastpose": fastpose_fn, "eager": reference_fn}

    def get(name):
        if name not in table:
            table[name] = torch.compile(reference_fn, dynamic=False)
        return table[name]

    return get

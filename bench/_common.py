"""Shared helpers of the benchmark suites (bench/bench_*.py).

Every benchmark tags itself with `tag(benchmark, ...)`: bench/report.py groups the results by
(op, case, dtype, device, threads), puts the implementations side by side, and reports the ratio
against the PyTorch eager and torch.compile baselines and the fraction of the hardware limit
(`bytes` moved over the measured copy bandwidth, or `macs` over a named peak).

CUDA cases are timed with CUDA events, many calls per event pair (no host sync per call), over
rotated input sets that together exceed twice the L2 cache (`rotation`), so that "% of copy
bandwidth" is DRAM bandwidth, not L2; the per-call device time goes into extra_info["device_time_s"]
(bench/report.py prefers it over pytest-benchmark's host-clock statistics).
FASTPOSE_BENCH_QUICK=1 (make gpu-check) takes fewer rounds.
"""
import contextlib
import math
import os
import statistics
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


QUICK = os.environ.get("FASTPOSE_BENCH_QUICK", "0") == "1"


def l2_bytes(device="cuda"):
    """The GPU's L2 size (50 MB on an H100/H200 when the property is missing)."""
    props = torch.cuda.get_device_properties(torch.device(device))
    return int(getattr(props, "L2_cache_size", 0) or (50 << 20))


def rotation(make, nbytes, device, max_sets=64):
    """Input sets for a CUDA benchmark: make() called until the sets together exceed twice the L2,
    so each call reads its inputs from DRAM. nbytes: the bytes one set holds. CPU: one set."""
    if not str(device).startswith("cuda"):
        return [make()]
    n = max(1, min(max_sets, math.ceil(2 * l2_bytes(device) / max(int(nbytes), 1))))
    return [make() for _ in range(n)]


def _as_args(s):
    return s if isinstance(s, tuple) else (s,)


def run(benchmark, fn, device, rounds=None, warmup=2, sets=None):
    """Benchmark fn() (fn(*set) for each of `sets` in turn when sets is given).

    CPU: pytest-benchmark's clock. CUDA: CUDA events around `calls` consecutive calls rotating over
    the sets (calls chosen so that one round lasts about 2 ms or covers every set), median over rounds.
    """
    sets = [_as_args(s) for s in sets] if sets is not None else [()]
    if str(device).startswith("cuda"):
        return _run_cuda(benchmark, fn, sets, rounds, warmup)
    for i in range(warmup):
        fn(*sets[i % len(sets)])
    if len(sets) == 1 and not sets[0]:
        target = fn  # no wrapper on the CPU's common path: microsecond cases stay as they were
    else:
        counter = [0]

        def target():
            counter[0] += 1
            return fn(*sets[counter[0] % len(sets)])
    if rounds:
        return benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=0)
    return benchmark(target)


def _run_cuda(benchmark, fn, sets, rounds, warmup):
    n = len(sets)
    for i in range(max(warmup, 1) + n):  # every set once: first-touch and autotuning stay out
        fn(*sets[i % n])
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn(*sets[0])
    end.record()
    end.synchronize()
    one = max(start.elapsed_time(end) * 1e-3, 1e-6)
    calls = max(n, min(200, math.ceil(2e-3 / one)))
    calls = math.ceil(calls / n) * n
    per_call = []

    def batch():
        start.record()
        for i in range(calls):
            fn(*sets[i % n])
        end.record()
        end.synchronize()
        per_call.append(start.elapsed_time(end) * 1e-3 / calls)
    rounds = rounds or (10 if QUICK else 30)
    result = benchmark.pedantic(batch, rounds=rounds, iterations=1, warmup_rounds=0)
    info = benchmark.extra_info
    info["device_time_s"] = statistics.median(per_call)
    info["device_time_min_s"] = min(per_call)
    info["calls_per_round"] = calls
    info["input_sets"] = n
    return result


def measure_copy_bandwidth(device, threads=None, nbytes=256 << 20, reps=5):
    """Copy bandwidth in GB/s counting bytes read plus bytes written, into a preallocated output.
    CUDA: CUDA events, a buffer far larger than the L2, best of reps."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    if str(device).startswith("cuda"):
        dst.copy_(src)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(reps):
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) * 1e-3)
        return 2 * nbytes / best / 1e9
    ctx = num_threads(threads) if threads else contextlib.nullcontext()
    with ctx:
        for _ in range(reps):
            t0 = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


CPU_THREADS = sorted({1, torch.get_num_threads()})


def interleaved(benchmark, variants, rounds=100, round_s=4e-3):
    """Time several variants in alternating rounds; store each one's fastest round in extra_info.

    variants: [(label, fn, threads)]. Rows of different variants run minutes apart, and on a shared host
    the machine's speed drifts over minutes, so the ratio of two rows mixes the variants' difference
    with the host's weather. Here every round runs each variant in turn (the order reverses every
    round): untimed calls for about round_s, then `calls` timed consecutive calls, calls set per
    variant so that they last about round_s; each variant keeps its fastest round, which all had the
    same chance to hit.
    extra_info["interleaved"]: {"labels", "threads", "min_s" (per call), "calls_per_round", "rounds"}.
    """
    labels = [v[0] for v in variants]
    old = torch.get_num_threads()
    try:
        calls = []
        for _, fn, threads in variants:
            torch.set_num_threads(threads)
            for _ in range(2):
                fn()
            t0 = time.perf_counter()
            fn()
            calls.append(max(1, min(1000, int(round_s / max(time.perf_counter() - t0, 1e-7)))))
        best = [float("inf")] * len(variants)
        order = list(range(len(variants)))

        def one_round():
            nonlocal order
            for i in order:
                _, fn, threads = variants[i]
                torch.set_num_threads(threads)
                # Untimed calls first, for about as long as the timed ones: after another variant, the
                # first few ms of calls run slower here (the working set back into L2 / L3, the pool's
                # wake-up after a switch of thread count), which would weigh on short calls the most.
                warm = time.perf_counter() + round_s
                fn()
                while time.perf_counter() < warm:
                    fn()
                start = time.perf_counter()
                for _ in range(calls[i]):
                    fn()
                best[i] = min(best[i], (time.perf_counter() - start) / calls[i])
            order = order[::-1]

        benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(old)
    benchmark.extra_info["interleaved"] = {"labels": labels, "threads": [v[2] for v in variants], "min_s": best,
                                           "calls_per_round": calls, "rounds": rounds}
    return dict(zip(labels, best))


def thread_scaling(benchmark, fn, threads=(1, 2), rounds=100, round_s=4e-3):
    """fn's speed-up from threads[0] to threads[-1], the counts timed in alternating rounds (interleaved).
    extra_info["scaling"]: {"threads", "min_s" (per call, per count), "speedup" (first / last)}."""
    threads = list(threads)
    best = interleaved(benchmark, [(f"{t} threads", fn, t) for t in threads], rounds, round_s)
    info = benchmark.extra_info.pop("interleaved")
    benchmark.extra_info["scaling"] = {"threads": threads, "min_s": info["min_s"],
                                       "speedup": info["min_s"][0] / info["min_s"][-1],
                                       "calls_per_round": max(info["calls_per_round"]), "rounds": rounds}
    return best


def implementations(fastpose_fn, reference_fn):
    """name -> callable for "fastpose", "eager" (the reference) and "compile" (torch.compile of the
    reference, compiled on first use). bench/conftest.py resets dynamo before every case, so each
    case compiles for its own shapes instead of sharing one compile's recompile budget (8)."""
    table = {"fastpose": fastpose_fn, "eager": reference_fn}

    def get(name):
        if name not in table:
            table[name] = torch.compile(reference_fn, dynamic=False)
        return table[name]

    return get

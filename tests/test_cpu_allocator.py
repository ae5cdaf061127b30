"""The opt-in caching CPU allocator (fastpose.enable_cpu_caching_allocator).

It replaces c10's CPU allocator for the whole process and its counters are process-wide, so every case
runs in a subprocess of its own. (The in-process packed HPM tests install it through their inference
scopes, which cache only inside the scope.)
"""
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


PRELUDE = """
import torch, fastpose
from fastpose import cpu_caching_allocator_stats as stats
MB = 1 << 20
"""


def _run(code, env=None, expect_ok=True):
    e = dict(os.environ)
    e.pop("FASTPOSE_CPU_CACHING_ALLOCATOR", None)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=ROOT, env=e, capture_output=True,
                       text=True, timeout=600)
    if expect_ok:
        assert p.returncode == 0, f"rc {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p




def test_reuse_small_blocks_and_limits():
    _run("""
    fastpose.enable_cpu_caching_allocator()
    s0 = stats()
    assert s0["enabled"] and s0["in_use_bytes"] == 0
    for _ in range(10):
        x = torch.empty(4 * MB, dtype=torch.uint8)   # one size class, freed at once: reused
        x.fill_(7)
        assert int(x[123]) == 7
        del x
    s = stats()
    assert s["misses"] == 1 and s["hits"] == 9, s
    assert s["in_use_bytes"] == 0 and s["cached_bytes"] == 4 * MB, s
    small = torch.empty(1000)                          # below min_block_bytes: the previous allocator's
    assert stats()["in_use_bytes"] == 0
    y = torch.empty(3 * MB + 5, dtype=torch.uint8)     # rounded to its class (at most 12.5% more)
    assert 3 * MB + 5 <= stats()["in_use_bytes"] <= int((3 * MB + 5) * 1.125) + 4096
    del y
    fastpose.empty_cpu_cache()
    assert stats()["cached_bytes"] == 0
    fastpose.enable_cpu_caching_allocator(max_cached_bytes=1 * MB)   # new limit: 4 MB blocks are not kept
    z = torch.empty(4 * MB, dtype=torch.uint8); del z
    assert stats()["cached_bytes"] == 0
    """)


def test_disable_keeps_live_tensors_valid():
    _run("""
    fastpose.enable_cpu_caching_allocator()
    keep = torch.arange(2 * MB, dtype=torch.float32)
    fastpose.disable_cpu_caching_allocator()
    s = stats()
    assert not s["enabled"] and s["in_use_bytes"] == 8 * MB and s["cached_bytes"] == 0, s
    keep.mul_(2)
    assert float(keep[-1]) == 2 * (2 * MB - 1)
    del keep
    s = stats()
    assert s["in_use_bytes"] == 0 and s["cached_bytes"] == 0, s   # freed to the system, not cached
    x = torch.empty(4 * MB, dtype=torch.uint8); del x
    assert stats()["misses"] == 1                                  # not ours any more
    """)


def test_results_bit_identical_with_and_without():
    code = """
    import sys
    import fastpose.nn as fnn
    from fastpose import models
    torch.manual_seed(0)
    m = fnn.pack(models.create("binary_hpm_hourglass", stacks=1, num_joints=4).eval())
    x = torch.randn(1, 3, 64, 64)
    f = torch.nn.Conv2d(3, 64, 7, 2, 3).eval()
    with torch.no_grad():
        outs = [m(x)[-1] for _ in range(3)] + [f(x)]
    torch.save([o.clone() for o in outs], sys.argv[1] if len(sys.argv) > 1 else "/dev/null")
    print(stats())
    """
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for env in ({}, {"FASTPOSE_CPU_CACHING_ALLOCATOR": "1"}):
            path = os.path.join(d, f"out{len(paths)}.pt")
            e = dict(os.environ)
            e.pop("FASTPOSE_CPU_CACHING_ALLOCATOR", None)
            e.update(env)
            p = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code), path], cwd=ROOT, env=e,
                               capture_output=True, text=True, timeout=600)
            assert p.returncode == 0, p.stderr
            paths.append(path)
        assert "'enabled': True" in p.stdout and "'hits': 0" not in p.stdout, p.stdout
        import torch

        a, b = torch.load(paths[0]), torch.load(paths[1])
        for u, v in zip(a, b):
            assert torch.equal(u, v)


def test_threads_and_fork():
    _run("""
    import os, threading
    fastpose.enable_cpu_caching_allocator()
    errs = []
    def work(k):
        try:
            for i in range(200):
                t = torch.full(((i % 5 + 1) * 100_000,), float(k))
                assert float(t.sum()) == float(k) * t.numel()
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]
    assert not errs, errs
    assert stats()["in_use_bytes"] == 0
    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)  # as DataLoader workers do: no OpenMP team in a forked child
        x = torch.ones(2 * MB); y = x * 3
        os._exit(0 if float(y.sum()) == 6 * MB else 1)
    _, st = os.waitpid(pid, 0)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
    """)


def test_context_manager_restores_state():
    _run("""
    with fastpose.cpu_caching_allocator(max_cached_bytes=64 * MB):
        assert stats()["enabled"] and stats()["max_cached_bytes"] == 64 * MB
    assert not stats()["enabled"]
    fastpose.enable_cpu_caching_allocator(max_cached_bytes=32 * MB)
    with fastpose.cpu_caching_allocator(max_cached_bytes=64 * MB):
        pass
    assert stats()["enabled"] and stats()["max_cached_bytes"] == 32 * MB
    """)


def test_env_var_and_bad_arguments():
    _run("assert stats()['enabled']\n", env={"FASTPOSE_CPU_CACHING_ALLOCATOR": "1"})
    _run("assert not stats()['enabled']\n", env={"FASTPOSE_CPU_CACHING_ALLOCATOR": "0"})
    p = _run("import fastpose", env={"FASTPOSE_CPU_CACHING_ALLOCATOR": "yes"}, expect_ok=False)
    assert p.returncode != 0 and "FASTPOSE_CPU_CACHING_ALLOCATOR must be 0 or 1" in p.stderr
    _run("""
    import pytest
    for bad, exc, msg in [((-1,), ValueError, "max_cached_bytes"), ((1.5,), TypeError, "max_cached_bytes"),
                          ((True,), TypeError, "max_cached_bytes"), ((10, 0), ValueError, "min_block_bytes")]:
        with pytest.raises(exc, match=msg):
            fastpose.enable_cpu_caching_allocator(*bad)
    assert not stats()["enabled"]
    """)


def test_inference_scope_caches_only_inside():
    _run("""
    from fastpose import inference_scope
    assert not stats()["installed"]
    for _ in range(5):                                 # outside a scope: not this allocator's
        x = torch.empty(4 * MB, dtype=torch.uint8); del x
    assert stats()["misses"] == 0 and not stats()["installed"]
    for _ in range(5):
        with inference_scope():
            x = torch.empty(4 * MB, dtype=torch.uint8)
            x.fill_(3)
            assert int(x[-1]) == 3
            del x
    s = stats()
    assert s["installed"] and not s["enabled"], s
    assert s["misses"] == 1 and s["hits"] == 4 and s["cached_bytes"] == 4 * MB, s
    for _ in range(3):                                 # installed, but outside a scope: still not cached
        y = torch.empty(4 * MB, dtype=torch.uint8); del y
    assert stats()["misses"] == 1 and stats()["hits"] == 4
    with inference_scope():                            # a block made inside outlives the scope
        with inference_scope(torch.device("cpu")):     # nesting
            keep = torch.arange(1 * MB, dtype=torch.float32)
        z = torch.empty(2 * MB, dtype=torch.uint8); del z   # still inside the outer scope
    assert stats()["in_use_bytes"] >= 4 * MB
    keep.mul_(2)
    assert float(keep[-1]) == 2 * (MB - 1)
    del keep
    s = stats()
    assert s["in_use_bytes"] == 0 and s["cached_bytes"] == 6 * MB, s
    with inference_scope("meta"):                      # not a CPU scope: nothing cached
        w = torch.empty(8 * MB, dtype=torch.uint8); del w
    assert stats()["cached_bytes"] == 6 * MB
    fastpose.disable_cpu_caching_allocator()           # uninstalls and frees the cache
    s = stats()
    assert not s["installed"] and s["cached_bytes"] == 0, s
    with inference_scope():                            # a later scope installs it again
        v = torch.empty(4 * MB, dtype=torch.uint8); del v
    assert stats()["installed"] and stats()["cached_bytes"] == 4 * MB
    fastpose.empty_cpu_cache()
    assert stats()["cached_bytes"] == 0 and stats()["installed"]
    """)


def test_inference_scope_threads():
    _run("""
    import threading
    from fastpose import inference_scope
    errs = []
    def work(k, scoped):
        try:
            for i in range(100):
                if scoped:
                    with inference_scope():
                        t = torch.full(((i % 4 + 1) * 100_000,), float(k))
                else:
                    t = torch.full(((i % 4 + 1) * 100_000,), float(k))
                assert float(t.sum()) == float(k) * t.numel()
                del t
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ts = [threading.Thread(target=work, args=(k, k % 2 == 0)) for k in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]
    assert not errs, errs
    s = stats()
    assert s["in_use_bytes"] == 0 and s["hits"] > 0, s
    assert s["hits"] + s["misses"] == 200, s          # only the two scoped threads' blocks
    """)


def test_inference_cache_switch_and_env():
    _run("""
    from fastpose import inference_scope, set_inference_cache
    import pytest
    set_inference_cache(False)
    with inference_scope():
        x = torch.empty(4 * MB, dtype=torch.uint8); del x
    assert not stats()["installed"] and stats()["misses"] == 0
    set_inference_cache(True)
    with inference_scope():
        x = torch.empty(4 * MB, dtype=torch.uint8); del x
    assert stats()["installed"] and stats()["misses"] == 1 and stats()["cached_bytes"] == 4 * MB
    with inference_scope("cpu:0"):
        keep = torch.empty(4 * MB, dtype=torch.uint8)    # a hit: the string form of the device works
    assert stats()["hits"] == 1
    set_inference_cache(False)                           # empties the cache; later frees are not kept
    assert stats()["cached_bytes"] == 0
    del keep
    assert stats()["cached_bytes"] == 0 and stats()["in_use_bytes"] == 0
    set_inference_cache(True)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        set_inference_cache(1)
    with pytest.raises(RuntimeError):                    # depth restored when the body raises
        with inference_scope():
            raise RuntimeError("boom")
    m0 = stats()["misses"]
    y = torch.empty(4 * MB, dtype=torch.uint8); del y
    assert stats()["misses"] == m0
    """)
    _run("""
    from fastpose import inference_scope
    with inference_scope():
        x = torch.empty(4 * MB, dtype=torch.uint8); del x
    assert not stats()["installed"] and stats()["misses"] == 0
    """, env={"FASTPOSE_INFERENCE_CACHE": "0"})
    p = _run("import fastpose", env={"FASTPOSE_INFERENCE_CACHE": "on"}, expect_ok=False)
    assert p.returncode != 0 and "FASTPOSE_INFERENCE_CACHE must be 0 or 1" in p.stderr


def test_packed_hpm_forward_reuses_its_blocks():
    # The packed binary HPM forward runs in an inference scope: after the first forward every
    # activation block is a hit, and the results do not depend on the cache.
    _run("""
    import fastpose.nn as fnn
    from fastpose import models, set_inference_cache
    torch.manual_seed(0)
    m = fnn.pack(models.create("binary_hpm_hourglass", stacks=1, num_joints=4).eval())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        set_inference_cache(False)
        ref = m(x)[-1].clone()
        assert stats()["misses"] == 0
        set_inference_cache(True)
        first = m(x)[-1].clone()
        s1 = stats()
        again = m(x)[-1].clone()
        s2 = stats()
    assert torch.equal(ref, first) and torch.equal(ref, again)
    assert s1["misses"] > 0 and not s1["enabled"], s1
    assert s2["misses"] == s1["misses"] and s2["hits"] > s1["hits"], (s1, s2)
    """)


def test_cache_evicts_least_recently_used_classes_and_disable_resets_limits():
    _run("""
    from fastpose import inference_scope
    fastpose.enable_cpu_caching_allocator(max_cached_bytes=16 * MB)
    for mb in (6, 5, 4):
        t = torch.empty(mb * MB, dtype=torch.uint8); del t
    assert stats()["cached_bytes"] == 15 * MB
    t = torch.empty(3 * MB, dtype=torch.uint8); del t    # 18 MB would pass the limit: the 6 MB class goes
    assert stats()["cached_bytes"] == 12 * MB, stats()
    m0, h0 = stats()["misses"], stats()["hits"]
    a = torch.empty(6 * MB, dtype=torch.uint8)           # evicted: a miss
    b = torch.empty(5 * MB, dtype=torch.uint8)           # still cached: a hit
    assert stats()["misses"] == m0 + 1 and stats()["hits"] == h0 + 1
    del a, b
    assert stats()["cached_bytes"] <= 16 * MB
    big = torch.empty(20 * MB, dtype=torch.uint8); del big   # larger than the limit: never cached
    assert stats()["cached_bytes"] <= 16 * MB
    fastpose.disable_cpu_caching_allocator()
    s = stats()
    assert s["max_cached_bytes"] == 512 * MB and s["min_block_bytes"] == 256 << 10, s
    with inference_scope():
        for _ in range(2):
            t = torch.empty(20 * MB, dtype=torch.uint8); del t
    assert stats()["cached_bytes"] == 20 * MB
    """)

"""The opt-in caching CPU allocator (fastpose.enable_cpu_caching_allocator).

It replaces c10's CPU allocator for the whole process, so every case runs in a subprocess of its own:
the rest of the suite never sees it.
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

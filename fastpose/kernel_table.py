"""A short kernel benchmark table (fastpose against PyTorch eager) for `make demo` and users.

`python -m fastpose bench-table` prints it; `fastpose.kernel_table.rows()` returns it as data.
Each entry times the fused op and its eager reference on this machine, same inputs, outputs
allocated by each call; medians of a few runs, so it is a quick look, not bench/'s full report.
"""
import time

import torch


def _median_ms(fn, reps, warmup=3):
    for _ in range(warmup):  # first calls pay allocator growth and page faults of fresh outputs
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


def _cases():
    """(name, shape text, fastpose fn, eager fn) for every op that exists in this build."""
    from . import ops
    from .ops.softmax_dsnt import softmax_dsnt_reference

    x = torch.randn(32, 16, 64, 64)
    xg = x.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    g = torch.randn(32, 16, 2)

    def fwd_bwd(f, t):
        def step():
            t.grad = None
            f(t).backward(g)
        return step

    yield ("softmax_dsnt fwd", "(32,16,64,64) f32", lambda: ops.softmax_dsnt(x), lambda: softmax_dsnt_reference(x))
    yield ("softmax_dsnt fwd+bwd", "(32,16,64,64) f32", fwd_bwd(ops.softmax_dsnt, xg), fwd_bwd(softmax_dsnt_reference, xr))
    from .ops.hr_fuse import hr_fuse_reference
    from .ops.upsample_add import upsample_add_reference

    low, skip = torch.randn(8, 256, 32, 32), torch.randn(8, 256, 64, 64)
    yield ("upsample_add", "(8,256,64,64) f32", lambda: ops.upsample_add(low, skip),
           lambda: upsample_add_reference(low, skip))
    xs = [torch.randn(32, 32, 64 >> k, 48 >> k) for k in range(4)]
    yield ("hr_fuse", "HRNet-W32 final, bs 32", lambda: ops.hr_fuse(xs), lambda: hr_fuse_reference(xs))
    from .ops.xnor_conv import xnor_conv2d_reference

    # The binary hourglass's 3x3 layer: eager is sign() then a float conv2d (oneDNN), bit-identical output.
    xb, wb = torch.randn(1, 256, 64, 64), torch.randn(128, 256, 3, 3)
    yield ("xnor_conv2d 3x3", "(1,256->128,64,64) f32", lambda: ops.xnor_conv2d(xb, wb, padding=1),
           lambda: xnor_conv2d_reference(xb, wb, padding=1))


def rows(reps=10, threads=1):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = []
        for name, shape, fast, eager in _cases():
            tf, te = _median_ms(fast, reps), _median_ms(eager, reps)
            out.append(dict(op=name, case=shape, fastpose_ms=tf, eager_ms=te, speedup=te / tf))
        return out
    finally:
        torch.set_num_threads(old)


def render(table, threads=1):
    lines = [f"| op ({threads} thread{'s' if threads > 1 else ''}) | case | fastpose ms | eager ms | speed-up |",
             "|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['op']} | {r['case']} | {r['fastpose_ms']:.3f} | {r['eager_ms']:.3f} | {r['speedup']:.1f}x |")
    return "\n".join(lines)


def main(reps=10):
    for t in sorted({1, torch.get_num_threads()}):
        print(render(rows(reps=reps, threads=t), threads=t))
        print()
    return 0

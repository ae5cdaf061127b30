"""fastpose.ops.xnor_conv2d: bit-exact against sign-then-conv2d, every ISA path, STE gradients."""
import random

import pytest
import torch
import torch.nn.functional as F

import fastpose
from fastpose.ops import binarize, binarize_pack, xnor_alpha, xnor_conv2d, xnor_conv2d_packed, xnor_conv2d_reference

from conftest import DEVICES


def literal_reference(x, w, bias, stride, padding, dilation, scale, pad_value, alpha=None):
    """The issue's definition, written out: F.conv2d(binarize(x), binarize(w)) * alpha + bias in float32
    (float64 for float64 x), -1 borders by explicit padding. Computed on the CPU (exact integer dots);
    alpha may be given (computed on another device, whose mean may round differently)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, w, bias = x.cpu(), w.cpu(), bias.cpu() if bias is not None else None
    xb, wb = binarize(x.to(acc)), binarize(w.to(acc))
    if pad_value == -1:
        xb = F.pad(xb, (padding, padding, padding, padding), value=-1.0)
        padding = 0
    dot = F.conv2d(xb, wb, stride=stride, padding=padding, dilation=dilation)
    out = dot
    if scale:
        if alpha is None:
            alpha = w.contiguous().to(acc).abs().mean((1, 2, 3))
        out = out * alpha.cpu().view(1, -1, 1, 1)
    if bias is not None:
        out = out + bias.to(acc).view(1, -1, 1, 1)
    return out.to(x.dtype)


def random_case(rng):
    k = rng.choice([1, 3, 5, 7])
    cin = rng.choice([1, 3, 31, 33, 64, 65, 100, 128, 257])
    cout = rng.choice([1, 4, 5, 9, 16])
    s, d = rng.choice([1, 1, 2, 3]), rng.choice([1, 1, 2])
    p = rng.choice([0, 1, k // 2, k])
    ext = d * (k - 1) + 1
    h = rng.randint(max(1, ext - 2 * p), max(1, ext - 2 * p) + 9)
    w = rng.randint(max(1, ext - 2 * p), max(1, ext - 2 * p) + 9)
    n = rng.choice([0, 1, 2])
    return n, cin, cout, h, w, k, s, p, d


CASES = [random_case(random.Random(i)) for i in range(24)] + [
    (1, 256, 8, 16, 16, 3, 1, 1, 1), (2, 64, 8, 8, 8, 3, 1, 1, 1), (1, 33, 6, 1, 1, 1, 1, 0, 1),
    (1, 3, 4, 1, 1, 3, 1, 1, 1), (1, 65, 5, 2, 3, 7, 1, 3, 1), (0, 31, 4, 5, 5, 3, 1, 1, 1),
    (1, 128, 12, 9, 17, 3, 2, 1, 1), (1, 100, 7, 12, 10, 3, 1, 2, 2), (2, 257, 3, 6, 7, 5, 2, 2, 1)]


@pytest.mark.parametrize("case", CASES, ids=[",".join(map(str, c)) for c in CASES])
@pytest.mark.parametrize("pad_value", [0, -1])
def test_forward_exact(isa, case, pad_value):
    n, cin, cout, h, w, k, s, p, d = case
    x = torch.randn(n, cin, h, w)
    wt = torch.randn(cout, cin, k, k)
    b = torch.randn(cout)
    got = xnor_conv2d(x, wt, b, s, p, d, True, pad_value)
    ref = literal_reference(x, wt, b, s, p, d, True, pad_value)
    assert got.shape == ref.shape
    assert torch.equal(got, ref)
    assert torch.equal(got, xnor_conv2d_reference(x, wt, b, s, p, d, True, pad_value))


# The kernels' layout edge cases (pixels as vector lanes, K = taps x channel words, zero-filled
# out-of-image columns with per-pixel corrections): every channel-word tail, lane tails (Wo not a
# multiple of 8, Wo < 8), maps narrower than the kernel, strides, dilations and paddings.
LAYOUT_CASES = [
    # (n, cin, cout, h, w, k, s, p, d)
    (1, 1, 5, 6, 9, 3, 1, 1, 1), (1, 3, 4, 7, 7, 5, 1, 2, 1), (2, 63, 6, 5, 17, 3, 1, 1, 1),
    (1, 64, 9, 4, 16, 3, 1, 1, 1), (1, 65, 4, 5, 11, 1, 1, 0, 1), (1, 127, 5, 6, 9, 5, 2, 2, 1),
    (1, 200, 7, 4, 19, 3, 1, 1, 2), (1, 256, 8, 5, 33, 3, 1, 1, 1), (1, 300, 3, 3, 8, 3, 2, 0, 1),
    (1, 64, 4, 3, 2, 5, 1, 2, 1), (1, 65, 3, 2, 1, 3, 1, 1, 1), (1, 128, 4, 1, 1, 3, 1, 2, 1),
    (2, 3, 5, 9, 3, 3, 2, 1, 2), (1, 256, 6, 4, 4, 3, 1, 1, 1), (1, 33, 17, 6, 25, 5, 1, 2, 1),
    (1, 96, 5, 8, 12, 3, 2, 2, 2), (1, 1, 3, 1, 5, 1, 2, 0, 1), (1, 130, 12, 3, 41, 3, 1, 0, 1),
    (1, 65, 3, 2, 3, 1, 1, 1, 1), (0, 64, 4, 5, 5, 3, 1, 1, 1),  # rows with no valid tap; empty batch
    # AVX2 blocks (32-pixel and 16-pixel groups, half-full last groups, 4- and 8-channel remainders)
    (1, 64, 13, 3, 40, 3, 1, 1, 1), (1, 65, 9, 3, 56, 3, 1, 1, 1), (1, 1, 13, 2, 72, 1, 2, 0, 1),
    (1, 130, 7, 3, 88, 3, 2, 1, 1), (1, 31, 11, 2, 24, 1, 1, 0, 1),
    # 81 taps: past the one-pass weight pack's 49 (the general pack instead)
    (1, 70, 4, 11, 12, 9, 1, 4, 1),
]


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[",".join(map(str, c)) for c in LAYOUT_CASES])
@pytest.mark.parametrize("pad_value", [0, -1])
def test_layout_edges_exact(isa, case, pad_value):
    n, cin, cout, h, w, k, s, p, d = case
    x, wt, b = torch.randn(n, cin, h, w), torch.randn(cout, cin, k, k), torch.randn(cout)
    got = xnor_conv2d(x, wt, b, s, p, d, True, pad_value)
    assert torch.equal(got, literal_reference(x, wt, b, s, p, d, True, pad_value))
    # packed operands, no epilogue: the raw integer dot products
    dots = xnor_conv2d_packed(binarize_pack(x), binarize_pack(wt), None, None, cin, s, p, d, pad_value)
    assert torch.equal(dots, literal_reference(x, wt, None, s, p, d, False, pad_value))


# Row pairs (AVX2, up to 16 output columns: two rows as one 32-pixel GEMM block, or two 8-column rows as
# one 16-pixel group): odd and even counts of top
# border rows (padding 0, 1, 2; dilation 2), stride 2, odd Ho, a single row, 4-channel remainders, two
# threads, float64, channels_last and a folded BN; on the other paths the same cases run row by row.
ROW_PAIR_CASES = [
    # (n, cin, cout, h, w, k, s, p, d)
    (1, 130, 9, 9, 16, 3, 1, 1, 1), (2, 64, 13, 8, 14, 3, 1, 0, 1), (1, 96, 7, 12, 31, 3, 2, 1, 1),
    (1, 40, 5, 10, 13, 3, 1, 2, 2), (1, 200, 6, 5, 9, 1, 1, 0, 1), (1, 65, 4, 1, 12, 3, 1, 1, 1),
    (1, 257, 11, 7, 15, 5, 1, 2, 1), (1, 70, 9, 9, 8, 3, 1, 1, 1), (2, 33, 13, 6, 5, 3, 1, 1, 1),
    (1, 128, 7, 9, 7, 3, 2, 1, 1),
]


@pytest.mark.parametrize("case", ROW_PAIR_CASES, ids=[",".join(map(str, c)) for c in ROW_PAIR_CASES])
@pytest.mark.parametrize("pad_value", [0, -1])
@pytest.mark.parametrize("threads", [1, 2])
def test_row_pairs_exact(isa, case, pad_value, threads):
    n, cin, cout, h, w, k, s, p, d = case
    x, wt, b = torch.randn(n, cin, h, w), torch.randn(cout, cin, k, k), torch.randn(cout)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref = literal_reference(x, wt, b, s, p, d, True, pad_value)
        assert torch.equal(xnor_conv2d(x, wt, b, s, p, d, True, pad_value), ref)
        got = xnor_conv2d(x.contiguous(memory_format=torch.channels_last), wt, b, s, p, d, True, pad_value)
        assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(got, ref)
        x64, w64, b64 = x.double(), wt.double(), b.double()
        assert torch.equal(xnor_conv2d(x64, w64, b64, s, p, d, True, pad_value),
                           literal_reference(x64, w64, b64, s, p, d, True, pad_value))
        sc, sh = torch.randn(cout), torch.randn(cout)
        wp, alpha = binarize_pack(wt), xnor_alpha(wt)
        bn_ref = (ref * sc.view(1, -1, 1, 1)) + sh.view(1, -1, 1, 1)
        for cl in (False, True):
            got = xnor_conv2d_packed(binarize_pack(x), wp, alpha, b, cin, s, p, d, pad_value, bn_scale=sc, bn_shift=sh,
                                     channels_last=cl)
            assert torch.equal(got, bn_ref)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("schedule", ["owned", "shared", "static"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_split_exact(isa, threads, schedule, monkeypatch):
    # Work units split over threads (one image: rows x channel blocks): owned pieces with stealing from
    # their backs (cpu/parallel.h, the default), one shared counter (FASTPOSE_SCHEDULE=shared) or split
    # statically (=static); results may not depend on it.
    monkeypatch.setenv("FASTPOSE_SCHEDULE", schedule)
    x, wt, b = torch.randn(1, 70, 11, 13), torch.randn(37, 70, 3, 3), torch.randn(37)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = xnor_conv2d(x, wt, b, 1, 1, 1, True, 0)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(got, literal_reference(x, wt, b, 1, 1, 1, True, 0))


@pytest.mark.parametrize("threads", [2, 3])
def test_owned_schedule_repeated(threads):
    # The default schedule hands out chunks from the front of each thread's piece and, once a thread's
    # own piece is done, from the backs of the others': with 3 threads on this 2-core CI machine the
    # steals happen in most calls. Any unit lost or handed out twice shows as a changed result.
    torch.set_num_threads(1)
    x, wt = torch.randn(2, 70, 31, 13), torch.randn(37, 70, 3, 3)
    ref = xnor_conv2d(x, wt, None, 1, 1)
    torch.set_num_threads(threads)
    for _ in range(40):
        assert torch.equal(xnor_conv2d(x, wt, None, 1, 1), ref)


def test_weight_with_storage_offset(isa):
    # A contiguous weight that starts inside its storage (the one-pass weight pack reads from data_ptr).
    x = torch.randn(2, 70, 9, 11)
    w = torch.randn(9, 70, 3, 3)[1:]
    assert w.is_contiguous() and w.storage_offset() > 0
    got = xnor_conv2d(x, w, None, 1, 1)
    assert torch.equal(got, literal_reference(x, w, None, 1, 1, 1, True, 0))


# alpha's sums of |w| come from the weight pack in ATen's summation order (checked against ATen once per
# process; 0 lanes: ATen's own mean). Rows around the vector / group / cascade-level lengths, values whose
# sums round at every step, Cout = 1 and rows past the cap (ATen's mean), 1 and 2 threads.
ALPHA_CASES = [(2, 16, 1), (3, 17, 1), (2, 2, 3), (5, 7, 3), (4, 64, 3), (3, 128, 3), (2, 256, 3), (2, 3, 7),
               (3, 1153, 1), (2, 913, 3), (2, 7000, 3), (1, 128, 3), (2, 8000, 3)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", ALPHA_CASES, ids=[",".join(map(str, c)) for c in ALPHA_CASES])
def test_alpha_sums_like_aten(isa, case, threads):
    cout, cin, k = case
    w = torch.randn(cout, cin, k, k) * torch.exp2(torch.randint(-12, 13, (cout, cin, k, k)).float())
    x = torch.randn(1, cin, 3, 3)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = xnor_conv2d(x, w, None, 1, k // 2)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(got, literal_reference(x, w, None, 1, k // 2, 1, True, 0))


@pytest.mark.parametrize("cin,k", [(64, 3), (130, 3), (70, 5), (3, 3), (65, 1)])
def test_weight_sign_edges(isa, cin, k):
    # The float weight's own pack (the one-pass AVX-512 / AVX2 forms where they run): +0.0 and -0.0 are +1,
    # NaN and -inf -1, +inf +1, as binarize; without scale the output is the integer dot product itself.
    g = torch.Generator().manual_seed(cin + k)
    w = torch.randn(6, cin, k, k, generator=g)
    flat = w.view(-1)
    idx = torch.randperm(flat.numel(), generator=g)[:5 * 12]
    for j, v in enumerate([0.0, -0.0, float("nan"), float("inf"), -float("inf")]):
        flat[idx[12 * j:12 * (j + 1)]] = v
    x = torch.randn(2, cin, 5, 6, generator=g)
    got = xnor_conv2d(x, w, None, 1, k // 2, scale=False)
    assert torch.equal(got, literal_reference(x, w, None, 1, k // 2, 1, False, 0))
    # signed zeros keep alpha finite: the scaled path too
    wz = torch.randn(6, cin, k, k, generator=g)
    wz.view(-1)[idx[:24]] = torch.tensor([0.0, -0.0]).repeat(12)
    got = xnor_conv2d(x, wz, None, 1, k // 2)
    assert torch.equal(got, literal_reference(x, wz, None, 1, k // 2, 1, True, 0))


def _one_pass_alpha_expected():
    # The one-pass weight pack (and its alpha) runs on AVX-512, and on AVX2 where pext is fast.
    isa = fastpose._C.cpu_isa()
    return isa == "avx512" or (isa == "avx2" and fastpose.build_info()["fast_pext"])


def test_alpha_sum_lanes_found(isa):
    # Where the one-pass alpha can run it must be in use (a silent fallback would only be slower); per
    # ISA path, so the AVX2 form's availability is checked on AVX-512 machines too.
    lanes = fastpose._C.xnor_alpha_sum_lanes()
    if _one_pass_alpha_expected():
        assert lanes in (8, 16)
    else:
        assert lanes == 0


def test_alpha_sums_like_aten_default_capability():
    # ATen's default (non-AVX) kernels sum in 8-lane vectors too; a fresh process, as the capability is
    # fixed at start-up.
    import subprocess
    import sys
    code = ("import torch, fastpose\n"
            "from fastpose.ops import xnor_conv2d, xnor_conv2d_reference\n"
            "assert torch.backends.cpu.get_cpu_capability() == 'DEFAULT'\n"
            "w = torch.randn(6, 300, 3, 3) * torch.exp2(torch.randint(-12, 13, (6, 300, 3, 3)).float())\n"
            "x = torch.randn(1, 300, 4, 4)\n"
            "ref = xnor_conv2d_reference(x, w, None, [1, 1], [1, 1], [1, 1], True, 0)\n"
            "assert torch.equal(xnor_conv2d(x, w, None, 1, 1), ref)\n"
            "print(fastpose._C.xnor_alpha_sum_lanes())\n")
    env = dict(__import__("os").environ, ATEN_CPU_CAPABILITY="default")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) in ((8, 16) if _one_pass_alpha_expected() else (0,))


def test_popcount_peak(isa):
    peak = fastpose._C.popcount_peak(10000, 2)
    assert peak > 0


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_scale_and_bias_options(isa, scale, bias):
    x, wt = torch.randn(2, 37, 6, 5), torch.randn(6, 37, 3, 3)
    b = torch.randn(6) if bias else None
    got = xnor_conv2d(x, wt, b, padding=1, scale=scale)
    assert torch.equal(got, literal_reference(x, wt, b, 1, 1, 1, scale, 0))
    if not scale and not bias:  # integer dot products
        assert torch.equal(got, got.round())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(isa, dtype):
    x, wt, b = torch.randn(2, 70, 7, 6, dtype=dtype), torch.randn(5, 70, 3, 3, dtype=dtype), torch.randn(5)
    got = xnor_conv2d(x, wt, b, stride=2, padding=1)
    assert got.dtype == dtype
    assert torch.equal(got, literal_reference(x, wt, b, 2, 1, 1, True, 0))


def test_mixed_weight_dtype():
    x, wt = torch.randn(1, 20, 5, 5, dtype=torch.float16), torch.randn(3, 20, 3, 3)
    got = xnor_conv2d(x, wt, None, padding=1)
    assert got.dtype == torch.float16
    assert torch.equal(got, xnor_conv2d_reference(x, wt, None, padding=1))


@pytest.mark.parametrize("layout", ["channels_last", "noncontiguous"])
def test_layouts(isa, layout):
    base = torch.randn(2, 66, 9, 10)
    x = base.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else \
        torch.randn(2, 132, 9, 20)[:, 1::2, :, ::2]
    wt = torch.randn(8, 66, 3, 3)[:, :, :, :]
    wt_nc = torch.randn(8, 66, 3, 6)[:, :, :, ::2]  # non-contiguous weight too
    for w_ in (wt, wt_nc):
        got = xnor_conv2d(x, w_, None, padding=1)
        assert torch.equal(got, literal_reference(x.contiguous(), w_, None, 1, 1, 1, True, 0))
    if layout == "channels_last":
        assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("pad_value", [0, -1])
def test_packed_input(isa, pad_value):
    x, wt, b = torch.randn(2, 100, 8, 9), torch.randn(7, 100, 3, 3), torch.randn(7)
    xp = binarize_pack(x)
    got = xnor_conv2d(xp, wt, b, 1, 1, 1, True, pad_value)
    assert got.dtype == torch.float32
    assert torch.equal(got, literal_reference(x, wt, b, 1, 1, 1, True, pad_value))
    wp, alpha = binarize_pack(wt), xnor_alpha(wt)
    assert torch.equal(xnor_conv2d_packed(xp, wp, alpha, b, 100, 1, 1, 1, pad_value), got)
    assert torch.equal(xnor_conv2d_packed(x, wp, alpha, b, 100, 1, 1, 1, pad_value), got)


def test_packed_epilogue_options(isa):
    x, wt, b = torch.randn(2, 40, 6, 7), torch.randn(6, 40, 3, 3), torch.randn(6)
    s, t = torch.randn(6), torch.randn(6)
    wp, alpha = binarize_pack(wt), xnor_alpha(wt)
    base = literal_reference(x, wt, b, 1, 1, 1, True, 0)
    ref = (base * s.view(1, -1, 1, 1)) + t.view(1, -1, 1, 1)
    for out_dtype in (None, torch.float16, torch.bfloat16):
        for cl in (False, True):
            got = xnor_conv2d_packed(binarize_pack(x), wp, alpha, b, 40, 1, 1, 1, 0, bn_scale=s, bn_shift=t,
                                     out_dtype=out_dtype, channels_last=cl)
            assert got.dtype == (out_dtype or torch.float32)
            assert got.is_contiguous(memory_format=torch.channels_last) == cl
            assert torch.equal(got, ref.to(got.dtype))


def test_empty_and_no_channels_out():
    x, wt = torch.randn(0, 9, 4, 4), torch.randn(3, 9, 3, 3)
    assert xnor_conv2d(x, wt, None, padding=1).shape == (0, 3, 4, 4)
    assert xnor_conv2d(binarize_pack(x), wt, None, padding=1).shape == (0, 3, 4, 4)
    assert xnor_conv2d(torch.randn(2, 9, 4, 4), torch.randn(0, 9, 3, 3)).shape == (2, 0, 2, 2)


# ---------------------------------------------------------------------------------------------------
# Straight-through gradients against autograd of the declared surrogate (float64)


def surrogate(x, w, b, stride, padding, dilation, scale, pad_value):
    xs = x.clamp(-1, 1)
    xs = xs + (binarize(x) - xs).detach()  # value sign(x), gradient of clamp (|x| <= 1 passes)
    if scale:
        alpha = w.abs().mean((1, 2, 3), keepdim=True)
        ws = alpha * w
        ws = ws + (alpha.detach() * binarize(w) - ws).detach()  # value alpha*sign(w), gradient of alpha(w)*w
    else:
        ws = w + (binarize(w) - w).detach()
    if pad_value == -1:
        xs = F.pad(xs, (padding, padding, padding, padding), value=-1.0)
        padding = 0
    return F.conv2d(xs, ws, b, stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("pad_value", [0, -1])
@pytest.mark.parametrize("geom", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_ste_gradients(scale, pad_value, geom):
    stride, padding, dilation = geom
    x = (torch.randn(2, 7, 6, 7, dtype=torch.float64) * 1.5).requires_grad_()
    x.data[0, 0, 0, :2] = torch.tensor([1.0, -1.0], dtype=torch.float64)  # |x| = 1 passes
    w = torch.randn(4, 7, 3, 3, dtype=torch.float64).requires_grad_()
    w.data[0, 0, 0, 0] = 0.0
    b = torch.randn(4, dtype=torch.float64).requires_grad_()
    out = xnor_conv2d(x, w, b, stride, padding, dilation, scale, pad_value)
    ref = surrogate(x, w, b, stride, padding, dilation, scale, pad_value)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, w, b), g)
    exp = torch.autograd.grad(ref, (x, w, b), g)
    for a, e in zip(got, exp):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    assert got[0][0, 0, 0, 0] != 0 or g.abs().sum() == 0


def test_gradient_masks_and_dtypes():
    x = torch.randn(1, 5, 4, 4, dtype=torch.float16, requires_grad=True)
    w = torch.randn(3, 5, 3, 3, requires_grad=True)
    out = xnor_conv2d(x, w, None, padding=1)
    gx, gw = torch.autograd.grad(out.float().sum(), (x, w))
    assert gx.dtype == torch.float16 and gw.dtype == torch.float32
    assert torch.all(gx[x.detach().abs() > 1] == 0)
    # only the input needs a gradient
    (gx2,) = torch.autograd.grad(xnor_conv2d(x, w.detach(), None, padding=1).float().sum(), (x,))
    assert torch.equal(gx2, gx)


def test_gradcheck_smooth_parts():
    # The forward is piecewise constant in x and sign(w); it is smooth (affine) in the bias, and the
    # backward op is linear in the incoming gradient (so its own backward is checked too).
    x, w = torch.randn(1, 4, 5, 5, dtype=torch.float64), torch.randn(3, 4, 3, 3, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda b_: xnor_conv2d(x, w, b_, 1, 1, 1, True, 0), (b,))
    g = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(
        lambda g_: torch.ops.fastpose.xnor_conv2d_backward(g_, x, w, [1, 1], [1, 1], [1, 1], True, -1,
                                                           [True, True, True]), (g,))


def test_opcheck():
    x, w, b = torch.randn(2, 5, 6, 6), torch.randn(3, 5, 3, 3), torch.randn(3)
    torch.library.opcheck(torch.ops.fastpose.xnor_conv2d.default, (x, w, b, [1, 1], [1, 1], [1, 1], True, 0))
    torch.library.opcheck(torch.ops.fastpose.xnor_conv2d.default,
                          (x.requires_grad_(), w.requires_grad_(), None, [2, 1], [1, 0], [1, 1], False, -1),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    xp, wp = binarize_pack(x.detach()), binarize_pack(w.detach())
    torch.library.opcheck(torch.ops.fastpose.xnor_conv2d_packed.default,
                          (xp, wp, xnor_alpha(w), b, 5, [1, 1], [1, 1], [1, 1], 0))
    torch.library.opcheck(torch.ops.fastpose.xnor_conv2d_packed.default,
                          (x.detach(), wp, None, None, 5, [1, 1], [1, 1], [1, 1], -1, b, None, torch.float16, True))


def test_torch_compile():
    x, w, b = torch.randn(2, 20, 7, 7), torch.randn(4, 20, 3, 3), torch.randn(4)
    f = torch.compile(lambda x_, w_, b_: xnor_conv2d(x_, w_, b_, padding=1) + 1, fullgraph=True)
    assert torch.equal(f(x, w, b), xnor_conv2d(x, w, b, padding=1) + 1)


def test_no_autograd_fast_path():
    # Without a gradient to track, xnor_conv2d skips the Python autograd layer: same values, no
    # graph; with one, the graph and its STE gradients are there as before.
    torch.manual_seed(3)
    x, w, b = torch.randn(2, 33, 9, 7), torch.randn(5, 33, 3, 3), torch.randn(5)
    ref = xnor_conv2d_reference(x, w, b, 2, 1, 1, True, -1)
    out = xnor_conv2d(x, w, b, stride=2, padding=1, pad_value=-1)
    assert torch.equal(out, ref) and out.grad_fn is None
    wg = w.clone().requires_grad_()
    with torch.no_grad():
        out = xnor_conv2d(x, wg, b, stride=[2, 2], padding=(1, 1), pad_value=-1)
    assert torch.equal(out, ref) and out.grad_fn is None
    out = xnor_conv2d(x, wg, b, stride=2, padding=1, pad_value=-1)
    assert torch.equal(out.detach(), ref) and out.grad_fn is not None
    out.sum().backward()
    assert wg.grad is not None and wg.grad.shape == w.shape


def test_bad_input():
    x, w = torch.randn(1, 8, 5, 5), torch.randn(3, 8, 3, 3)
    with pytest.raises(ValueError, match=r"x must be \(N, 8, H, W\)"):
        xnor_conv2d(torch.randn(1, 4, 5, 5), w)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        xnor_conv2d(torch.randn(8, 5, 5), w)
    with pytest.raises(TypeError, match="x must have dtype"):
        xnor_conv2d(x.to(torch.int32), w)
    with pytest.raises(TypeError, match="weight must have dtype"):
        xnor_conv2d(x, w.to(torch.int64))
    with pytest.raises(ValueError, match=r"packed x must be \(N, H, W, 1\)"):
        xnor_conv2d(torch.zeros(1, 5, 5, 2, dtype=torch.int64), w)
    with pytest.raises(ValueError, match="pad_value must be 0 or -1"):
        xnor_conv2d(x, w, pad_value=1)
    with pytest.raises(ValueError, match="bias must be"):
        xnor_conv2d(x, w, torch.randn(4))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        xnor_conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="larger than the padded input"):
        xnor_conv2d(torch.randn(1, 8, 2, 2), w)
    with pytest.raises(ValueError, match=r"weight_packed must be \(Cout, KH, KW, 2\)"):
        xnor_conv2d_packed(x, binarize_pack(w), None, None, 70)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pad_value", [0, -1])
def test_device(device, pad_value):
    for (n, cin, cout, h, w, k, s, p, d) in CASES[:12] + [(4, 256, 64, 32, 32, 3, 1, 1, 1)]:
        x = torch.randn(n, cin, h, w, device=device)
        wt, b = torch.randn(cout, cin, k, k, device=device), torch.randn(cout, device=device)
        alpha = xnor_alpha(wt)  # on the device, as the kernel computes it
        got = xnor_conv2d(x, wt, b, s, p, d, True, pad_value)
        assert torch.equal(got.cpu(), literal_reference(x, wt, b, s, p, d, True, pad_value, alpha))
        xh = x.half().contiguous(memory_format=torch.channels_last)
        got = xnor_conv2d(xh, wt, b, s, p, d, True, pad_value)
        assert got.is_contiguous(memory_format=torch.channels_last) or xh.is_contiguous()
        assert torch.equal(got.cpu(), literal_reference(xh, wt, b, s, p, d, True, pad_value, alpha))
        xd = x.double()
        assert torch.equal(xnor_conv2d(xd, wt, b, s, p, d, True, pad_value).cpu(),
                           literal_reference(xd, wt, b, s, p, d, True, pad_value, xnor_alpha(wt, torch.float64)))
        # packed input, pre-packed weights, folded BatchNorm, NHWC float16 output
        wp, sc, sh = binarize_pack(wt), torch.randn(cout, device=device), torch.randn(cout, device=device)
        got = xnor_conv2d_packed(binarize_pack(x), wp, alpha, b, cin, s, p, d, pad_value, bn_scale=sc, bn_shift=sh,
                                 out_dtype=torch.float16, channels_last=True)
        ref = literal_reference(x, wt, b, s, p, d, True, pad_value, alpha)
        ref = (ref * sc.cpu().view(1, -1, 1, 1)) + sh.cpu().view(1, -1, 1, 1)
        assert torch.equal(got.cpu(), ref.half())


@pytest.mark.parametrize("device", DEVICES)
def test_device_gradients(device):
    x = torch.randn(2, 7, 6, 7, device=device, requires_grad=True)
    w = torch.randn(4, 7, 3, 3, device=device, requires_grad=True)
    out = xnor_conv2d(x, w, None, 1, 1, 1, True, 0)
    ref = surrogate(x, w, None, 1, 1, 1, True, 0)
    g = torch.randn_like(out)
    for a, e in zip(torch.autograd.grad(out, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
        torch.testing.assert_close(a, e)

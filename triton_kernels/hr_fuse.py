"""Triton kernels of HRNet's multi-resolution fusion: out = relu(x0 + sum_j nearest_up(x_j)), with up
to three lower-resolution inputs at integer factors, read once each; and the backward's ReLU mask.

The backward computes grad_x0 = grad * (out > 0) in one elementwise pass and each low input's
gradient as block sums of that (triton_kernels.upsample_add.block_sum): each block-sum pass reads
grad_x0 once more. Layout handling as in upsample_add (rows of contiguous inner runs).
"""
import torch
import triton
import triton.language as tl

from . import upsample_add as tk_ua
from .upsample_add import _geometry, _low_offsets, _tiles, block_sum, device_guard, layout, tile

MAX_INPUTS = 4


@triton.jit
def _add_low(acc, x_ptr, rows, k, mask, H, Hl, SH, SW, C, LOW_INNER, NHWC: tl.constexpr):
    v = tl.load(x_ptr + _low_offsets(rows, k, H, Hl, SH, SW, C, LOW_INNER, NHWC), mask=mask)
    return acc + v.to(acc.dtype)


@triton.jit
def hr_fuse_fwd_kernel(x0_ptr, x1_ptr, x2_ptr, x3_ptr, out_ptr, NROWS, INNER, H, C,
                       H1, SH1, SW1, LI1, H2, SH2, SW2, LI2, H3, SH3, SW3, LI3,
                       NUM: tl.constexpr, RELU: tl.constexpr, NHWC: tl.constexpr, R: tl.constexpr,
                       BLOCK: tl.constexpr, INT64: tl.constexpr):
    rows, k, mask = tile(NROWS, INNER, R, BLOCK, INT64)
    offs = rows[:, None] * INNER + k[None, :]
    x0 = tl.load(x0_ptr + offs, mask=mask)
    if x0_ptr.dtype.element_ty == tl.float64:
        acc = x0.to(tl.float64)
    else:
        acc = x0.to(tl.float32)
    if NUM > 1:
        acc = _add_low(acc, x1_ptr, rows, k, mask, H, H1, SH1, SW1, C, LI1, NHWC)
    if NUM > 2:
        acc = _add_low(acc, x2_ptr, rows, k, mask, H, H2, SH2, SW2, C, LI2, NHWC)
    if NUM > 3:
        acc = _add_low(acc, x3_ptr, rows, k, mask, H, H3, SH3, SW3, C, LI3, NHWC)
    if RELU:
        acc = tl.where(acc > 0, acc, tl.where(acc != acc, acc, 0.0))  # NaN stays NaN, as torch.relu
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def relu_mask_kernel(grad_ptr, out_ptr, res_ptr, N, BLOCK: tl.constexpr, INT64: tl.constexpr):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    g = tl.load(grad_ptr + offs, mask=mask)
    o = tl.load(out_ptr + offs, mask=mask)
    tl.store(res_ptr + offs, tl.where(o > 0, g, tl.zeros_like(g)), mask=mask)


def hr_fuse_forward(xs, relu=True):
    """Launcher: relu(xs[0] + sum_j nearest_up(xs[j])), up to MAX_INPUTS inputs. Output in xs[0]'s layout."""
    if len(xs) > MAX_INPUTS:
        raise ValueError(f"the Triton hr_fuse takes at most {MAX_INPUTS} inputs, got {len(xs)}")
    x0 = xs[0]
    nhwc = layout(x0)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    xs = [x.contiguous(memory_format=fmt) for x in xs]
    out = torch.empty_like(xs[0], memory_format=fmt)
    if out.numel() == 0:
        return out
    N, C, H, W = xs[0].shape
    nrows, inner = _geometry(xs[0], nhwc)
    r, block = _tiles(nrows, inner)
    params, ptrs = [], []
    for j in range(1, MAX_INPUTS):
        x = xs[j] if j < len(xs) else xs[0]
        Hl, Wl = x.shape[-2:]
        ptrs.append(x)
        params += [Hl, H // Hl, W // Wl, Wl * C if nhwc else Wl]
    int64 = tk_ua.FORCE_INT64 or max(x.numel() for x in xs) >= 2**31 - 2 * 2048
    grid = (triton.cdiv(nrows, r), triton.cdiv(inner, block))
    with device_guard(x0):
        hr_fuse_fwd_kernel[grid](xs[0], *ptrs, out, nrows, inner, H, C, *params, NUM=len(xs), RELU=bool(relu),
                                 NHWC=nhwc, R=r, BLOCK=block, INT64=int64, num_warps=4 if r * block <= 1024 else 8)
    return out


def hr_fuse_backward(grad, out, xs, relu=True):
    """Launcher: the gradients of every input: grad * (out > 0) for xs[0], its block sums for the rest."""
    nhwc = layout(xs[0])
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    grad = grad.to(xs[0].dtype).contiguous(memory_format=fmt)
    if relu:
        out = out.contiguous(memory_format=fmt)
        g0 = torch.empty_like(grad, memory_format=fmt)
        n = grad.numel()
        if n:
            block = 2048
            with device_guard(grad):
                relu_mask_kernel[(triton.cdiv(n, block),)](grad, out, g0, n, BLOCK=block,
                                                           INT64=tk_ua.FORCE_INT64 or n >= 2**31 - block)
    else:
        g0 = grad.clone(memory_format=fmt)
    return [g0] + [block_sum(g0, x.shape, nhwc=nhwc) for x in xs[1:]]

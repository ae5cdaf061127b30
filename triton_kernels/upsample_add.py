"""Triton kernels of upsample_add: out = skip + nearest_up(low) with integer factors, and the block
sum that is low's gradient. Contiguous NCHW or channels_last, float32/float16/bfloat16 (float64 too),
masked tails, 64-bit indexing when a tensor has 2^31 elements or more.

Both layouts are handled as rows of an "inner" run of contiguous elements: NCHW rows are (n, c, h)
with W elements; channels_last rows are (n, h) with W*C elements. A program covers R rows by a
BLOCK-wide tile of the inner run, so small maps (W = 48, 64) still give programs ~2k elements.
"""
import contextlib

import torch
import triton
import triton.language as tl

# Tests set this to run the 64-bit indexing path on small tensors (it is otherwise taken only for
# tensors of 2^31 elements or more).
FORCE_INT64 = False


@triton.jit
def _low_offsets(rows, k, H, Hl, SH, SW, C, LOW_INNER, NHWC: tl.constexpr):
    # rows: flattened output rows (outer * H + h); k: index within the output row's inner run.
    outer = rows // H
    h = rows - outer * H
    base = (outer * Hl + h // SH) * LOW_INNER
    if NHWC:
        w = k // C
        inner = (w // SW) * C + (k - w * C)
    else:
        inner = k // SW
    return base[:, None] + inner[None, :]


@triton.jit
def tile(NROWS, INNER, R: tl.constexpr, BLOCK: tl.constexpr, INT64: tl.constexpr):
    """This program's R rows and BLOCK-wide slice of the inner run, and the in-bounds mask."""
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    if INT64:
        pid_r = pid_r.to(tl.int64)
        pid_k = pid_k.to(tl.int64)
    rows = pid_r * R + tl.arange(0, R)
    k = pid_k * BLOCK + tl.arange(0, BLOCK)
    return rows, k, (rows < NROWS)[:, None] & (k < INNER)[None, :]


@triton.jit
def upsample_add_fwd_kernel(low_ptr, skip_ptr, out_ptr, NROWS, INNER, H, Hl, SH, SW, C, LOW_INNER,
                            NHWC: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr, INT64: tl.constexpr):
    rows, k, mask = tile(NROWS, INNER, R, BLOCK, INT64)
    offs = rows[:, None] * INNER + k[None, :]
    s = tl.load(skip_ptr + offs, mask=mask)
    lo = tl.load(low_ptr + _low_offsets(rows, k, H, Hl, SH, SW, C, LOW_INNER, NHWC), mask=mask)
    if skip_ptr.dtype.element_ty == tl.float64:
        out = s + lo
    else:
        out = s.to(tl.float32) + lo.to(tl.float32)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def block_sum_kernel(grad_ptr, out_ptr, NLROWS, LOW_INNER, INNER, H, Hl, SH, SW, C,
                     NHWC: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr, INT64: tl.constexpr):
    """out[low element] = sum of grad over its SH x SW block (each grad element read once)."""
    lrows, k, mask = tile(NLROWS, LOW_INNER, R, BLOCK, INT64)
    outer = lrows // Hl
    il = lrows - outer * Hl
    if NHWC:
        j = k // C
        c = k - j * C
    if grad_ptr.dtype.element_ty == tl.float64:
        acc = tl.zeros((R, BLOCK), dtype=tl.float64)
    else:
        acc = tl.zeros((R, BLOCK), dtype=tl.float32)
    for a in range(0, SH):
        grow = (outer * H + il * SH + a) * INNER
        for b in range(0, SW):
            if NHWC:
                inner = (j * SW + b) * C + c
            else:
                inner = k * SW + b
            acc += tl.load(grad_ptr + grow[:, None] + inner[None, :], mask=mask).to(acc.dtype)
    tl.store(out_ptr + lrows[:, None] * LOW_INNER + k[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


def _tiles(nrows, inner):
    """(R rows, BLOCK columns) of a program. Up to 1024, BLOCK = next_pow2(inner) covers whole rows,
    so a program reads R contiguous rows (NCHW rows are adjacent) and the masked lanes cost no
    bandwidth. Longer rows (channels_last W * C) are split into BLOCK = 1024 tiles, whose last tile
    may be mostly masked (W * C = 1536: half of the second program idle): there the largest power of
    two dividing the row (>= 128) is taken instead when it fills the lanes better."""
    block = min(triton.next_power_of_2(max(inner, 1)), 1024)
    if inner > 1024:
        div = min(inner & -inner, 1024)
        if div >= 128 and inner / (triton.cdiv(inner, block) * block) < 0.875:
            block = div
    r = max(1, min(triton.next_power_of_2(max(nrows, 1)), 2048 // block))
    return r, block


def device_guard(t):
    """Makes t's GPU current for the launch: Triton launches on the current device, so a tensor on
    cuda:1 while cuda:0 is current would be read by a kernel on the wrong GPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def layout(t):
    """True when t is channels_last (and not also plainly contiguous)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _geometry(ref, nhwc):
    N, C, H, W = ref.shape
    return (N * H, W * C) if nhwc else (N * C * H, W)


def upsample_add_forward(low, skip):
    """Launcher: skip + nearest_up(low); low's size divides skip's. Output in skip's layout."""
    nhwc = layout(skip)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    skip = skip.contiguous(memory_format=fmt)
    low = low.contiguous(memory_format=fmt)
    out = torch.empty_like(skip, memory_format=fmt)
    if out.numel() == 0:
        return out
    N, C, H, W = skip.shape
    Hl, Wl = low.shape[-2:]
    nrows, inner = _geometry(skip, nhwc)
    r, block = _tiles(nrows, inner)
    int64 = FORCE_INT64 or max(skip.numel(), low.numel()) >= 2**31 - 2 * 2048
    grid = (triton.cdiv(nrows, r), triton.cdiv(inner, block))
    with device_guard(skip):
        upsample_add_fwd_kernel[grid](low, skip, out, nrows, inner, H, Hl, H // Hl, W // Wl, C,
                                      Wl * C if nhwc else Wl, NHWC=nhwc, R=r, BLOCK=block, INT64=int64,
                                      num_warps=4 if r * block <= 1024 else 8)
    return out


def block_sum(grad, low_shape, nhwc=None):
    """Launcher: the gradient of a nearest-upsampled input of size low_shape (sums over blocks)."""
    if nhwc is None:
        nhwc = layout(grad)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    grad = grad.contiguous(memory_format=fmt)
    out = torch.empty(low_shape, dtype=grad.dtype, device=grad.device).contiguous(memory_format=fmt)
    if out.numel() == 0:
        return out
    N, C, H, W = grad.shape
    Hl, Wl = low_shape[-2:]
    nlrows = N * Hl if nhwc else N * C * Hl
    low_inner = Wl * C if nhwc else Wl
    inner = W * C if nhwc else W
    r, block = _tiles(nlrows, low_inner)
    int64 = FORCE_INT64 or grad.numel() >= 2**31 - 2 * 2048
    grid = (triton.cdiv(nlrows, r), triton.cdiv(low_inner, block))
    with device_guard(grad):
        block_sum_kernel[grid](grad, out, nlrows, low_inner, inner, H, Hl, H // Hl, W // Wl, C,
                               NHWC=nhwc, R=r, BLOCK=block, INT64=int64, num_warps=4)
    return out

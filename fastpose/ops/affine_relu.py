"""Per-channel affine map and ReLU, optionally 2x2 average-pooled, in one pass (inference).

    v = relu((x * scale[c]) + shift[c])        two roundings (a multiply, then an add; never fused)
    pool: (((0 + v[2i, 2j]) + v[2i, 2j+1]) + v[2i+1, 2j]) + v[2i+1, 2j+1]) / 4

which is exactly ``F.avg_pool2d(torch.relu(x * scale + shift), 2, 2)`` (the pool sums in that order; an
odd last row or column is dropped). A folded eval BatchNorm followed by ReLU is this map: the packed HPM
path (fastpose.models.hpm_packed) feeds its projected shortcuts with it. CPU float32 / float64 run the
C++ kernel; other devices and dtypes, and inputs that need a gradient, the plain-PyTorch reference.
"""
import torch
import torch.nn.functional as F

from .._checks import FLOAT_DTYPES, check_same_device, check_tensor
from .._tracing import exporting

__all__ = ["affine_relu", "affine_relu_reference"]


@torch.library.register_fake("fastpose::affine_relu")
def _affine_relu_fake(x, scale, shift, pool):
    N, C, H, W = x.shape
    out = x.new_empty((N, C, H // 2, W // 2) if pool else (N, C, H, W))
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last) if cl else out


def affine_relu_reference(x, scale, shift, pool=False):
    """``affine_relu`` with plain PyTorch ops (slow, obviously correct, differentiable)."""
    v = x * scale.view(1, -1, 1, 1)
    v = torch.relu(v + shift.view(1, -1, 1, 1))
    return F.avg_pool2d(v, 2, 2) if pool else v


def affine_relu(x, scale, shift, pool=False):
    """relu(x * scale + shift) with per-channel (C,) scale and shift, then a 2x2 average pool if ``pool``.

    x: (N, C, H, W) float, any layout (the output keeps channels_last). Returns (N, C, H, W), or
    (N, C, H // 2, W // 2) pooled. Bit for bit the reference (module docstring).
    """
    check_tensor("x", x, ndim=4, dtypes=FLOAT_DTYPES)
    for name, t in (("scale", scale), ("shift", shift)):
        check_tensor(name, t, ndim=1, dtypes=(x.dtype,))
        if t.shape[0] != x.shape[1]:
            raise ValueError(f"{name} must be ({x.shape[1]},) for x of shape {tuple(x.shape)}, got {tuple(t.shape)}")
    check_same_device(x=x, scale=scale, shift=shift)
    if pool and min(x.shape[2:]) < 2:
        raise ValueError(f"affine_relu: pool needs H and W >= 2, got x of shape {tuple(x.shape)}")
    if (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or exporting()
            or (torch.is_grad_enabled() and any(t.requires_grad for t in (x, scale, shift)))):
        return affine_relu_reference(x, scale, shift, pool)
    return torch.ops.fastpose.affine_relu(x, scale, shift, bool(pool))

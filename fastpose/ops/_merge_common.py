"""Argument checks and references shared by upsample_add and hr_fuse."""
import torch

from .._checks import FLOAT_DTYPES, check_tensor


def nearest_up(x, size):
    """PyTorch's nearest upsampling to ``size``: output row i reads input row floor(i * in / out).

    Written with index_select (equal to F.interpolate(mode="nearest")) so that empty batches work.
    """
    H, W = size
    h, w = x.shape[-2:]
    if (h, w) == (H, W):
        return x
    rows = torch.arange(H, device=x.device) * h // H
    cols = torch.arange(W, device=x.device) * w // W
    return x.index_select(-2, rows).index_select(-1, cols)


def channels_last(t):
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def out_like(ref):
    """An empty tensor in the layout the kernels produce: ref's, channels_last or contiguous."""
    fmt = torch.channels_last if channels_last(ref) else torch.contiguous_format
    return torch.empty(ref.shape, dtype=ref.dtype, device=ref.device).contiguous(memory_format=fmt)


def check_low(name, low, ref, ref_name):
    check_tensor(name, low, ndim=4, dtypes=FLOAT_DTYPES)
    if low.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {low.dtype} but {ref_name} has {ref.dtype}; they must match")
    if low.device != ref.device:
        raise ValueError(f"{name} is on {low.device} but {ref_name} on {ref.device}")
    if low.shape[:2] != ref.shape[:2]:
        raise ValueError(f"{name} must match {ref_name}'s batch and channels {tuple(ref.shape[:2])}, "
                         f"got shape {tuple(low.shape)}")
    H, W = ref.shape[-2:]
    h, w = low.shape[-2:]
    if h < 1 or w < 1 or H % h or W % w:
        raise ValueError(f"{name} of spatial size ({h}, {w}) must be an integer factor below {ref_name}'s "
                         f"({H}, {W}): non-integer scales are not supported")

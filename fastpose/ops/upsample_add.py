"""upsample_add: ``skip + nearest_upsample(low, size=skip.shape[-2:])``, the hourglass skip merge.

C++ kernel on the CPU, Triton kernel on CUDA (triton_kernels/upsample_add.py); one read of each
input and one write, instead of eager's upsampled intermediate. Integer scale factors only.
"""
import torch

from .._checks import FLOAT_DTYPES, check_tensor
from .._tracing import exporting
from ._merge_common import check_low, nearest_up, out_like


def upsample_add_reference(low, skip):
    return skip + nearest_up(low, skip.shape[-2:])


@torch.library.register_fake("fastpose::upsample_add")
def _upsample_add_fake(low, skip):
    return out_like(skip)


@torch.library.register_fake("fastpose::upsample_add_backward")
def _upsample_add_backward_fake(grad, low):
    fmt = torch.channels_last if (grad.is_contiguous(memory_format=torch.channels_last)
                                  and not grad.is_contiguous()) else torch.contiguous_format
    return torch.empty(low.shape, dtype=grad.dtype, device=grad.device).contiguous(memory_format=fmt)


def _setup(ctx, inputs, output):
    low, skip = inputs
    ctx.save_for_backward(low)


def _backward(ctx, grad):
    (low,) = ctx.saved_tensors
    g_low = torch.ops.fastpose.upsample_add_backward(grad, low) if ctx.needs_input_grad[0] else None
    return g_low, grad if ctx.needs_input_grad[1] else None


torch.library.register_autograd("fastpose::upsample_add", _backward, setup_context=_setup)


def _setup_bwd(ctx, inputs, output):
    grad, _ = inputs
    ctx.size = tuple(grad.shape[-2:])


def _backward_bwd(ctx, gg):
    # upsample_add_backward is linear in grad; its adjoint is nearest upsampling (double backward).
    return nearest_up(gg, ctx.size), None


torch.library.register_autograd("fastpose::upsample_add_backward", _backward_bwd, setup_context=_setup_bwd)


def upsample_add(low, skip):
    """``skip + nearest_upsample(low, size=skip.shape[-2:])`` in one pass.

    Args:
        low: (N, C, h, w), with H / h and W / w integers.
        skip: (N, C, H, W), same dtype (float32, float16, bfloat16, float64) and device.
    Returns:
        (N, C, H, W) in skip's layout (channels_last if skip is channels_last).
    Under ONNX export or tracing this is the plain PyTorch expression (standard ops).
    """
    check_tensor("skip", skip, ndim=4, dtypes=FLOAT_DTYPES)
    check_low("low", low, skip, "skip")
    if exporting():
        return upsample_add_reference(low, skip)
    return torch.ops.fastpose.upsample_add(low, skip)


def _register_triton():
    from ..triton_kernels import upsample_add as tk

    torch.library.register_kernel("fastpose::upsample_add", "cuda", tk.upsample_add_forward)
    torch.library.register_kernel("fastpose::upsample_add_backward", "cuda",
                                  lambda grad, low: tk.block_sum(grad, tuple(low.shape)))


try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover - no triton: CUDA tensors take the reference
    torch.library.register_kernel("fastpose::upsample_add", "cuda", upsample_add_reference)
else:
    _register_triton()

"""hr_fuse: HRNet's multi-resolution fusion, ``relu(sum_j nearest_upsample(xs[j], size=xs[0].shape[-2:]))``.

C++ kernel on the CPU (one pass forward; one pass backward producing every input's gradient),
Triton on CUDA (triton_kernels/hr_fuse.py). Every input is at the output resolution or an integer
factor below it.
"""
import torch

from .._checks import FLOAT_DTYPES, check_tensor
from .._tracing import exporting
from ._merge_common import check_low, nearest_up, out_like


def hr_fuse_reference(xs, relu=True):
    size = xs[0].shape[-2:]
    out = xs[0]
    for x in xs[1:]:
        out = out + nearest_up(x, size)
    return torch.relu(out) if relu else out


@torch.library.register_fake("fastpose::hr_fuse")
def _hr_fuse_fake(xs, relu):
    return out_like(xs[0])


@torch.library.register_fake("fastpose::hr_fuse_backward")
def _hr_fuse_backward_fake(grad, out, xs, relu):
    ref = out_like(xs[0])
    return [torch.empty(x.shape, dtype=x.dtype, device=x.device).contiguous(
        memory_format=torch.channels_last if ref.is_contiguous(memory_format=torch.channels_last)
        and not ref.is_contiguous() else torch.contiguous_format) for x in xs]


def _setup(ctx, inputs, output):
    xs, relu = inputs
    ctx.relu = relu
    # The backward needs the inputs only for their shapes; the output for the ReLU mask.
    ctx.save_for_backward(output if relu else None, *xs)


def _backward(ctx, grad):
    saved = ctx.saved_tensors
    out, xs = saved[0], list(saved[1:])
    if torch.is_grad_enabled() and grad.requires_grad:
        # double backward: differentiate the reference
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_() for x in xs]
            y = hr_fuse_reference(leaves, ctx.relu)
            grads = torch.autograd.grad(y, leaves, grad, create_graph=True)
        return list(grads), None
    grads = torch.ops.fastpose.hr_fuse_backward(grad, out if ctx.relu else grad, xs, ctx.relu)
    return list(grads), None


torch.library.register_autograd("fastpose::hr_fuse", _backward, setup_context=_setup)


def hr_fuse(xs, relu=True):
    """``relu(sum_j nearest_upsample(xs[j], size=xs[0].shape[-2:]))`` in one pass.

    Args:
        xs: a non-empty list of (N, C, H_j, W_j) tensors of one dtype and device; xs[0] sets the
            output size and every other H / H_j, W / W_j is an integer (1 included).
        relu: apply the ReLU (HRNet's fuse layers end in one).
    Returns:
        (N, C, H, W) in xs[0]'s layout. Under ONNX export or tracing: the plain PyTorch expression.
    """
    if not isinstance(xs, (list, tuple)) or len(xs) == 0:
        raise ValueError("xs must be a non-empty list of tensors")
    check_tensor("xs[0]", xs[0], ndim=4, dtypes=FLOAT_DTYPES)
    for j, x in enumerate(xs[1:], start=1):
        check_low(f"xs[{j}]", x, xs[0], "xs[0]")
    if exporting():
        return hr_fuse_reference(list(xs), relu)
    return torch.ops.fastpose.hr_fuse(list(xs), bool(relu))


def _register_triton():
    from ..triton_kernels import hr_fuse as tk

    def fwd(xs, relu):
        if len(xs) > tk.MAX_INPUTS:
            return hr_fuse_reference(list(xs), relu)
        return tk.hr_fuse_forward(list(xs), relu)

    torch.library.register_kernel("fastpose::hr_fuse", "cuda", fwd)
    torch.library.register_kernel("fastpose::hr_fuse_backward", "cuda",
                                  lambda grad, out, xs, relu: tk.hr_fuse_backward(grad, out, list(xs), relu))


try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    _register_triton()

"""XNOR-popcount binary convolution: ``conv2d(sign(x), sign(w)) * alpha + bias`` on packed sign bits.

Packed layout (``binarize_pack``; shared by the CPU and CUDA kernels):
    a float (N, C, H, W) tensor becomes int64 words (N, H, W, ceil(C / 64)), channels packed along the
    last axis (NHWC): bit b (LSB = 0) of word k of pixel (n, h, w) is channel 64 k + b. A set bit stands
    for +1 (x >= 0, so -0.0 is +1), a clear bit for -1 (x < 0, and NaN). Bits of channels >= C are 0.
    Weights (Cout, Cin, KH, KW) pack the same way to (Cout, KH, KW, ceil(Cin / 64)).

Exact output formula (what the kernels compute and what ``xnor_conv2d_reference`` reproduces bit for bit):
    acc   = float64 for float64 output, else float32
    dot   = conv2d(sign(x), sign(w))           an exact integer (border taps: 0, or -1 with pad_value=-1)
    alpha = w.contiguous().to(acc).abs().mean((1, 2, 3))      (``xnor_alpha``; 1 when scale=False)
    out   = ((acc(dot) * alpha) + bias).to(out dtype)          two roundings, never a fused multiply-add

Training uses straight-through estimators (``fastpose::xnor_conv2d_backward``): the gradient to x is the
gradient of the surrogate clamp(x, -1, 1) (passed where |x| <= 1, zero elsewhere); the gradient to the
weight is that of the surrogate ``alpha(w) * w`` with alpha = mean |w| per output channel differentiated
as a function of w (XNOR-Net), i.e. ``alpha * G + sign(w) * sum(G * w) / n`` per output channel, where
G is the gradient of the effective weight alpha * sign(w) and n = Cin * KH * KW.
On the CPU (float32 / float64) the autograd (in C++) saves two bit planes of x instead of x
(``xnor_ste_pack``: the sign and the |x| <= 1 window, 2 bits per element) and runs the fused
``fastpose::xnor_conv2d_backward_packed``. Its weight gradient is a table GEMM for stride 1 float32 on
AVX2 / AVX-512: four output pixels' gradients make a 16-row table of signed sums and the sign bits of x
index it, one vector add per four multiply-adds (``FASTPOSE_STE_TABLE=0``, other strides and float64:
oneDNN on the unpacked signs). The input gradient, for stride 1 float32 channels_last on AVX2 / AVX-512,
is a permute GEMM (core/xnor_ste_input.h): four (AVX2: three) output channels' gradients make a 16- (8-)
entry table per pixel and vpermps picks, for a vector of input channels at once, the entry their filter
signs index, one permute and one add per 64 (24) multiply-adds, with the |x| <= 1 window applied in its
store. Elsewhere (and with ``FASTPOSE_STE_TABLE=0``) it is oneDNN's ``convolution_backward`` on
alpha * sign(w) with the window applied after. The alpha chain is one loop. Other devices and dtypes, and
``create_graph=True``, take the composite (differentiable) ``xnor_conv2d_backward``.
"""
import torch
import torch.nn.functional as F

from .._checks import FLOAT_DTYPES, check_int, check_same_device, check_tensor
from .._tracing import exporting

__all__ = ["binarize", "binarize_pack", "binary_unpack", "xnor_alpha", "xnor_conv2d", "xnor_conv2d_packed",
           "xnor_conv2d_reference", "xnor_conv2d_fused", "xnor_conv2d_fused_reference", "packed_words"]


def packed_words(channels):
    """Number of 64-bit words per pixel for ``channels`` channels."""
    return (int(channels) + 63) // 64


_MINIMUM = {"stride": 1, "padding": 0, "dilation": 1}


def _pair(v, name):
    """[a, b] from an int or a 1- or 2-sequence of ints, each >= the argument's minimum."""
    if type(v) is int and v >= _MINIMUM.get(name, 0):  # the common case, without the general checks
        return [v, v]
    if isinstance(v, torch.Tensor) and v.dim() == 0:
        v = v.item()
    try:
        vals = [v, v] if not hasattr(v, "__len__") else list(v)
    except TypeError:
        vals = None
    if vals is not None and len(vals) == 1:
        vals = vals * 2
    if vals is None or isinstance(v, str) or len(vals) != 2 or \
            not all(hasattr(i, "__index__") and not isinstance(i, bool) for i in vals):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    vals = [int(i) for i in vals]
    low = _MINIMUM.get(name, 0)
    if min(vals) < low:
        raise ValueError(f"{name} must be >= {low}, got {v!r}")
    return vals


def _channels_last(t):
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def binarize(x):
    """+1 where x >= 0 (including -0.0 and +inf), else -1 (-inf and NaN give -1), in x's dtype."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    return torch.where(x >= 0, torch.ones((), dtype=x.dtype, device=x.device),
                       -torch.ones((), dtype=x.dtype, device=x.device))


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def xnor_alpha(weight, dtype=torch.float32):
    """Per-output-channel scale alpha = mean |w| (XNOR-Net), computed in ``dtype`` exactly as the kernels do."""
    check_tensor("weight", weight, ndim=4, dtypes=FLOAT_DTYPES)
    return weight.detach().contiguous().to(dtype).abs().mean(dim=(1, 2, 3))


# ---------------------------------------------------------------------------------------------------
# Fake (meta) kernels and autograd


@torch.library.register_fake("fastpose::binarize_pack")
def _binarize_pack_fake(x):
    N, C, H, W = x.shape
    return x.new_empty((N, H, W, (C + 63) // 64), dtype=torch.int64)


@torch.library.register_fake("fastpose::xnor_conv2d")
def _xnor_conv2d_fake(x, weight, bias, stride, padding, dilation, scale, pad_value):
    N, _, H, W = x.shape
    Cout, _, KH, KW = weight.shape
    Ho = _out_size(H, KH, stride[0], padding[0], dilation[0])
    Wo = _out_size(W, KW, stride[1], padding[1], dilation[1])
    out = x.new_empty((N, Cout, Ho, Wo))
    return out.contiguous(memory_format=torch.channels_last) if _channels_last(x) else out


@torch.library.register_fake("fastpose::xnor_conv2d_packed")
def _xnor_conv2d_packed_fake(x, weight_packed, alpha, bias, in_channels, stride, padding, dilation, pad_value,
                             bn_scale=None, bn_shift=None, out_dtype=None, channels_last=False):
    Cout, KH, KW, _ = weight_packed.shape
    if x.dtype == torch.int64:
        N, H, W, _ = x.shape
        dtype = torch.float32
        cl = channels_last
    else:
        N, _, H, W = x.shape
        dtype = x.dtype
        cl = channels_last or _channels_last(x)
    if out_dtype is not None:
        dtype = out_dtype
    Ho = _out_size(H, KH, stride[0], padding[0], dilation[0])
    Wo = _out_size(W, KW, stride[1], padding[1], dilation[1])
    out = x.new_empty((N, Cout, Ho, Wo), dtype=dtype)
    return out.contiguous(memory_format=torch.channels_last) if cl else out


@torch.library.register_fake("fastpose::xnor_conv2d_fused")
def _xnor_conv2d_fused_fake(x, weight_packed, alpha, bias, in_channels, stride, padding, dilation, pad_value,
                            in_scale, in_shift, residual, next_scale, next_shift, out, out_packed, pool=False,
                            up_residual=None):
    return None  # writes out / out_packed in place


@torch.library.register_fake("fastpose::xnor_ste_pack")
def _xnor_ste_pack_fake(x):
    N, C, H, W = x.shape
    shape = (N, H, W, (C + 63) // 64)
    return x.new_empty(shape, dtype=torch.int64), x.new_empty(shape, dtype=torch.int64)


@torch.library.register_fake("fastpose::xnor_conv2d_backward_packed")
def _xnor_conv2d_backward_packed_fake(grad, x_sign, x_pass, weight, stride, padding, dilation, scale, pad_value,
                                      output_mask):
    N, H, W, _ = x_sign.shape
    gx = grad.new_empty((N, weight.shape[1], H, W)) if output_mask[0] else grad.new_empty((0,))
    if output_mask[0] and _channels_last(grad):
        gx = gx.contiguous(memory_format=torch.channels_last)
    gw = weight.new_empty(weight.shape) if output_mask[1] else weight.new_empty((0,))
    gb = grad.new_empty((weight.shape[0],)) if output_mask[2] else grad.new_empty((0,))
    return gx, gw, gb


# The autograd of fastpose::xnor_conv2d is registered in C++ (csrc/autograd/xnor_conv.cpp).


# ---------------------------------------------------------------------------------------------------
# References (plain PyTorch: the model zoo's "torch" backend, ONNX export, and the tests)


def binarize_pack_reference(x):
    """``binarize_pack`` in plain PyTorch (slow, obviously correct)."""
    N, C, H, W = x.shape
    CW = packed_words(C)
    bits = (x >= 0).permute(0, 2, 3, 1).to(torch.int64)
    bits = F.pad(bits, (0, CW * 64 - C))
    bits = bits.reshape(N, H, W, CW, 64) << torch.arange(64, device=x.device)
    return bits.sum(-1)  # distinct powers of two: the int64 sum wraps to the bitwise or


def binary_unpack(packed, channels, dtype=torch.float32):
    """Inverse of ``binarize_pack``: int64 (N, H, W, words) -> +-1 (N, channels, H, W) in ``dtype``."""
    check_tensor("packed", packed, ndim=4, dtypes=(torch.int64,))
    channels = check_int("channels", channels, 1)
    N, H, W, CW = packed.shape
    if CW != packed_words(channels):
        raise ValueError(f"packed has {CW} words per pixel but {channels} channels need {packed_words(channels)}")
    shifts = torch.arange(64, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    bits = bits.reshape(N, H, W, CW * 64)[..., :channels].permute(0, 3, 1, 2)
    return (bits.to(dtype) * 2 - 1).contiguous()


def xnor_conv2d_reference(x, weight, bias=None, stride=1, padding=0, dilation=1, scale=True, pad_value=0,
                          alpha=None):
    """``xnor_conv2d`` through plain PyTorch ops (sign, then conv2d, times alpha, plus bias).

    Bit-identical to the kernels (the module docstring gives the formula). ``x`` may be float (N, Cin, H, W)
    or packed int64 (N, H, W, words); ``weight`` float (Cout, Cin, KH, KW). ``alpha`` overrides the scale.
    """
    check_tensor("weight", weight, ndim=4, dtypes=FLOAT_DTYPES)
    _check_x(x, weight.shape[1])
    _check_conv_args(x, weight, bias, pad_value)
    check_same_device(x=x, weight=weight, bias=bias)
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _check_output_size(x, weight.shape[2:], stride, padding, dilation)
    if x.dtype == torch.int64:
        out_dtype = torch.float32
        xb = binary_unpack(x, weight.shape[1])
    else:
        out_dtype = x.dtype
        xb = binarize(x)
    acc = _acc_dtype(out_dtype)
    xb = xb.to(acc)
    wb = binarize(weight).to(acc)
    if pad_value == -1:
        xb = F.pad(xb, (padding[1], padding[1], padding[0], padding[0]), value=-1.0)
        padding = [0, 0]
    elif pad_value != 0:
        raise ValueError(f"pad_value must be 0 or -1, got {pad_value}")
    out = F.conv2d(xb, wb, stride=stride, padding=padding, dilation=dilation)
    if alpha is None and scale:
        alpha = xnor_alpha(weight, acc)
    if alpha is not None:
        out = out * alpha.to(acc).view(1, -1, 1, 1)
    if bias is not None:
        out = out + bias.to(acc).view(1, -1, 1, 1)
    out = out.to(out_dtype)
    if x.dtype != torch.int64 and _channels_last(x):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


# ---------------------------------------------------------------------------------------------------
# Public API


def binarize_pack(x):
    """Packs the signs of a float (N, C, H, W) tensor into int64 words (N, H, W, ceil(C / 64)).

    Bit 64 k + b of a pixel is channel 64 k + b's sign: 1 = +1 (x >= 0), 0 = -1. See the module docstring.
    Any strides (NCHW, channels_last, non-contiguous) are accepted.
    """
    check_tensor("x", x, ndim=4, dtypes=FLOAT_DTYPES)
    return torch.ops.fastpose.binarize_pack(x)


def _check_conv_args(x, weight, bias, pad_value, packed_channels=None):
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)) or pad_value not in (0, -1):
        raise ValueError(f"pad_value must be 0 or -1, got {pad_value!r}")
    cout = weight.shape[0] if weight is not None else None
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=FLOAT_DTYPES)
        if cout is not None and bias.shape[0] != cout:
            raise ValueError(f"bias must be ({cout},), got shape {tuple(bias.shape)}")


def _check_output_size(x, kernel, stride, padding, dilation):
    H, W = (x.shape[1:3] if x.dtype == torch.int64 else x.shape[2:])
    (kh, kw), (ph, pw), (dh, dw) = kernel, padding, dilation
    if H + 2 * ph - dh * (kh - 1) > 0 and W + 2 * pw - dw * (kw - 1) > 0:  # the common case, at once
        return
    for n, k, p, d, axis in ((H, kh, ph, dh, "H"), (W, kw, pw, dw, "W")):
        if n + 2 * p - d * (k - 1) - 1 < 0:
            raise ValueError(f"the (dilated) kernel size {d * (k - 1) + 1} is larger than the padded input "
                             f"{axis} {n + 2 * p} (x of shape {tuple(x.shape)})")


def _check_x(x, cin):
    check_tensor("x", x, ndim=4, dtypes=FLOAT_DTYPES + (torch.int64,))
    if x.dtype == torch.int64:
        cw = packed_words(cin)
        if x.shape[-1] != cw:
            raise ValueError(f"packed x must be (N, H, W, {cw}) int64 words for {cin} input channels "
                             f"(see fastpose.ops.binarize_pack), got shape {tuple(x.shape)}")
    elif x.shape[1] != cin:
        raise ValueError(f"x must be (N, {cin}, H, W) to match the weight's in_channels, got shape {tuple(x.shape)}")


# The quick path of the public convolutions: an eager call with plain int arguments goes to the op at
# once. The op's C++ checks refuse every argument the Python checks refuse, and a refusal (one of
# _QUICK_REFUSALS) reruns the call through those checks, which raise the error naming the argument.
_QUICK_REFUSALS = (RuntimeError, TypeError, ValueError, IndexError, AttributeError)


def _quick_call_ok(*ints):
    return all(type(v) is int for v in ints) and not exporting() and not torch.compiler.is_compiling()


def xnor_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, scale=True, pad_value=0):
    """Binary (XNOR-popcount) convolution: ``conv2d(sign(x), sign(w)) * alpha + bias``, exactly.

    Args:
        x: float (N, Cin, H, W) (float32/float16/bfloat16/float64, any layout), or packed sign bits from
            ``binarize_pack`` (int64 (N, H, W, ceil(Cin / 64))).
        weight: float (Cout, Cin, KH, KW); its signs are the binary filters.
        bias: optional (Cout).
        stride, padding, dilation: int or pair, as in ``F.conv2d`` (groups = 1 only).
        scale: multiply by alpha = mean |w| per output channel (XNOR-Net); 1 when False.
        pad_value: 0 (border taps contribute nothing: zero padding, exact) or -1 (border taps read as -1).
    Returns:
        (N, Cout, Ho, Wo) in x's float dtype (float32 for packed x), channels_last if x is.
    Float inputs are differentiable with straight-through estimators (module docstring). Under ONNX
    export or tracing, the plain PyTorch reference (sign, then conv2d) is used.
    """
    # The common call (float x, int geometry, eager) goes to the op at once (_quick_call_ok; ~4 us of
    # Python per call saved: a tenth of a 16x16 layer). The op's C++ autograd kernel skips saving
    # anything when no input requires a gradient.
    if _quick_call_ok(stride, padding, dilation, pad_value):
        try:
            if x.dtype is not torch.int64 and x.device == weight.device and (bias is None or bias.device == x.device):
                return _XNOR_CONV2D(x, weight, bias, stride, padding, dilation, scale, pad_value)
        except _QUICK_REFUSALS:
            pass
    return _xnor_conv2d_checked(x, weight, bias, stride, padding, dilation, scale, pad_value)


def _xnor_conv2d_checked(x, weight, bias, stride, padding, dilation, scale, pad_value):
    check_tensor("weight", weight, ndim=4, dtypes=FLOAT_DTYPES)
    _check_x(x, weight.shape[1])
    _check_conv_args(x, weight, bias, pad_value)
    # A CUDA kernel handed a tensor of another device would read a foreign pointer.
    if x.device != weight.device or (bias is not None and bias.device != x.device):
        check_same_device(x=x, weight=weight, bias=bias)
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _check_output_size(x, weight.shape[2:], stride, padding, dilation)
    pad_value = int(pad_value)
    if exporting():
        return xnor_conv2d_reference(x, weight, bias, stride, padding, dilation, scale, pad_value)
    if x.dtype == torch.int64:
        alpha = xnor_alpha(weight, torch.float32) if scale else None
        return torch.ops.fastpose.xnor_conv2d_packed(x, torch.ops.fastpose.binarize_pack(weight.detach()), alpha,
                                                     bias, weight.shape[1], stride, padding, dilation, pad_value)
    return _XNOR_CONV2D(x, weight, bias, stride, padding, dilation, bool(scale), pad_value)


_XNOR_CONV2D = torch.ops.fastpose.xnor_conv2d.default  # the overload itself: no packet lookup per call
_XNOR_CONV2D_PACKED = torch.ops.fastpose.xnor_conv2d_packed.default


def xnor_conv2d_packed(x, weight_packed, alpha, bias, in_channels, stride=1, padding=0, dilation=1, pad_value=0,
                       bn_scale=None, bn_shift=None, out_dtype=None, channels_last=False):
    """Inference with pre-packed weights (``binarize_pack(weight)``: int64 (Cout, KH, KW, ceil(Cin / 64))).

    x: float (N, Cin, H, W) or packed int64 (N, H, W, words). alpha: (Cout) or None (no scale).
    Optional folded BatchNorm applied after alpha and bias: ``v * bn_scale + bn_shift``. out_dtype
    overrides the output dtype (default: x's float dtype, float32 for packed x); channels_last=True
    writes NHWC memory. Not differentiable.
    """
    # The common CPU call goes to the op at once (_quick_call_ok): the checks below cost ~10 us of
    # Python, more than the whole op on a 16x16 layer.
    if _quick_call_ok(stride, padding, dilation, pad_value, in_channels) and type(channels_last) is bool:
        try:
            dev = x.device
            if dev.type == "cpu" and weight_packed.device == dev and all(
                    t is None or t.device == dev for t in (alpha, bias, bn_scale, bn_shift)):
                return _XNOR_CONV2D_PACKED(x, weight_packed, alpha, bias, in_channels, [stride, stride],
                                           [padding, padding], [dilation, dilation], pad_value, bn_scale, bn_shift,
                                           out_dtype, channels_last)
        except _QUICK_REFUSALS:
            pass
    check_tensor("weight_packed", weight_packed, ndim=4, dtypes=(torch.int64,))
    in_channels = check_int("in_channels", in_channels, 1)
    cw = packed_words(in_channels)
    if weight_packed.shape[-1] != cw:
        raise ValueError(f"weight_packed must be (Cout, KH, KW, {cw}) int64 words for in_channels={in_channels}, "
                         f"got shape {tuple(weight_packed.shape)}")
    _check_x(x, in_channels)
    _check_conv_args(x, weight_packed, bias, pad_value)
    for name, t in (("alpha", alpha), ("bn_scale", bn_scale), ("bn_shift", bn_shift)):
        if t is not None:
            check_tensor(name, t, ndim=1, dtypes=FLOAT_DTYPES)
            if t.shape[0] != weight_packed.shape[0]:
                raise ValueError(f"{name} must be ({weight_packed.shape[0]},), got shape {tuple(t.shape)}")
    if bn_shift is not None and bn_scale is None:
        raise ValueError("bn_shift needs bn_scale (pass ones for a shift alone)")
    check_same_device(x=x, weight_packed=weight_packed, alpha=alpha, bias=bias, bn_scale=bn_scale, bn_shift=bn_shift)
    if out_dtype is not None and out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"out_dtype must be one of float32, float16, bfloat16, float64 or None, got {out_dtype}")
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _check_output_size(x, weight_packed.shape[1:3], stride, padding, dilation)
    if exporting():
        # Standard ops only: unpack the filters, then the float reference.
        w = binary_unpack(weight_packed, in_channels)  # (Cout, KH, KW, words) unpacks to (Cout, Cin, KH, KW)
        out = xnor_conv2d_reference(x, w, bias, stride, padding, dilation, False, int(pad_value), alpha=alpha)
        if bn_scale is not None:
            out = out * bn_scale.view(1, -1, 1, 1) + (bn_shift.view(1, -1, 1, 1) if bn_shift is not None else 0)
        return out.to(out_dtype) if out_dtype is not None else out
    return torch.ops.fastpose.xnor_conv2d_packed(x, weight_packed, alpha, bias, int(in_channels), stride, padding,
                                                 dilation, int(pad_value), bn_scale, bn_shift, out_dtype,
                                                 bool(channels_last))


# ---------------------------------------------------------------------------------------------------
# The fused form of one convolution of a packed binary stage (the packed HPM model's building block)


def xnor_conv2d_fused_reference(x, weight_packed, alpha, bias, in_channels, stride=1, padding=0, dilation=1,
                                pad_value=0, in_scale=None, in_shift=None, residual=None, next_scale=None,
                                next_shift=None, *, out, out_packed=None, pool=False, up_residual=None):
    """``xnor_conv2d_fused`` through plain PyTorch ops (any device); writes ``out`` and ``out_packed``.

    Every multiply and add is its own op, so each rounds once: exactly the kernel's arithmetic (pool:
    ``F.avg_pool2d``'s, which the kernel reproduces).
    """
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    acc = out.dtype
    if x.dtype == torch.int64:
        xb = binary_unpack(x, in_channels, acc)
    else:
        if in_scale is not None:
            x = x * in_scale.view(1, -1, 1, 1)
            x = x + in_shift.view(1, -1, 1, 1)
        xb = binarize(x).to(acc)
    wb = binary_unpack(weight_packed, in_channels, acc)
    if pad_value == -1:
        xb = F.pad(xb, (padding[1], padding[1], padding[0], padding[0]), value=-1.0)
        padding = [0, 0]
    v = F.conv2d(xb, wb, stride=stride, padding=padding, dilation=dilation)  # exact integers
    if alpha is not None:
        v = v * alpha.to(acc).view(1, -1, 1, 1)
    if bias is not None:
        v = v + bias.to(acc).view(1, -1, 1, 1)
    if out_packed is not None:
        u = v
        if next_scale is not None:
            u = u * next_scale.view(1, -1, 1, 1)
            if next_shift is not None:
                u = u + next_shift.view(1, -1, 1, 1)
        out_packed.copy_(binarize_pack_reference(u))
    v = v + residual if residual is not None else v
    if up_residual is not None:
        v = v + up_residual.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest, x2
    if pool:  # (avg_pool2d refuses a 1-pixel side, whose pooled output is empty)
        if out.numel():
            out.copy_(F.avg_pool2d(v, 2, 2))
    else:
        out.copy_(v)


def xnor_conv2d_fused(x, weight_packed, alpha, bias, in_channels, stride=1, padding=0, dilation=1, pad_value=0,
                      in_scale=None, in_shift=None, residual=None, next_scale=None, next_shift=None, *, out,
                      out_packed=None, pool=False, up_residual=None):
    """One binary convolution of a packed network stage, its results written in place (inference only).

    Computes, with every multiply and add rounded on its own (no fused multiply-add), in ``out.dtype``:

        xb  = sign(x * in_scale + in_shift)    float x and a folded BatchNorm (x's dtype, float32/float64)
              sign(x)                          float x without in_scale; packed int64 x is used as is
        v   = conv2d(xb, sign(w)) * alpha + bias                  (as ``xnor_conv2d_packed``)
        out[...]        = v + residual                            (v without residual)
        out_packed[...] = binarize_pack(v * next_scale + next_shift)   (binarize_pack(v) without next_scale)

    ``up_residual``: out's dtype, (N, Cout, Ho / 2, Wo / 2) (even Ho, Wo), added nearest-upsampled after the
    residual, ``out = (v + residual) + upsample2(up_residual)``: an hourglass level's merge of its lower
    branch into the skip branch's last block, so the skip output is never stored on its own.

    ``pool=True``: ``out[...] = avg_pool2d(v + residual, 2, 2)`` instead, (N, Cout, Ho // 2, Wo // 2), with
    ATen's summation order, so bit for bit the two ops; the full-size values are never stored (a block
    whose output is only pooled, like the HPM stem's). ``out_packed`` and ``residual`` stay full size.

    ``out``: float32/float64 (N, Cout, Ho, Wo) (pool: (N, Cout, Ho // 2, Wo // 2)) with any strides, e.g. a
    channel slice ``buf[:, c0:c1]`` of a concatenation written in place. ``residual``: (N, Cout, Ho, Wo) in
    out's dtype (e.g. the matching slice of the shortcut). With pool or up_residual, and for out_packed,
    the overlap test is by byte span: views that interleave in one buffer are refused even if disjoint. ``out_packed``: contiguous int64 (N, Ho, Wo, ceil(Cout / 64)): the next binary convolution's
    packed input, so its BatchNorm + sign never materialise a float tensor. in_scale / in_shift: (Cin) in
    x's dtype; next_scale / next_shift: (Cout) in out's dtype. ``v >= 0`` maps to +1 (-0.0 too), NaN to -1.

    CPU kernels; on other devices the plain PyTorch reference ``xnor_conv2d_fused_reference`` runs.
    """
    check_tensor("weight_packed", weight_packed, ndim=4, dtypes=(torch.int64,))
    cw = packed_words(in_channels)
    if weight_packed.shape[-1] != cw:
        raise ValueError(f"weight_packed must be (Cout, KH, KW, {cw}) int64 words for in_channels={in_channels}, "
                         f"got shape {tuple(weight_packed.shape)}")
    _check_x(x, in_channels)
    check_tensor("out", out, ndim=4, dtypes=(torch.float32, torch.float64))
    if out_packed is not None:
        check_tensor("out_packed", out_packed, ndim=4, dtypes=(torch.int64,))
    if residual is not None:
        check_tensor("residual", residual, ndim=4, dtypes=(out.dtype,))
    if up_residual is not None:
        check_tensor("up_residual", up_residual, ndim=4, dtypes=(out.dtype,))
    if (in_scale is None) != (in_shift is None):
        raise ValueError("in_scale and in_shift go together")
    if next_scale is not None and out_packed is None:
        raise ValueError("next_scale needs out_packed")
    if not isinstance(pad_value, (int, float)) or pad_value not in (0, -1):
        raise ValueError(f"pad_value must be 0 or -1, got {pad_value!r}")
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    # Shapes here too: the reference that other devices run would broadcast a wrong one silently.
    N, H, W = (x.shape[0], x.shape[1], x.shape[2]) if x.dtype == torch.int64 else (x.shape[0], x.shape[2], x.shape[3])
    cout, kh, kw = weight_packed.shape[:3]
    conv = (N, cout, _out_size(H, kh, stride[0], padding[0], dilation[0]),
            _out_size(W, kw, stride[1], padding[1], dilation[1]))
    want = (N, cout, conv[2] // 2, conv[3] // 2) if pool else conv
    if tuple(out.shape) != want:
        raise ValueError(f"out must be {want}{' (the 2x2 pool of the convolution output)' if pool else ''}, "
                         f"got shape {tuple(out.shape)}")
    if residual is not None and tuple(residual.shape) != conv:
        raise ValueError(f"residual must be the convolution's output shape {conv}, got {tuple(residual.shape)}")
    if up_residual is not None:
        if conv[2] % 2 or conv[3] % 2:
            raise ValueError(f"up_residual needs an even output size, got {conv[2]} x {conv[3]}")
        if tuple(up_residual.shape) != (N, cout, conv[2] // 2, conv[3] // 2):
            raise ValueError(f"up_residual must be {(N, cout, conv[2] // 2, conv[3] // 2)} (half the convolution's "
                             f"output size), got {tuple(up_residual.shape)}")
    args = (x, weight_packed, alpha, bias, int(in_channels), stride, padding, dilation, int(pad_value), in_scale,
            in_shift, residual, next_scale, next_shift)
    if out.device.type != "cpu":
        return xnor_conv2d_fused_reference(*args, out=out, out_packed=out_packed, pool=bool(pool),
                                           up_residual=up_residual)
    torch.ops.fastpose.xnor_conv2d_fused(*args, out, out_packed, bool(pool), up_residual)

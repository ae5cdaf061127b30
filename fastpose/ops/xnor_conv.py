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
On the CPU (float32 / float64) the autograd saves two bit planes of x instead of x (``xnor_ste_pack``:
the sign and the |x| <= 1 window, 2 bits per element) and runs the fused
``fastpose::xnor_conv2d_backward_packed``: sign(x) unpacked straight into the gradient's layout, one
oneDNN ``convolution_backward`` on alpha * sign(w) (input, weight and bias gradients), the window applied
while cropping the input gradient, the alpha chain in one loop. Other devices and dtypes, and
``create_graph=True``, take the composite (differentiable) ``xnor_conv2d_backward``.
"""
import torch
import torch.nn.functional as F

from .._checks import FLOAT_DTYPES, check_tensor

__all__ = ["binarize", "binarize_pack", "binary_unpack", "xnor_alpha", "xnor_conv2d", "xnor_conv2d_packed",
           "xnor_conv2d_reference", "packed_words"]


def packed_words(channels):
    """Number of 64-bit words per pixel for ``channels`` channels."""
    return (int(channels) + 63) // 64


def _pair(v, name):
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    if len(v) == 1:
        return [int(v[0])] * 2
    if len(v) != 2 or not all(isinstance(i, int) for i in v):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v}")
    return [int(i) for i in v]


def _channels_last(t):
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def binarize(x):
    """+1 where x >= 0 (including -0.0), else -1 (NaN gives -1), in x's dtype."""
    return torch.where(x >= 0, torch.ones((), dtype=x.dtype, device=x.device),
                       -torch.ones((), dtype=x.dtype, device=x.device))


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def xnor_alpha(weight, dtype=torch.float32):
    """Per-output-channel scale alpha = mean |w| (XNOR-Net), computed in ``dtype`` exactly as the kernels do."""
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


# The fused CPU backward reads x only through its sign and its |x| <= 1 window: the autograd saves those
# two bit planes (2 bits per element instead of 32) rather than x.
_FUSED_DTYPES = (torch.float32, torch.float64)


def _setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, scale, pad_value = inputs
    ctx.args = (stride, padding, dilation, scale, pad_value)
    ctx.has_bias = bias is not None
    ctx.fused = x.device.type == "cpu" and x.dtype in _FUSED_DTYPES and (ctx.needs_input_grad[0]
                                                                          or ctx.needs_input_grad[1])
    if ctx.fused:
        ctx.x_dtype, ctx.x_channels_last = x.dtype, _channels_last(x)
        ctx.save_for_backward(*torch.ops.fastpose.xnor_ste_pack(x), weight)
    else:
        ctx.save_for_backward(x, weight)


def _ste_input(sign, passed, channels, dtype, channels_last):
    """A stand-in for x with the same sign and |x| <= 1 window (+-0.5 inside, +-2 outside): all the
    straight-through backward depends on, so the composite backward (and its derivatives) is exact on it."""
    x = binary_unpack(sign, channels, dtype) * (1.25 - 0.75 * binary_unpack(passed, channels, dtype))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _backward(ctx, grad):
    stride, padding, dilation, scale, pad_value = ctx.args
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    if ctx.fused:
        sign, passed, weight = ctx.saved_tensors
        if not torch.is_grad_enabled() and grad.dtype == ctx.x_dtype:
            gx, gw, gb = torch.ops.fastpose.xnor_conv2d_backward_packed(grad, sign, passed, weight, stride, padding,
                                                                        dilation, scale, pad_value, mask)
            return (gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None,
                    None, None, None, None, None)
        # create_graph=True (double backward): the differentiable composite, on the stand-in input
        x = _ste_input(sign, passed, weight.shape[1], ctx.x_dtype, ctx.x_channels_last)
    else:
        x, weight = ctx.saved_tensors
    gx, gw, gb = torch.ops.fastpose.xnor_conv2d_backward(grad.contiguous(), x, weight, stride, padding, dilation,
                                                         scale, pad_value, mask)
    return (gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None,
            None, None, None, None, None)


torch.library.register_autograd("fastpose::xnor_conv2d", _backward, setup_context=_setup)


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
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
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
    if not isinstance(pad_value, (int, float)) or pad_value not in (0, -1):
        raise ValueError(f"pad_value must be 0 or -1, got {pad_value!r}")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=FLOAT_DTYPES)


def _check_x(x, cin):
    check_tensor("x", x, ndim=4, dtypes=FLOAT_DTYPES + (torch.int64,))
    if x.dtype == torch.int64:
        cw = packed_words(cin)
        if x.shape[-1] != cw:
            raise ValueError(f"packed x must be (N, H, W, {cw}) int64 words for {cin} input channels "
                             f"(see fastpose.ops.binarize_pack), got shape {tuple(x.shape)}")
    elif x.shape[1] != cin:
        raise ValueError(f"x must be (N, {cin}, H, W) to match the weight's in_channels, got shape {tuple(x.shape)}")


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
    check_tensor("weight", weight, ndim=4, dtypes=FLOAT_DTYPES)
    _check_x(x, weight.shape[1])
    _check_conv_args(x, weight, bias, pad_value)
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ValueError(f"bias must be ({weight.shape[0]},), got shape {tuple(bias.shape)}")
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    pad_value = int(pad_value)
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return xnor_conv2d_reference(x, weight, bias, stride, padding, dilation, scale, pad_value)
    if x.dtype == torch.int64:
        alpha = xnor_alpha(weight, torch.float32) if scale else None
        return torch.ops.fastpose.xnor_conv2d_packed(x, torch.ops.fastpose.binarize_pack(weight.detach()), alpha,
                                                     bias, weight.shape[1], stride, padding, dilation, pad_value)
    return torch.ops.fastpose.xnor_conv2d(x, weight, bias, stride, padding, dilation, bool(scale), pad_value)


def xnor_conv2d_packed(x, weight_packed, alpha, bias, in_channels, stride=1, padding=0, dilation=1, pad_value=0,
                       bn_scale=None, bn_shift=None, out_dtype=None, channels_last=False):
    """Inference with pre-packed weights (``binarize_pack(weight)``: int64 (Cout, KH, KW, ceil(Cin / 64))).

    x: float (N, Cin, H, W) or packed int64 (N, H, W, words). alpha: (Cout) or None (no scale).
    Optional folded BatchNorm applied after alpha and bias: ``v * bn_scale + bn_shift``. out_dtype
    overrides the output dtype (default: x's float dtype, float32 for packed x); channels_last=True
    writes NHWC memory. Not differentiable.
    """
    check_tensor("weight_packed", weight_packed, ndim=4, dtypes=(torch.int64,))
    cw = packed_words(in_channels)
    if weight_packed.shape[-1] != cw:
        raise ValueError(f"weight_packed must be (Cout, KH, KW, {cw}) int64 words for in_channels={in_channels}, "
                         f"got shape {tuple(weight_packed.shape)}")
    _check_x(x, in_channels)
    _check_conv_args(x, None, bias, pad_value)
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        # Standard ops only: unpack the filters, then the float reference.
        w = binary_unpack(weight_packed, in_channels)  # (Cout, KH, KW, words) unpacks to (Cout, Cin, KH, KW)
        out = xnor_conv2d_reference(x, w, bias, stride, padding, dilation, False, int(pad_value), alpha=alpha)
        if bn_scale is not None:
            out = out * bn_scale.view(1, -1, 1, 1) + (bn_shift.view(1, -1, 1, 1) if bn_shift is not None else 0)
        return out.to(out_dtype) if out_dtype is not None else out
    return torch.ops.fastpose.xnor_conv2d_packed(x, weight_packed, alpha, bias, int(in_channels), stride, padding,
                                                 dilation, int(pad_value), bn_scale, bn_shift, out_dtype,
                                                 bool(channels_last))

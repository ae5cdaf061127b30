"""Binary (XNOR-Net style) layers: XNORConv2d, its packed inference form, BinaryActivation, helpers.

``XNORConv2d`` is a drop-in for ``nn.Conv2d`` (same constructor, same ``weight``/``bias`` parameters and
state_dict keys) whose forward is ``fastpose.ops.xnor_conv2d``: ``conv2d(sign(x), sign(w)) * alpha + bias``
with straight-through gradients. ``backend="torch"`` (or ``use_reference = True``) computes the same
values, bit for bit, through plain PyTorch ops (sign, conv2d, multiply, add); ONNX export and tracing
always take that path. ``fastpose.nn.pack(model)`` turns every XNORConv2d into a ``PackedXNORConv2d``
holding 1 bit per weight (plus alpha): its state_dict is about 32x smaller.
"""
import copy

import torch
from torch import nn

from .._tracing import exporting
from ..ops import xnor_conv as _x

__all__ = ["XNORConv2d", "PackedXNORConv2d", "BinaryActivation", "binary_sign", "clip_binary_weights", "pack",
           "set_xnor_backend"]

_BACKENDS = ("fastpose", "torch")


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _x.binarize(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


def binary_sign(x):
    """sign(x) with x >= 0 -> +1 and the hard-tanh straight-through gradient (passed where |x| <= 1)."""
    if exporting():
        return _x.binarize(x)
    return _SignSTE.apply(x)


class BinaryActivation(nn.Module):
    """``binary_sign`` as a module: +-1 forward, gradient passed where |x| <= 1 (hard-tanh STE)."""

    def forward(self, x):
        return binary_sign(x)


class _ReferenceXnor(torch.autograd.Function):
    """The plain-PyTorch forward with the same straight-through backward as the fastpose op."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, scale, pad_value):
        ctx.save_for_backward(x, weight)
        ctx.args = (stride, padding, dilation, scale, pad_value)
        ctx.has_bias = bias is not None
        return _x.xnor_conv2d_reference(x, weight, bias, stride, padding, dilation, scale, pad_value)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, scale, pad_value = ctx.args
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.fastpose.xnor_conv2d_backward(grad.contiguous(), x, weight, stride, padding,
                                                             dilation, scale, pad_value, mask)
        return (gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None,
                None, None, None, None, None)


def _conv_padding(padding, kernel_size, dilation):
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        # "same" at stride 1: symmetric only (odd effective kernel), as the kernels pad symmetrically.
        out = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            if total % 2:
                raise ValueError(f"XNORConv2d: padding='same' needs a symmetric padding; kernel {k} with "
                                 f"dilation {d} would need {total} pixels")
            out.append(total // 2)
        return tuple(out)
    return tuple(padding)


def _check_backend(backend):
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    return backend


class XNORConv2d(nn.Conv2d):
    """Binary convolution, a drop-in for ``nn.Conv2d``.

    Same arguments as ``nn.Conv2d`` (groups must be 1, padding_mode 'zeros'), plus:
        scale: multiply by alpha = mean |w| per output channel (XNOR-Net), default True.
        pad_value: 0 (zero padding, exact) or -1 (border taps read as -1, as the original binary
            hourglass kernels did).
        backend: "fastpose" (the XNOR-popcount kernels) or "torch" (plain PyTorch ops, bit-identical).
    The forward is ``fastpose.ops.xnor_conv2d(x, self.weight, self.bias, ...)``; its gradients are the
    straight-through estimators documented in ``fastpose.ops.xnor_conv``. Keep the latent float weights
    bounded with ``clip_binary_weights(model, 1.0)`` after optimiser steps, as XNOR-Net does.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, scale=True, pad_value=0.0,
                 backend="fastpose"):
        if groups != 1:
            raise ValueError(f"XNORConv2d supports groups=1 only, got groups={groups}")
        if padding_mode != "zeros":
            raise ValueError(f"XNORConv2d supports padding_mode='zeros' only (see pad_value for -1 borders), "
                             f"got {padding_mode!r}")
        if pad_value not in (0, -1):
            raise ValueError(f"pad_value must be 0 or -1, got {pad_value!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        _conv_padding(self.padding, self.kernel_size, self.dilation)  # an asymmetric "same" fails here, not later
        self.scale = bool(scale)
        self.pad_value = int(pad_value)
        self.backend = _check_backend(backend)

    @property
    def use_reference(self):
        """True when the forward runs through plain PyTorch ops (backend "torch")."""
        return self.backend == "torch"

    @use_reference.setter
    def use_reference(self, value):
        self.backend = "torch" if value else "fastpose"

    def extra_repr(self):
        return super().extra_repr() + f", scale={self.scale}, pad_value={self.pad_value}, backend={self.backend}"

    def _args(self):
        return (list(self.stride), list(_conv_padding(self.padding, self.kernel_size, self.dilation)),
                list(self.dilation), self.scale, self.pad_value)

    def forward(self, x):
        stride, padding, dilation, scale, pad_value = self._args()
        if exporting():
            return _x.xnor_conv2d_reference(x, self.weight, self.bias, stride, padding, dilation, scale, pad_value)
        if self.use_reference:
            if torch.compiler.is_compiling() or not torch.is_grad_enabled():
                return _x.xnor_conv2d_reference(x, self.weight, self.bias, stride, padding, dilation, scale,
                                                pad_value)
            return _ReferenceXnor.apply(x, self.weight, self.bias, stride, padding, dilation, scale, pad_value)
        return _x.xnor_conv2d(x, self.weight, self.bias, stride, padding, dilation, scale, pad_value)


class PackedXNORConv2d(nn.Module):
    """Inference form of ``XNORConv2d``: filters stored as packed sign bits.

    Buffers: ``weight_packed`` int64 (Cout, KH, KW, ceil(Cin / 64)) (``fastpose.ops.binarize_pack`` of the
    float weight), ``alpha`` float32 (Cout) when scale=True, ``bias`` float32 (Cout) when bias=True.
    A fresh module built with the same arguments loads a saved state_dict. Input: float (N, Cin, H, W) or
    packed int64 (N, H, W, words). Output: x's float dtype (float32 for packed x). Not trainable.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 scale=True, pad_value=0, backend="fastpose", device=None):
        super().__init__()
        pair = nn.modules.utils._pair
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.dilation = pair(kernel_size), pair(stride), pair(dilation)
        self.padding = _conv_padding(padding if isinstance(padding, str) else pair(padding), self.kernel_size,
                                     self.dilation)
        if pad_value not in (0, -1):
            raise ValueError(f"pad_value must be 0 or -1, got {pad_value!r}")
        self.pad_value = int(pad_value)
        self.scale = bool(scale)
        self.backend = _check_backend(backend)
        kh, kw = self.kernel_size
        words = _x.packed_words(in_channels)
        self.register_buffer("weight_packed", torch.zeros(out_channels, kh, kw, words, dtype=torch.int64,
                                                          device=device))
        self.register_buffer("alpha", torch.ones(out_channels, device=device) if scale else None)
        self.register_buffer("bias", torch.zeros(out_channels, device=device) if bias else None)

    @property
    def use_reference(self):
        return self.backend == "torch"

    @use_reference.setter
    def use_reference(self, value):
        self.backend = "torch" if value else "fastpose"

    @classmethod
    def from_float(cls, m):
        """The packed form of an ``XNORConv2d`` (same outputs, bit for bit)."""
        if not isinstance(m, XNORConv2d):
            raise TypeError(f"expected an XNORConv2d, got {type(m).__name__}")
        w = m.weight.detach()
        p = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                _conv_padding(m.padding, m.kernel_size, m.dilation), m.dilation, bias=m.bias is not None,
                scale=m.scale, pad_value=m.pad_value, backend=m.backend, device=w.device)
        with torch.no_grad():
            p.weight_packed.copy_(torch.ops.fastpose.binarize_pack(w))
            if m.scale:
                p.alpha.copy_(_x.xnor_alpha(w, torch.float32))
            if m.bias is not None:
                p.bias.copy_(m.bias.detach().float())
        return p

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
                f"scale={self.scale}, pad_value={self.pad_value}, backend={self.backend}")

    def forward(self, x):
        args = (self.in_channels, list(self.stride), list(self.padding), list(self.dilation), self.pad_value)
        if self.use_reference and not exporting():
            w = _x.binary_unpack(self.weight_packed, self.in_channels)
            return _x.xnor_conv2d_reference(x, w, self.bias, self.stride, self.padding, self.dilation, False,
                                            self.pad_value, alpha=self.alpha)
        return _x.xnor_conv2d_packed(x, self.weight_packed, self.alpha, self.bias, *args)


def pack(model, inplace=False):
    """The model with every ``XNORConv2d`` replaced by its ``PackedXNORConv2d`` (1 bit per weight + alpha).

    Works on a deep copy unless ``inplace``; a bare XNORConv2d returns its packed module.
    """
    if isinstance(model, XNORConv2d):
        return PackedXNORConv2d.from_float(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    for name, child in list(model.named_children()):
        if isinstance(child, XNORConv2d):
            setattr(model, name, PackedXNORConv2d.from_float(child))
        else:
            pack(child, inplace=True)
    return model


@torch.no_grad()
def clip_binary_weights(model, value=1.0):
    """Clamps the latent float weights of every XNORConv2d in ``model`` to [-value, value] in place."""
    if not float(value) >= 0:
        raise ValueError(f"value must be >= 0, got {value!r}")
    for m in model.modules():
        if isinstance(m, XNORConv2d):
            m.weight.clamp_(-value, value)
    return model


def set_xnor_backend(model, backend):
    """Sets ``backend`` ("fastpose" or "torch") on every XNORConv2d / PackedXNORConv2d in ``model``."""
    _check_backend(backend)
    for m in model.modules():
        if isinstance(m, (XNORConv2d, PackedXNORConv2d)):
            m.backend = backend
    return model

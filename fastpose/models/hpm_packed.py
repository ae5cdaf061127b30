"""The inference path of the binary HPM hourglass (eval mode, autograd off), packed or not.

An HPM block is three binary convolutions in a chain, each reading only the signs of a BatchNorm of
the previous output; their outputs are concatenated and the shortcut added. Here each convolution is one
``fastpose.ops.xnor_conv2d_fused`` call that

- reads the block input through its BatchNorm folded into the bit packing (no float ``bn(x)``),
- writes its float output straight into its channel slice of the block's output, shortcut added
  (no separate concatenation or residual pass), and
- writes the packed signs of the next BatchNorm of that output: the next convolution's input.

Activations are channels_last from the first convolution on; the real-valued convolutions (stem,
projections, heads, merges) run through oneDNN on channels_last tensors, which at one thread and batch 1
PyTorch's own dispatch does not pick for 1x1 filters (it uses the NCHW ``_slow_conv2d_forward``).

Exactness contract. In this path BatchNorm is *defined* as the folded affine map, in the model's dtype,

    scale = weight / sqrt(running_var + eps),   shift = bias - running_mean * scale,
    bn(x) = (x * scale) + shift                 (two roundings, never a fused multiply-add)

and the sign as ``bn(x) >= 0 -> +1`` (-0.0 too; NaN -> -1). A BatchNorm that follows a real-valued
convolution (the stem's and the heads' conv -> bn -> relu) is instead folded into that convolution
(``folded_conv_bn``: weight * scale, bias * scale + shift), the ReLU fused into it on oneDNN. The "torch" backend runs the same graph with
plain PyTorch ops (the fused ops' arithmetic on float +-1 tensors: sign, conv2d of +-1 values, multiply, add,
each a separate op) and the same real-valued convolution calls; the "fastpose" backend is bit-identical
to it, packed or unpacked, NCHW or channels_last input. The training-mode forward (and eval with
autograd on, ONNX export, tracing, torch.compile) keeps PyTorch's batch_norm and conv2d, which round
differently, so it matches this path only to float rounding (and the sign flips that rounding causes).

One reordering: the stem's HPM(64, 128) is followed by a 2x2 average pool, and its shortcut is a 1x1
projection of relu(bn(x)). Both are linear in what follows the ReLU, so this path computes
``avg_pool(concat) + conv1x1(avg_pool(relu(bn(x))))`` instead of ``avg_pool(concat + conv1x1(relu(bn(x))))``:
the projection at a quarter of the pixels (a tenth of the model's real-valued FLOPs). Both backends run it
that way, so they stay bit-identical; against the module's own order it is equal up to float rounding.
That block's convolutions also pool in their epilogue (``xnor_conv2d_fused(pool=True)``, bit for bit
``avg_pool2d`` of the concatenation): its full-size float output (8 MB at 256x256) is never written.
Likewise each hourglass level's merge ``up1 + upsample(low)`` is added in the epilogue of up1's block
(``up_residual``; the lower branch runs first): ``(v + x) + low``, the same two roundings as the block's
output followed by ``upsample_add``.
"""
import operator

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from ..cpu_allocator import inference_scope
from .._tracing import exporting
from ..nn.binary import PackedXNORConv2d, XNORConv2d, _conv_padding
from ..ops import xnor_conv as _x

__all__ = ["active", "bn_affine", "clear_caches", "conv_bn_relu", "folded_conv_bn", "hpm_block", "real_conv",
           "stacked_forward"]

_CL = torch.channels_last


def active(module, x):
    """True when ``module`` (a binary HPM block or network) takes the inference path for input ``x``
    (eval, autograd off, float32 / float64; half precision keeps the regular forward)."""
    if module.training or torch.is_grad_enabled() or x.dtype not in (torch.float32, torch.float64):
        return False
    return not (exporting() or torch.compiler.is_compiling())


def clear_caches(model):
    """Drop the derived tensors this path caches on ``model``'s modules (folded BatchNorms, packed or
    channels_last weights, per-block plans); the next forward derives them again.

    The caches follow every change PyTorch tracks: parameters, buffers or submodules replaced, moved
    (``.to()``, ``.double()``), reloaded (``load_state_dict``) or changed by in-place ops, which bump the
    tensor's version counter. Writes through ``.data`` (``w.data.copy_(...)``) bypass that counter: call
    this after them.
    """
    for m in model.modules():
        m.__dict__.pop("_fastpose_infer_cache", None)
        m.__dict__.pop("_fastpose_block_plan", None)


def _cached(module, key, make):
    # Derived tensors (folded BN, packed filters, channels_last weights) recomputed only when a source
    # tensor changed: in-place updates bump _version, .to() / load_state_dict(assign) change data_ptr.
    cache = module.__dict__.setdefault("_fastpose_infer_cache", {})
    hit = cache.get(key[0])
    if hit is not None and hit[0] == key[1:]:
        return hit[1]
    val = make()
    cache[key[0]] = (key[1:], val)
    return val


def _stamp(*tensors):
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) if t is not None else None for t in tensors)


def bn_affine(bn):
    """(scale, shift) of the folded eval BatchNorm (module docstring), in the running stats' dtype."""
    def make():
        mean, var = bn.running_mean, bn.running_var
        scale = 1.0 / torch.sqrt(var + bn.eps) if bn.weight is None else bn.weight / torch.sqrt(var + bn.eps)
        shift = -mean * scale if bn.bias is None else bn.bias - mean * scale
        return scale.detach().contiguous(), shift.detach().contiguous()
    return _cached(bn, ("bn",) + _stamp(bn.weight, bn.bias, bn.running_mean, bn.running_var) + (bn.eps,), make)


def _binary_weights(conv):
    """(packed filters, alpha or None, bias or None, padding) of an XNORConv2d / PackedXNORConv2d."""
    if isinstance(conv, PackedXNORConv2d):
        return conv.weight_packed, conv.alpha, conv.bias, list(conv.padding)
    if not isinstance(conv, XNORConv2d):
        raise TypeError(f"expected an XNORConv2d or PackedXNORConv2d, got {type(conv).__name__}")

    def make():
        w = conv.weight.detach()
        acc = torch.float64 if w.dtype == torch.float64 else torch.float32
        return (torch.ops.fastpose.binarize_pack(w) if w.device.type == "cpu" else _x.binarize_pack_reference(w),
                _x.xnor_alpha(w, acc) if conv.scale else None)
    if parametrize.is_parametrized(conv, "weight"):
        wp, alpha = make()  # computed on access: nothing to key a cache on
    else:
        wp, alpha = _cached(conv, ("w",) + _stamp(conv.weight) + (conv.scale,), make)
    bias = conv.bias.detach() if conv.bias is not None else None
    return wp, alpha, bias, list(_conv_padding(conv.padding, conv.kernel_size, conv.dilation))


def _onednn(conv, x):
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


# oneDNN convolution with a fused ReLU post-op (the op inductor's CPU backend uses); absent in builds
# without oneDNN, where conv_bn_relu falls back to F.conv2d + relu_.
_CONV_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


def folded_conv_bn(conv, bn):
    """(weight, bias) of a real-valued conv followed by an eval BatchNorm, folded (cached):
    ``weight * scale`` per output channel and ``bias * scale + shift`` (``shift`` without a conv bias),
    (scale, shift) = bn_affine(bn); weight channels_last."""
    def make():
        s, t = bn_affine(bn)
        w = (conv.weight.detach() * s.view(-1, 1, 1, 1)).contiguous(memory_format=_CL)
        b = t if conv.bias is None else conv.bias.detach() * s + t
        return w, b.contiguous()
    return _cached(conv, ("fold",) + _stamp(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                                            bn.running_var) + (bn.eps,), make)


def conv_bn_relu(conv, bn, x):
    """relu(bn(conv(x))) of a real-valued conv and an eval BatchNorm on channels_last x, the BN folded into
    the conv (folded_conv_bn) and, on CPU float32, conv + bias + ReLU as one oneDNN primitive: no separate
    BN or ReLU pass over the output."""
    w, b = folded_conv_bn(conv, bn)
    if _onednn(conv, x) and _CONV_POINTWISE is not None:
        return _CONV_POINTWISE(x, w, b, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                               "relu", [], "")
    return F.conv2d(x, w.to(x.dtype), b.to(x.dtype), conv.stride, conv.padding, conv.dilation, conv.groups).relu_()


def real_conv(conv, x):
    """A real-valued nn.Conv2d on channels_last x: oneDNN directly on CPU float32, else F.conv2d."""
    if _onednn(conv, x):
        w = _cached(conv, ("cl",) + _stamp(conv.weight),
                    lambda: conv.weight.detach().contiguous(memory_format=_CL))
        b = conv.bias.detach() if conv.bias is not None else None
        return torch.ops.aten.mkldnn_convolution(x, w, b, list(conv.padding), list(conv.stride), list(conv.dilation),
                                                 conv.groups)
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _fused_op(x, wp, alpha, bias, cin, stride, padding, dilation, pad_value, s_in, t_in, res, s_nx, t_nx, *, out,
              out_packed, pool=False, up_residual=None):
    # The overload itself: the packet's Python __call__ is a frame per call (~150 calls per image).
    torch.ops.fastpose.xnor_conv2d_fused.default(x, wp, alpha, bias, cin, stride, padding, dilation, pad_value, s_in,
                                                 t_in, res, s_nx, t_nx, out, out_packed, pool, up_residual)


def _sign_weights(conv, acc):
    """+-1 filters in ``acc`` (cached) and alpha / bias of a binary conv, for the torch backend."""
    wp, alpha, bias, padding = _binary_weights(conv)
    src = conv.weight_packed if isinstance(conv, PackedXNORConv2d) else conv.weight
    wb = _cached(conv, ("wb",) + _stamp(src) + (acc,),
                 lambda: _x.binary_unpack(wp, conv.in_channels, acc) if isinstance(conv, PackedXNORConv2d)
                 else _x.binarize(conv.weight.detach()).to(acc))
    return wb, alpha, bias, padding


def _torch_block(blk, convs, x, res, out):
    # The torch backend: the fused ops' arithmetic with float +-1 tensors instead of packed bits (the
    # packing is lossless), each multiply / add its own op. Same values as xnor_conv2d_fused_reference.
    y = x
    c0 = 0
    for bn, conv in zip(blk.bns, convs):
        s, t = bn_affine(bn)
        u = y * s.view(1, -1, 1, 1)
        u = u + t.view(1, -1, 1, 1)
        wb, alpha, bias, padding = _sign_weights(conv, out.dtype)
        xb = _x.binarize(u).to(out.dtype)
        if conv.pad_value == -1:
            xb = F.pad(xb, (padding[1], padding[1], padding[0], padding[0]), value=-1.0)
            padding = [0, 0]
        v = F.conv2d(xb, wb, None, conv.stride, padding, conv.dilation)
        if alpha is not None:
            v = v * alpha.to(out.dtype).view(1, -1, 1, 1)
        if bias is not None:
            v = v + bias.to(out.dtype).view(1, -1, 1, 1)
        c1 = c0 + conv.out_channels
        if res is None:
            out[:, c0:c1] = v
        else:
            torch.add(v, res[:, c0:c1], out=out[:, c0:c1])
        y, c0 = v, c1


def hpm_block(blk, x):
    """HPMBlock (binary) forward on the inference path; the output has x's memory format. Runs in an
    ``inference_scope`` (fastpose.cpu_allocator): its activations reuse cached blocks."""
    with inference_scope(x.device):
        return _hpm_block(blk, x)


_VERSION = operator.attrgetter("_version")
_CONV_ATTRS = operator.attrgetter("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                                  "pad_value", "scale", "backend")
_BN_ATTRS = operator.attrgetter("eps")


_TORCH_CONV_ATTRS = operator.attrgetter("stride", "padding", "dilation", "groups", "padding_mode")


def _plan_attrs_getter(m):
    # The getter of the plain attributes a plan derives from module m (None: m has none that matter).
    if isinstance(m, (XNORConv2d, PackedXNORConv2d)):
        return _CONV_ATTRS
    if isinstance(m, torch.nn.Conv2d):
        return _TORCH_CONV_ATTRS
    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
        return _BN_ATTRS
    return None


class _BlockPlan:
    """What ``_hpm_block`` derives from a block's modules (folded BatchNorms, packed filters and the call
    arguments of each convolution, the shortcut's weights), built once and reused while it is valid: the
    block holds the same submodules, they hold the same parameters and buffers, and none of those tensors
    changed in place or moved (``_version``, ``data_ptr``). The per-call checks are dictionary lookups, not
    module attribute access (a block's forward was ~40 us of Python, most of it re-deriving these)."""

    __slots__ = ("dicts", "keys", "objs", "ids", "tensors", "versions", "ptrs", "getters", "attrs", "cacheable", "aff",
                 "calls", "cout", "shortcut")

    def __init__(self, blk):
        convs = list(blk.convs)
        checks = []  # (dict, key, object held there), for every module of the block, at any depth
        mods = list(blk.modules())
        for m in mods:
            for d in (m._modules, m._parameters, m._buffers):
                checks.extend((d, key, obj) for key, obj in d.items())
        self.dicts, self.keys, self.objs = [c[0] for c in checks], [c[1] for c in checks], [c[2] for c in checks]
        self.ids = list(map(id, self.objs))  # the plan holds objs, so no other object can take their ids
        self.tensors = [t for t in self.objs if isinstance(t, torch.Tensor)]
        self.versions = list(map(_VERSION, self.tensors))
        self.ptrs = list(map(torch.Tensor.data_ptr, self.tensors))
        # The plain attributes the derived values depend on (convolution geometry, BN eps, ...).
        self.getters = [(g, m) for m in mods for g in (_plan_attrs_getter(m),) if g is not None]
        self.attrs = [g(m) for g, m in self.getters]
        # A parametrized weight is computed on access from state the plan cannot see: no plan then.
        self.cacheable = not any(map(parametrize.is_parametrized, mods))
        self.aff = [bn_affine(b) for b in blk.bns]
        self.calls = []
        for k, conv in enumerate(convs):
            wp, alpha, bias, padding = _binary_weights(conv)
            self.calls.append((wp, alpha, bias, conv.in_channels, list(conv.stride), padding, list(conv.dilation),
                               conv.pad_value, conv.out_channels, _x.packed_words(conv.out_channels)))
        self.cout = sum(c.out_channels for c in convs)
        self.shortcut = None
        if blk.shortcut is not None:
            bn, _, conv = blk.shortcut
            self.shortcut = bn_affine(bn), conv

    def valid(self):
        # C-level loops (map over the lists): a few us for a block's ~60 entries.
        return (self.cacheable
                and list(map(id, map(dict.get, self.dicts, self.keys))) == self.ids
                and list(map(_VERSION, self.tensors)) == self.versions
                and list(map(torch.Tensor.data_ptr, self.tensors)) == self.ptrs
                and [g(m) for g, m in self.getters] == self.attrs)


def _block_plan(blk):
    plan = blk.__dict__.get("_fastpose_block_plan")
    if plan is None or not plan.valid():
        plan = _BlockPlan(blk)
        blk.__dict__["_fastpose_block_plan"] = plan
    return plan


def _hpm_block(blk, x, pool=False, up=None):
    # pool: avg_pool2d(block(x), 2, 2), a projected shortcut taken after the pool (module docstring).
    # up: block(x) + nearest_upsample2(up), the hourglass merge in the epilogue (fastpose backend only).
    convs0 = blk.convs[0]
    N, cin, H, W = x.shape
    if cin != convs0.in_channels:
        raise ValueError(f"HPMBlock: x must have {convs0.in_channels} channels, got shape {tuple(x.shape)}")
    if convs0.use_reference:
        if up is not None:
            raise ValueError("HPMBlock: up (the fused merge) is for the fastpose backend only")
        return _torch_block_forward(blk, x, pool)
    plan = _block_plan(blk)
    late = pool and plan.shortcut is not None
    res = None if late else x if plan.shortcut is None else _projection(*plan.shortcut, x, fused=True)
    # pool: every convolution writes the 2x2 average of its slice (the full-size block output only ever
    # fed the pool; bit for bit avg_pool2d of it), its packed signs stay full size for the next one.
    out = _block_out(x, plan.cout, pool)
    if x.device.type == "cpu":
        fused = _fused_op  # arguments built here: skip the Python-side checks (~150 calls per image)
    else:
        fused = _x.xnor_conv2d_fused
    aff = plan.aff
    last = len(plan.calls) - 1
    inp, c0 = x, 0
    for k, (wp, alpha, bias, cin_k, stride, padding, dilation, pad_value, cout_k, words) in enumerate(plan.calls):
        c1 = c0 + cout_k
        nxt = None if k == last else torch.empty((N, H, W, words), dtype=torch.int64, device=x.device)
        s_in, t_in = aff[0] if k == 0 else (None, None)
        s_nx, t_nx = (None, None) if k == last else aff[k + 1]
        fused(inp, wp, alpha, bias, cin_k, stride, padding, dilation, pad_value, s_in, t_in,
              None if res is None else res[:, c0:c1], s_nx, t_nx, out=out[:, c0:c1], out_packed=nxt, pool=pool,
              up_residual=None if up is None else up[:, c0:c1])
        inp, c0 = nxt, c1
    return out.add_(_projection(*plan.shortcut, x, pool=True, fused=True)) if late else out


def _hooked(m):
    return bool(m._forward_hooks or m._forward_pre_hooks or torch.nn.modules.module._global_forward_hooks
                or torch.nn.modules.module._global_forward_pre_hooks)


def _plain_block(blk):
    # A block whose module call would run _hpm_block: an eval binary HPMBlock without hooks.
    from .hpm import HPMBlock
    return type(blk) is HPMBlock and blk.binary and not blk.training and not _hooked(blk)


def _block_call(blk, x):
    # blk(x) without the module call (~8 us of Python: __call__, the mode checks, a nested allocator
    # scope) where that call would run _hpm_block anyway.
    return _hpm_block(blk, x) if _plain_block(blk) else blk(x)


def _hourglass(hg, x):
    # HPMHourglass.forward with its blocks through _block_call; a subclass or a hooked level is called.
    from .hpm import HPMHourglass
    from ..nn.merge import UpsampleAdd
    if type(hg) is not HPMHourglass or _hooked(hg):
        return hg(x)
    up1, merge = hg.up1, hg.merge
    # The merge skip + upsample(low) in the skip block's epilogue (its output is never stored alone):
    # the lower branch first, then up1 with it as up_residual, the same adds in the same order. (up1 has
    # no hooks then, global ones included, so running it after the lower branch is not observable.)
    fuse = (type(merge) is UpsampleAdd and not merge.use_reference and not _hooked(merge) and _plain_block(up1)
            and not up1.convs[0].use_reference and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0)
    if not fuse:
        up1 = _block_call(up1, x)
    low = _block_call(hg.low1, F.avg_pool2d(x, 2, 2))
    low = _hourglass(hg.low2, low) if isinstance(hg.low2, HPMHourglass) else _block_call(hg.low2, low)
    low = _block_call(hg.low3, low)
    if fuse and low.shape[-2:] == (x.shape[-2] // 2, x.shape[-1] // 2) and low.dtype == x.dtype:
        return _hpm_block(up1, x, up=low)
    if fuse:
        up1 = _block_call(up1, x)
    return merge.forward(low, up1) if type(merge) is UpsampleAdd and not _hooked(merge) else merge(low, up1)


def _pool_first_ok(blk):
    # The projection commutes with the pool only as a pointwise (1x1, stride 1, unpadded) linear map; and
    # a block whose module call would run something else (hooks, training mode) is called as a module.
    if not _plain_block(blk):
        return False
    conv = blk.shortcut[2] if blk.shortcut is not None else None
    return conv is None or (type(conv) is torch.nn.Conv2d and tuple(conv.kernel_size) == (1, 1)
                            and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0))


def _pool_block(out, x, shortcut, late):
    y = F.avg_pool2d(out, 2, 2)
    return y.add_(_projection(*shortcut, x, pool=True)) if late else y


def _projection(affine, conv, x, pool=False, fused=False):
    # The projected shortcut: conv1x1(relu(bn(x))), the BN as its folded affine map (pool: of the 2x2
    # average pool of relu(bn(x))). fused: those in one pass (fastpose::affine_relu, the same values).
    s, t = affine
    if fused and x.device.type == "cpu" and s.dtype == x.dtype:
        u = torch.ops.fastpose.affine_relu(x, s, t, pool)
    else:
        u = (x * s.view(1, -1, 1, 1)).add_(t.view(1, -1, 1, 1)).relu_()
        if pool:
            u = F.avg_pool2d(u, 2, 2)
    return real_conv(conv, u.contiguous(memory_format=_CL) if x.is_contiguous(memory_format=_CL) else u)


def _block_out(x, cout, pool=False):
    # The block output (concatenation of the three convolutions; pool: its 2x2 average), in x's memory format.
    N, _, H, W = x.shape
    if pool:
        H, W = H // 2, W // 2
    cl = x.dim() == 4 and x.is_contiguous(memory_format=_CL)
    return torch.empty((N, cout, H, W), dtype=x.dtype, device=x.device,
                       memory_format=_CL if cl else torch.contiguous_format)


def _torch_block_forward(blk, x, pool=False):
    # The torch backend of the inference path (use_reference): the same arithmetic in plain ops.
    convs = list(blk.convs)
    shortcut = None if blk.shortcut is None else (bn_affine(blk.shortcut[0]), blk.shortcut[2])
    late = pool and shortcut is not None
    res = None if late else x if shortcut is None else _projection(*shortcut, x)
    out = _block_out(x, sum(c.out_channels for c in convs))
    _torch_block(blk, convs, x, res, out)
    return _pool_block(out, x, shortcut, late) if pool else out


def stacked_forward(model, x):
    """HPMStackedHourglass (binary) forward on the inference path: channels_last from the first conv on;
    the heatmaps come back in x's memory format. Runs in an ``inference_scope`` (fastpose.cpu_allocator):
    the activations of one forward are the next one's blocks, no fresh pages."""
    with inference_scope(x.device):
        return _stacked_forward(model, x)


def _stacked_forward(model, x):
    fmt = _CL if x.dim() == 4 and x.is_contiguous(memory_format=_CL) and not x.is_contiguous() \
        else torch.contiguous_format
    x = x.contiguous(memory_format=_CL)
    x = conv_bn_relu(model.conv1, model.bn1, x)
    blk = model.stem[0]
    if _pool_first_ok(blk):
        x = _hpm_block(blk, x, pool=True)
    else:
        x = F.avg_pool2d(blk(x), 2, 2)
    x = _block_call(model.stem[2], _block_call(model.stem[1], x))
    outs = []
    for i, hg in enumerate(model.hgs):
        conv, bn, _ = model.heads[i]
        feat = conv_bn_relu(conv, bn, _block_call(model.tops[i], _hourglass(hg, x)))
        pred = real_conv(model.preds[i], feat)
        outs.append(pred.contiguous(memory_format=fmt))
        if i < len(model.hgs) - 1:
            x = x + real_conv(model.merge_features[i], feat) + real_conv(model.merge_preds[i], pred)
    return outs

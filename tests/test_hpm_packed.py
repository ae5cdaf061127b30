"""The packed inference path of the binary HPM hourglass: ``fastpose.ops.xnor_conv2d_fused`` against its
plain-PyTorch reference (bit-exact, every ISA, odd sizes, strided / sliced outputs, float64, empty
batches, edge values of the sign) and the model (fastpose.models.hpm_packed) against a from-scratch
reference of the documented contract: folded BatchNorm as two roundings, sign(v) = v >= 0, float conv of
+-1 values times alpha, concatenation plus shortcut.
"""
import copy
import io

import pytest
import torch
import torch.nn.functional as F

import fastpose
import fastpose.nn as fnn
from fastpose import models
from fastpose.models import hpm_packed
from fastpose.ops import xnor_conv as X


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _case(g, N, Cin, Cout, H, W, k=3, stride=1, padding=1, dilation=1, pad_value=0, dtype=torch.float32,
          packed_x=False, affine=True, residual=True, packed_out=True, next_bn=True, layout="cl", ctot_extra=5):
    x = torch.randn(N, Cin, H, W, generator=g, dtype=dtype)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(N, Cin, H, 2 * W, generator=g, dtype=dtype)[..., ::2]
    w = torch.randn(Cout, Cin, k, k, generator=g, dtype=dtype)
    wp = torch.ops.fastpose.binarize_pack(w)
    alpha = X.xnor_alpha(w, dtype)
    s = (torch.rand(Cin, generator=g, dtype=dtype) + 0.5) * torch.where(torch.rand(Cin, generator=g) < 0.2, -1, 1).to(dtype)
    t = torch.randn(Cin, generator=g, dtype=dtype) * 0.3
    Ho = (H + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    Wo = (W + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    # out: a channel slice [2, 2 + Cout) of a larger buffer in the given layout
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    buf = torch.full((N, Cout + ctot_extra, Ho, Wo), 7.0, dtype=dtype).contiguous(memory_format=fmt)
    rbuf = torch.randn(N, Cout + ctot_extra, Ho, Wo, generator=g, dtype=dtype).contiguous(memory_format=fmt)
    ns = torch.randn(Cout, generator=g, dtype=dtype)
    nt = torch.randn(Cout, generator=g, dtype=dtype) * 0.5
    args = dict(
        x=torch.ops.fastpose.binarize_pack(x) if packed_x else x, weight_packed=wp, alpha=alpha,
        bias=torch.randn(Cout, generator=g, dtype=dtype) if k == 1 else None, in_channels=Cin, stride=stride,
        padding=padding, dilation=dilation, pad_value=pad_value,
        in_scale=s if affine and not packed_x else None, in_shift=t if affine and not packed_x else None,
        residual=rbuf[:, 2:2 + Cout] if residual else None, next_scale=ns if next_bn and packed_out else None,
        next_shift=nt if next_bn and packed_out else None)
    return args, buf, (N, Ho, Wo, X.packed_words(Cout))


def _run(fn, args, buf, pshape):
    out_buf = buf.clone(memory_format=torch.preserve_format)
    cout = args["weight_packed"].shape[0]
    packed = torch.full(pshape, -1, dtype=torch.int64) if pshape is not None else None
    a = dict(args)
    fn(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"), **a,
       out=out_buf[:, 2:2 + cout], out_packed=packed)
    return out_buf, packed


def _check(args, buf, pshape, packed_out=True):
    pshape = pshape if packed_out else None
    got = _run(X.xnor_conv2d_fused, args, buf, pshape)
    want = _run(X.xnor_conv2d_fused_reference, args, buf, pshape)
    assert torch.equal(got[0], want[0])  # includes the untouched channels around the slice
    if packed_out:
        assert torch.equal(got[1], want[1])
    return got


SHAPES = [  # N, Cin, Cout, H, W
    (1, 64, 64, 9, 11), (2, 256, 128, 8, 8), (1, 65, 130, 5, 7), (1, 1, 1, 4, 3), (3, 63, 65, 6, 5),
    (1, 130, 200, 7, 9), (2, 128, 32, 13, 4)]


@pytest.mark.parametrize("layout", ["cl", "nchw"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(shape, layout, isa):
    # nchw: the BN-folded pack of rows with contiguous pixels (its own vector path since 2026-12-07)
    N, Cin, Cout, H, W = shape
    g = _gen(sum(shape))
    _check(*_case(g, N, Cin, Cout, H, W, layout=layout))


@pytest.mark.parametrize("variant", ["nchw", "strided", "packed_x", "no_affine", "no_residual", "no_next_bn",
                                     "no_packed_out", "stride2", "dilation2", "pad-1", "1x1_bias", "float64"])
def test_fused_variants(variant, isa):
    kw = dict(nchw=dict(layout="nchw"), strided=dict(layout="strided"), packed_x=dict(packed_x=True),
              no_affine=dict(affine=False), no_residual=dict(residual=False), no_next_bn=dict(next_bn=False),
              no_packed_out=dict(packed_out=False), stride2=dict(stride=2), dilation2=dict(dilation=2, padding=2),
              **{"pad-1": dict(pad_value=-1), "1x1_bias": dict(k=1, padding=0),
                 "float64": dict(dtype=torch.float64)})[variant]
    g = _gen(len(variant))
    args, buf, pshape = _case(g, 2, 70, 67, 9, 10, **kw)
    _check(args, buf, pshape, packed_out=kw.get("packed_out", True))


def test_fused_empty_batch():
    args, buf, pshape = _case(_gen(0), 0, 64, 64, 5, 5)
    got, packed = _run(X.xnor_conv2d_fused, args, buf, pshape)
    assert got.shape[0] == 0 and packed.shape[0] == 0


@pytest.mark.parametrize("layout", ["cl", "nchw"])
def test_fused_sign_edges(isa, layout):
    """bn(x) exactly +0.0 / -0.0 -> +1, NaN -> -1, at the input pack and at the packed output."""
    g = _gen(3)
    args, buf, pshape = _case(g, 1, 64, 64, 6, 6, residual=False, layout=layout)
    x = args["x"].clone(memory_format=torch.preserve_format)
    args["in_scale"] = torch.ones(64)
    args["in_shift"] = torch.zeros(64)
    x[0, :8, 1, 1] = 0.0
    x[0, 8:16, 2, 2] = -0.0
    x[0, 16:24, 3, 3] = float("nan")
    args["x"] = x
    args["next_scale"] = torch.zeros(64)
    args["next_shift"] = torch.where(torch.arange(64) % 2 == 0, torch.tensor(-0.0), torch.tensor(float("nan")))
    _, packed = _check(args, buf, pshape)
    # even channels: v * 0 + (-0.0) is a zero -> +1; odd channels: NaN -> -1
    assert (packed == 0x5555555555555555).all()


@pytest.mark.parametrize("offset", [16, 2], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("stream", ["1", "0"], ids=["stream", "plain"])
def test_fused_streaming_stores(isa, offset, stream, monkeypatch):
    """Non-temporal stores of large outputs (FASTPOSE_STREAM_STORES=1 forces them at any size): whole
    aligned 64-byte vectors stream, the rest (odd channel offsets, the tail) store masked; same values,
    and the channels around the slice stay untouched."""
    monkeypatch.setenv("FASTPOSE_STREAM_STORES", stream)
    g = _gen(offset + int(stream))
    N, Cin, Cout, H, W = 2, 64, 80, 7, 19
    args, _, pshape = _case(g, N, Cin, Cout, H, W)
    ctot = Cout + 48
    buf = torch.full((N, ctot, H, W), 7.0).contiguous(memory_format=torch.channels_last)
    rbuf = torch.randn(N, ctot, H, W, generator=g).contiguous(memory_format=torch.channels_last)
    args["residual"] = rbuf[:, offset:offset + Cout]
    outs = []
    for fn in (X.xnor_conv2d_fused, X.xnor_conv2d_fused_reference):
        b = buf.clone(memory_format=torch.preserve_format)
        packed = torch.full(pshape, -1, dtype=torch.int64)
        a = dict(args)
        fn(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"), **a,
           out=b[:, offset:offset + Cout], out_packed=packed)
        outs.append((b, packed))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])


def test_fused_in_place_residual():
    """residual may be out itself (x = x + conv): each element is read before it is written."""
    args, buf, pshape = _case(_gen(4), 1, 64, 64, 6, 7)
    cout = 64
    for fn in (X.xnor_conv2d_fused, X.xnor_conv2d_fused_reference):
        b = buf.clone(memory_format=torch.preserve_format)
        a = dict(args, residual=b[:, 2:2 + cout])
        p = torch.empty(pshape, dtype=torch.int64)
        fn(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"), **a,
           out=b[:, 2:2 + cout], out_packed=p)
        if fn is X.xnor_conv2d_fused:
            got = b
    assert torch.equal(got, b)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("pipeline", ["1", "0"], ids=["row_pipeline", "pack_first"])
@pytest.mark.parametrize("variant", ["cl", "nchw", "stride2", "dilation2", "pad-1", "no_affine", "float64"])
def test_fused_row_pipeline(threads, pipeline, variant, monkeypatch):
    """A float input is binarized row by row inside the convolution (per-thread ring of rows; the default)
    or packed whole first (FASTPOSE_ROW_PIPELINE=0): both bit-identical to the reference, at thread
    counts that split the rows unevenly (halo rows packed by two threads), with an identity residual
    (the block input itself, as in an HPM block)."""
    monkeypatch.setenv("FASTPOSE_ROW_PIPELINE", pipeline)
    kw = dict(cl={}, nchw=dict(layout="nchw"), stride2=dict(stride=2), dilation2=dict(dilation=2, padding=2),
              **{"pad-1": dict(pad_value=-1), "no_affine": dict(affine=False), "float64": dict(dtype=torch.float64)})
    args, buf, pshape = _case(_gen(7 + len(variant)), 2, 64, 64, 11, 9, **kw[variant])
    if args["stride"] == 1:
        args["residual"] = args["x"]  # Cin == Cout: the identity shortcut
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check(args, buf, pshape)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("where", ["same", "slice"])
def test_fused_output_aliases_input(where):
    """out overlapping x (in place, or a neighbouring channel slice of one buffer) packs x whole before
    the first store (no row pipeline), so the result is that of the reference on x's old values."""
    g = _gen(11)
    C, H, W = 64, 48, 6  # enough rows for both threads' ranges to meet
    big = torch.randn(1, 2 * C if where == "slice" else C, H, W, generator=g).contiguous(memory_format=torch.channels_last)
    x = big[:, :C]
    args, _, pshape = _case(g, 1, C, C, H, W, residual=False)
    want_out = torch.empty_like(x)
    want_packed = torch.empty(pshape, dtype=torch.int64)
    a = dict(args, x=x.clone())
    X.xnor_conv2d_fused_reference(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"),
                                  a.pop("in_channels"), **a, out=want_out, out_packed=want_packed)
    out = x if where == "same" else big[:, C:]
    packed = torch.empty(pshape, dtype=torch.int64)
    a = dict(args, x=x)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        X.xnor_conv2d_fused(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"),
                            **a, out=out, out_packed=packed)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(out, want_out)
    assert torch.equal(packed, want_packed)


def test_fused_opcheck():
    args, buf, pshape = _case(_gen(5), 1, 70, 67, 5, 6)
    a = dict(args)
    out = buf[:, 2:69]
    packed = torch.empty(pshape, dtype=torch.int64)
    opargs = (a["x"], a["weight_packed"], a["alpha"], a["bias"], 70, [1, 1], [1, 1], [1, 1], 0, a["in_scale"],
              a["in_shift"], a["residual"], a["next_scale"], a["next_shift"], out, packed)
    torch.library.opcheck(torch.ops.fastpose.xnor_conv2d_fused, opargs)


def test_fused_bad_inputs():
    args, buf, pshape = _case(_gen(6), 1, 64, 32, 5, 5)

    def call(**over):
        a = dict(args, **over)
        out = a.pop("out", buf[:, 2:34])
        packed = a.pop("out_packed", torch.empty(pshape, dtype=torch.int64))
        X.xnor_conv2d_fused(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"),
                            **a, out=out, out_packed=packed)

    with pytest.raises(TypeError, match="out"):
        call(out=buf[:, 2:34].half())
    with pytest.raises(ValueError, match="out must be"):
        call(out=buf[:, 2:30])
    with pytest.raises(ValueError, match="in_scale and in_shift"):
        call(in_shift=None)
    with pytest.raises(ValueError, match="in_scale"):
        call(x=torch.ops.fastpose.binarize_pack(args["x"]))
    with pytest.raises(ValueError, match="next_scale needs out_packed"):
        call(out_packed=None)
    with pytest.raises(ValueError, match="out_packed"):
        call(out_packed=torch.empty(1, 5, 5, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="in_scale"):
        call(in_scale=args["in_scale"].double())
    with pytest.raises(ValueError, match="residual"):
        call(residual=buf[:, :16])
    with pytest.raises(ValueError, match="x must be"):
        call(x=args["x"][:, :10])


def _up_residual(g, N, C, Ho, Wo, dtype, layout):
    # A channel slice [1, 1 + C) of a half-size buffer, in its own layout (nchw: the portable epilogue).
    u = torch.randn(N, C + 3, Ho // 2, Wo // 2, generator=g, dtype=dtype)
    if layout == "cl":
        u = u.contiguous(memory_format=torch.channels_last)
    return u[:, 1:1 + C]


UP_SHAPES = [(1, 64, 64, 8, 10), (2, 256, 128, 8, 8), (1, 65, 130, 6, 4), (3, 63, 65, 2, 2), (1, 128, 32, 16, 16)]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("shape", UP_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_up_residual(shape, threads, isa):
    """up_residual: out = (v + residual) + nearest_upsample2(up_residual), bit for bit."""
    N, Cin, Cout, H, W = shape
    g = _gen(300 + sum(shape))
    args, buf, pshape = _case(g, N, Cin, Cout, H, W)
    args["up_residual"] = _up_residual(g, N, Cout, H, W, torch.float32, "cl")
    torch.set_num_threads(threads)  # (restored by conftest's autouse fixture)
    _check(args, buf, pshape)


@pytest.mark.parametrize("variant", ["nchw", "up_nchw", "no_residual", "no_packed_out", "pad-1", "packed_x",
                                     "float64", "pool"])
def test_fused_up_residual_variants(variant, isa):
    kw = dict(nchw=dict(layout="nchw"), up_nchw={}, no_residual=dict(residual=False),
              no_packed_out=dict(packed_out=False), packed_x=dict(packed_x=True), pool={},
              **{"pad-1": dict(pad_value=-1), "float64": dict(dtype=torch.float64)})[variant]
    g = _gen(400 + len(variant))
    dtype = kw.get("dtype", torch.float32)
    args, buf, pshape = _case(g, 2, 70, 67, 8, 12, **kw)
    args["up_residual"] = _up_residual(g, 2, 67, 8, 12, dtype, "nchw" if variant in ("nchw", "up_nchw") else "cl")
    if variant == "pool":
        _check_pooled(args, pshape)
    else:
        _check(args, buf, pshape, packed_out=kw.get("packed_out", True))


def test_fused_up_residual_bad_inputs():
    g = _gen(14)
    args, buf, pshape = _case(g, 1, 64, 32, 6, 6)

    def call(up, out=None, **over):
        a = dict(args, **over)
        X.xnor_conv2d_fused(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"),
                            **a, out=buf[:, 2:34] if out is None else out,
                            out_packed=torch.empty(pshape, dtype=torch.int64), up_residual=up)

    with pytest.raises(ValueError, match=r"up_residual must be \(1, 32, 3, 3\)"):
        call(torch.randn(1, 32, 6, 6))
    with pytest.raises(TypeError, match="up_residual"):
        call(torch.randn(1, 32, 3, 3).double())
    with pytest.raises(ValueError, match="out must not overlap up_residual"):
        out = torch.empty(1, 32, 6, 6).contiguous(memory_format=torch.channels_last)
        call(out[:, :, :3, :3], out=out)
    odd, _, oshape = _case(g, 1, 64, 32, 5, 5)
    with pytest.raises(ValueError, match="even output size"):
        a = dict(odd)
        X.xnor_conv2d_fused(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"),
                            **a, out=torch.empty(1, 32, 5, 5), out_packed=torch.empty(oshape, dtype=torch.int64),
                            up_residual=torch.randn(1, 32, 2, 2))


def test_fused_pool_up_residual_small_blocks(isa):
    """No out_packed and few rows: the channel blocks shrink (down to a partial last block); pool and
    up_residual together stay bit-exact at 3 threads."""
    g = _gen(16)
    args, _, pshape = _case(g, 1, 64, 67, 4, 6, packed_out=False)
    args["up_residual"] = _up_residual(g, 1, 67, 4, 6, torch.float32, "cl")
    torch.set_num_threads(3)  # (restored by conftest's autouse fixture)
    _check_pooled(args, pshape)


def test_fused_out_packed_overlaps_refused():
    g = _gen(17)
    args, buf, pshape = _case(g, 1, 64, 32, 6, 6, residual=False)
    a = dict(args)
    big = torch.empty(4096, dtype=torch.int64)
    packed = big[:36].view(pshape)
    up = big.view(torch.float32)[:2 * 32 * 9].view(2, 32, 3, 3)[:1]  # shares bytes with packed
    with pytest.raises(ValueError, match="out_packed must not overlap up_residual"):
        X.xnor_conv2d_fused(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"),
                            **a, out=buf[:, 2:34], out_packed=packed, up_residual=up)


def test_fused_shapes_checked_before_device_dispatch():
    """The shape checks are in Python too, so the plain-PyTorch path of other devices cannot broadcast."""
    g = _gen(18)
    args, buf, pshape = _case(g, 1, 64, 32, 6, 6)
    for over, msg in ((dict(up_residual=torch.randn(1, 1, 3, 3)), "up_residual must be"),
                      (dict(residual=torch.randn(1, 32, 1, 1)), "residual must be the convolution"),
                      (dict(pool=True), r"out must be \(1, 32, 3, 3\)")):
        a = dict(args, **over)
        with pytest.raises(ValueError, match=msg):
            X.xnor_conv2d_fused(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"),
                                a.pop("in_channels"), **a, out=buf[:, 2:34],
                                out_packed=torch.empty(pshape, dtype=torch.int64))


def test_fused_up_residual_opcheck():
    g = _gen(15)
    args, buf, pshape = _case(g, 1, 70, 67, 6, 8)
    a = dict(args)
    out = buf[:, 2:69]
    packed = torch.empty(pshape, dtype=torch.int64)
    up = _up_residual(g, 1, 67, 6, 8, torch.float32, "cl")
    opargs = (a["x"], a["weight_packed"], a["alpha"], a["bias"], 70, [1, 1], [1, 1], [1, 1], 0, a["in_scale"],
              a["in_shift"], a["residual"], a["next_scale"], a["next_shift"], out, packed, False, up)
    torch.library.opcheck(torch.ops.fastpose.xnor_conv2d_fused, opargs)


def _bits(t):
    # Bitwise view: torch.equal takes -0.0 == +0.0, the pooled sums must match in the sign of zero too.
    return t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)


def _run_pooled(fn, args, pshape, layout="cl", ctot_extra=5):
    N, Ho, Wo, _ = pshape
    cout = args["weight_packed"].shape[0]
    dtype = args["alpha"].dtype
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    buf = torch.full((N, cout + ctot_extra, Ho // 2, Wo // 2), 7.0, dtype=dtype).contiguous(memory_format=fmt)
    packed = torch.full(pshape, -1, dtype=torch.int64) if args.get("next_scale") is not None else None
    a = dict(args)
    fn(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"), **a,
       out=buf[:, 2:2 + cout], out_packed=packed, pool=True)
    return buf, packed


def _check_pooled(args, pshape, **kw):
    got = _run_pooled(X.xnor_conv2d_fused, args, pshape, **kw)
    want = _run_pooled(X.xnor_conv2d_fused_reference, args, pshape, **kw)
    assert torch.equal(_bits(got[0]), _bits(want[0]))  # the untouched channels around the slice too
    if got[1] is not None:
        assert torch.equal(got[1], want[1])
    return got


POOL_SHAPES = [  # N, Cin, Cout, H, W: odd sides (last row / column only packed), 1-pixel sides, the stem's
    (1, 64, 64, 9, 11), (2, 64, 32, 8, 8), (1, 65, 130, 5, 7), (1, 1, 1, 4, 3), (3, 63, 65, 6, 5),
    (1, 64, 64, 1, 6), (1, 64, 64, 7, 1), (2, 128, 32, 13, 4), (1, 64, 64, 32, 32)]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("shape", POOL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_pool_matches_reference(shape, threads, isa):
    """pool=True: out = avg_pool2d(v + residual, 2, 2), bit for bit the two ops, out_packed full size."""
    N, Cin, Cout, H, W = shape
    args, _, pshape = _case(_gen(100 + sum(shape)), N, Cin, Cout, H, W)
    torch.set_num_threads(threads)  # (restored by conftest's autouse fixture)
    _check_pooled(args, pshape)


@pytest.mark.parametrize("variant", ["nchw", "strided", "packed_x", "no_affine", "no_residual", "no_packed_out",
                                     "stride2", "pad-1", "1x1_bias", "float64", "pack_first"])
def test_fused_pool_variants(variant, isa, monkeypatch):
    kw = dict(nchw=dict(layout="nchw"), strided=dict(layout="strided"), packed_x=dict(packed_x=True),
              no_affine=dict(affine=False), no_residual=dict(residual=False), no_packed_out=dict(packed_out=False),
              stride2=dict(stride=2), pack_first={}, **{"pad-1": dict(pad_value=-1), "1x1_bias": dict(k=1, padding=0),
                                                          "float64": dict(dtype=torch.float64)})[variant]
    if variant == "pack_first":
        monkeypatch.setenv("FASTPOSE_ROW_PIPELINE", "0")
    args, _, pshape = _case(_gen(200 + len(variant)), 2, 70, 67, 9, 10, **kw)
    _check_pooled(args, pshape, layout="nchw" if kw.get("layout") else "cl")


def test_fused_pool_signed_zeros(isa):
    """Zero alpha makes every value a signed zero (-0.0 where the dot is negative): ATen's pool starts its
    sum at +0.0, so four -0.0 pool to +0.0; the kernel has to agree bit for bit."""
    args, _, pshape = _case(_gen(9), 1, 64, 64, 8, 8, residual=False, packed_out=False)
    args["alpha"] = torch.zeros(64)
    got, _ = _check_pooled(args, pshape)
    assert (_bits(got[:, 2:66]) == 0).all()  # +0.0 everywhere, never -0.0


def test_fused_pool_empty():
    args, _, pshape = _case(_gen(10), 0, 64, 64, 5, 5)
    got, packed = _run_pooled(X.xnor_conv2d_fused, args, pshape)
    assert got.shape[0] == 0 and packed.shape[0] == 0


def test_fused_pool_opcheck():
    args, _, pshape = _case(_gen(12), 1, 70, 67, 6, 7)
    a = dict(args)
    out = torch.empty(1, 67, 3, 3).contiguous(memory_format=torch.channels_last)
    packed = torch.empty(pshape, dtype=torch.int64)
    opargs = (a["x"], a["weight_packed"], a["alpha"], a["bias"], 70, [1, 1], [1, 1], [1, 1], 0, a["in_scale"],
              a["in_shift"], a["residual"], a["next_scale"], a["next_shift"], out, packed, True)
    torch.library.opcheck(torch.ops.fastpose.xnor_conv2d_fused, opargs)


def test_fused_pool_bad_inputs():
    args, buf, pshape = _case(_gen(13), 1, 64, 32, 6, 6)

    def call(out, **over):
        a = dict(args, **over)
        X.xnor_conv2d_fused(a.pop("x"), a.pop("weight_packed"), a.pop("alpha"), a.pop("bias"), a.pop("in_channels"),
                            **a, out=out, out_packed=torch.empty(pshape, dtype=torch.int64), pool=True)

    with pytest.raises(ValueError, match=r"out must be \(1, 32, 3, 3\) \(the 2x2 pool"):
        call(buf[:, 2:34])  # the unpooled shape
    with pytest.raises(ValueError, match="residual must be the convolution's output shape"):
        call(torch.empty(1, 32, 3, 3), residual=torch.empty(1, 32, 3, 3))
    res = torch.randn(1, 32, 6, 6)
    with pytest.raises(ValueError, match="out must not overlap residual"):
        call(res[:, :, :3, :3], residual=res)  # out inside the residual it is still reading


# ------------------------------------------------------------------------------------------- the model


def _randomise(m, seed=0):
    g = _gen(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.2)
    return m.eval()


def _ref_bn(bn, x):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def _ref_sign(x):
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _ref_binary_conv(conv, x):
    if isinstance(conv, fnn.PackedXNORConv2d):
        w, alpha = X.binary_unpack(conv.weight_packed, conv.in_channels), conv.alpha
    else:
        w, alpha = _ref_sign(conv.weight), conv.weight.abs().mean((1, 2, 3))
    return F.conv2d(_ref_sign(x), w, None, conv.stride, conv.padding, conv.dilation) * alpha.view(1, -1, 1, 1)


def _ref_block(blk, x, pool=False):
    outs, y = [], x
    for bn, conv in zip(blk.bns, blk.convs):
        y = _ref_binary_conv(conv, _ref_bn(bn, y))
        outs.append(y)
    res = x
    if blk.shortcut is not None:
        bn, _, conv = blk.shortcut
        u = torch.relu(_ref_bn(bn, x))
        if pool:  # the contract's one reordering: the projection after the pool
            return F.avg_pool2d(torch.cat(outs, 1), 2, 2) + hpm_packed.real_conv(
                conv, F.avg_pool2d(u, 2, 2).contiguous(memory_format=torch.channels_last))
        res = hpm_packed.real_conv(conv, u.contiguous(memory_format=torch.channels_last))
    out = torch.cat(outs, 1) + res
    return F.avg_pool2d(out, 2, 2) if pool else out


def _ref_conv_bn_relu(conv, bn, x):
    # The contract: the BN folded into the conv's weight and bias, then ReLU (exact after the conv).
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    w = (conv.weight * scale.view(-1, 1, 1, 1)).contiguous(memory_format=torch.channels_last)
    b = shift if conv.bias is None else conv.bias * scale + shift
    if x.dtype == torch.float32:
        y = torch.ops.aten.mkldnn_convolution(x, w, b, list(conv.padding), list(conv.stride), list(conv.dilation), 1)
    else:
        y = F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation)
    return torch.relu(y)


def _ref_hg(hg, x):
    up1 = _ref_block(hg.up1, x)
    low = _ref_block(hg.low1, F.avg_pool2d(x, 2, 2))
    low = _ref_hg(hg.low2, low) if isinstance(hg.low2, models.hpm.HPMHourglass) else _ref_block(hg.low2, low)
    low = _ref_block(hg.low3, low)
    return up1 + F.interpolate(low, scale_factor=2, mode="nearest")


def _ref_model(m, x):
    """The contract of fastpose.models.hpm_packed, written out with plain ops (real convs: real_conv)."""
    rc = hpm_packed.real_conv
    x = x.contiguous(memory_format=torch.channels_last)
    x = _ref_conv_bn_relu(m.conv1, m.bn1, x)
    x = _ref_block(m.stem[0], x, pool=True)
    x = _ref_block(m.stem[2], _ref_block(m.stem[1], x))
    outs = []
    for i, hg in enumerate(m.hgs):
        conv, bn, _ = m.heads[i]
        feat = _ref_conv_bn_relu(conv, bn, _ref_block(m.tops[i], _ref_hg(hg, x)))
        pred = rc(m.preds[i], feat)
        outs.append(pred)
        if i < len(m.hgs) - 1:
            x = x + rc(m.merge_features[i], feat) + rc(m.merge_preds[i], pred)
    return outs


MODEL_CASES = [pytest.param(1, 64, (64, 64), False, id="s1-f64-nchw"),
               pytest.param(1, 64, (64, 64), True, id="s1-f64-cl"),
               pytest.param(2, 64, (64, 128), True, id="s2-f64-64x128-cl"),
               pytest.param(2, 64, (64, 128), False, id="s2-f64-64x128-nchw", marks=pytest.mark.slow),
               pytest.param(1, 256, (64, 64), False, id="s1-f256-nchw", marks=pytest.mark.slow),
               pytest.param(1, 256, (128, 64), True, id="s1-f256-128x64-cl", marks=pytest.mark.slow)]


@pytest.mark.parametrize("stacks,features,size,cl", MODEL_CASES)
def test_model_bit_exact(stacks, features, size, cl):
    torch.manual_seed(stacks + features)
    m = _randomise(models.create("binary_hpm_hourglass", stacks=stacks, num_joints=5, features=features))
    x = torch.randn(2 if stacks == 2 else 1, 3, *size)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = _ref_model(m, x)
        got = {"unpacked": m(x)}
        p = fnn.pack(m)
        got["packed"] = p(x)
        got["packed_torch"] = models.set_backend(p, "torch")(x)
        got["unpacked_torch"] = models.set_backend(m, "torch")(x)
    for name, outs in got.items():
        assert len(outs) == stacks
        for a, b in zip(outs, want):
            assert torch.equal(a, b), name
            assert a.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)


def test_stem_pool_reordering_keeps_hooks():
    """A forward hook on the stem block still runs in the inference path (the block is then called as a
    module, pooled after the add); both backends still agree bit for bit."""
    torch.manual_seed(2)
    m = _randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=3, features=64, depth=2)).eval()
    x = torch.randn(1, 3, 64, 64)
    seen = []
    with torch.no_grad():
        plain = m(x)[0]
        handle = m.stem[0].register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
        hooked = m(x)[0]
        hooked_torch = models.set_backend(copy.deepcopy(m), "torch")(x)[0]
        handle.remove()
    assert seen == [torch.Size([1, 128, 32, 32])] * 2  # the fastpose and the (copied) torch-backend model
    assert torch.equal(hooked, hooked_torch)
    torch.testing.assert_close(hooked, plain, rtol=1e-3, atol=1e-3)  # the two orders differ by rounding


def test_direct_traversal_keeps_hooks_and_modes():
    """The packed forward runs the hourglass and its blocks without module calls, except where a call
    would do something else: a forward hook (on a block, an hourglass level or its merge) still fires
    with the same output, and a block left in training mode inside an eval model runs as a module."""
    torch.manual_seed(4)
    m = _randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=3, features=64, depth=2)).eval()
    x = torch.randn(1, 3, 64, 64)
    hg = m.hgs[0]
    with torch.no_grad():
        plain = m(x)[0]
        for mod in (hg.low2.up1, hg.low2, hg.merge, m.tops[0]):
            seen = []
            handle = mod.register_forward_hook(lambda _m, _i, out: seen.append(out.clone()))
            try:
                hooked = m(x)[0]
            finally:
                handle.remove()
            assert len(seen) == 1, type(mod).__name__
            assert torch.equal(hooked, plain)
        calls = []
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda mod, _i, _o: calls.append(mod) if mod is hg.low1 else None)
        try:
            # (a global hook also turns off the stem's pool-first order: equal up to rounding then)
            torch.testing.assert_close(m(x)[0], plain, rtol=1e-3, atol=1e-3)
        finally:
            handle.remove()
        assert calls == [hg.low1]  # a global hook reaches the blocks too
        hg.low3.train()  # training-mode BatchNorm: batch statistics, a different value
        trained = m(x)[0]
        hg.low3.eval()
    assert not torch.equal(trained, plain)
    with torch.no_grad():
        assert torch.equal(m(x)[0], plain)


def test_model_cache_follows_parameters():
    """Folded BN / packed filters are cached per module: changing or reloading weights must show."""
    torch.manual_seed(1)
    m = _randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=3, features=64, depth=2))
    x = torch.randn(1, 3, 64, 64)
    other = _randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=3, features=64, depth=2), seed=7)
    with torch.no_grad():
        m(x)
        m.load_state_dict(other.state_dict())
        assert torch.equal(m(x)[0], _ref_model(other, x)[0])
        m.stem[0].bns[1].running_var.mul_(2)
        m.stem[0].convs[0].weight.neg_()
        assert torch.equal(m(x)[0], _ref_model(m, x)[0])
        # Replaced parameters, buffers and submodules (the per-block plans check identity, not only versions).
        blk = m.hgs[0].up1
        blk.bns[2].weight = torch.nn.Parameter(torch.rand_like(blk.bns[2].weight) + 0.5)
        blk.bns[0].running_mean = torch.randn_like(blk.bns[0].running_mean)
        new_conv = fnn.XNORConv2d(blk.convs[1].in_channels, blk.convs[1].out_channels, 3, padding=1, bias=False)
        blk.convs[1] = new_conv
        m.stem[1].convs = torch.nn.ModuleList(
            [fnn.XNORConv2d(c.in_channels, c.out_channels, 3, padding=1, bias=False) for c in m.stem[1].convs])
        assert torch.equal(m(x)[0], _ref_model(m, x)[0])
        m.double()
        xd = x.double()
        assert torch.equal(m(xd)[0], _ref_model(m, xd)[0])
        # .data writes bypass the version counter: clear_caches is the documented way to make them show.
        m.hgs[0].up1.bns[1].running_var.data.mul_(3)
        hpm_packed.clear_caches(m)
        assert torch.equal(m(xd)[0], _ref_model(m, xd)[0])


class _Neg(torch.nn.Module):
    def forward(self, w):
        return -w


def test_model_cache_follows_attributes_and_parametrizations():
    """Plain attributes the derived values depend on, and parametrized weights (computed on access)."""
    torch.manual_seed(5)
    m = _randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=3, features=64, depth=2))
    x = torch.randn(1, 3, 64, 64)

    def fresh(model):  # what the model computes without any cached state: a cleared copy, torch backend
        ref = copy.deepcopy(model)
        hpm_packed.clear_caches(ref)
        return models.set_backend(ref, "torch")(x)[0]

    with torch.no_grad():
        m(x)
        blk = m.hgs[0].up1
        blk.convs[1].pad_value = -1
        blk.convs[2].padding, blk.convs[2].dilation = (2, 2), (2, 2)
        assert torch.equal(m(x)[0], fresh(m))
        blk.bns[0].eps = 0.5
        blk.convs[0].scale = False
        assert torch.equal(m(x)[0], fresh(m))
        torch.nn.utils.parametrize.register_parametrization(blk.convs[0], "weight", _Neg())
        assert torch.equal(m(x)[0], fresh(m))
        blk.convs[0].parametrizations.weight.original.mul_(-1.5)
        assert torch.equal(m(x)[0], fresh(m))


def test_model_grad_enabled_eval_keeps_autograd_path():
    torch.manual_seed(2)
    m = _randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=3, features=64, depth=1))
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    out = m(x)[0]
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        fast = m(x)[0]
    torch.testing.assert_close(fast, out.detach(), atol=1e-3, rtol=1e-3)  # BN rounds differently there


def test_packed_state_dict_round_trip_inference():
    torch.manual_seed(3)
    m = _randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=4, features=64, depth=2))
    p = fnn.pack(m)
    buf = io.BytesIO()
    torch.save(p.state_dict(), buf)
    fresh = fnn.pack(models.create("binary_hpm_hourglass", stacks=1, num_joints=4, features=64, depth=2)).eval()
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x)[0], m(x)[0])


def test_model_float64_and_bfloat16():
    """float64 takes the inference path too (bit-exact between backends and vs the contract); bfloat16
    keeps the regular forward."""
    torch.manual_seed(4)
    m = _randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=3, features=64, depth=2)).double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        a = m(x)[0]
        b = models.set_backend(m, "torch")(x)[0]
        want = _ref_model(m, x)[0]
        assert a.dtype == torch.float64 and torch.equal(a, b) and torch.equal(a, want)
        h = models.set_backend(m, "fastpose").bfloat16()(x.bfloat16())[0]
    assert h.dtype == torch.bfloat16 and h.shape == a.shape

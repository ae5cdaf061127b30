"""Bad input, fuzzed: every public op and layer (fastpose.ops, fastpose.dsnt, fastpose.nn and the raw
torch.ops.fastpose schemas) called with wrong ranks, dtypes, devices, sizes, shapes, strides and packed
word counts must raise a clear Python exception (TypeError / ValueError / RuntimeError) whose message
names the offending argument: never a crash, an abort or a silently wrong result. NaN and inf inputs
are legal and give the documented result (tested against the references).

Run under AddressSanitizer with `make asan-test` (see README, Testing).
"""
import importlib
import math
import re

import pytest
import torch

import fastpose
from conftest import DEVICES
from fastpose import dsnt as D
from fastpose import nn as fnn
from fastpose import ops as F
# the modules (fastpose.ops re-exports functions of the same names)
hr_mod = importlib.import_module("fastpose.ops.hr_fuse")
sd_mod = importlib.import_module("fastpose.ops.softmax_dsnt")
ua_mod = importlib.import_module("fastpose.ops.upsample_add")
xc = importlib.import_module("fastpose.ops.xnor_conv")

OPS = torch.ops.fastpose
ERRORS = (TypeError, ValueError, RuntimeError)
BAD_DTYPES = [torch.int32, torch.int64, torch.bool, torch.complex64, torch.uint8]
BAD_DTYPE_IDS = ["int32", "int64", "bool", "complex64", "uint8"]


def raises(fn, name, exc=ERRORS):
    """fn() raises one of exc with a message naming ``name`` (a regex)."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    assert re.search(name, msg), f"error does not name {name!r}: {type(info.value).__name__}: {msg}"
    return info.value


def rnd(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def cast(t, dtype):
    if dtype == torch.bool:
        return t > 0
    if dtype.is_complex:
        return torch.complex(t.float(), t.float()).to(dtype)
    return (t * 3).to(dtype)


# ================================================================================== softmax_dsnt


class TestSoftmaxDsnt:
    @pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (1, 2, 3, 4, 5), ()])
    def test_rank(self, shape):
        x = torch.randn(shape)
        raises(lambda: F.softmax_dsnt(x), "logits", ValueError)
        raises(lambda: OPS.softmax_dsnt(x), "logits", ValueError)
        raises(lambda: F.softmax_dsnt_with_reg(x, torch.zeros(2, 3, 2)), "logits", ValueError)

    @pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_DTYPE_IDS)
    def test_dtype(self, dtype):
        x = cast(rnd(2, 3, 4, 5), dtype)
        raises(lambda: F.softmax_dsnt(x), "logits", TypeError)
        raises(lambda: OPS.softmax_dsnt(x), "logits", TypeError)
        t = torch.zeros(2, 3, 2)
        raises(lambda: OPS.softmax_dsnt_reg(x, t, 1.0, 2), "logits", TypeError)
        # target of a bad dtype
        raises(lambda: F.softmax_dsnt_with_reg(rnd(2, 3, 4, 5), cast(t, dtype)), "target", TypeError)
        raises(lambda: OPS.softmax_dsnt_reg(rnd(2, 3, 4, 5), cast(t, dtype), 1.0, 2), "target", TypeError)

    def test_not_a_tensor(self):
        raises(lambda: F.softmax_dsnt([[[[1.0]]]]), "logits", TypeError)
        raises(lambda: F.softmax_dsnt_with_reg(rnd(1, 1, 2, 2), [[[0.0, 0.0]]]), "target", TypeError)

    @pytest.mark.parametrize("shape", [(2, 3, 0, 5), (2, 3, 4, 0)])
    def test_empty_map(self, shape):
        x = torch.randn(shape)
        raises(lambda: F.softmax_dsnt(x), "logits", ValueError)
        raises(lambda: OPS.softmax_dsnt(x), "logits", ValueError)
        raises(lambda: OPS.softmax_dsnt_reg(x, torch.zeros(2, 3, 2), 1.0, 1), "logits", ValueError)

    @pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 0, 4, 5)])
    def test_empty_batch_is_fine(self, shape):
        x = torch.randn(shape, requires_grad=True)
        c = F.softmax_dsnt(x)
        assert c.shape == shape[:2] + (2,)
        c.sum().backward()
        assert x.grad.shape == shape
        c, d = F.softmax_dsnt_with_reg(x, torch.zeros(shape[:2] + (2,)))
        assert d.shape == shape[:2]

    @pytest.mark.parametrize("tshape", [(2, 3), (2, 3, 3), (2, 4, 2), (3, 3, 2), (2, 3, 2, 1)])
    def test_target_shape(self, tshape):
        x = rnd(2, 3, 4, 5)
        raises(lambda: F.softmax_dsnt_with_reg(x, torch.zeros(tshape)), "target", ValueError)
        raises(lambda: OPS.softmax_dsnt_reg(x, torch.zeros(tshape), 1.0, 1), "target", ValueError)

    @pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan, math.inf, -math.inf])
    def test_sigma(self, sigma):
        x, t = rnd(2, 3, 4, 5), torch.zeros(2, 3, 2)
        raises(lambda: F.softmax_dsnt_with_reg(x, t, sigma), "sigma", ValueError)
        raises(lambda: OPS.softmax_dsnt_reg(x, t, sigma, 1), "sigma", ValueError)
        _, _, stats = OPS.softmax_dsnt_reg(x, t, 1.0, 1)
        raises(lambda: OPS.softmax_dsnt_reg_backward(torch.zeros(2, 3, 2), torch.zeros(2, 3), x, t, stats, sigma, 1),
               "sigma", ValueError)

    @pytest.mark.parametrize("kind", ["JS", "mse", None, 1])
    def test_kind(self, kind):
        raises(lambda: F.softmax_dsnt_with_reg(rnd(2, 3, 4, 5), torch.zeros(2, 3, 2), 1.0, kind), "kind", ValueError)

    @pytest.mark.parametrize("reg", [0, 3, -1])
    def test_reg_code(self, reg):
        x, t = rnd(2, 3, 4, 5), torch.zeros(2, 3, 2)
        raises(lambda: OPS.softmax_dsnt_reg(x, t, 1.0, reg), "reg", ValueError)
        _, _, stats = OPS.softmax_dsnt_reg(x, t, 1.0, 1)
        raises(lambda: OPS.softmax_dsnt_reg_backward(torch.zeros(2, 3, 2), torch.zeros(2, 3), x, t, stats, 1.0, reg),
               "reg", ValueError)

    def test_devices(self):
        x = rnd(2, 3, 4, 5)
        raises(lambda: F.softmax_dsnt_with_reg(x, torch.zeros(2, 3, 2, device="meta")), "target", ValueError)
        # meta tensors: shapes only, through the fake kernels
        c = F.softmax_dsnt(torch.empty(2, 3, 4, 5, device="meta"))
        assert c.device.type == "meta" and c.shape == (2, 3, 2)
        c, d = F.softmax_dsnt_with_reg(torch.empty(2, 3, 4, 5, device="meta"), torch.empty(2, 3, 2, device="meta"))
        assert d.shape == (2, 3) and d.device.type == "meta"

    @pytest.mark.parametrize("which", ["grad_coords", "stats"])
    @pytest.mark.parametrize("bad", ["rank", "shape", "dtype"])
    def test_backward_arguments(self, which, bad):
        x = rnd(2, 3, 4, 5)
        coords, stats = OPS.softmax_dsnt(x)
        args = {"grad_coords": torch.ones(2, 3, 2), "stats": stats}
        t = args[which]
        args[which] = {"rank": t[0], "shape": torch.cat([t, t], 1), "dtype": cast(t, torch.int32)}[bad]
        exc = TypeError if bad == "dtype" else ValueError
        raises(lambda: OPS.softmax_dsnt_backward(args["grad_coords"], x, args["stats"]), which, exc)
        _, _, rstats = OPS.softmax_dsnt_reg(x, torch.zeros(2, 3, 2), 1.0, 2)
        args2 = {"grad_coords": torch.ones(2, 3, 2), "stats": rstats}
        t = args2[which]
        args2[which] = {"rank": t[0], "shape": torch.cat([t, t], 1), "dtype": cast(t, torch.int32)}[bad]
        raises(lambda: OPS.softmax_dsnt_reg_backward(args2["grad_coords"], torch.ones(2, 3), x, torch.zeros(2, 3, 2),
                                                     args2["stats"], 1.0, 2), which, exc)

    @pytest.mark.parametrize("bad", ["rank", "shape", "dtype"])
    def test_reg_backward_grad_divergence(self, bad):
        x, t = rnd(2, 3, 4, 5), torch.zeros(2, 3, 2)
        _, _, stats = OPS.softmax_dsnt_reg(x, t, 1.0, 2)
        gd = {"rank": torch.ones(2), "shape": torch.ones(2, 4), "dtype": torch.ones(2, 3, dtype=torch.int64)}[bad]
        raises(lambda: OPS.softmax_dsnt_reg_backward(torch.ones(2, 3, 2), gd, x, t, stats, 1.0, 2),
               "grad_div", TypeError if bad == "dtype" else ValueError)

    def test_backward_of_a_complex_gradient(self):
        x = rnd(2, 3, 4, 5)
        _, stats = OPS.softmax_dsnt(x)
        raises(lambda: OPS.softmax_dsnt_backward(torch.ones(2, 3, 2, dtype=torch.complex64), x, stats),
               "grad_coords", TypeError)

    def test_all_minus_inf_map(self):
        x = rnd(2, 3, 4, 5)
        x[1, 2] = -math.inf
        raises(lambda: F.softmax_dsnt(x), "-inf", ValueError)
        raises(lambda: F.softmax_dsnt_with_reg(x, torch.zeros(2, 3, 2)), "-inf", ValueError)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_nan_and_inf_propagate_per_map(self, dtype):
        # NaN anywhere in a map, or +inf, makes that map's coordinates (and divergence) NaN, as eager
        # softmax does; other maps are untouched. -inf entries are masked positions.
        x = rnd(2, 3, 4, 5, dtype=dtype)
        x[0, 1, 2, 3] = math.nan
        x[1, 0, 0, 0] = math.inf
        x[1, 2, :2] = -math.inf
        c = F.softmax_dsnt(x)
        ref = sd_mod.softmax_dsnt_reference(x)
        bad = torch.zeros(2, 3, dtype=torch.bool)
        bad[0, 1] = bad[1, 0] = True
        assert torch.isnan(c[bad]).all() and torch.isnan(ref[bad]).all()
        torch.testing.assert_close(c[~bad], ref[~bad])
        t = torch.zeros(2, 3, 2, dtype=dtype)
        _, div = F.softmax_dsnt_with_reg(x, t)
        assert torch.isnan(div[bad]).all() and torch.isfinite(div[~bad]).all()

    def test_nan_target_gives_nan_divergence(self):
        x = rnd(2, 3, 4, 5)
        t = torch.zeros(2, 3, 2)
        t[1, 1, 0] = math.nan
        coords, div = F.softmax_dsnt_with_reg(x, t)
        assert torch.isnan(div[1, 1]) and torch.isfinite(div.flatten()[[0, 1, 2, 3, 5]]).all()
        assert torch.isfinite(coords).all()

    @pytest.mark.parametrize("view", ["step", "expanded", "huge-stride", "transposed"])
    def test_strided_views(self, view):
        base = rnd(3, 4, 9, 14)
        if view == "step":
            x = base[::2, 1::2, ::3, ::2]
        elif view == "expanded":
            x = rnd(1, 1, 5, 7).expand(3, 4, 5, 7)  # stride 0
        elif view == "huge-stride":
            # size-1 dimensions with strides far beyond the storage, and a large row stride
            x = torch.as_strided(base, (1, 2, 3, 4), (1 << 40, 9 * 14, 28, 3))
        else:
            x = base.transpose(2, 3)
        torch.testing.assert_close(F.softmax_dsnt(x), sd_mod.softmax_dsnt_reference(x))
        xr = x.detach().clone().requires_grad_()
        F.softmax_dsnt(xr).sum().backward()
        x2 = x.detach().clone().requires_grad_()
        sd_mod.softmax_dsnt_reference(x2).sum().backward()
        torch.testing.assert_close(xr.grad, x2.grad, atol=1e-6, rtol=1e-5)


# ================================================================================== merges


class TestMerges:
    @pytest.mark.parametrize("which", ["low", "skip"])
    @pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 4, 4, 1), ()])
    def test_rank(self, which, shape):
        args = {"low": rnd(2, 3, 4, 4), "skip": rnd(2, 3, 8, 8)}
        args[which] = torch.randn(shape)
        raises(lambda: F.upsample_add(args["low"], args["skip"]), which, ValueError)
        raises(lambda: OPS.upsample_add(args["low"], args["skip"]), which, ValueError)
        raises(lambda: fnn.UpsampleAdd()(args["low"], args["skip"]), which, ValueError)

    @pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_DTYPE_IDS)
    def test_dtype(self, dtype):
        low, skip = rnd(2, 3, 4, 4), rnd(2, 3, 8, 8)
        raises(lambda: F.upsample_add(cast(low, dtype), cast(skip, dtype)), "skip", TypeError)
        raises(lambda: F.upsample_add(cast(low, dtype), skip), "low", TypeError)
        raises(lambda: OPS.upsample_add(cast(low, dtype), cast(skip, dtype)), "upsample_add", TypeError)
        raises(lambda: OPS.upsample_add(cast(low, dtype), skip), "low", TypeError)
        raises(lambda: F.hr_fuse([cast(skip, dtype), cast(low, dtype)]), r"xs\[0\]", TypeError)
        raises(lambda: F.hr_fuse([skip, cast(low, dtype)]), r"xs\[1\]", TypeError)
        raises(lambda: OPS.hr_fuse([skip, cast(low, dtype)], True), r"xs\[1\]", TypeError)
        raises(lambda: OPS.upsample_add_backward(cast(skip, dtype), low), "upsample_add_backward", TypeError)

    def test_dtype_mismatch(self):
        low, skip = rnd(2, 3, 4, 4, dtype=torch.float64), rnd(2, 3, 8, 8)
        raises(lambda: F.upsample_add(low, skip), "low", TypeError)
        raises(lambda: OPS.upsample_add(low, skip), "low", TypeError)
        raises(lambda: F.hr_fuse([skip, low]), r"xs\[1\]", TypeError)
        raises(lambda: OPS.hr_fuse([skip, low], True), r"xs\[1\]", TypeError)

    @pytest.mark.parametrize("lshape", [(3, 3, 4, 4), (2, 4, 4, 4), (2, 3, 3, 4), (2, 3, 4, 5), (2, 3, 16, 16),
                                        (2, 3, 0, 4), (2, 3, 4, 0)],
                             ids=["batch", "channels", "non-integer-h", "non-integer-w", "larger", "zero-h", "zero-w"])
    def test_shapes(self, lshape):
        low, skip = torch.randn(lshape), rnd(2, 3, 8, 8)
        raises(lambda: F.upsample_add(low, skip), "low", ValueError)
        raises(lambda: OPS.upsample_add(low, skip), "low", ValueError)
        raises(lambda: F.hr_fuse([skip, low]), r"xs\[1\]", ValueError)
        raises(lambda: OPS.hr_fuse([skip, low], True), r"xs\[1\]", ValueError)
        raises(lambda: OPS.hr_fuse_backward(skip, skip, [skip, low], True), r"xs\[1\]", ValueError)
        raises(lambda: OPS.upsample_add_backward(skip, low), "low", ValueError)

    def test_empty_lists_and_non_tensors(self):
        raises(lambda: F.hr_fuse([]), "xs", ValueError)
        raises(lambda: OPS.hr_fuse([], True), "empty list", NotImplementedError)  # the dispatcher's own error
        raises(lambda: F.hr_fuse(rnd(2, 3, 4, 4)), "xs", ValueError)
        raises(lambda: F.hr_fuse([rnd(2, 3, 8, 8), None]), r"xs\[1\]", TypeError)
        raises(lambda: F.upsample_add(None, rnd(2, 3, 8, 8)), "low", TypeError)
        raises(lambda: F.upsample_add(rnd(2, 3, 4, 4), 1.0), "skip", TypeError)

    def test_devices(self):
        low, skip = rnd(2, 3, 4, 4), rnd(2, 3, 8, 8)
        raises(lambda: F.upsample_add(low.to("meta"), skip), "low", ValueError)
        raises(lambda: F.hr_fuse([skip, low.to("meta")]), r"xs\[1\]", ValueError)
        out = F.upsample_add(low.to("meta"), skip.to("meta"))
        assert out.device.type == "meta" and out.shape == skip.shape
        out = F.hr_fuse([skip.to("meta"), low.to("meta")])
        assert out.device.type == "meta" and out.shape == skip.shape

    @pytest.mark.parametrize("bad", ["grad-shape", "out-shape", "out-dtype", "grad-dtype", "out-narrow-dtype"])
    def test_hr_fuse_backward_arguments(self, bad):
        xs = [rnd(2, 3, 8, 8), rnd(2, 3, 4, 4)]
        out = F.hr_fuse(xs)
        grad = torch.ones_like(out)
        if bad == "grad-shape":
            raises(lambda: OPS.hr_fuse_backward(grad[:1], out, xs, True), "grad", ValueError)
        elif bad == "out-shape":
            raises(lambda: OPS.hr_fuse_backward(grad, out[:, :2], xs, True), "out", ValueError)
        elif bad == "out-dtype":
            raises(lambda: OPS.hr_fuse_backward(grad, out.double(), xs, True), "out", TypeError)
        elif bad == "out-narrow-dtype":  # a 2-byte out read as 4-byte floats would overrun its buffer
            raises(lambda: OPS.hr_fuse_backward(grad, out.half(), xs, True), "out", TypeError)
        else:
            raises(lambda: OPS.hr_fuse_backward(grad.to(torch.complex64), out, xs, True), "grad", TypeError)
            raises(lambda: OPS.hr_fuse_backward(grad.int(), out, xs, True), "grad", TypeError)

    def test_upsample_add_backward_grad(self):
        low = rnd(2, 3, 4, 4)
        raises(lambda: OPS.upsample_add_backward(rnd(2, 3, 8), low), "grad", ValueError)
        raises(lambda: OPS.upsample_add_backward(rnd(2, 3, 8, 8).double(), low), "low", TypeError)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_nan_and_inf(self, dtype):
        # element-wise: NaN and inf propagate exactly as in the eager expressions (relu(NaN) = NaN)
        low, skip = rnd(2, 3, 4, 4, dtype=dtype), rnd(2, 3, 8, 8, dtype=dtype)
        low[0, 0, 1, 1] = math.nan
        low[1, 2, 0, 0] = math.inf
        skip[0, 1, 3, 3] = -math.inf
        skip[1, 1, 2, 2] = math.nan
        torch.testing.assert_close(F.upsample_add(low, skip), ua_mod.upsample_add_reference(low, skip), equal_nan=True)
        for relu in (True, False):
            torch.testing.assert_close(F.hr_fuse([skip, low], relu), hr_mod.hr_fuse_reference([skip, low], relu),
                                       equal_nan=True)

    @pytest.mark.parametrize("view", ["step", "expanded", "huge-stride"])
    def test_strided_views(self, view):
        if view == "step":
            skip, low = rnd(4, 6, 16, 16)[::2, ::2, ::2, ::2], rnd(2, 3, 8, 8)[..., ::2, ::2]
        elif view == "expanded":
            skip, low = rnd(2, 3, 8, 8), rnd(1, 3, 1, 4).expand(2, 3, 4, 4)
        else:
            base = rnd(2, 3, 8, 8)
            skip = torch.as_strided(base, (1, 3, 8, 8), (1 << 40, 64, 8, 1))
            low = torch.as_strided(base, (1, 3, 4, 1), (1 << 41, 64, 16, 1 << 42))
        torch.testing.assert_close(F.upsample_add(low, skip), ua_mod.upsample_add_reference(low, skip))
        torch.testing.assert_close(F.hr_fuse([skip, low]), hr_mod.hr_fuse_reference([skip, low]))


# ================================================================================== xnor


def _wp(cout=4, cin=70, k=3):
    return OPS.binarize_pack(rnd(cout, cin, k, k))


class TestXnor:
    @pytest.mark.parametrize("shape", [(2, 3, 4), (1, 2, 3, 4, 5), ()])
    def test_rank(self, shape):
        w = rnd(4, 3, 3, 3)
        x = torch.randn(shape)
        raises(lambda: F.xnor_conv2d(x, w), "x", ValueError)
        raises(lambda: OPS.xnor_conv2d(x, w, None, [1, 1], [0, 0], [1, 1], True, 0), "x", ValueError)
        raises(lambda: F.xnor_conv2d(rnd(1, 3, 5, 5), torch.randn(shape)), "weight", ValueError)
        raises(lambda: OPS.xnor_conv2d(rnd(1, 3, 5, 5), torch.randn(shape), None, [1, 1], [0, 0], [1, 1], True, 0),
               "weight", ValueError)
        raises(lambda: F.binarize_pack(x), "x", ValueError)
        raises(lambda: OPS.binarize_pack(x), "x", ValueError)
        raises(lambda: xc.xnor_alpha(x), "weight", ValueError)
        raises(lambda: xc.xnor_conv2d_reference(x, w), "x", ValueError)
        raises(lambda: F.xnor_conv2d_packed(x, _wp(4, 3), None, None, 3), "x", ValueError)

    @pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_DTYPE_IDS)
    def test_dtype(self, dtype):
        x, w = rnd(1, 3, 5, 5), rnd(4, 3, 3, 3)
        bx = cast(x, dtype)
        if dtype != torch.int64:  # int64 x is packed bits: its own checks (test_packed_x)
            raises(lambda: F.xnor_conv2d(bx, w), "x", TypeError)
            raises(lambda: F.xnor_conv2d_packed(bx, _wp(4, 3), None, None, 3), "x", TypeError)
            raises(lambda: OPS.xnor_conv2d_packed(bx, _wp(4, 3), None, None, 3, [1, 1], [0, 0], [1, 1], 0),
                   "x", TypeError)
        raises(lambda: OPS.xnor_conv2d(bx, w, None, [1, 1], [0, 0], [1, 1], True, 0), "x", TypeError)
        raises(lambda: F.xnor_conv2d(x, cast(w, dtype)), "weight", TypeError)
        raises(lambda: OPS.xnor_conv2d(x, cast(w, dtype), None, [1, 1], [0, 0], [1, 1], True, 0), "weight", TypeError)
        raises(lambda: F.xnor_conv2d(x, w, cast(rnd(4), dtype)), "bias", TypeError)
        raises(lambda: OPS.xnor_conv2d(x, w, cast(rnd(4), dtype), [1, 1], [0, 0], [1, 1], True, 0), "bias",
               TypeError)
        raises(lambda: F.binarize_pack(bx), "x", TypeError)
        raises(lambda: OPS.binarize_pack(bx), "x", TypeError)
        raises(lambda: F.binarize(bx), "x", TypeError)
        raises(lambda: xc.xnor_alpha(cast(w, dtype)), "weight", TypeError)
        raises(lambda: fnn.binary_sign(bx), "x", TypeError)
        for name in ("alpha", "bias", "bn_scale", "bn_shift"):
            kw = {"alpha": None, "bias": None, "bn_scale": rnd(4), "bn_shift": None}
            kw[name] = cast(rnd(4), dtype)
            raises(lambda: F.xnor_conv2d_packed(x, _wp(4, 3), kw["alpha"], kw["bias"], 3, bn_scale=kw["bn_scale"],
                                                bn_shift=kw["bn_shift"]), name, TypeError)
            raises(lambda: OPS.xnor_conv2d_packed(x, _wp(4, 3), kw["alpha"], kw["bias"], 3, [1, 1], [0, 0], [1, 1], 0,
                                                  kw["bn_scale"], kw["bn_shift"]), name, TypeError)
        if dtype != torch.int64:
            raises(lambda: F.xnor_conv2d_packed(x, cast(_wp(4, 3), dtype), None, None, 3), "weight_packed", TypeError)
            raises(lambda: OPS.xnor_conv2d_packed(x, cast(_wp(4, 3), dtype), None, None, 3, [1, 1], [0, 0], [1, 1], 0),
                   "weight_packed", TypeError)
            raises(lambda: F.binary_unpack(cast(F.binarize_pack(x), dtype), 3), "packed", TypeError)

    @pytest.mark.parametrize("out_dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
    def test_out_dtype(self, out_dtype):
        x = rnd(1, 3, 5, 5)
        raises(lambda: F.xnor_conv2d_packed(x, _wp(4, 3), None, None, 3, out_dtype=out_dtype), "out_dtype", TypeError)
        raises(lambda: OPS.xnor_conv2d_packed(x, _wp(4, 3), None, None, 3, [1, 1], [0, 0], [1, 1], 0, None, None,
                                              out_dtype), "out_dtype", TypeError)

    def test_not_tensors(self):
        w = rnd(4, 3, 3, 3)
        raises(lambda: F.xnor_conv2d([[1.0]], w), "x", TypeError)
        raises(lambda: F.xnor_conv2d(rnd(1, 3, 5, 5), "w"), "weight", TypeError)
        raises(lambda: F.xnor_conv2d(rnd(1, 3, 5, 5), w, 1.0), "bias", TypeError)
        raises(lambda: F.binarize([1.0]), "x", TypeError)
        raises(lambda: F.binarize_pack(None), "x", TypeError)
        raises(lambda: F.binary_unpack(None, 3), "packed", TypeError)
        raises(lambda: F.xnor_conv2d_packed(rnd(1, 3, 5, 5), None, None, None, 3), "weight_packed", TypeError)

    @pytest.mark.parametrize("bad", ["channels", "bias-shape", "bias-rank", "kernel-too-large", "cout-zero"])
    def test_shapes(self, bad):
        x, w = rnd(2, 3, 5, 5), rnd(4, 3, 3, 3)
        if bad == "channels":
            raises(lambda: F.xnor_conv2d(rnd(2, 5, 5, 5), w), "x", ValueError)
            raises(lambda: OPS.xnor_conv2d(rnd(2, 5, 5, 5), w, None, [1, 1], [0, 0], [1, 1], True, 0), "x", ValueError)
            raises(lambda: F.xnor_conv2d_packed(rnd(2, 5, 5, 5), _wp(4, 3), None, None, 3), "x", ValueError)
        elif bad in ("bias-shape", "bias-rank"):
            b = rnd(5) if bad == "bias-shape" else rnd(4, 1)
            raises(lambda: F.xnor_conv2d(x, w, b), "bias", ValueError)
            raises(lambda: OPS.xnor_conv2d(x, w, b, [1, 1], [0, 0], [1, 1], True, 0), "bias", ValueError)
            raises(lambda: F.xnor_conv2d_packed(x, _wp(4, 3), b, None, 3), "alpha", ValueError)
            raises(lambda: F.xnor_conv2d_packed(x, _wp(4, 3), None, b, 3), "bias", ValueError)
            raises(lambda: F.xnor_conv2d_packed(x, _wp(4, 3), None, None, 3, bn_scale=b), "bn_scale", ValueError)
            raises(lambda: F.xnor_conv2d_packed(x, _wp(4, 3), None, None, 3, bn_scale=rnd(4), bn_shift=b), "bn_shift",
                   ValueError)
        elif bad == "kernel-too-large":
            big = rnd(4, 3, 7, 7)
            raises(lambda: F.xnor_conv2d(x, big), "kernel", ValueError)
            raises(lambda: F.xnor_conv2d(x, w, dilation=3), "kernel", ValueError)
            raises(lambda: F.xnor_conv2d_packed(x, OPS.binarize_pack(big), None, None, 3), "kernel", ValueError)
        else:
            out = F.xnor_conv2d(x, rnd(0, 3, 3, 3))  # no output channel: an empty result, like F.conv2d
            assert out.shape == (2, 0, 3, 3)

    @pytest.mark.parametrize("arg,value,match", [
        ("stride", 0, "stride"), ("stride", -1, "stride"), ("stride", (1, 2, 3), "stride"), ("stride", (1.5, 1), "stride"),
        ("padding", -1, "padding"), ("padding", (0, 0, 0), "padding"), ("padding", "same", "padding"),
        ("dilation", 0, "dilation"), ("dilation", (1, -2), "dilation"),
        ("pad_value", 1, "pad_value"), ("pad_value", -2, "pad_value"), ("pad_value", 0.5, "pad_value"),
    ])
    def test_conv_arguments(self, arg, value, match):
        x, w = rnd(2, 3, 6, 6), rnd(4, 3, 3, 3)
        raises(lambda: F.xnor_conv2d(x, w, **{arg: value}), match, ValueError)
        raises(lambda: F.xnor_conv2d_packed(x, OPS.binarize_pack(w), None, None, 3, **{arg: value}), match, ValueError)
        raises(lambda: xc.xnor_conv2d_reference(x, w, **{arg: value}), match, ValueError)

    @pytest.mark.parametrize("arg,value", [("stride", [1, 1, 1]), ("padding", []), ("dilation", [1, 1, 1]),
                                           ("stride", [0, 1]), ("padding", [-1, 0]), ("dilation", [1, 0])])
    def test_raw_schema_arguments(self, arg, value):
        x, w = rnd(2, 3, 6, 6), rnd(4, 3, 3, 3)
        kw = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]}
        kw[arg] = value
        # a wrong length is the schema parser's RuntimeError (int[2] broadcasts a single value); a bad value ours
        raises(lambda: OPS.xnor_conv2d(x, w, None, kw["stride"], kw["padding"], kw["dilation"], True, 0), arg)
        raises(lambda: OPS.xnor_conv2d_packed(x, OPS.binarize_pack(w), None, None, 3, kw["stride"], kw["padding"],
                                              kw["dilation"], 0), arg)
        g = torch.ones(2, 4, 4, 4)
        raises(lambda: OPS.xnor_conv2d_backward(g, x, w, kw["stride"], kw["padding"], kw["dilation"], True, 0,
                                                [True, True, True]), arg)

    @pytest.mark.parametrize("pad_value", [1, 2, -3])
    def test_raw_pad_value(self, pad_value):
        x, w = rnd(2, 3, 6, 6), rnd(4, 3, 3, 3)
        raises(lambda: OPS.xnor_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], True, pad_value), "pad_value", ValueError)
        raises(lambda: OPS.xnor_conv2d_packed(x, OPS.binarize_pack(w), None, None, 3, [1, 1], [1, 1], [1, 1],
                                              pad_value), "pad_value", ValueError)
        raises(lambda: OPS.xnor_conv2d_backward(torch.ones(2, 4, 6, 6), x, w, [1, 1], [1, 1], [1, 1], True, pad_value,
                                                [True, True, True]), "pad_value", ValueError)

    @pytest.mark.parametrize("bad", ["grad-rank", "grad-dtype", "x-dtype", "weight-dtype", "channels"])
    def test_raw_backward(self, bad):
        x, w, g = rnd(2, 3, 6, 6), rnd(4, 3, 3, 3), torch.ones(2, 4, 4, 4)
        args = {"grad": g, "x": x, "weight": w}
        name = bad.split("-")[0]
        if bad == "grad-rank":
            args["grad"] = g[0]
        elif bad == "channels":
            args["x"], name = rnd(2, 5, 6, 6), "x"
        else:
            args[name] = cast(args[name], torch.int32)
        raises(lambda: OPS.xnor_conv2d_backward(args["grad"], args["x"], args["weight"], [1, 1], [0, 0], [1, 1], True,
                                                0, [True, True, True]), name)

    @pytest.mark.parametrize("cin", [1, 63, 64, 65, 130])
    @pytest.mark.parametrize("words", [-1, 1])
    def test_packed_word_count(self, cin, words):
        w = rnd(4, cin, 3, 3)
        cw = xc.packed_words(cin) + words
        if cw < 0:
            return
        xp = torch.zeros(2, 6, 6, cw, dtype=torch.int64)
        raises(lambda: F.xnor_conv2d(xp, w), "packed x", ValueError)
        raises(lambda: F.xnor_conv2d_packed(xp, OPS.binarize_pack(w), None, None, cin), "packed x", ValueError)
        raises(lambda: OPS.xnor_conv2d_packed(xp, OPS.binarize_pack(w), None, None, cin, [1, 1], [0, 0], [1, 1], 0),
               "packed x", ValueError)
        wp = torch.zeros(4, 3, 3, cw, dtype=torch.int64)
        x = rnd(2, cin, 6, 6)
        raises(lambda: F.xnor_conv2d_packed(x, wp, None, None, cin), "weight_packed", ValueError)
        raises(lambda: OPS.xnor_conv2d_packed(x, wp, None, None, cin, [1, 1], [0, 0], [1, 1], 0), "weight_packed",
               ValueError)
        raises(lambda: F.binary_unpack(xp, cin), "packed", ValueError)

    @pytest.mark.parametrize("n", [2, 0])
    @pytest.mark.parametrize("bad", ["alpha-shape", "alpha-dtype", "bias-shape", "bias-dtype", "bn-scale-shape",
                                     "out-dtype", "stride", "kernel-too-large"])
    def test_packed_refusals_any_batch(self, bad, n):
        # The public function's quick path hands the call to the op first: whatever its own checks let
        # through must still be refused, an empty batch included, with the argument named.
        x, wp = rnd(n, 3, 6, 6), _wp(4, 3)
        kw = dict(alpha=rnd(4), bias=None)
        name, err = bad.split("-")[0], (ValueError, TypeError)
        if bad == "alpha-shape":
            kw["alpha"] = rnd(5)
        elif bad == "alpha-dtype":
            kw["alpha"] = torch.ones(4, dtype=torch.int32)
        elif bad == "bias-shape":
            kw["bias"] = rnd(3)
        elif bad == "bias-dtype":
            kw["bias"] = torch.ones(4, dtype=torch.int64)
        elif bad == "bn-scale-shape":
            kw["bn_scale"], name = rnd(2), "bn_scale"
        elif bad == "out-dtype":
            kw["out_dtype"], name = torch.int32, "out_dtype"
        elif bad == "stride":
            kw["stride"] = 0
        else:
            x, name = rnd(n, 3, 1, 1), "kernel"
        for inp in (x, F.binarize_pack(x)):
            raises(lambda: F.xnor_conv2d_packed(inp, wp, in_channels=3, **kw), name, err)

    @pytest.mark.parametrize("bad", ["packed-int32", "packed-rank", "weight-rank", "in-channels-zero", "in-channels-neg",
                                     "bn-shift-alone", "in-channels-float"])
    def test_packed_arguments(self, bad):
        x, wp = rnd(2, 3, 6, 6), _wp(4, 3)
        xp = F.binarize_pack(x)
        if bad == "packed-int32":
            raises(lambda: F.xnor_conv2d_packed(xp.int(), wp, None, None, 3), "x", TypeError)
        elif bad == "packed-rank":
            raises(lambda: F.xnor_conv2d_packed(xp[0], wp, None, None, 3), "x", ValueError)
            raises(lambda: OPS.xnor_conv2d_packed(xp[0], wp, None, None, 3, [1, 1], [0, 0], [1, 1], 0), "x", ValueError)
            raises(lambda: F.binary_unpack(xp[0], 3), "packed", ValueError)
        elif bad == "weight-rank":
            raises(lambda: F.xnor_conv2d_packed(x, wp[0], None, None, 3), "weight_packed", ValueError)
            raises(lambda: OPS.xnor_conv2d_packed(x, wp[0], None, None, 3, [1, 1], [0, 0], [1, 1], 0), "weight_packed",
                   ValueError)
        elif bad in ("in-channels-zero", "in-channels-neg"):
            c = 0 if bad == "in-channels-zero" else -5
            raises(lambda: F.xnor_conv2d_packed(x, wp, None, None, c), "in_channels", ValueError)
            raises(lambda: OPS.xnor_conv2d_packed(x, wp, None, None, c, [1, 1], [0, 0], [1, 1], 0), "in_channels",
                   ValueError)
            raises(lambda: F.binary_unpack(xp, c), "channels", ValueError)
        elif bad == "in-channels-float":
            raises(lambda: F.xnor_conv2d_packed(x, wp, None, None, 3.5), "in_channels", (TypeError, ValueError))
            raises(lambda: F.binary_unpack(xp, 2.5), "channels", (TypeError, ValueError))
        else:
            raises(lambda: F.xnor_conv2d_packed(x, wp, None, None, 3, bn_shift=rnd(4)), "bn_shift", ValueError)
            raises(lambda: OPS.xnor_conv2d_packed(x, wp, None, None, 3, [1, 1], [0, 0], [1, 1], 0, None, rnd(4)),
                   "bn_shift", ValueError)

    def test_fast_path_refusals(self):
        # xnor_conv2d tries the op before its Python checks (plain int geometry): whatever the op refuses
        # must still come back as the Python API's error, and what Python refuses the op must refuse too.
        x, w = rnd(2, 3, 6, 6), rnd(4, 3, 3, 3)
        raises(lambda: F.xnor_conv2d(x, w, rnd(4).to(torch.float8_e4m3fn)), "bias", TypeError)
        raises(lambda: OPS.xnor_conv2d(x, w, rnd(4).to(torch.float8_e4m3fn), [1, 1], [0, 0], [1, 1], True, 0),
               "bias", TypeError)
        raises(lambda: F.xnor_conv2d(x, w.to(torch.float8_e5m2)), "weight", TypeError)
        raises(lambda: F.xnor_conv2d(x, w, stride=True), "stride", ValueError)
        raises(lambda: F.xnor_conv2d(x, w, pad_value=True), "pad_value", ValueError)
        raises(lambda: F.xnor_conv2d(x, w, rnd(5)), "bias", ValueError)
        raises(lambda: F.xnor_conv2d(x, rnd(4, 3, 7, 7)), "kernel", ValueError)
        raises(lambda: F.xnor_conv2d(x, rnd(4, 2, 3, 3)), "x", ValueError)
        raises(lambda: F.xnor_conv2d(x, w, padding=-1), "padding", ValueError)
        raises(lambda: F.xnor_conv2d(x, w, dilation=0), "dilation", ValueError)
        raises(lambda: F.xnor_conv2d(x, w, pad_value=-2), "pad_value", ValueError)
        raises(lambda: F.xnor_conv2d(x[0], w), "x", ValueError)
        # the accepted spellings of one call all give the same result
        ref = F.xnor_conv2d(x, w, padding=1, pad_value=-1)
        for kw in ({"padding": (1, 1), "pad_value": -1}, {"padding": [1], "pad_value": -1.0},
                   {"padding": torch.tensor(1), "pad_value": -1}, {"padding": 1, "pad_value": -1, "scale": 1}):
            assert torch.equal(F.xnor_conv2d(x, w, **kw), ref), kw

    def test_devices(self):
        x, w = rnd(2, 3, 6, 6), rnd(4, 3, 3, 3)
        raises(lambda: F.xnor_conv2d(x, w.to("meta")), "weight", ValueError)
        raises(lambda: F.xnor_conv2d(x, w, rnd(4).to("meta")), "bias", ValueError)
        raises(lambda: F.xnor_conv2d_packed(x, _wp(4, 3).to("meta"), None, None, 3), "weight_packed", ValueError)
        raises(lambda: F.xnor_conv2d_packed(x, _wp(4, 3), rnd(4).to("meta"), None, 3), "alpha", ValueError)
        out = F.xnor_conv2d(x.to("meta"), w.to("meta"), padding=1)
        assert out.device.type == "meta" and out.shape == (2, 4, 6, 6)
        assert F.binarize_pack(x.to("meta")).shape == (2, 6, 6, 1)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
    def test_nan_and_inf_signs(self, dtype):
        # the documented binarisation: NaN -> -1 (bit 0), +inf -> +1, -inf -> -1, -0.0 -> +1
        x = rnd(2, 70, 5, 5, dtype=dtype)
        x[0, 3, 1, 1] = math.nan
        x[0, 65, 2, 2] = math.inf
        x[1, 0, 0, 0] = -math.inf
        x[1, 69, 4, 4] = -0.0
        signs = F.binarize(x)
        assert signs[0, 3, 1, 1] == -1 and signs[0, 65, 2, 2] == 1 and signs[1, 0, 0, 0] == -1
        assert signs[1, 69, 4, 4] == 1
        assert torch.equal(F.binary_unpack(F.binarize_pack(x), 70, dtype), signs)
        w = rnd(3, 70, 3, 3, dtype=dtype)
        w[1, 7, 1, 1] = math.nan  # a NaN weight is a -1 filter tap (its NaN scale: test_nan_weight_scale_is_nan)
        for pad_value in (0, -1):
            ref = xc.xnor_conv2d_reference(x, w, rnd(3, dtype=dtype), padding=1, scale=False, pad_value=pad_value)
            out = F.xnor_conv2d(x, w, rnd(3, dtype=dtype), padding=1, scale=False, pad_value=pad_value)
            assert torch.equal(out, ref)

    def test_nan_weight_scale_is_nan(self):
        # alpha = mean |w| of a filter with a NaN weight is NaN: that output channel is NaN, the others exact
        x, w = rnd(1, 3, 5, 5), rnd(4, 3, 3, 3)
        w[2, 0, 0, 0] = math.nan
        out = F.xnor_conv2d(x, w)
        assert torch.isnan(out[:, 2]).all() and torch.isfinite(out[:, [0, 1, 3]]).all()
        torch.testing.assert_close(out, xc.xnor_conv2d_reference(x, w), equal_nan=True, rtol=0, atol=0)

    @pytest.mark.parametrize("view", ["step", "expanded", "huge-stride", "channels_last"])
    def test_strided_views(self, view):
        base = rnd(4, 6, 12, 12)
        if view == "step":
            x = base[::2, ::2, ::2, ::2]
        elif view == "expanded":
            x = rnd(1, 3, 1, 6).expand(2, 3, 6, 6)
        elif view == "huge-stride":
            x = torch.as_strided(base, (1, 3, 6, 6), (1 << 40, 144, 24, 2))
        else:
            x = base[:, :3, :6, :6].contiguous(memory_format=torch.channels_last)
        w = rnd(4, 3, 3, 3)[..., ::1]
        assert torch.equal(F.xnor_conv2d(x, w, padding=1), xc.xnor_conv2d_reference(x, w, padding=1))
        assert torch.equal(F.binarize_pack(x), xc.binarize_pack_reference(x))

    def test_empty_batch(self):
        x, w = torch.randn(0, 3, 6, 6, requires_grad=True), rnd(4, 3, 3, 3).requires_grad_()
        out = F.xnor_conv2d(x, w, padding=1)
        assert out.shape == (0, 4, 6, 6)
        out.sum().backward()
        assert x.grad.shape == x.shape
        assert F.binarize_pack(x.detach()).shape == (0, 6, 6, 1)
        assert F.xnor_conv2d_packed(F.binarize_pack(x.detach()), _wp(4, 3), None, None, 3).shape == (0, 4, 4, 4)


# ================================================================================== fastpose.dsnt


class TestDsntApi:
    @pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_DTYPE_IDS)
    def test_dtype(self, dtype):
        h = cast(rnd(2, 3, 4, 5), dtype)
        for fn in (D.flat_softmax, D.dsnt, D.soft_argmax, lambda t: D.variance_reg_losses(t, 1.0),
                   lambda t: D.sharpen_heatmaps(t, 2.0)):
            raises(lambda: fn(h), "inp|heatmaps", TypeError)
        raises(lambda: D.kl_reg_losses(h, torch.zeros(2, 3, 2), 1.0), "heatmaps", TypeError)
        raises(lambda: D.linear_expectation(h, [torch.ones(4), torch.ones(5)]), "probs", TypeError)
        raises(lambda: D.make_gauss(cast(torch.zeros(2, 3, 2), dtype), (4, 5), 1.0), "means", TypeError)
        raises(lambda: D.js_reg_losses(rnd(2, 3, 4, 5), cast(torch.zeros(2, 3, 2), dtype), 1.0), "mu_t", TypeError)

    @pytest.mark.parametrize("shape", [(2,), (2, 3), ()])
    def test_rank(self, shape):
        h = torch.rand(shape)
        for fn in (D.flat_softmax, D.dsnt, lambda t: D.variance_reg_losses(t, 1.0),
                   lambda t: D.sharpen_heatmaps(t, 2.0), lambda t: D.js_reg_losses(t, torch.zeros(2, 3, 2), 1.0)):
            raises(lambda: fn(h), "inp|heatmaps", ValueError)

    def test_mismatched_shapes(self):
        h = D.flat_softmax(rnd(2, 3, 4, 5))
        raises(lambda: D.js_reg_losses(h, torch.zeros(2, 3, 3), 1.0), "mu_t", ValueError)
        raises(lambda: D.kl_reg_losses(h, torch.zeros(2, 4, 2), 1.0), "mu_t", ValueError)
        raises(lambda: D.kl_reg_losses(h, torch.zeros(6, 2), 1.0), "mu_t", ValueError)
        raises(lambda: D.euclidean_losses(torch.zeros(2, 3, 2), torch.zeros(2, 3, 3)), "actual and target", ValueError)
        raises(lambda: D.l1_losses(torch.zeros(2, 3, 2), torch.zeros(3, 2)), "actual and target", ValueError)
        raises(lambda: D.mse_losses(torch.zeros(2, 3, 2), torch.zeros(2, 3)), "actual and target", ValueError)
        raises(lambda: D.average_loss(torch.zeros(2, 3), torch.ones(3)), "mask", ValueError)
        raises(lambda: D.make_gauss(torch.zeros(2, 3, 3), (4, 5), 1.0), "means", ValueError)
        raises(lambda: D.make_gauss(torch.zeros(2, 3, 2), (4, 0), 1.0), "size", ValueError)
        raises(lambda: D.make_gauss(torch.zeros(2, 3, 2), (4, -2), 1.0), "size", ValueError)
        raises(lambda: D.linear_expectation(h, [torch.ones(5), torch.ones(4)]), r"values\[0\]", ValueError)
        raises(lambda: D.linear_expectation(h, [torch.ones(4)]), "values", ValueError)
        raises(lambda: D.normalized_to_pixel_coordinates(torch.zeros(2, 3, 2), (4, 5, 6)), "size", ValueError)
        raises(lambda: D.pixel_to_normalized_coordinates(torch.zeros(2, 3, 3), (4, 5)), "size", ValueError)

    @pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan])
    def test_sigma(self, sigma):
        h = D.flat_softmax(rnd(2, 3, 4, 5))
        mu = torch.zeros(2, 3, 2)
        raises(lambda: D.make_gauss(mu, (4, 5), sigma), "sigma", ValueError)
        raises(lambda: D.js_reg_losses(h, mu, sigma), "sigma", ValueError)
        raises(lambda: D.kl_reg_losses(h, mu, sigma), "sigma", ValueError)

    def test_zero_sized_maps(self):
        for shape in ((2, 3, 0, 5), (2, 3, 4, 0), (2, 3, 0)):
            raises(lambda: D.flat_softmax(torch.randn(shape)), "inp", ValueError)
            raises(lambda: D.dsnt(torch.rand(shape)), "heatmaps", ValueError)

    def test_empty_batch_is_fine(self):
        h = D.flat_softmax(torch.randn(0, 3, 4, 5))
        assert D.dsnt(h).shape == (0, 3, 2)
        assert D.js_reg_losses(h, torch.zeros(0, 3, 2), 1.0).shape == (0, 3)
        assert D.variance_reg_losses(h, 1.0).shape == (0, 3)
        assert float(D.average_loss(torch.zeros(0, 3))) == 0.0

    def test_not_tensors(self):
        raises(lambda: D.flat_softmax([1.0, 2.0, 3.0]), "inp", TypeError)
        raises(lambda: D.dsnt(None), "heatmaps", TypeError)
        raises(lambda: D.make_gauss([0.0, 0.0], (4, 5), 1.0), "means", TypeError)
        raises(lambda: D.js_reg_losses(D.flat_softmax(rnd(2, 3, 4, 5)), [[0.0, 0.0]], 1.0), "mu_t", TypeError)
        raises(lambda: D.euclidean_losses([0.0], torch.zeros(1)), "actual", TypeError)
        raises(lambda: D.average_loss([1.0]), "losses", TypeError)
        raises(lambda: D.normalized_to_pixel_coordinates([0.0, 0.0], (4, 5)), "coords", TypeError)
        raises(lambda: D.linear_expectation(D.flat_softmax(rnd(2, 3, 4, 5)), [1.0, 2.0]), r"values\[0\]", TypeError)

    def test_nan_propagates_per_map(self):
        # softmax propagates NaN through its map; fused and plain paths agree
        x = rnd(2, 3, 4, 5)
        x[1, 1, 2, 2] = math.nan
        for h in (D.flat_softmax(x), torch.softmax(x.flatten(2), -1).view_as(x)):
            c = D.dsnt(h)
            assert torch.isnan(c[1, 1]).all() and torch.isfinite(c[0]).all() and torch.isfinite(c[1, 0]).all()
            div = D.js_reg_losses(h, torch.zeros(2, 3, 2), 1.0)
            assert torch.isnan(div[1, 1]) and torch.isfinite(div[0]).all()


# ================================================================================== fastpose.nn


class TestModules:
    def test_constructors(self):
        raises(lambda: fnn.DSNTHead(0, 5), "in_channels", ValueError)
        raises(lambda: fnn.DSNTHead(8, 0), "num_joints", ValueError)
        raises(lambda: fnn.XNORConv2d(8, 4, 3, groups=2), "groups", ValueError)
        raises(lambda: fnn.XNORConv2d(8, 4, 3, padding_mode="reflect"), "padding_mode", ValueError)
        raises(lambda: fnn.XNORConv2d(8, 4, 3, pad_value=1), "pad_value", ValueError)
        raises(lambda: fnn.XNORConv2d(8, 4, 3, backend="cuda"), "backend", ValueError)
        raises(lambda: fnn.XNORConv2d(8, 4, 2, padding="same"), "padding", ValueError)
        raises(lambda: fnn.PackedXNORConv2d(8, 4, 3, pad_value=2), "pad_value", ValueError)
        raises(lambda: fnn.PackedXNORConv2d(8, 4, 3, backend="x"), "backend", ValueError)
        raises(lambda: fnn.PackedXNORConv2d(0, 4, 3), "in_channels", ValueError)
        raises(lambda: fnn.PackedXNORConv2d.from_float(torch.nn.Conv2d(8, 4, 3)), "XNORConv2d", TypeError)
        raises(lambda: fnn.set_xnor_backend(torch.nn.Sequential(), "nope"), "backend", ValueError)
        raises(lambda: fnn.clip_binary_weights(torch.nn.Sequential(fnn.XNORConv2d(3, 4, 3)), -1.0), "value", ValueError)
        raises(lambda: fnn.pack("model"), "model", TypeError)

    @pytest.mark.parametrize("backend", ["fastpose", "torch"])
    def test_forward_bad_input(self, backend):
        conv = fnn.XNORConv2d(3, 4, 3, padding=1, backend=backend)
        packed = fnn.pack(conv)
        for m in (conv, packed):
            raises(lambda: m(rnd(2, 5, 6, 6)), "x", ValueError)
            raises(lambda: m(rnd(2, 3, 6)), "x", ValueError)
            raises(lambda: m(cast(rnd(2, 3, 6, 6), torch.int32)), "x", TypeError)
            raises(lambda: m(torch.zeros(2, 6, 6, 2, dtype=torch.int64)), "packed x", ValueError)
        head = fnn.DSNTHead(8, 5)
        raises(lambda: head(rnd(2, 3, 6, 6)), "channels|input")
        raises(lambda: fnn.SoftmaxDSNT()(rnd(2, 3, 6)), "logits", ValueError)
        raises(lambda: fnn.UpsampleAdd()(rnd(2, 3, 3, 3), rnd(2, 3, 8, 8)), "low", ValueError)
        raises(lambda: fnn.HRFuse()([rnd(2, 3, 8, 8), rnd(2, 4, 4, 4)]), r"xs\[1\]", ValueError)
        raises(lambda: fnn.BinaryActivation()(torch.ones(3, dtype=torch.int64)), "x", TypeError)

    def test_cuda_unavailable_is_a_clear_error(self):
        if torch.cuda.is_available():
            pytest.skip("CUDA is available")
        raises(lambda: fnn.DSNTHead(8, 5, device="cuda"), "CUDA|cuda", (AssertionError, RuntimeError))
        raises(lambda: fnn.XNORConv2d(3, 4, 3).to("cuda"), "CUDA|cuda", (AssertionError, RuntimeError))

    def test_meta_modules(self):
        conv = fnn.XNORConv2d(3, 4, 3, padding=1, device="meta")
        assert conv(torch.empty(2, 3, 6, 6, device="meta")).shape == (2, 4, 6, 6)
        head = fnn.DSNTHead(8, 5, device="meta")
        assert head(torch.empty(2, 8, 6, 7, device="meta")).shape == (2, 5, 2)


class TestXnorFusedAndPackedBackward:
    """The inference stage op (xnor_conv2d_fused) and the fused STE backward's two ops."""

    def _args(self):
        return rnd(2, 70, 6, 6), _wp(4, 70), rnd(4).abs()

    def test_fused(self):
        x, w, a = self._args()
        out = torch.empty(2, 4, 6, 6)
        fused = F.xnor_conv2d_fused
        raises(lambda: fused(x, w, a, None, 70, 1, 1, out=torch.empty(2, 4, 5, 6)), "out", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, 1, out=torch.empty(3, 4, 6, 6)), "out", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, 1, out=out.int()), "out", TypeError)
        raises(lambda: fused(x, w, rnd(5), None, 70, 1, 1, out=out), "alpha", ValueError)
        raises(lambda: fused(x, w, a, rnd(3), 70, 1, 1, out=out), "bias", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, 1, out=out, out_packed=torch.empty(2, 6, 6, 2, dtype=torch.int64)),
               "out_packed", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, 1, out=out, out_packed=torch.empty(2, 5, 6, 1, dtype=torch.int64)),
               "out_packed", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, 1, out=out, residual=torch.empty(2, 4, 6, 5)), "residual", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, 1, in_scale=rnd(3), out=out), "in_scale", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, 1, next_scale=rnd(3), next_shift=rnd(3), out=out,
                             out_packed=torch.empty(2, 6, 6, 1, dtype=torch.int64)), "next_scale", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, 1, next_scale=rnd(4), next_shift=rnd(4), out=out), "next_scale",
               ValueError)
        raises(lambda: fused(x.int(), w, a, None, 70, 1, 1, out=out), "x", TypeError)
        raises(lambda: fused(torch.zeros(2, 6, 6, 3, dtype=torch.int64), w, a, None, 70, 1, 1, out=out), "packed x",
               ValueError)
        raises(lambda: fused(x, w, a, None, 70, 0, 1, out=out), "stride", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, -1, out=out), "padding", ValueError)
        raises(lambda: fused(x, w, a, None, 70, 1, 1, pad_value=2, out=out), "pad_value", ValueError)
        raw = OPS.xnor_conv2d_fused
        none5 = (None,) * 5
        raises(lambda: raw(x, w, a, None, 70, [1, 1], [1, 1], [1, 1], 0, *none5, torch.empty(2, 4, 5, 6), None), "out",
               ValueError)
        raises(lambda: raw(x, w, rnd(5), None, 70, [1, 1], [1, 1], [1, 1], 0, *none5, out, None), "alpha", ValueError)
        raises(lambda: raw(x, w, a, None, 70, [1, 1], [1, 1], [1, 1], 0, *none5, out,
                           torch.empty(2, 6, 6, 2, dtype=torch.int64)), "out_packed", ValueError)

    def test_ste_pack_and_backward_packed(self):
        raises(lambda: OPS.xnor_ste_pack(torch.ones(2, 3, 4, 4, dtype=torch.int32)), "x", TypeError)
        raises(lambda: OPS.xnor_ste_pack(rnd(3, 4, 4)), "x", ValueError)
        x = rnd(2, 70, 6, 6)
        s, p = OPS.xnor_ste_pack(x)
        wt, g = rnd(4, 70, 3, 3), rnd(2, 4, 6, 6)
        bwd = OPS.xnor_conv2d_backward_packed
        mask = [True, True, False]
        bwd(g, s, p, wt, [1, 1], [1, 1], [1, 1], True, 0, mask)  # the valid call
        raises(lambda: bwd(rnd(2, 4, 5, 6), s, p, wt, [1, 1], [1, 1], [1, 1], True, 0, mask), "grad", ValueError)
        raises(lambda: bwd(g, s, p[:1], wt, [1, 1], [1, 1], [1, 1], True, 0, mask), "x_pass", ValueError)
        raises(lambda: bwd(g, s, p, rnd(4, 60, 3, 3), [1, 1], [1, 1], [1, 1], True, 0, mask), "x_sign", ValueError)
        raises(lambda: bwd(g, s.int(), p, wt, [1, 1], [1, 1], [1, 1], True, 0, mask), "x_sign", TypeError)
        raises(lambda: bwd(g, s, p, wt, [1, 1], [1, 1], [1, 1], True, 3, mask), "pad_value", ValueError)
        raises(lambda: bwd(g, s, p, wt, [0, 1], [1, 1], [1, 1], True, 0, mask), "stride", ValueError)


class TestAffineRelu:
    def test_bad_input(self):
        x, sc, sh = rnd(2, 3, 4, 4), rnd(3), rnd(3)
        raises(lambda: F.affine_relu(x[0], sc, sh), "x", ValueError)
        raises(lambda: F.affine_relu(x.int(), sc, sh), "x", TypeError)
        raises(lambda: F.affine_relu(x, rnd(4), sh), "scale", ValueError)
        raises(lambda: F.affine_relu(x, sc, rnd(3, 1)), "shift", ValueError)
        raises(lambda: F.affine_relu(x, sc.double(), sh), "scale", TypeError)
        raises(lambda: F.affine_relu(x, sc, "1"), "shift", TypeError)
        raises(lambda: F.affine_relu(x[:, :, :1], sc, sh, pool=True), "pool", ValueError)
        raises(lambda: F.affine_relu(x, sc.to("meta"), sh), "device", ValueError)
        raises(lambda: F.affine_relu_reference(x, rnd(4), sh), "size", RuntimeError)  # plain ops' own errors
        raises(lambda: OPS.affine_relu(x, rnd(2), sh, False), "scale", ValueError)
        raises(lambda: OPS.affine_relu(x, sc, sh.double(), False), "shift", TypeError)
        raises(lambda: OPS.affine_relu(x.half(), sc.half(), sh.half(), False), "float32", TypeError)
        raises(lambda: OPS.affine_relu(x[:, :, :, :1], sc, sh, True), "pool", ValueError)


def test_every_public_op_and_layer_is_fuzzed():
    # a new public name must get bad-input cases here (names of this file's tests are not checked:
    # the list below is kept by hand, next to the cases)
    fuzzed_ops = {"softmax_dsnt", "softmax_dsnt_with_reg", "upsample_add", "hr_fuse", "binarize", "binarize_pack",
                  "binary_unpack", "xnor_alpha", "xnor_conv2d", "xnor_conv2d_packed", "xnor_conv2d_reference",
                  "xnor_conv2d_fused", "xnor_conv2d_fused_reference", "affine_relu", "affine_relu_reference"}
    assert set(F.__all__) == fuzzed_ops
    fuzzed_nn = {"SoftmaxDSNT", "DSNTHead", "UpsampleAdd", "HRFuse", "XNORConv2d", "PackedXNORConv2d",
                 "BinaryActivation", "binary_sign", "clip_binary_weights", "pack", "set_xnor_backend"}
    assert set(fnn.__all__) == fuzzed_nn
    schemas = {"softmax_dsnt", "softmax_dsnt_backward", "softmax_dsnt_reg", "softmax_dsnt_reg_backward",
               "binarize_pack", "xnor_conv2d", "xnor_conv2d_packed", "xnor_conv2d_backward", "xnor_conv2d_fused",
               "xnor_ste_pack", "xnor_conv2d_backward_packed", "upsample_add",
               "upsample_add_backward", "hr_fuse", "hr_fuse_backward", "affine_relu"}
    registered = {s.name.split("::")[1] for s in torch._C._jit_get_all_schemas() if s.name.startswith("fastpose::")}
    assert registered == schemas
    assert len(D.__all__) == 16 and fastpose.__version__


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", BAD_DTYPES + [torch.float8_e4m3fn], ids=BAD_DTYPE_IDS + ["float8"])
def test_xnor_conv2d_fast_path_bias_dtype(device, dtype):
    # The fast path hands the bias to the op before the Python checks: the op of every device must refuse
    # what the Python API refuses, so the error still names the bias (CUDA once converted it silently).
    x, w = rnd(2, 3, 6, 6).to(device), rnd(4, 3, 3, 3).to(device)
    b = cast(rnd(4), dtype).to(device) if dtype is not torch.float8_e4m3fn else rnd(4).to(dtype).to(device)
    raises(lambda: F.xnor_conv2d(x, w, b, padding=1), "bias", TypeError)

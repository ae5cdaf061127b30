"""The model zoo: exact parameter counts (models.md §7), output shapes, fastpose vs torch backend,
DSNT heads, checkpoint round trips, the packed binary model's size, torch.compile and ONNX export.

Parameter counts use meta tensors (no memory, no init compute); forwards run at small inputs and
reduced widths where the architecture allows; full-size forwards, compile and export are `slow`.
"""
import io

import pytest
import torch

import fastpose.nn as fnn
from fastpose import models
from fastpose.models.hourglass import Residual

COUNTS = [("hourglass", dict(stacks=2), 6_570_400), ("hourglass", dict(stacks=8), 25_434_112),
          ("hourglass", dict(stacks=1), 3_426_448),
          ("hrnet_w32", {}, 28_536_113), ("hrnet_w48", {}, 63_595_745), ("hrnet_w32", dict(num_joints=16), 28_536_080),
          ("cpm", {}, 31_219_866), ("cpm", dict(num_joints=10, stages=4), 21_323_816), ("cpm_vgg", {}, 29_852_058),
          ("hpm_hourglass", {}, 23_820_176), ("hpm_hourglass", dict(stacks=1), 6_249_668),
          ("hpm_hourglass", dict(stacks=2), 12_106_504)]


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,kw,want", COUNTS, ids=[f"{n}-{k}" for n, k, _ in COUNTS])
def test_parameter_counts(name, kw, want):
    with torch.device("meta"):
        assert _params(models.create(name, **kw)) == want


def test_block_parameter_counts():
    with torch.device("meta"):
        assert _params(Residual(256, 256)) == 214_528
        assert _params(models.HPMBlock(256, 256)) == 406_400
        # the binary network has the real one's structure: same parameter count, 1-bit 3x3 weights
        assert _params(models.create("binary_hpm_hourglass", stacks=4, num_joints=68)) == 23_820_176
        b = models.create("binary_hpm_hourglass")
    xnor = [m for m in b.modules() if isinstance(m, fnn.XNORConv2d)]
    assert len(xnor) == 3 * (3 + 13 + 1) and all(m.kernel_size == (3, 3) and m.bias is None for m in xnor)
    real = [m for m in b.modules() if type(m) is torch.nn.Conv2d]
    assert all(m.kernel_size in ((1, 1), (7, 7)) for m in real)


def test_names_and_errors():
    assert models.names() == sorted(["hourglass", "hrnet_w32", "hrnet_w48", "cpm", "cpm_vgg", "hpm_hourglass",
                                     "binary_hpm_hourglass"])
    with pytest.raises(ValueError, match="unknown model"):
        models.create("resnet")
    with pytest.raises(ValueError, match="backend"):
        models.create("hourglass", backend="jax")
    with pytest.raises(ValueError, match="head"):
        models.create("hourglass", head="regression")
    with pytest.raises(ValueError, match="stacks"):
        models.create("hpm_hourglass", stacks=5)
    with pytest.raises(ValueError, match="divisible by 8"):
        models.create("cpm", stages=2)(torch.randn(1, 3, 36, 36))


def _randomise_bn(m):
    # non-trivial BN statistics so that eval mode exercises them
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


# Small but complete configurations: (name, kwargs, input (N, C, H, W), expected output shapes)
SMALL = {
    "hourglass": ("hourglass", dict(stacks=2, num_joints=5, features=32), (2, 3, 64, 128), [(2, 5, 16, 32)] * 2),
    "hrnet_w32": ("hrnet_w32", {}, (1, 3, 64, 96), (1, 17, 16, 24)),
    "hrnet_w48": ("hrnet_w48", dict(num_joints=4), (1, 3, 32, 32), (1, 4, 8, 8)),
    "cpm": ("cpm", {}, (1, 3, 32, 40), [(1, 15, 4, 5)] * 6),
    "cpm_vgg": ("cpm_vgg", {}, (2, 3, 32, 32), [(2, 15, 4, 4)] * 6),
    "hpm_hourglass": ("hpm_hourglass", dict(stacks=2, num_joints=7, features=32), (2, 3, 64, 64), [(2, 7, 16, 16)] * 2),
    "binary_hpm_hourglass": ("binary_hpm_hourglass", dict(stacks=2, num_joints=6, features=64), (2, 3, 64, 64),
                             [(2, 6, 16, 16)] * 2),
}


def _shapes(out):
    return [tuple(o.shape) for o in out] if isinstance(out, list) else tuple(out.shape)


def _flat(out):
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    return [out]


def _small(key, **extra):
    name, kw, shape, want = SMALL[key]
    torch.manual_seed(0)
    return _randomise_bn(models.create(name, **kw, **extra)), torch.randn(*shape), want


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("key", sorted(SMALL))
def test_shapes_and_backends_agree(key, cl):
    m, x, want = _small(key)
    if cl:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = m(x)
        models.set_backend(m, "torch")
        ref = m(x)
    assert _shapes(out) == want
    for a, b in zip(_flat(out), _flat(ref)):
        if key == "binary_hpm_hourglass":
            assert torch.equal(a, b)  # XNOR kernels are bit-exact, the merges are single adds
        else:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("key", ["hourglass", "hrnet_w32", "cpm_vgg", "hpm_hourglass", "binary_hpm_hourglass"])
def test_dsnt_head(key):
    name, kw, shape, want = SMALL[key]
    torch.manual_seed(0)
    m = models.create(name, head="dsnt", **kw)
    x = torch.randn(*shape)
    coords, heatmaps = m(x)
    multi = isinstance(want, list)
    assert isinstance(coords, list) == multi and isinstance(heatmaps, list) == multi
    for c, h, w in zip(_flat(coords), _flat(heatmaps), want if multi else [want]):
        assert h.shape == w and c.shape == (w[0], w[1], 2)
        assert c.abs().max() < 1
        torch.testing.assert_close(c, fnn.SoftmaxDSNT()(h))
    # training step: every parameter gets a gradient through the fused op (and the STE for binary)
    sum(c.square().sum() for c in _flat(coords)).backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    with torch.no_grad():
        a = m(x)
        models.set_backend(m, "torch")
        b = m(x)
    for u, v in zip(_flat(a), _flat(b)):
        torch.testing.assert_close(u, v, atol=1e-4, rtol=1e-4)


def test_cpm_center_map_inputs():
    m = _randomise_bn(models.create("cpm_vgg", stages=3))
    x = torch.randn(1, 3, 48, 48)
    cmap = models.center_map(48, 48, sigma=21 * 48 / 368)
    with torch.no_grad():
        a = m(x)
        b = m(x, cmap)
        c = m(torch.cat([x, cmap], 1))
        d = m(x, models.center_map(48, 48, sigma=3, center=(5.0, 30.0)))
    for u, v, w in zip(a, b, c):
        assert torch.equal(u, v) and torch.equal(u, w)
    assert not torch.equal(a[-1], d[-1]) and torch.equal(a[0], d[0])  # stage 1 does not see the centre map
    assert cmap.shape == (1, 1, 48, 48) and cmap.max() <= 1 and abs(cmap[0, 0, 23, 23].item() - 1) < 0.01


@pytest.mark.parametrize("key", sorted(SMALL))
def test_state_dict_round_trip(key):
    name, kw, shape, _ = SMALL[key]
    a, x, _ = _small(key)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = models.create(name, **kw).eval()
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    with torch.no_grad():
        for u, v in zip(_flat(a(x)), _flat(b(x))):
            assert torch.equal(u, v)


def test_binary_packed_size_and_round_trip():
    torch.manual_seed(0)
    m = _randomise_bn(models.create("binary_hpm_hourglass", stacks=1, num_joints=16))
    packed = fnn.pack(m)
    buf = io.BytesIO()
    torch.save(packed.state_dict(), buf)
    assert len(buf.getvalue()) <= 1_500_000, len(buf.getvalue())  # the paper's released model: 1.3 MB
    fresh = fnn.pack(models.create("binary_hpm_hourglass", stacks=1, num_joints=16)).eval()
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = m(x)[0]
        assert torch.equal(packed(x)[0], want) and torch.equal(fresh(x)[0], want)
        models.set_backend(fresh, "torch")
        assert torch.equal(fresh(x)[0], want)


def test_binary_training_step():
    m = models.create("binary_hpm_hourglass", stacks=1, num_joints=4, features=64)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    x, t = torch.randn(2, 3, 64, 64), torch.rand(2, 4, 16, 16)
    loss = torch.nn.functional.mse_loss(m(x)[0], t)
    loss.backward()
    xnor = [p for mod in m.modules() if isinstance(mod, fnn.XNORConv2d) for p in mod.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in xnor)
    opt.step()
    fnn.clip_binary_weights(m)


# ------------------------------------------------------------------ slow: full sizes, compile, export
FULL = [("hourglass", dict(stacks=8), (1, 3, 256, 256), [(1, 16, 64, 64)] * 8),
        ("hrnet_w32", {}, (1, 3, 256, 192), (1, 17, 64, 48)),
        ("hrnet_w48", {}, (1, 3, 384, 288), (1, 17, 96, 72)),
        ("cpm", {}, (1, 3, 368, 368), [(1, 15, 46, 46)] * 6),
        ("cpm_vgg", {}, (1, 3, 368, 368), [(1, 15, 46, 46)] * 6),
        ("hpm_hourglass", {}, (1, 3, 256, 256), [(1, 68, 64, 64)] * 4),
        ("binary_hpm_hourglass", {}, (1, 3, 256, 256), [(1, 16, 64, 64)])]


@pytest.mark.slow
@pytest.mark.parametrize("name,kw,shape,want", FULL, ids=[f[0] for f in FULL])
def test_full_size_shapes_and_backends(name, kw, shape, want):
    torch.manual_seed(0)
    m = _randomise_bn(models.create(name, **kw))
    x = torch.randn(*shape)
    with torch.no_grad():
        out = m(x)
        models.set_backend(m, "torch")
        ref = m(x)
    assert _shapes(out) == want
    for a, b in zip(_flat(out), _flat(ref)):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(SMALL))
def test_compile(key):
    torch._dynamo.reset()
    m, x, _ = _small(key)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m, fullgraph=True)(x)
    for a, b in zip(_flat(out), _flat(ref)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_compile_dsnt_small():
    """One fast compile case in the default run: the fused softmax + DSNT op and UpsampleAdd traced."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = _randomise_bn(models.create("hourglass", head="dsnt", stacks=1, num_joints=3, features=8, depth=1))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    for a, b in zip(_flat(out), _flat(ref)):
        torch.testing.assert_close(a, b)


def _export(m, x):
    onnx = pytest.importorskip("onnx")
    buf = io.BytesIO()
    torch.onnx.export(m, (x,), buf, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    return {n.op_type for n in model.graph.node}, {n.domain for n in model.graph.node}


def _check_standard(ops, domains):
    assert domains <= {"", "ai.onnx"}, domains
    assert "Conv" in ops and not any("fastpose" in o.lower() for o in ops)


def test_onnx_export_binary_small():
    m, x, _ = _small("binary_hpm_hourglass")
    ops, domains = _export(models.set_backend(m, "fastpose"), x)
    _check_standard(ops, domains)
    # sign(x) as a select between +1 and -1, then a float conv; the merge is a nearest Resize + Add
    assert {"Where", "Conv", "Concat", "Add"} <= ops


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(SMALL))
def test_onnx_export(key):
    m, x, _ = _small(key)
    ops, domains = _export(models.create(SMALL[key][0], head="dsnt", **SMALL[key][1]).eval(), x)
    _check_standard(ops, domains)
    ops, domains = _export(m, x)
    _check_standard(ops, domains)


def test_binary_backends_same_gradients():
    """Training mode: the fastpose backend (no explicit sign before the XNOR kernels) and the torch
    backend (sign, then conv) give the same gradients. float64, because in float32 the different
    summation orders (merges, conv backward) are amplified by cancellation in the BN gradients. Conv biases
    followed by training-mode BN have a true gradient of 0: there only rounding noise (~1e-14) is compared
    with an absolute tolerance."""
    torch.manual_seed(0)
    m = models.create("binary_hpm_hourglass", stacks=2, num_joints=4, features=64, depth=2).double()
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    grads = []
    for backend in ("fastpose", "torch"):
        models.set_backend(m, backend)
        m.zero_grad()
        outs = m(x)
        (outs[0].square().sum() + outs[1].square().sum()).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][n], atol=1e-12, rtol=1e-8, msg=n)

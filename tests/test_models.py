"""The model zoo built so far: exact parameter counts, output shapes, backend agreement, DSNT heads."""
import io

import pytest
import torch

from fastpose import models

COUNTS = [("hourglass", dict(stacks=2), 6_570_400), ("hourglass", dict(stacks=8), 25_434_112),
          ("hrnet_w32", {}, 28_536_113), ("hrnet_w48", {}, 63_595_745)]


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,kw,want", COUNTS, ids=[f"{n}-{k}" for n, k, _ in COUNTS])
def test_parameter_counts(name, kw, want):
    assert _params(models.create(name, **kw)) == want


def test_names_and_errors():
    assert {"hourglass", "hrnet_w32", "hrnet_w48"} <= set(models.names())
    with pytest.raises(ValueError, match="unknown model"):
        models.create("resnet")
    with pytest.raises(ValueError, match="backend"):
        models.create("hourglass", backend="jax")
    with pytest.raises(ValueError, match="head"):
        models.create("hourglass", head="regression")


def _eval_model(name, **kw):
    torch.manual_seed(0)
    m = models.create(name, **kw).eval()
    # non-trivial BN statistics so that eval mode exercises them
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
def test_hourglass_shapes_and_backends(cl):
    m = _eval_model("hourglass", stacks=2, num_joints=5, features=32)
    x = torch.randn(2, 3, 64, 128)
    if cl:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = m(x)
        models.set_backend(m, "torch")
        ref = m(x)
    assert len(out) == 2 and all(o.shape == (2, 5, 16, 32) for o in out)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_hrnet_shapes_and_backends():
    m = _eval_model("hrnet_w32", num_joints=17)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = m(x)
        models.set_backend(m, "torch")
        ref = m(x)
    assert out.shape == (1, 17, 16, 24)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_dsnt_head_and_training_step():
    m = models.create("hourglass", stacks=2, num_joints=4, features=16, head="dsnt")
    x = torch.randn(2, 3, 64, 64)
    coords, heatmaps = m(x)
    assert len(coords) == 2 and coords[0].shape == (2, 4, 2) and heatmaps[1].shape == (2, 4, 16, 16)
    sum(c.square().sum() for c in coords).backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    c, h = models.create("hrnet_w32", num_joints=3, head="dsnt").eval()(torch.randn(1, 3, 64, 64))
    assert c.shape == (1, 3, 2) and h.shape == (1, 3, 16, 16)


def test_state_dict_round_trip():
    a = _eval_model("hourglass", stacks=1, num_joints=3, features=16)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = models.create("hourglass", stacks=1, num_joints=3, features=16).eval()
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x)[0], b(x)[0])


@pytest.mark.slow
@pytest.mark.parametrize("name,kw", [("hourglass", dict(stacks=2, features=32)), ("hrnet_w32", {})])
def test_compile(name, kw):
    torch._dynamo.reset()
    m = _eval_model(name, **kw)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m, fullgraph=True)(x)
    ref, out = (ref[-1], out[-1]) if isinstance(ref, list) else (ref, out)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)

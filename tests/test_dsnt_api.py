"""fastpose.dsnt: dsntnn's API and conventions, fused where it applies, and the DSNT modules."""
import pytest
import torch

import fastpose
from fastpose import dsnt as D
from fastpose.ops.softmax_dsnt import divergence_reference, softmax_dsnt_reference


def test_conventions_from_dsntnn():
    assert torch.allclose(D.normalized_linspace(4), torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    h = torch.zeros(1, 1, 5, 4)
    h[0, 0, 2, 1] = 1  # x = 1, y = 2 on a 5 x 4 (H x W) map
    torch.testing.assert_close(D.dsnt(h), torch.tensor([[[-0.25, 0.0]]]))
    torch.testing.assert_close(D.dsnt(h, normalized_coordinates=False), torch.tensor([[[1.0, 2.0]]]))
    mu = torch.tensor([[[0.1, -0.2]]], dtype=torch.float64)
    g = D.make_gauss(mu, (32, 32), 2.0)
    assert abs(float(g.sum()) - 1) < 1e-9
    assert float(D.variance_reg_losses(g, 2.0)) < 1e-6
    assert abs(float(D.variance_reg_losses(g, 1.0)) - 18.0) < 1e-4
    assert float(D.js_reg_losses(g, mu, 2.0)) < 1e-12
    assert float(D.kl_reg_losses(g, mu, 2.0)) < 1e-12


def test_coordinate_conversions_round_trip():
    c = torch.rand(3, 4, 2) * 2 - 1
    size = (48, 64)
    px = D.normalized_to_pixel_coordinates(c, size)
    torch.testing.assert_close(D.pixel_to_normalized_coordinates(px, size), c)
    torch.testing.assert_close(D.pixel_to_normalized_coordinates(torch.tensor([[0.0, 0.0]]), (4, 4)),
                               torch.tensor([[-0.75, -0.75]]))


def test_losses():
    a, t = torch.randn(2, 3, 2), torch.randn(2, 3, 2)
    torch.testing.assert_close(D.euclidean_losses(a, t), (a - t).pow(2).sum(-1).sqrt())
    torch.testing.assert_close(D.l1_losses(a, t), (a - t).abs().mean(-1))
    torch.testing.assert_close(D.mse_losses(a, t), (a - t).pow(2).mean(-1))
    losses, mask = torch.rand(2, 3), torch.tensor([[1.0, 0, 1], [0, 0, 0]])
    torch.testing.assert_close(D.average_loss(losses, mask), (losses * mask).sum() / 2)
    torch.testing.assert_close(D.average_loss(losses), losses.mean())
    assert float(D.average_loss(losses, torch.zeros(2, 3))) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        D.euclidean_losses(a, t[:, :2])


def test_fused_path_matches_unfused_including_gradients():
    x = torch.randn(2, 3, 8, 9, requires_grad=True)
    t = torch.rand(2, 3, 2) - 0.5
    p = D.flat_softmax(x)
    assert D._fused_logits(p) is x
    loss = D.average_loss(D.euclidean_losses(D.dsnt(p), t) + D.js_reg_losses(p, t, 1.0))
    loss.backward()
    g_fused = x.grad.clone()
    x.grad = None
    q = torch.softmax(x.reshape(2, 3, -1), -1).view(2, 3, 8, 9)  # not tagged: the plain definitions
    assert D._fused_logits(q) is None
    c = D.linear_expectation(q, [D.normalized_linspace(8), D.normalized_linspace(9)]).flip(-1)  # (y, x) -> (x, y)
    loss2 = D.average_loss(D.euclidean_losses(c, t) + divergence_reference(q, t, 1.0, "js"))
    loss2.backward()
    torch.testing.assert_close(loss, loss2)
    torch.testing.assert_close(g_fused, x.grad, atol=1e-6, rtol=1e-5)


def test_fusion_dropped_after_in_place_change():
    x = torch.randn(1, 2, 5, 5)
    p = D.flat_softmax(x)
    p.mul_(0.5)
    assert D._fused_logits(p) is None
    torch.testing.assert_close(D.dsnt(p), 0.5 * softmax_dsnt_reference(x))


def test_1d_and_3d_heatmaps():
    h1 = D.flat_softmax(torch.randn(2, 3, 7))
    assert D.dsnt(h1).shape == (2, 3, 1)
    h3 = D.flat_softmax(torch.randn(2, 3, 4, 5, 6))
    c3 = D.dsnt(h3)
    assert c3.shape == (2, 3, 3)
    mu = torch.rand(2, 3, 3) - 0.5
    assert D.js_reg_losses(h3, mu, 1.0).shape == (2, 3)
    g3 = D.make_gauss(mu, (4, 5, 6), 1.0)
    torch.testing.assert_close(g3.sum((-3, -2, -1)), torch.ones(2, 3), atol=1e-6, rtol=0)


def test_sharpen():
    p = D.flat_softmax(torch.randn(2, 3, 4, 4))
    s = D.sharpen_heatmaps(p, 2.0)
    torch.testing.assert_close(s.sum((-2, -1)), torch.ones(2, 3))


def test_modules():
    torch.manual_seed(0)
    m = fastpose.nn.SoftmaxDSNT()
    x = torch.randn(2, 5, 16, 12)
    torch.testing.assert_close(m(x), softmax_dsnt_reference(x))
    c, h = fastpose.nn.SoftmaxDSNT(return_heatmaps=True)(x)
    assert h.shape == x.shape and torch.allclose(h.sum((-2, -1)), torch.ones(2, 5))
    head = fastpose.nn.DSNTHead(8, 5)
    f = torch.randn(2, 8, 16, 12, requires_grad=True)
    c = head(f)
    assert c.shape == (2, 5, 2)
    c.sum().backward()
    assert head.conv.weight.grad is not None and f.grad is not None
    c2, h2 = head(f, return_heatmaps=True)
    torch.testing.assert_close(c2, c)
    with pytest.raises(ValueError):
        fastpose.nn.DSNTHead(0, 5)


def test_onnx_export_uses_standard_ops():
    import io
    import warnings

    onnx = pytest.importorskip("onnx")  # the exporter itself needs it (in the `test` extra)

    head = fastpose.nn.DSNTHead(8, 5)
    x = torch.randn(1, 8, 16, 12)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(head, (x,), buf, dynamo=False)
    assert b"fastpose" not in buf.getvalue()
    traced = torch.jit.trace(head, (x,), check_trace=False)
    torch.testing.assert_close(traced(x), head(x), atol=1e-6, rtol=1e-5)
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert "Softmax" in ops and all(o in {"Cast", "Concat", "Constant", "Conv", "Mul", "ReduceSum", "Reshape",
                                          "Softmax", "Unsqueeze", "Shape", "Gather", "Slice"} for o in ops), ops

"""CUDA coverage that the CPU suite has and the per-op device tests lack (issue 12, "Correct"):
opcheck and torch.compile(fullgraph=True) of the XNOR ops on CUDA, the models' fastpose backend
against their torch backend on CUDA (float32 NCHW and float16 channels_last), CUDA-graph capture of
the models at batch 1 and of softmax_dsnt. Every test here is marked `cuda` (make gpu-check)."""
import pytest
import torch

from fastpose import models
from fastpose.ops import binarize_pack, xnor_alpha, xnor_conv2d
from fastpose.ops.softmax_dsnt import softmax_dsnt, softmax_dsnt_reference

from test_models import SMALL, _flat, _small

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_xnor_opcheck_cuda():
    x = torch.randn(2, 70, 6, 7, device="cuda")
    w, b = torch.randn(3, 70, 3, 3, device="cuda"), torch.randn(3, device="cuda")
    op = torch.ops.fastpose
    torch.library.opcheck(op.xnor_conv2d.default, (x, w, b, [1, 1], [1, 1], [1, 1], True, 0))
    xh = x.half().contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(op.xnor_conv2d.default, (xh, w, None, [2, 1], [1, 0], [1, 1], False, -1),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(op.xnor_conv2d.default,
                          (x.clone().requires_grad_(), w.clone().requires_grad_(), None, [1, 1], [1, 1], [1, 1],
                           True, 0),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    xp, wp = binarize_pack(x), binarize_pack(w)
    torch.library.opcheck(op.binarize_pack.default, (xh,))
    torch.library.opcheck(op.xnor_conv2d_packed.default, (xp, wp, xnor_alpha(w), b, 70, [1, 1], [1, 1], [1, 1], 0))
    torch.library.opcheck(op.xnor_conv2d_packed.default,
                          (x, wp, None, None, 70, [1, 1], [1, 1], [1, 1], -1, b, None, torch.float16, True))


def test_compile_fullgraph_cuda():
    torch._dynamo.reset()
    x = torch.randn(2, 20, 7, 9, device="cuda").contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(4, 20, 3, 3, device="cuda"), torch.randn(4, device="cuda")
    f = torch.compile(lambda x_: softmax_dsnt(xnor_conv2d(x_, w, b, padding=1)) * 2, fullgraph=True)
    torch.testing.assert_close(f(x), softmax_dsnt(xnor_conv2d(x, w, b, padding=1)) * 2, atol=0, rtol=0)


def test_softmax_dsnt_cuda_graph():
    x = torch.randn(3, 17, 16, 12, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        softmax_dsnt(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = softmax_dsnt(x)
    x.copy_(torch.randn_like(x) * 3)
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, softmax_dsnt_reference(x), atol=2e-6, rtol=2e-6)


def _both_backends(key, dtype, cl):
    m, x, _ = _small(key)
    m = m.to(device="cuda", dtype=dtype)
    x = x.to(device="cuda", dtype=dtype)
    if cl:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = [t.float() for t in _flat(m(x))]
        models.set_backend(m, "torch")
        ref = [t.float() for t in _flat(m(x))]
        models.set_backend(m, "fastpose")
    return m, x, out, ref


@pytest.mark.parametrize("dtype,cl", [(torch.float32, False), (torch.float16, True)], ids=["float32", "float16-cl"])
@pytest.mark.parametrize("key", sorted(SMALL))
def test_models_backends_agree_cuda(key, dtype, cl):
    _, _, out, ref = _both_backends(key, dtype, cl)
    # Relative L2 error. float32: the XNOR outputs are bit-identical and both backends run the same
    # cuDNN convolutions (TF32 allowed by default), so only the fused merges and DSNT differ in rounding.
    # float16: the torch backend rounds the sign-conv, * alpha and + bias to float16 separately, and in
    # a binary network a 1-ulp change can flip a later sign: a looser bound there.
    binary = key.startswith("binary")
    tol = 1e-3 if dtype == torch.float32 else (0.1 if binary else 2e-2)
    for a, b in zip(out, ref):
        err = ((a - b).norm() / (b.norm() + 1e-12)).item()
        assert err < tol, (key, err)


@pytest.mark.parametrize("key", sorted(SMALL))
def test_models_cuda_graph_batch1(key):
    m, x, _ = _small(key)
    m = m.to(device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
    x = x[:1].to(device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                m(x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = _flat(m(x))
        x.copy_(torch.randn_like(x))
        g.replay()
        torch.cuda.synchronize()
        ref = _flat(m(x))
    for a, b in zip(out, ref):  # the same kernels replayed; cuDNN may pick other algorithms eagerly
        torch.testing.assert_close(a.float(), b.float(), atol=2e-3, rtol=2e-3)

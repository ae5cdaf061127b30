"""The packed binary HPM hourglass end to end (CPU, batch 1, 256x256, float32, 1 and 2 threads).

impl "fastpose": ``fastpose.nn.pack(binary_hpm_hourglass(stacks=1, num_joints=16))``, eval, no grad: the
fused inference path (fastpose.models.hpm_packed). impl "fastpose_replay": that model's forward recorded
once by ``fastpose.replay.capture`` and replayed from C++ (the same kernels, bit-identical outputs, no
Python between them). Baselines, in the same run:
    eager          the same binary model on its torch backend, eval, no grad: the same inference graph in
                   plain PyTorch ops (folded BN, sign, conv2d of +-1 values on channels_last, oneDNN)
    eager_bn       the torch backend's training-style forward (F.batch_norm, NCHW; what "eager" was
                   before the inference path), forced by running with autograd on and frozen parameters
    float_nchw     the real-valued hpm_hourglass(stacks=1, num_joints=16) on PyTorch, NCHW
    float_cl       the same, channels_last (model and input)
    float_onnxrt   that float model exported to ONNX and run by onnxruntime (CPU provider, graph
                   optimisations on, intra-op threads = threads); skipped without onnxruntime
Re-measure: .venv/bin/python -m pytest bench/bench_hpm_packed.py -q -p no:randomly --benchmark-only
"""
import io
import os

import pytest
import torch

import fastpose
import fastpose.nn as fnn
from fastpose import models

from _common import interleaved, num_threads, run, tag, thread_scaling

THREADS = sorted({1, 2} | {torch.get_num_threads()})
SIZE = 256
IMPLS = ["fastpose", "fastpose_replay", "eager", "eager_bn", "float_nchw", "float_cl", "float_onnxrt"]
_MODELS = {}


def _randomise(m):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return m.eval()


def _model(impl):
    if impl not in _MODELS:
        torch.manual_seed(0)
        if impl in ("fastpose", "fastpose_replay"):
            m = fnn.pack(_randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=16)))
        elif impl in ("eager", "eager_bn"):
            m = _randomise(models.create("binary_hpm_hourglass", stacks=1, num_joints=16, backend="torch"))
            m.requires_grad_(False)
        else:
            m = _randomise(models.create("hpm_hourglass", stacks=1, num_joints=16))
            if impl == "float_cl":
                m = m.to(memory_format=torch.channels_last)
            elif impl == "float_onnxrt":
                m = _onnx_session(m)
        _MODELS[impl] = m
    return _MODELS[impl]


def _onnx_session(m):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    buf = io.BytesIO()
    torch.onnx.export(m, (torch.randn(1, 3, SIZE, SIZE),), buf, dynamo=False, input_names=["x"])
    return buf.getvalue(), ort


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", THREADS)
def test_binary_hpm_packed_cpu(benchmark, impl, threads):
    x = torch.randn(1, 3, SIZE, SIZE)
    tag(benchmark, op="model_binary_hpm_packed", impl=impl, case=f"stacks=1 K=16 {SIZE}x{SIZE} bs1",
        dtype=torch.float32, device="cpu", threads=threads,
        note="eager = torch backend of the binary model; float_* = the real-valued hpm_hourglass(stacks=1)")
    m = _model(impl)
    if impl == "float_onnxrt":
        model_bytes, ort = m
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        run(benchmark, lambda: sess.run(None, {"x": xn}), "cpu", rounds=10, warmup=2)
        return
    if impl == "float_cl":
        x = x.contiguous(memory_format=torch.channels_last)

    def fwd():
        with torch.set_grad_enabled(impl == "eager_bn"):
            return m(x)

    if impl == "fastpose_replay":
        replay = fastpose.replay.capture(m, x)

        def fwd():
            return replay(x)

    with num_threads(threads):
        run(benchmark, fwd, "cpu", rounds=10 if impl.startswith("fastpose") else 3, warmup=2)


def _no_grad(m, x):
    def f():
        with torch.no_grad():
            return m(x)
    return f


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
@pytest.mark.parametrize("impl", ["fastpose", "fastpose_replay"])
def test_binary_hpm_packed_thread_scaling(benchmark, impl):
    """The packed model's 2-thread speed-up, 1 and 2 threads timed in alternating rounds."""
    x = torch.randn(1, 3, SIZE, SIZE)
    tag(benchmark, op="model_binary_hpm_packed", impl=impl, case=f"stacks=1 K=16 {SIZE}x{SIZE} bs1",
        dtype=torch.float32, device="cpu", threads=2)
    m = _model(impl)
    if impl == "fastpose_replay":
        replay = fastpose.replay.capture(m, x)
        fn = lambda: replay(x)  # noqa: E731
    else:
        fn = _no_grad(m, x)
    thread_scaling(benchmark, fn, (1, 2), rounds=60)


def test_binary_hpm_packed_vs_torch_interleaved(benchmark):
    """1 thread: the replayed and the eager packed model against its torch backend and the float model
    (channels_last), in alternating rounds."""
    x = torch.randn(1, 3, SIZE, SIZE)
    tag(benchmark, op="model_binary_hpm_packed", impl="interleaved", case=f"stacks=1 K=16 {SIZE}x{SIZE} bs1",
        dtype=torch.float32, device="cpu", threads=1)
    packed, backend, flt = _model("fastpose"), _model("eager"), _model("float_cl")
    replay = fastpose.replay.capture(packed, x)
    xc = x.contiguous(memory_format=torch.channels_last)
    interleaved(benchmark, [("torch_backend", _no_grad(backend, x), 1), ("fastpose_replay", lambda: replay(x), 1),
                            ("fastpose", _no_grad(packed, x), 1), ("float_cl", _no_grad(flt, xc), 1)], rounds=12)

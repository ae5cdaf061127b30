"""Training throughput: one optimizer step (forward, loss, backward, Adam) of the demo's two models and
of a paper-size hourglass, on the fastpose backend against the torch backend of the same modules and
weights (impl "eager" in the report). Images per second = batch / median time.

CPU: the demo's setting (64x64 synthetic images, batch 16, channels_last, 1 and 2 threads): the float
hourglass with heatmap MSE and the binarized HPM hourglass with DSNT + JS (on the torch backend the
XNOR convolutions are sign + float conv with the composite straight-through backward of plain ATen ops,
and DSNT the PyTorch reference).
The XNOR convolution's training step alone (forward + straight-through backward, gradients of x and w) at
the binary model's training shapes (batch 16, channels_last): fastpose against the torch backend's
XNORConv2d ("eager": sign, float conv, composite backward) and against plain autograd of the float64-
checked surrogate (clamp / alpha(w) * w with detached values; "surrogate_autograd").
CUDA (marked `cuda`): 256x256, batch 32, AMP float16, channels_last, for the 2-stack hourglass,
HRNet-W32 (256x192) and the binary HPM hourglass.
"""
import pytest
import torch
import torch.nn.functional as F

from fastpose import models, train
from fastpose.data import SyntheticPoses
from fastpose.nn import XNORConv2d
from fastpose.ops import binarize

from _common import num_threads, run, tag

CUDA = torch.cuda.is_available()
CUDA_MARKS = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs CUDA")]

# key -> (TrainConfig fields, (W, H), batch)
CPU_CASES = {
    "demo-hourglass": (dict(model="hourglass", model_kwargs=dict(stacks=1, features=128, depth=3), sigma=1.5),
                       (64, 64), 16),
    "demo-binary_hpm_dsnt": (dict(model="binary_hpm_hourglass", head="dsnt",
                                  model_kwargs=dict(stacks=1, features=128, depth=3)), (64, 64), 16),
}
CUDA_CASES = {
    "hourglass-2": (dict(model="hourglass", model_kwargs=dict(stacks=2)), (256, 256), 32),
    "hrnet_w32": (dict(model="hrnet_w32", model_kwargs=dict(num_joints=16)), (192, 256), 32),
    "binary_hpm_dsnt": (dict(model="binary_hpm_hourglass", head="dsnt", model_kwargs=dict(stacks=1)), (256, 256), 32),
}


def _step_fn(fields, size, batch_size, backend, device):
    cfg = train.TrainConfig(**fields, input_size=size, backend=backend, device=device).validate()
    torch.manual_seed(0)
    model = train.build_model(cfg, 16).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    ds = SyntheticPoses(batch_size, image_size=size, seed=0)
    batch = {k: v.to(device) for k, v in train._collate([ds[i] for i in range(batch_size)]).items()}
    images = batch["image"].contiguous(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler("cuda", enabled=device == "cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.float16, enabled=device == "cuda"):
            out = model(images)
        loss = train.compute_loss(cfg, out, batch, size)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


@pytest.mark.parametrize("impl", ["fastpose", "eager"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("key", list(CPU_CASES))
def test_train_step_cpu(benchmark, key, threads, impl):
    fields, size, bs = CPU_CASES[key]
    with num_threads(threads):
        step = _step_fn(fields, size, bs, "fastpose" if impl == "fastpose" else "torch", "cpu")
        tag(benchmark, op=f"train_{key}", impl=impl, case=f"{size[0]}x{size[1]} bs{bs} channels_last",
            dtype=torch.float32, device="cpu", threads=threads,
            note="one Adam step; eager = the torch backend of the same model")
        run(benchmark, step, "cpu", rounds=8, warmup=2)


# The binary model's 3x3 XNOR convolutions at batch 16, 64x64 images: (N, Cin, Cout, H, W)
XNOR_TRAIN_SHAPES = [(16, 64, 64, 32, 32), (16, 128, 64, 16, 16), (16, 64, 32, 16, 16), (16, 32, 32, 16, 16),
                     (16, 128, 64, 4, 4)]


def _surrogate_conv(x, w):
    xs = x.clamp(-1, 1)
    xs = xs + (binarize(x) - xs).detach()
    alpha = w.abs().mean((1, 2, 3), keepdim=True)
    ws = alpha * w
    ws = ws + (alpha.detach() * binarize(w) - ws).detach()
    return F.conv2d(xs, ws, padding=1)


@pytest.mark.parametrize("impl", ["fastpose", "eager", "surrogate_autograd"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", XNOR_TRAIN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_xnor_conv2d_train_cpu(benchmark, shape, threads, impl):
    N, Cin, Cout, H, W = shape
    torch.manual_seed(0)
    x = (torch.randn(N, Cin, H, W) * 1.5).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(N, Cout, H, W).contiguous(memory_format=torch.channels_last)
    if impl == "surrogate_autograd":
        w = torch.randn(Cout, Cin, 3, 3, requires_grad=True)
        fwd = lambda: _surrogate_conv(x, w)  # noqa: E731
    else:
        conv = XNORConv2d(Cin, Cout, 3, padding=1, bias=False, backend="fastpose" if impl == "fastpose" else "torch")
        w = conv.weight
        fwd = lambda: conv(x)  # noqa: E731

    def step():
        torch.autograd.grad(fwd(), (x, w), g)
    with num_threads(threads):
        tag(benchmark, op="xnor_conv2d_3x3_train", impl=impl, case=f"{shape} channels_last", dtype=torch.float32,
            device="cpu", threads=threads, macs=3 * N * Cout * H * W * Cin * 9,
            note="forward + straight-through backward (grads of x and w); eager = the torch backend")
        run(benchmark, step, "cpu", warmup=3)


@pytest.mark.parametrize("impl", ["fastpose", "eager"])
@pytest.mark.parametrize("key", [pytest.param(k, marks=CUDA_MARKS) for k in CUDA_CASES])
def test_train_step_cuda(benchmark, key, impl):
    fields, size, bs = CUDA_CASES[key]
    step = _step_fn(fields, size, bs, "fastpose" if impl == "fastpose" else "torch", "cuda")
    tag(benchmark, op=f"train_{key}", impl=impl, case=f"{size[0]}x{size[1]} bs{bs} amp channels_last",
        dtype=torch.float16, device="cuda", note="one Adam step with AMP; eager = the torch backend")
    run(benchmark, step, "cuda", warmup=3)

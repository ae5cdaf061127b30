"""fastpose.replay: a recorded function replayed from C++ returns what the function itself returns (bit
for bit) on fresh inputs, for the packed binary HPM models and for functions that exercise each kind of
argument and result the recorder handles (views, in-place and out= ops, tensor lists with computed and
constant elements, optional-tensor lists, several returns, nested outputs); what it cannot record is
refused at capture; inputs other than the recorded kind are refused at each call.
"""
import gc
import threading
import weakref

import pytest
import torch

import fastpose
import fastpose.nn as fnn
from fastpose import models
from fastpose.replay import capture


def _randomised(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.randn(mod.num_features, generator=g))
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.2)
    return m.eval()


def _same(a, b):
    fa, _ = torch.utils._pytree.tree_flatten(a)
    fb, _ = torch.utils._pytree.tree_flatten(b)
    assert len(fa) == len(fb)
    for u, v in zip(fa, fb):
        if isinstance(u, torch.Tensor):
            assert u.shape == v.shape and u.dtype == v.dtype and u.stride() == v.stride()
            assert torch.equal(u, v)
        else:
            assert u == v


@pytest.mark.parametrize("stacks,size,packed,layout", [(1, 64, True, "nchw"), (2, 64, True, "cl"),
                                                       (1, 96, False, "nchw")])
def test_binary_hpm_bit_exact(stacks, size, packed, layout):
    m = _randomised(models.create("binary_hpm_hourglass", stacks=stacks, num_joints=5))
    if packed:
        m = fnn.pack(m).eval()
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    x = torch.randn(2, 3, size, size).contiguous(memory_format=fmt)
    fwd = capture(m, x)
    assert fwd.steps < fwd.recorded_calls  # the weights' detaches and views are folded
    with torch.no_grad():
        for _ in range(3):
            xi = torch.randn(2, 3, size, size).contiguous(memory_format=fmt)
            _same(fwd(xi), m(xi))


def test_results_are_fresh_per_run():
    m = fnn.pack(_randomised(models.create("binary_hpm_hourglass", stacks=1, num_joints=3))).eval()
    x1, x2 = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    fwd = capture(m, x1)
    a = fwd(x1)
    a_copy = [t.clone() for t in a]
    b = fwd(x2)
    assert all(torch.equal(u, v) for u, v in zip(a, a_copy))  # the second run wrote elsewhere
    assert all(u.data_ptr() != v.data_ptr() for u, v in zip(a, b))


def test_threads_and_concurrent_runs():
    m = fnn.pack(_randomised(models.create("binary_hpm_hourglass", stacks=1, num_joints=4))).eval()
    x = torch.randn(1, 3, 64, 64)
    fwd = capture(m, x)
    with torch.no_grad():
        ref = m(x)
    for t in (1, 2):
        torch.set_num_threads(t)
        _same(fwd(x), ref)
    got = []
    th = [threading.Thread(target=lambda: got.append(fwd(x))) for _ in range(2)]  # the GIL is released
    for t in th:
        t.start()
    for t in th:
        t.join()
    assert len(got) == 2
    for g in got:
        _same(g, ref)


def _mixed(x, y):
    # views, in-place, out=, cat of computed and constant tensors, an optional-tensor list (index), a
    # multi-return op, an input and a constant passed through, a non-tensor leaf
    a = x[:, 1:].transpose(0, 1) * 2
    a.add_(1.5)
    buf = torch.empty(a.shape)
    torch.mul(a, y.sum(), out=buf)
    c = torch.cat([buf, _CONST, a.relu()], dim=0)
    idx = torch.arange(c.shape[0] - 1, -1, -1)
    d = c[idx]
    vals, inds = d.max(dim=1)
    parts = torch.split(d, 2, dim=0)
    return {"vals": vals, "inds": inds, "parts": list(parts), "x": x, "const": _CONST, "n": 3}


_CONST = torch.randn(4, 5)


def test_mixed_function():
    x, y = torch.randn(5, 4), torch.randn(3)
    fwd = capture(_mixed, x, y)
    for _ in range(3):
        xi, yi = torch.randn(5, 4), torch.randn(3)
        out = fwd(xi, yi)
        _same(out, _mixed(xi, yi))
        assert out["x"] is xi and out["const"] is _CONST and out["n"] == 3


def test_python_numbers_promote_as_scalars():
    # t * 2.5 reaches the dispatcher with a Python float: the replay passes it as a wrapped number, so
    # an int32 tensor gives float32 (a plain float64 0-dim tensor would give float64) and bools stay bools
    def f(i, b):
        return i * 2.5, i + 3, b & True, (i.float() * 1.5).to(torch.float16) * 2

    i, b = torch.randint(-5, 5, (7,), dtype=torch.int32), torch.rand(7) > 0.5
    fwd = capture(f, i, b)
    for _ in range(2):
        i, b = torch.randint(-5, 5, (7,), dtype=torch.int32), torch.rand(7) > 0.5
        _same(fwd(i, b), f(i, b))
    assert fwd(i, b)[0].dtype == torch.float32


def test_empty_batch_and_double():
    m = fnn.pack(_randomised(models.create("binary_hpm_hourglass", stacks=1, num_joints=2))).eval().double()
    for n in (0, 1):
        x = torch.randn(n, 3, 64, 64, dtype=torch.float64)
        fwd = capture(m, x)
        with torch.no_grad():
            _same(fwd(x.clone()), m(x.clone()))


def test_plan_holds_no_activations():
    seen = []

    def f(x):
        h = (x * 2).exp()
        seen.append(weakref.ref(h))
        return h.sum(dim=0)

    x = torch.randn(64, 64)
    fwd = capture(f, x)
    gc.collect()
    assert seen and all(r() is None for r in seen)  # warm-up and recorded intermediates are gone
    torch.testing.assert_close(fwd(x), f(x), rtol=0, atol=0)


def test_autograd_off():
    x = torch.randn(3, 4, requires_grad=True)
    fwd = capture(lambda t: (t * 3).sin(), x)
    with torch.enable_grad():
        y = fwd(x)
    assert not y.requires_grad
    torch.testing.assert_close(y, (x.detach() * 3).sin(), rtol=0, atol=0)


@pytest.mark.parametrize("fn", [lambda t: t * t.sum().item(), lambda t: t[t > 0], lambda t: t + 1 if bool(t.sum() > 0)
                                else t - 1, lambda t: t * 2 if torch.equal(t, t) else t, lambda t: torch.unique(t),
                                lambda t: t.repeat_interleave((t > 0).long()),
                                lambda t: t + 1 if t.sum().tolist() > 0 else t, lambda t: t * float(t.numpy()[0]),
                                lambda t: torch.tensor_split(t, (t.abs() * 2).long()[:2].sort().values),
                                lambda t: t.narrow(0, (t[0] > 0).long(), 2)],
                         ids=["item", "mask", "bool", "equal", "unique", "repeat_interleave", "tolist", "numpy",
                              "tensor_split", "narrow"])
def test_data_dependent_refused(fn):
    with pytest.raises(ValueError, match="cannot be replayed"):
        capture(fn, torch.randn(6))


def test_host_reads_work_again_after_capture():
    with pytest.raises(ValueError):
        capture(lambda t: t * t.tolist()[0], torch.randn(3))
    t = torch.randn(3)
    assert t.tolist() == [float(v) for v in t] and t.numpy().shape == (3,)


def test_inputs_are_the_functions_own():
    # an example given twice, or also read by the function as a constant, is still an input; the
    # examples themselves are not modified by the capture's runs
    x = torch.randn(3)
    fwd = capture(lambda a, b: a - b, x, x)
    y, z = torch.randn(3), torch.randn(3)
    assert torch.equal(fwd(y, z), y - z)
    W = torch.randn(3, 3)
    fwd = capture(lambda t: t @ W, W)
    assert torch.equal(fwd(y.expand(3, 3).clone()), y.expand(3, 3) @ W)
    x0 = x.clone()
    fwd = capture(lambda t: t.add_(1), x)
    assert torch.equal(x, x0)
    y0 = y.clone()
    fwd(y)
    assert torch.equal(y, y0 + 1)  # the replay mutates its input as the function does
    with pytest.raises(ValueError, match="overlapping memory"):
        capture(lambda t: t * 2, torch.randn(3, 1).expand(3, 4))


def test_tensors_made_from_python_data_are_fresh_per_run():
    def f(x):
        t = torch.tensor([0.0])
        t.add_(1)
        return x + t, torch.tensor([1.0, 2.0])

    fwd = capture(f, torch.zeros(3))
    a, b = fwd(torch.zeros(3)), fwd(torch.zeros(3))
    assert torch.equal(a[0], torch.ones(3)) and torch.equal(b[0], torch.ones(3))
    assert a[1] is not b[1] and torch.equal(a[1], b[1])


def test_out_resize_of_a_detached_alias():
    def f(x):
        y = x * 2
        z = y.detach()
        torch.sum(x, 0, out=z)  # resizes z (PyTorch warns): y keeps its shape
        return y, z

    x = torch.randn(3, 4)
    with pytest.warns(UserWarning):
        fwd = capture(f, x)
    with pytest.warns(UserWarning):
        _same(fwd(x), f(x))


def test_size_results_stay_sizes():
    fwd = capture(lambda t: (t * 2, t.shape), torch.randn(2, 3))
    out = fwd(torch.randn(2, 3))
    assert type(out[1]) is torch.Size and out[1] == (2, 3)


def test_bad_inputs():
    fwd = capture(lambda t: t * 2, torch.randn(2, 3, 4, 5))
    assert repr(fwd) == "Replay(1 steps of 1 recorded calls; inputs: (2, 3, 4, 5) float32 cpu)"
    with pytest.raises(ValueError, match=r"input 0 must have the recorded shape \(2, 3, 4, 5\)"):
        fwd(torch.randn(2, 3, 4, 6))
    with pytest.raises(ValueError, match="dtype torch.float32"):
        fwd(torch.randn(2, 3, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="strides"):
        fwd(torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last))
    with pytest.raises(TypeError, match="expected 1 input tensors, got 2"):
        fwd(torch.randn(2, 3, 4, 5), torch.randn(1))
    with pytest.raises(TypeError, match="input 0 must be a tensor"):
        fwd([1, 2])
    with pytest.raises(TypeError, match="fn must be callable"):
        capture(3, torch.randn(1))
    with pytest.raises(ValueError, match="at least one example input"):
        capture(lambda: torch.randn(1))
    with pytest.raises(TypeError, match="example input 1 must be a tensor"):
        capture(lambda a, b: a, torch.randn(1), 2.0)
    with pytest.raises(ValueError, match="warmup must be an int >= 0"):
        capture(lambda a: a, torch.randn(1), warmup=-1)


def test_plan_rejects_bad_references():
    plan = fastpose._C.ReplayPlan(2, 1)
    with pytest.raises(ValueError, match="no operator"):
        plan.add_step("aten::no_such_op", "", [], [], [], [])
    with pytest.raises(ValueError, match="takes 1 arguments, got 2"):
        plan.add_step("aten::neg", "", [torch.ones(1), 1], [], [], [])
    with pytest.raises(ValueError, match="bad argument reference"):
        plan.add_step("aten::neg", "", [torch.ones(1)], [(0, -1, 7)], [(0, -1, 1)], [])
    with pytest.raises(ValueError, match="expected 1 input tensors"):
        plan.run([], [])

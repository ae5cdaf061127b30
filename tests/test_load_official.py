"""load_official: the authors' key names onto fastpose models, outputs equal for the same weights.

Each official implementation is re-stated here in a few lines, written for this test from the facts
in models.md (module attribute names, layer order, forward order); nothing is copied. Their
state_dicts therefore carry the official key names by construction (including HG-pt's unused
skip layers and the DataParallel / trainer prefixes), and their forwards give the reference outputs.
"""
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastpose import models


def _randomise(model):
    """Random weights and BN statistics, so a wrong mapping cannot hide behind default inits."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name.endswith(("running_mean", "bias")):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                else:
                    fan_in = t[0].numel() if t.dim() > 1 else 1
                    t.copy_(torch.randn(t.shape, generator=g) / fan_in ** 0.5)
    return model.eval()


# ------------------------------------------------------------------ princeton-vl/pytorch_stacked_hourglass
class _HGConv(nn.Module):
    def __init__(self, cin, cout, k=3, stride=1, bn=False, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.conv(x)
        x = x if self.bn is None else self.bn(x)
        return x if self.relu is None else self.relu(x)


class _HGResidual(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _HGConv(cin, cout // 2, 1, relu=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout // 2), _HGConv(cout // 2, cout // 2, 3, relu=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(cout // 2), _HGConv(cout // 2, cout, 1, relu=False)
        self.skip_layer = _HGConv(cin, cout, 1, relu=False)  # registered even when unused
        self.need_skip = cin != cout

    def forward(self, x):
        res = self.skip_layer(x) if self.need_skip else x
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        return self.conv3(F.relu(self.bn3(y))) + res


class _HGHourglass(nn.Module):
    def __init__(self, n, f):
        super().__init__()
        self.up1, self.pool1, self.low1 = _HGResidual(f, f), nn.MaxPool2d(2, 2), _HGResidual(f, f)
        self.low2 = _HGHourglass(n - 1, f) if n > 1 else _HGResidual(f, f)
        self.low3 = _HGResidual(f, f)

    def forward(self, x):
        low = self.low3(self.low2(self.low1(self.pool1(x))))
        return self.up1(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class _HGMerge(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = _HGConv(cin, cout, 1, relu=False)

    def forward(self, x):
        return self.conv(x)


class _HGPoseNet(nn.Module):
    def __init__(self, nstack, f, k):
        super().__init__()
        self.nstack = nstack
        self.pre = nn.Sequential(_HGConv(3, 64, 7, 2, bn=True), _HGResidual(64, 128), nn.MaxPool2d(2, 2),
                                 _HGResidual(128, 128), _HGResidual(128, f))
        self.hgs = nn.ModuleList([nn.Sequential(_HGHourglass(4, f)) for _ in range(nstack)])
        self.features = nn.ModuleList([nn.Sequential(_HGResidual(f, f), _HGConv(f, f, 1, bn=True))
                                       for _ in range(nstack)])
        self.outs = nn.ModuleList([_HGConv(f, k, 1, relu=False) for _ in range(nstack)])
        self.merge_features = nn.ModuleList([_HGMerge(f, f) for _ in range(nstack - 1)])
        self.merge_preds = nn.ModuleList([_HGMerge(k, f) for _ in range(nstack - 1)])

    def forward(self, x):  # NCHW here (the original takes NHWC and permutes)
        x = self.pre(x)
        outs = []
        for i in range(self.nstack):
            feat = self.features[i](self.hgs[i](x))
            pred = self.outs[i](feat)
            outs.append(pred)
            if i < self.nstack - 1:
                x = x + self.merge_preds[i](pred) + self.merge_features[i](feat)
        return outs


# ------------------------------------------------------------------ HRNet pose_hrnet
def _cbr(cin, cout, k, stride, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*(layers + [nn.ReLU()] if relu else layers))


class _HRBasic(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + x)


class _HRBottleneck(nn.Module):
    def __init__(self, cin, p):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, p, 1, bias=False), nn.BatchNorm2d(p)
        self.conv2, self.bn2 = nn.Conv2d(p, p, 3, 1, 1, bias=False), nn.BatchNorm2d(p)
        self.conv3, self.bn3 = nn.Conv2d(p, 4 * p, 1, bias=False), nn.BatchNorm2d(4 * p)
        self.downsample = _cbr(cin, 4 * p, 1, 1, relu=False) if cin != 4 * p else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(y)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class _HRModule(nn.Module):
    def __init__(self, chans, multi):
        super().__init__()
        nb = len(chans)
        self.branches = nn.ModuleList([nn.Sequential(*[_HRBasic(c) for _ in range(4)]) for c in chans])
        rows = []
        for i in range(nb if multi else 1):
            row = []
            for j in range(nb):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(chans[j], chans[i], 1, bias=False), nn.BatchNorm2d(chans[i]),
                                             nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(None)
                else:
                    row.append(nn.Sequential(*[_cbr(chans[j], chans[i] if s == i - j - 1 else chans[j], 3, 2,
                                                    relu=s != i - j - 1) for s in range(i - j)]))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)

    def forward(self, xs):
        xs = [b(x) for b, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if j == i else row[j](xs[j]))
            out.append(F.relu(y))
        return out


class _PoseHRNet(nn.Module):
    def __init__(self, width, k):
        super().__init__()
        c = [width * 2 ** i for i in range(4)]
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(_HRBottleneck(64, 64), *[_HRBottleneck(256, 64) for _ in range(3)])
        self.transition1 = nn.ModuleList([_cbr(256, c[0], 3, 1), nn.Sequential(_cbr(256, c[1], 3, 2))])
        self.stage2 = nn.Sequential(_HRModule(c[:2], True))
        self.transition2 = nn.ModuleList([None, None, nn.Sequential(_cbr(c[1], c[2], 3, 2))])
        self.stage3 = nn.Sequential(*[_HRModule(c[:3], True) for _ in range(4)])
        self.transition3 = nn.ModuleList([None, None, None, nn.Sequential(_cbr(c[2], c[3], 3, 2))])
        self.stage4 = nn.Sequential(*[_HRModule(c, m < 2) for m in range(3)])
        self.final_layer = nn.Conv2d(c[0], k, 1)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        x = self.layer1(x)
        ys = self.stage2([t(x) for t in self.transition1])
        for trans, stage in ((self.transition2, self.stage3), (self.transition3, self.stage4)):
            ys = stage([ys[i] if t is None else t(ys[-1]) for i, t in enumerate(trans)])
        return self.final_layer(ys[0])


# ------------------------------------------------------------------ face-alignment FAN
class _FANBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout // 2, 3, 1, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout // 2), nn.Conv2d(cout // 2, cout // 4, 3, 1, 1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(cout // 4), nn.Conv2d(cout // 4, cout // 4, 3, 1, 1, bias=False)
        self.downsample = (nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False))
                           if cin != cout else None)

    def forward(self, x):
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        return torch.cat((a, b, c), 1) + (x if self.downsample is None else self.downsample(x))


class _FANHourGlass(nn.Module):
    def __init__(self, depth, f):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", _FANBlock(f, f))
            self.add_module(f"b2_{level}", _FANBlock(f, f))
            if level == 1:
                self.add_module("b2_plus_1", _FANBlock(f, f))
            self.add_module(f"b3_{level}", _FANBlock(f, f))

    def _run(self, level, x):
        up = getattr(self, f"b1_{level}")(x)
        low = getattr(self, f"b2_{level}")(F.avg_pool2d(x, 2, stride=2))
        low = self._run(level - 1, low) if level > 1 else self.b2_plus_1(low)
        low = getattr(self, f"b3_{level}")(low)
        return up + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x):
        return self._run(self.depth, x)


class _FAN(nn.Module):
    def __init__(self, stacks, f, k):
        super().__init__()
        self.stacks = stacks
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64)
        self.conv2, self.conv3, self.conv4 = _FANBlock(64, 128), _FANBlock(128, 128), _FANBlock(128, f)
        for i in range(stacks):
            self.add_module(f"m{i}", _FANHourGlass(4, f))
            self.add_module(f"top_m_{i}", _FANBlock(f, f))
            self.add_module(f"conv_last{i}", nn.Conv2d(f, f, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(f))
            self.add_module(f"l{i}", nn.Conv2d(f, k, 1))
            if i < stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(f, f, 1))
                self.add_module(f"al{i}", nn.Conv2d(k, f, 1))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
        outs = []
        for i in range(self.stacks):
            ll = getattr(self, f"top_m_{i}")(getattr(self, f"m{i}")(x))
            ll = F.relu(getattr(self, f"bn_end{i}")(getattr(self, f"conv_last{i}")(ll)))
            out = getattr(self, f"l{i}")(ll)
            outs.append(out)
            if i < self.stacks - 1:
                x = x + getattr(self, f"bl{i}")(ll) + getattr(self, f"al{i}")(out)
        return outs


# ------------------------------------------------------------------ tests
CASES = {
    "hg": (lambda: _HGPoseNet(2, 32, 5), "pytorch_stacked_hourglass",
           lambda: models.create("hourglass", stacks=2, num_joints=5, features=32), (1, 3, 64, 64)),
    "hrnet": (lambda: _PoseHRNet(8, 6), "pose_hrnet", lambda: models.HRNet(width=8, num_joints=6), (1, 3, 64, 64)),
    "fan": (lambda: _FAN(2, 32, 7), "fan",
            lambda: models.create("hpm_hourglass", stacks=2, num_joints=7, features=32), (1, 3, 64, 64)),
}


def _as_list(o):
    return o if isinstance(o, list) else [o]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", ["fastpose", "torch"])
def test_outputs_equal_official(case, backend):
    make_official, source, make_ours, shape = CASES[case]
    torch.manual_seed(0)
    official = _randomise(make_official())
    ours = models.set_backend(make_ours().eval(), backend)
    models.load_official(ours, official.state_dict(), source)
    # float64: the two sum the merges in different orders, so float32 agrees only to rounding
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        want, got = _as_list(official.double()(x)), _as_list(ours.double()(x))
    assert len(want) == len(got)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_hg_drops_only_unused_skip_layers():
    official = _HGPoseNet(1, 32, 5)
    sd = official.state_dict()
    out = models.convert_official(sd, "pytorch_stacked_hourglass")
    skips = [k for k in sd if "skip_layer" in k]
    used = [k for k in skips if sd[k.rsplit(".", 1)[0] + ".weight"].shape[0] != sd[k.rsplit(".", 1)[0] + ".weight"].shape[1]]
    assert len(out) == len(sd) - (len(skips) - len(used))
    # stem Residual(64,128) and Residual(128,32) keep theirs (weight + bias each)
    assert len(used) == 4 and "stem.3.skip.weight" in out and "stem.6.skip.bias" in out
    # what remains is exactly our model's parameter set: 1-stack parameter counts agree
    ours = models.create("hourglass", stacks=1, num_joints=5, features=32)
    assert set(out) == set(ours.state_dict())


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrapped_checkpoints_and_dsnt_body(case):
    make_official, source, make_ours, shape = CASES[case]
    official = _randomise(make_official())
    # DataParallel + trainer prefixes and a {"state_dict": ...} checkpoint, saved to a file-like buffer
    ckpt = {"epoch": 3, "state_dict": {"model.module." + k: v for k, v in official.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    ours = make_ours()
    wrapped = models.DSNTWrapped(ours).eval()
    models.load_official(wrapped, loaded, source)
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        coords, heatmaps = wrapped.double()(x)
        torch.testing.assert_close(_as_list(heatmaps)[-1], _as_list(official.double()(x))[-1])
    assert _as_list(coords)[-1].shape == (1, _as_list(heatmaps)[-1].shape[1], 2)


def test_mismatch_raises():
    official = _FAN(1, 32, 7)
    with pytest.raises(ValueError, match="missing"):
        models.load_official(models.create("hpm_hourglass", stacks=2, num_joints=7, features=32),
                             official.state_dict(), "fan")
    with pytest.raises(ValueError, match="source"):
        models.convert_official({}, "caffe")


def test_full_size_key_sets():
    """The full-size official namings map one to one onto our full-size models (meta tensors: no compute)."""
    with torch.device("meta"):
        for official, source, ours in ((_PoseHRNet(32, 17), "pose_hrnet", models.create("hrnet_w32")),
                                       (_PoseHRNet(48, 17), "pose_hrnet", models.create("hrnet_w48")),
                                       (_HGPoseNet(8, 256, 16), "hg_pt", models.create("hourglass", stacks=8)),
                                       (_FAN(4, 256, 68), "fan", models.create("hpm_hourglass"))):
            out = models.convert_official(official.state_dict(), source)
            own = ours.state_dict()
            assert set(out) == set(own), source
            assert all(out[k].shape == own[k].shape for k in own), source

"""Hourglasses of HPM blocks (Bulat & Tzimiropoulos, ICCV 2017): the real-valued network as in
face-alignment's FAN (models.md §4.2) and its binarized form (§4.3).

The HPM ("hierarchical, parallel and multi-scale") block chains three 3x3 convolutions, each preceded
by BatchNorm and an activation, and concatenates their outputs (Cout/2 + Cout/4 + Cout/4 channels),
then adds the input (or a pre-activated 1x1 projection of it). In the binary network the activation
is sign() and the three 3x3 convolutions are XNOR convolutions (1-bit weights scaled per output
channel by alpha = mean |w|); the first 7x7 convolution, every 1x1 convolution (projections, stack
heads, merges) and BatchNorm stay real-valued, which is what fits the released 1.3 MB model.

Module names follow our own scheme (``stem``, ``hgs``, ``heads`` ...); ``fastpose.models.load_official``
maps face-alignment's FAN keys onto it.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.binary import BinaryActivation, XNORConv2d
from ..nn.merge import UpsampleAdd
from . import hpm_packed as _infer


class _BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm without the ``num_batches_tracked`` counter (unused with a fixed momentum): the binary
    network has 55 BN layers, and each saved counter costs a file entry in the (1.5 MB) checkpoint."""

    def __init__(self, num_features):
        super().__init__(num_features)
        self.register_buffer("num_batches_tracked", None)


def _bn(c, binary):
    return _BatchNorm2d(c) if binary else nn.BatchNorm2d(c)


class HPMBlock(nn.Module):
    """HPM(cin, cout): out1 = conv(act(bn(x))) (cout/2), out2 = conv(act(bn(out1))) (cout/4),
    out3 = conv(act(bn(out2))) (cout/4); cat(out1, out2, out3) + shortcut(x).

    All 3x3 convolutions have no bias. ``binary=True``: act = sign (straight-through gradient) and the
    3x3 convolutions are ``XNORConv2d`` (alpha-scaled). The shortcut is the identity when cin == cout,
    else BN -> ReLU -> 1x1 conv (no bias), real-valued in both forms. No activation after the sum.
    """

    def __init__(self, cin, cout, binary=False):
        super().__init__()
        if cout % 4:
            raise ValueError(f"HPMBlock: cout must be divisible by 4, got {cout}")
        self.binary = bool(binary)
        chans = [cin, cout // 2, cout // 4, cout // 4]
        conv = XNORConv2d if binary else nn.Conv2d
        self.bns = nn.ModuleList([_bn(chans[k], binary) for k in range(3)])
        self.acts = nn.ModuleList([BinaryActivation() if binary else nn.ReLU() for _ in range(3)])
        self.convs = nn.ModuleList([conv(chans[k], chans[k + 1], 3, padding=1, bias=False) for k in range(3)])
        self.shortcut = (nn.Sequential(_bn(cin, binary), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False))
                         if cin != cout else None)

    def forward(self, x):
        if self.binary and _infer.active(self, x):
            return _infer.hpm_block(self, x)  # eval, autograd off: fused kernels (fastpose.models.hpm_packed)
        outs = []
        y = x
        for bn, act, conv in zip(self.bns, self.acts, self.convs):
            if self.binary and not conv.use_reference:
                # The XNOR kernels read only the sign bits of their input, and their straight-through
                # gradient masks |x| > 1 exactly as BinaryActivation's does: sign() before them is
                # redundant, forward and backward (a full pass per conv: ~20% of the CPU time).
                y = conv(bn(y))
            else:
                y = conv(act(bn(y)))
            outs.append(y)
        res = x if self.shortcut is None else self.shortcut(x)
        return torch.cat(outs, 1) + res


class HPMHourglass(nn.Module):
    """HG(n, f) of HPM blocks: up1 = HPM(x); low = HPM(avgpool(x)) -> HG(n-1) or HPM -> HPM;
    out = up1 + nearest_up(low), the add through ``fastpose.nn.UpsampleAdd``."""

    def __init__(self, depth=4, features=256, binary=False):
        super().__init__()
        f = features
        self.up1 = HPMBlock(f, f, binary)
        self.low1 = HPMBlock(f, f, binary)
        self.low2 = HPMHourglass(depth - 1, f, binary) if depth > 1 else HPMBlock(f, f, binary)
        self.low3 = HPMBlock(f, f, binary)
        self.merge = UpsampleAdd()

    def forward(self, x):
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(F.avg_pool2d(x, 2, 2))))
        return self.merge(low, up1)


class HPMStackedHourglass(nn.Module):
    """Stacked hourglass of HPM blocks (FAN layout).

    forward(images (N, 3, H, W), H and W divisible by 64) -> list of ``stacks`` heatmaps (N, K, H/4, W/4),
    one per stack (intermediate supervision).

    Stem: conv7x7/2 (bias) -> BN -> ReLU -> HPM(64,128) -> avgpool 2 -> HPM(128,128) -> HPM(128,f).
    Stack i: HG(depth, f) -> HPM(f,f) -> conv1x1 (bias) -> BN -> ReLU = feat; pred = conv1x1(feat) (bias);
    between stacks x = x + conv1x1(feat) + conv1x1(pred).
    """

    def __init__(self, stacks=4, num_joints=68, features=256, depth=4, binary=False):
        super().__init__()
        if stacks < 1:
            raise ValueError(f"stacks must be >= 1, got {stacks}")
        f, k = features, num_joints
        self.binary = bool(binary)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = _bn(64, binary)
        self.stem = nn.ModuleList([HPMBlock(64, 128, binary), HPMBlock(128, 128, binary), HPMBlock(128, f, binary)])
        self.hgs = nn.ModuleList([HPMHourglass(depth, f, binary) for _ in range(stacks)])
        self.tops = nn.ModuleList([HPMBlock(f, f, binary) for _ in range(stacks)])
        self.heads = nn.ModuleList([nn.Sequential(nn.Conv2d(f, f, 1), _bn(f, binary), nn.ReLU())
                                    for _ in range(stacks)])
        self.preds = nn.ModuleList([nn.Conv2d(f, k, 1) for _ in range(stacks)])
        self.merge_features = nn.ModuleList([nn.Conv2d(f, f, 1) for _ in range(stacks - 1)])
        self.merge_preds = nn.ModuleList([nn.Conv2d(k, f, 1) for _ in range(stacks - 1)])

    def forward(self, x):
        if self.binary and _infer.active(self, x):
            return _infer.stacked_forward(self, x)
        x = torch.relu(self.bn1(self.conv1(x)))
        x = F.avg_pool2d(self.stem[0](x), 2, 2)
        x = self.stem[2](self.stem[1](x))
        outs = []
        for i, hg in enumerate(self.hgs):
            feat = self.heads[i](self.tops[i](hg(x)))
            pred = self.preds[i](feat)
            outs.append(pred)
            if i < len(self.hgs) - 1:
                x = x + self.merge_features[i](feat) + self.merge_preds[i](pred)
        return outs

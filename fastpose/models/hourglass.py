"""Stacked Hourglass (Newell, Yang, Deng, ECCV 2016), as in the authors' Torch code (models.md §1):
pre-activation bottleneck residuals, 4-level hourglasses of 256 features, nearest upsampling merged
into the skip branch by fastpose's UpsampleAdd, intermediate supervision on every stack."""
import torch
from torch import nn

from ..nn.merge import UpsampleAdd


class Residual(nn.Module):
    """Pre-activation bottleneck: (BN, ReLU, conv1x1 -> C/2), (BN, ReLU, conv3x3), (BN, ReLU, conv1x1 -> C),
    plus the input (or a plain 1x1 conv of it when the channels change). No activation after the sum."""

    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, mid, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(mid), nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3, self.conv3 = nn.BatchNorm2d(mid), nn.Conv2d(mid, cout, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        y = self.conv1(torch.relu(self.bn1(x)))
        y = self.conv2(torch.relu(self.bn2(y)))
        y = self.conv3(torch.relu(self.bn3(y)))
        return y + (x if self.skip is None else self.skip(x))


class Hourglass(nn.Module):
    """HG(n, f): up1 = Res(x); low = Res(pool(x)) -> HG(n-1) or Res -> Res; out = up1 + up(low)."""

    def __init__(self, n=4, f=256):
        super().__init__()
        self.up1 = Residual(f, f)
        self.pool = nn.MaxPool2d(2, 2)
        self.low1 = Residual(f, f)
        self.low2 = Hourglass(n - 1, f) if n > 1 else Residual(f, f)
        self.low3 = Residual(f, f)
        self.merge = UpsampleAdd()

    def forward(self, x):
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(self.pool(x))))
        return self.merge(low, up1)


class StackedHourglass(nn.Module):
    """forward(images (N, 3, H, W), H and W divisible by 64) -> list of `stacks` heatmaps (N, K, H/4, W/4)."""

    def __init__(self, stacks=2, num_joints=16, features=256, depth=4):
        super().__init__()
        if stacks < 1:
            raise ValueError(f"stacks must be >= 1, got {stacks}")
        f = features
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            Residual(64, 128), nn.MaxPool2d(2, 2), Residual(128, 128), Residual(128, f))
        self.hgs = nn.ModuleList([Hourglass(depth, f) for _ in range(stacks)])
        self.features = nn.ModuleList([
            nn.Sequential(Residual(f, f), nn.Conv2d(f, f, 1), nn.BatchNorm2d(f), nn.ReLU(inplace=True))
            for _ in range(stacks)])
        self.preds = nn.ModuleList([nn.Conv2d(f, num_joints, 1) for _ in range(stacks)])
        self.merge_features = nn.ModuleList([nn.Conv2d(f, f, 1) for _ in range(stacks - 1)])
        self.merge_preds = nn.ModuleList([nn.Conv2d(num_joints, f, 1) for _ in range(stacks - 1)])

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, hg in enumerate(self.hgs):
            feat = self.features[i](hg(x))
            pred = self.preds[i](feat)
            outs.append(pred)
            if i < len(self.hgs) - 1:
                x = x + self.merge_features[i](feat) + self.merge_preds[i](pred)
        return outs

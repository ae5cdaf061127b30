"""HRNet pose (Sun, Xiao, Liu, Wang, CVPR 2019), as the authors' pose_hrnet (models.md §2), with every
multi-resolution fusion through fastpose's HRFuse (one pass: the at-resolution terms, the 1x1-conv
outputs of the lower branches upsampled on the fly, and the ReLU)."""
import torch
from torch import nn

from ..nn.merge import HRFuse


def _conv_bn(cin, cout, k, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class Bottleneck(nn.Module):
    def __init__(self, cin, planes):
        super().__init__()
        cout = planes * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = _conv_bn(cin, cout, 1, relu=False) if cin != cout else None

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class HRModule(nn.Module):
    """Branches of BasicBlocks, then for each output branch i: relu(sum_j f_ij(x_j)) (models.md §2.4)."""

    def __init__(self, channels, blocks=4, multi_scale_output=True):
        super().__init__()
        nb = len(channels)
        self.branches = nn.ModuleList([nn.Sequential(*[BasicBlock(c) for _ in range(blocks)]) for c in channels])
        self.outputs = nb if multi_scale_output else 1
        self.fuse = nn.ModuleList()
        for i in range(self.outputs):
            row = nn.ModuleList()
            for j in range(nb):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # 1x1 conv + BN at the low resolution; HRFuse upsamples it
                    row.append(_conv_bn(channels[j], channels[i], 1, relu=False))
                else:  # chain of stride-2 3x3 convs, ReLU on all but the last
                    chain = [_conv_bn(channels[j], channels[j], 3, 2) for _ in range(i - j - 1)]
                    chain.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*chain))
            self.fuse.append(row)
        self.merge = nn.ModuleList([HRFuse(relu=True) for _ in range(self.outputs)])

    def forward(self, xs):
        xs = [b(x) for b, x in zip(self.branches, xs)]
        if len(xs) == 1:
            return xs
        out = []
        for i in range(self.outputs):
            same = [self.fuse[i][j](xs[j]) for j in range(i + 1)]  # at branch i's resolution
            low = [self.fuse[i][j](xs[j]) for j in range(i + 1, len(xs))]
            out.append(self.merge[i]([same[i]] + same[:i] + low))
        return out


class HRNet(nn.Module):
    """forward(images (N, 3, H, W), H and W divisible by 32) -> heatmaps (N, K, H/4, W/4)."""

    def __init__(self, width=32, num_joints=17):
        super().__init__()
        c = [width * 2 ** k for k in range(4)]
        self.stem = nn.Sequential(_conv_bn(3, 64, 3, 2), _conv_bn(64, 64, 3, 2))
        self.layer1 = nn.Sequential(Bottleneck(64, 64), *[Bottleneck(256, 64) for _ in range(3)])
        self.transition1 = nn.ModuleList([_conv_bn(256, c[0], 3), _conv_bn(256, c[1], 3, 2)])
        self.stage2 = nn.ModuleList([HRModule(c[:2])])
        self.transition2 = _conv_bn(c[1], c[2], 3, 2)
        self.stage3 = nn.ModuleList([HRModule(c[:3]) for _ in range(4)])
        self.transition3 = _conv_bn(c[2], c[3], 3, 2)
        self.stage4 = nn.ModuleList([HRModule(c, multi_scale_output=k < 2) for k in range(3)])
        self.final_layer = nn.Conv2d(c[0], num_joints, 1)

    def forward(self, x):
        x = self.layer1(self.stem(x))
        xs = [t(x) for t in self.transition1]
        for m in self.stage2:
            xs = m(xs)
        xs = xs + [self.transition2(xs[-1])]
        for m in self.stage3:
            xs = m(xs)
        xs = xs + [self.transition3(xs[-1])]
        for m in self.stage4:
            xs = m(xs)
        return self.final_layer(xs[0])

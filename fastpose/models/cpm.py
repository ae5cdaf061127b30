"""Convolutional Pose Machines (Wei, Ramakrishna, Kanade, Sheikh, CVPR 2016), models.md §3.

Two official networks, both 6 stages with a centre map and intermediate supervision:

* ``CPM`` ("centerMap", the paper's network): every stage up to 2 has its own 9x9 image trunk, stages
  3..6 reuse stage 2's trunk; 11x11 convolutions in the stage blocks.
* ``CPMVGG`` ("resize", MPII_VGG_6s): one shared VGG-19 trunk (conv1_1 .. conv4_2) plus conv4_3..4_7_CPM,
  7x7 convolutions in the stage blocks.

Module attribute names are the Caffe layer names of the authors' prototxts (conv1_stage1, Mconv1_stage2,
conv4_3_CPM, ...), so a caffemodel's blobs map onto the state_dict one to one (weight = blob 0, bias = blob 1).

Input: images (N, 3, H, W) with H, W multiples of 8 (368 x 368 in the paper; BGR / 256 - 0.5) and a
centre map (N, 1, H, W), or a single 4-channel tensor (image channels then the centre map) as in the
Caffe deploy files. Without a centre map, the default one is built (``center_map``: Gaussian of
sigma 21 px at the image centre, scaled with the input size). Output: a list of 6 belief maps
(N, P + 1, H/8, W/8), P + 1 = 15 for MPII (14 joints + background).
"""
import torch
import torch.nn.functional as F
from torch import nn


def center_map(height, width, sigma=21.0, center=None, batch=1, device=None, dtype=torch.float32):
    """The CPM centre map: an unnormalised Gaussian, peak 1 at ``center`` (x, y in 0-based pixels),
    standard deviation ``sigma`` pixels. Returns (batch, 1, height, width).

    The default centre is the authors' (width/2, height/2) in 1-based MATLAB pixels, i.e. pixel
    (width/2 - 1, height/2 - 1) here: (183, 183) at 368 x 368."""
    if center is None:
        center = (width / 2.0 - 1.0, height / 2.0 - 1.0)
    ys = torch.arange(height, device=device, dtype=dtype).view(-1, 1)
    xs = torch.arange(width, device=device, dtype=dtype).view(1, -1)
    g = torch.exp(-((xs - center[0]) ** 2 + (ys - center[1]) ** 2) / (2.0 * sigma * sigma))
    return g.expand(batch, 1, height, width)


def _pool3(x):
    # Caffe pools round up: 368 -> 184 -> 92 -> 46.
    return F.max_pool2d(x, 3, 2, ceil_mode=True)


class _CPMBase(nn.Module):
    def _inputs(self, x, cmap):
        if x.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] == 4 and cmap is None:
            x, cmap = x[:, :3], x[:, 3:]
        if x.shape[1] != 3:
            raise ValueError(f"images must have 3 channels (or 4 with the centre map), got {x.shape[1]}")
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"CPM needs H and W divisible by 8, got {tuple(x.shape[-2:])}")
        if cmap is None:
            h, w = x.shape[-2:]
            cmap = center_map(h, w, sigma=21.0 * h / 368.0, batch=x.shape[0], device=x.device, dtype=x.dtype)
        pooled = F.avg_pool2d(cmap, 9, 8, ceil_mode=True)  # pool_center_lower: 368 -> 46
        return x, pooled


class CPM(_CPMBase):
    """The 6-stage centre-map CPM (pose_deploy_centerMap.prototxt): 31,219,866 parameters at 15 maps."""

    def __init__(self, num_joints=15, stages=6):
        super().__init__()
        if stages < 2:
            raise ValueError(f"stages must be >= 2, got {stages}")
        self.stages = stages
        k = num_joints
        for t in (1, 2):
            self.add_module(f"conv1_stage{t}", nn.Conv2d(3, 128, 9, padding=4))
            self.add_module(f"conv2_stage{t}", nn.Conv2d(128, 128, 9, padding=4))
            self.add_module(f"conv3_stage{t}", nn.Conv2d(128, 128, 9, padding=4))
        self.conv4_stage1 = nn.Conv2d(128, 32, 5, padding=2)
        self.conv5_stage1 = nn.Conv2d(32, 512, 9, padding=4)
        self.conv6_stage1 = nn.Conv2d(512, 512, 1)
        self.conv7_stage1 = nn.Conv2d(512, k, 1)
        self.conv4_stage2 = nn.Conv2d(128, 32, 5, padding=2)
        for t in range(3, stages + 1):
            self.add_module(f"conv1_stage{t}", nn.Conv2d(128, 32, 5, padding=2))
        for t in range(2, stages + 1):
            self.add_module(f"Mconv1_stage{t}", nn.Conv2d(32 + k + 1, 128, 11, padding=5))
            self.add_module(f"Mconv2_stage{t}", nn.Conv2d(128, 128, 11, padding=5))
            self.add_module(f"Mconv3_stage{t}", nn.Conv2d(128, 128, 11, padding=5))
            self.add_module(f"Mconv4_stage{t}", nn.Conv2d(128, 128, 1))
            self.add_module(f"Mconv5_stage{t}", nn.Conv2d(128, k, 1))

    def _stage(self, t, feats, prev, pooled):
        y = torch.cat([feats, prev, pooled], 1)
        for k in range(1, 5):
            y = torch.relu(getattr(self, f"Mconv{k}_stage{t}")(y))
        return getattr(self, f"Mconv5_stage{t}")(y)

    def _trunk(self, t, x):
        for i in (1, 2, 3):
            x = _pool3(torch.relu(getattr(self, f"conv{i}_stage{t}")(x)))
        return x

    def forward(self, x, center_map=None):
        """x: (N, 3, H, W) images (or (N, 4, H, W) with the centre map); returns 6 x (N, K, H/8, W/8)."""
        x, pooled = self._inputs(x, center_map)
        y = torch.relu(self.conv4_stage1(self._trunk(1, x)))
        y = torch.relu(self.conv6_stage1(torch.relu(self.conv5_stage1(y))))
        outs = [self.conv7_stage1(y)]
        trunk = self._trunk(2, x)  # pool3_stage2, shared by stages 2..6
        for t in range(2, self.stages + 1):
            conv = self.conv4_stage2 if t == 2 else getattr(self, f"conv1_stage{t}")
            outs.append(self._stage(t, torch.relu(conv(trunk)), outs[-1], pooled))
        return outs


class CPMVGG(_CPMBase):
    """The 6-stage VGG-19 CPM (pose_deploy_resize.prototxt): 29,852,058 parameters at 15 maps."""

    _VGG = [("conv1_1", 3, 64), ("conv1_2", 64, 64), "pool", ("conv2_1", 64, 128), ("conv2_2", 128, 128), "pool",
            ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256), "pool",
            ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3_CPM", 512, 256), ("conv4_4_CPM", 256, 256),
            ("conv4_5_CPM", 256, 256), ("conv4_6_CPM", 256, 256), ("conv4_7_CPM", 256, 128)]

    def __init__(self, num_joints=15, stages=6):
        super().__init__()
        if stages < 2:
            raise ValueError(f"stages must be >= 2, got {stages}")
        self.stages = stages
        k = num_joints
        for layer in self._VGG:
            if layer != "pool":
                name, cin, cout = layer
                self.add_module(name, nn.Conv2d(cin, cout, 3, padding=1))
        self.conv5_1_CPM = nn.Conv2d(128, 512, 1)
        self.conv5_2_CPM = nn.Conv2d(512, k, 1)
        for t in range(2, stages + 1):
            self.add_module(f"Mconv1_stage{t}", nn.Conv2d(k + 128 + 1, 128, 7, padding=3))
            for i in range(2, 6):
                self.add_module(f"Mconv{i}_stage{t}", nn.Conv2d(128, 128, 7, padding=3))
            self.add_module(f"Mconv6_stage{t}", nn.Conv2d(128, 128, 1))
            self.add_module(f"Mconv7_stage{t}", nn.Conv2d(128, k, 1))

    def forward(self, x, center_map=None):
        """x: (N, 3, H, W) images (or (N, 4, H, W) with the centre map); returns 6 x (N, K, H/8, W/8)."""
        x, pooled = self._inputs(x, center_map)
        for layer in self._VGG:
            x = F.max_pool2d(x, 2, 2) if layer == "pool" else torch.relu(getattr(self, layer[0])(x))
        trunk = x
        outs = [self.conv5_2_CPM(torch.relu(self.conv5_1_CPM(trunk)))]
        for t in range(2, self.stages + 1):
            # Caffe concat order in this variant: beliefs, trunk features, centre map.
            y = torch.cat([outs[-1], trunk, pooled], 1)
            for i in range(1, 7):
                y = torch.relu(getattr(self, f"Mconv{i}_stage{t}")(y))
            outs.append(getattr(self, f"Mconv7_stage{t}")(y))
        return outs

"""DSNT modules: the fused softmax + DSNT op as a layer, and a 1x1-conv coordinate head."""
import torch

from ..dsnt import flat_softmax
from ..ops.softmax_dsnt import softmax_dsnt


class SoftmaxDSNT(torch.nn.Module):
    """Heatmap logits (B, J, H, W) to coordinates (B, J, 2), (x, y) on the normalised grid.

    With ``return_heatmaps=True`` the forward returns ``(coords, heatmaps)``, the heatmaps being the
    softmax probabilities (computed only then).
    """

    def __init__(self, return_heatmaps=False):
        super().__init__()
        self.return_heatmaps = return_heatmaps

    def forward(self, logits):
        coords = softmax_dsnt(logits)
        if self.return_heatmaps:
            return coords, flat_softmax(logits)
        return coords

    def extra_repr(self):
        return f"return_heatmaps={self.return_heatmaps}"


class DSNTHead(torch.nn.Module):
    """A 1x1 convolution to ``num_joints`` heatmap logits, then softmax + DSNT.

    forward(features (B, C, H, W)) returns coords (B, J, 2), or ``(coords, heatmaps)`` when called
    with ``return_heatmaps=True`` (or constructed with it).
    """

    def __init__(self, in_channels, num_joints, return_heatmaps=False, bias=True, device=None, dtype=None):
        super().__init__()
        if in_channels < 1 or num_joints < 1:
            raise ValueError(f"in_channels and num_joints must be >= 1, got {in_channels} and {num_joints}")
        self.conv = torch.nn.Conv2d(in_channels, num_joints, 1, bias=bias, device=device, dtype=dtype)
        self.return_heatmaps = return_heatmaps

    def forward(self, features, return_heatmaps=None):
        logits = self.conv(features)
        coords = softmax_dsnt(logits)
        if self.return_heatmaps if return_heatmaps is None else return_heatmaps:
            return coords, flat_softmax(logits)
        return coords

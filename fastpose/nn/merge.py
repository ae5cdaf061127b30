"""Modules for the resolution merges of hourglass and HRNet networks."""
import torch

from ..ops.hr_fuse import hr_fuse, hr_fuse_reference
from ..ops.upsample_add import upsample_add, upsample_add_reference


class UpsampleAdd(torch.nn.Module):
    """``forward(low, skip) = skip + nearest_upsample(low, size=skip.shape[-2:])`` (integer factors).

    ``use_reference=True`` runs the plain PyTorch expression instead of the fused kernel (the
    model zoo's "torch" backend); ONNX export always does.
    """

    def __init__(self, use_reference=False):
        super().__init__()
        self.use_reference = use_reference

    def forward(self, low, skip):
        if self.use_reference:
            return upsample_add_reference(low, skip)
        return upsample_add(low, skip)


class HRFuse(torch.nn.Module):
    """``forward(xs) = relu(sum_j nearest_upsample(xs[j], size=xs[0].shape[-2:]))``.

    ``relu=False`` leaves out the ReLU; ``use_reference=True`` runs plain PyTorch ops.
    """

    def __init__(self, relu=True, use_reference=False):
        super().__init__()
        self.relu = relu
        self.use_reference = use_reference

    def forward(self, xs):
        if self.use_reference:
            return hr_fuse_reference(list(xs), self.relu)
        return hr_fuse(list(xs), self.relu)

    def extra_repr(self):
        return f"relu={self.relu}"

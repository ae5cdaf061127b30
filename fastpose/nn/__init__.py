"""Modules built on fastpose ops, drop-in for their PyTorch counterparts."""
from .dsnt_head import DSNTHead, SoftmaxDSNT
from .merge import HRFuse, UpsampleAdd
from .binary import (BinaryActivation, PackedXNORConv2d, XNORConv2d, binary_sign, clip_binary_weights, pack,
                     set_xnor_backend)

__all__ = ["SoftmaxDSNT", "DSNTHead", "UpsampleAdd", "HRFuse"]
__all__ += ["XNORConv2d", "PackedXNORConv2d", "BinaryActivation", "binary_sign", "clip_binary_weights", "pack",
            "set_xnor_backend"]

"""Modules built on fastpose ops, drop-in for their PyTorch counterparts."""
from .dsnt_head import DSNTHead, SoftmaxDSNT
from .merge import HRFuse, UpsampleAdd

__all__ = ["SoftmaxDSNT", "DSNTHead", "UpsampleAdd", "HRFuse"]

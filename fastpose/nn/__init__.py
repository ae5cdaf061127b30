"""Modules built on fastpose ops, drop-in for their PyTorch counterparts."""
from .dsnt_head import DSNTHead, SoftmaxDSNT

__all__ = ["SoftmaxDSNT", "DSNTHead"]

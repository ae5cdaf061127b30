"""The functional API of fastpose: every op, autograd-aware, on every device.

Each op lives in a module of its own holding its fake (meta) kernel, autograd and public function.
"""
from .affine_relu import affine_relu, affine_relu_reference
from .hr_fuse import hr_fuse
from .softmax_dsnt import softmax_dsnt, softmax_dsnt_with_reg
from .upsample_add import upsample_add
from .xnor_conv import (binarize, binarize_pack, binary_unpack, xnor_alpha, xnor_conv2d, xnor_conv2d_fused,
                        xnor_conv2d_fused_reference, xnor_conv2d_packed, xnor_conv2d_reference)

__all__ = ["softmax_dsnt", "softmax_dsnt_with_reg", "upsample_add", "hr_fuse", "affine_relu", "affine_relu_reference"]
__all__ += ["binarize", "binarize_pack", "binary_unpack", "xnor_alpha", "xnor_conv2d", "xnor_conv2d_packed",
            "xnor_conv2d_reference", "xnor_conv2d_fused", "xnor_conv2d_fused_reference"]

"""Whether a call runs under ONNX export or TorchScript tracing: the ops then take their plain-PyTorch
form (standard ops only, so the exported graph runs anywhere).

``torch.onnx.is_in_onnx_export`` imports two modules on every call (~1 us, a tenth of a small layer's
Python cost); the same two flags are read here directly once they are found.
"""
import torch

_onnx_flags = None  # a function returning the ONNX exporters' flag, bound on first use


def _bind_onnx_flags():
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:  # another torch layout: the public function
        return torch.onnx.is_in_onnx_export
    if not (hasattr(GLOBALS, "in_onnx_export") and hasattr(_flags, "_is_onnx_exporting")):
        return torch.onnx.is_in_onnx_export
    return lambda: GLOBALS.in_onnx_export or _flags._is_onnx_exporting


def exporting():
    """True under ONNX export (either exporter) or ``torch.jit.trace``."""
    global _onnx_flags
    if torch.jit.is_tracing():
        return True
    if torch.compiler.is_compiling():  # dynamo knows the public function (and refuses the flags' module)
        return torch.onnx.is_in_onnx_export()
    if _onnx_flags is None:
        _onnx_flags = _bind_onnx_flags()
    return bool(_onnx_flags())

"""fastpose: hand-written kernels for keypoint-localisation networks.

Importing fastpose loads the native extension ``fastpose._C``, which registers every op under
``torch.ops.fastpose``; the public API is ``fastpose.ops`` (functional), ``fastpose.nn`` (modules),
``fastpose.dsnt`` (dsntnn-compatible), ``fastpose.models``, ``fastpose.data`` (datasets, transforms),
``fastpose.heatmaps``, ``fastpose.metrics`` and ``fastpose.train`` (the training loop, imported on use).
"""
import torch

from . import _C  # noqa: F401  (registers the ops with the dispatcher)

__version__ = "0.1.0"


def build_info():
    """How this fastpose was built and what it runs on: CUDA kernels, CPU ISA, Triton."""
    info = dict(_C.build_info())
    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:  # pragma: no cover - triton is optional on CPU machines
        info["triton"] = None
    return info


from . import ops  # noqa: E402
from . import nn  # noqa: E402
from . import dsnt  # noqa: E402
from . import models  # noqa: E402
from . import data  # noqa: E402
from . import heatmaps  # noqa: E402
from . import metrics  # noqa: E402
from . import replay  # noqa: E402
from .cpu_allocator import (  # noqa: E402
    cpu_caching_allocator, cpu_caching_allocator_stats, disable_cpu_caching_allocator, empty_cpu_cache,
    enable_cpu_caching_allocator, inference_scope, set_inference_cache,
)
from .cpu_allocator import _enable_from_env  # noqa: E402

_enable_from_env()

__all__ = ["ops", "nn", "dsnt", "models", "data", "heatmaps", "metrics", "replay", "build_info", "__version__",
           "enable_cpu_caching_allocator", "disable_cpu_caching_allocator", "cpu_caching_allocator",
           "cpu_caching_allocator_stats", "empty_cpu_cache", "inference_scope", "set_inference_cache"]

"""The model zoo: ``fastpose.models.create(name, **kwargs)`` and ``fastpose.models.names()``.

Implemented so far: ``hourglass`` (Stacked Hourglass, stacks=2 or 8, num_joints=16) and
``hrnet_w32`` / ``hrnet_w48`` (num_joints=17), with the authors' exact parameter counts
(models.md §1, §2). Every model takes ``backend="fastpose"`` (fastpose kernels, the default) or
``"torch"`` (the same modules and weights through plain PyTorch ops), and ``head="dsnt"`` ends it
in softmax + DSNT: forward then returns ``(coords, heatmaps)`` where both are lists (one entry per
stack) for the hourglass and single tensors for HRNet; coords are (N, K, 2), (x, y) in (-1, 1).
"""
from torch import nn

from ..nn.dsnt_head import SoftmaxDSNT
from ._backend import BACKENDS, set_backend
from .hourglass import StackedHourglass
from .hrnet import HRNet

_REGISTRY = {
    "hourglass": lambda stacks=2, num_joints=16, **kw: StackedHourglass(stacks=stacks, num_joints=num_joints, **kw),
    "hrnet_w32": lambda num_joints=17, **kw: HRNet(width=32, num_joints=num_joints, **kw),
    "hrnet_w48": lambda num_joints=17, **kw: HRNet(width=48, num_joints=num_joints, **kw),
}


class DSNTWrapped(nn.Module):
    """A heatmap model followed by softmax + DSNT on each of its outputs."""

    def __init__(self, body):
        super().__init__()
        self.body = body
        self.dsnt = SoftmaxDSNT()

    def forward(self, x):
        out = self.body(x)
        if isinstance(out, (list, tuple)):
            return [self.dsnt(h) for h in out], list(out)
        return self.dsnt(out), out


def names():
    """The names create() accepts."""
    return sorted(_REGISTRY)


def create(name, backend="fastpose", head=None, **kwargs):
    """Build a model by name (see names()); kwargs go to its constructor (e.g. stacks, num_joints)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(names())}")
    if head not in (None, "heatmap", "dsnt"):
        raise ValueError(f"head must be None, 'heatmap' or 'dsnt', got {head!r}")
    model = _REGISTRY[name](**kwargs)
    if head == "dsnt":
        model = DSNTWrapped(model)
    return set_backend(model, backend)


__all__ = ["create", "names", "set_backend", "BACKENDS", "StackedHourglass", "HRNet", "DSNTWrapped"]

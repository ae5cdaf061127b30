"""The model zoo: ``fastpose.models.create(name, **kwargs)`` and ``fastpose.models.names()``.

=========================  =====================================================  ==========================
name                       model (models.md)                                      output of forward
=========================  =====================================================  ==========================
``hourglass``              Stacked Hourglass, stacks=2 or 8, num_joints=16 (§1)   list of `stacks` (N,K,H/4,W/4)
``hrnet_w32``/``hrnet_w48`` HRNet pose, num_joints=17 (§2)                       (N, K, H/4, W/4)
``cpm``                    6-stage centre-map CPM, 15 maps (§3.2)                 list of 6 (N, K, H/8, W/8)
``cpm_vgg``                6-stage VGG-19 CPM, 15 maps (§3.5)                     list of 6 (N, K, H/8, W/8)
``hpm_hourglass``          real HPM hourglass (FAN), stacks=4, num_joints=68 (§4) list of `stacks` (N,K,H/4,W/4)
``binary_hpm_hourglass``   binarized HPM hourglass, stacks=1, num_joints=16 (§4.3) list of `stacks` (N,K,H/4,W/4)
=========================  =====================================================  ==========================

Every model is a plain ``nn.Module``. ``backend="fastpose"`` (default) runs the fastpose layers
(UpsampleAdd, HRFuse, XNORConv2d, softmax + DSNT) through their kernels; ``backend="torch"`` runs the
same modules and weights through plain PyTorch ops (``set_backend`` switches an existing model).

``head="dsnt"`` appends softmax + DSNT to every heatmap output. The forward then returns a tuple
``(coords, heatmaps)``: for single-output models (HRNet) ``coords`` is (N, K, 2) and ``heatmaps`` the
(N, K, h, w) logits; for multi-stack models both are lists with one entry per stack/stage. Coordinates
are (x, y) on DSNT's normalised pixel-centre grid (-1, 1); the heatmaps are the unnormalised logits
(``fastpose.dsnt.flat_softmax`` gives the probabilities, ``fastpose.ops.softmax_dsnt_with_reg`` the
coordinates plus the divergence regulariser from the same logits).
"""
from torch import nn

from ..ops.softmax_dsnt import softmax_dsnt, softmax_dsnt_reference
from ._backend import BACKENDS, set_backend
from .cpm import CPM, CPMVGG, center_map
from .hourglass import StackedHourglass
from .hpm import HPMBlock, HPMStackedHourglass
from .hrnet import HRNet
from .official import OFFICIAL_SOURCES, convert_official, load_official


def _hourglass(stacks=2, num_joints=16, **kw):
    return StackedHourglass(stacks=stacks, num_joints=num_joints, **kw)


def _hpm(stacks=4, num_joints=68, **kw):
    if not 1 <= stacks <= 4:
        raise ValueError(f"hpm_hourglass: stacks must be 1 to 4, got {stacks}")
    return HPMStackedHourglass(stacks=stacks, num_joints=num_joints, binary=False, **kw)


def _binary_hpm(stacks=1, num_joints=16, **kw):
    if stacks < 1:
        raise ValueError(f"binary_hpm_hourglass: stacks must be >= 1, got {stacks}")
    return HPMStackedHourglass(stacks=stacks, num_joints=num_joints, binary=True, **kw)


_REGISTRY = {
    "hourglass": _hourglass,
    "hrnet_w32": lambda num_joints=17, **kw: HRNet(width=32, num_joints=num_joints, **kw),
    "hrnet_w48": lambda num_joints=17, **kw: HRNet(width=48, num_joints=num_joints, **kw),
    "cpm": lambda num_joints=15, **kw: CPM(num_joints=num_joints, **kw),
    "cpm_vgg": lambda num_joints=15, **kw: CPMVGG(num_joints=num_joints, **kw),
    "hpm_hourglass": _hpm,
    "binary_hpm_hourglass": _binary_hpm,
}


class DSNTWrapped(nn.Module):
    """A heatmap model followed by softmax + DSNT on each of its heatmap outputs.

    forward(*inputs) -> (coords, heatmaps): tensors for a single-output body, lists (one per stack or
    stage) otherwise; coords (N, K, 2) in (x, y) order, heatmaps the body's logits.
    ``use_reference=True`` (the "torch" backend) computes the coordinates with plain PyTorch ops.
    """

    def __init__(self, body):
        super().__init__()
        self.body = body
        self.use_reference = False

    def _dsnt(self, h):
        return softmax_dsnt_reference(h) if self.use_reference else softmax_dsnt(h)

    def forward(self, *inputs):
        out = self.body(*inputs)
        if isinstance(out, (list, tuple)):
            return [self._dsnt(h) for h in out], list(out)
        return self._dsnt(out), out


def names():
    """The names ``create`` accepts, sorted."""
    return sorted(_REGISTRY)


def create(name, backend="fastpose", head=None, **kwargs):
    """Build a model by name (see ``names()``), freshly initialised.

    Args:
        name: one of ``names()``.
        backend: "fastpose" (fastpose kernels, default) or "torch" (plain PyTorch ops, same weights).
        head: None / "heatmap" (heatmaps only) or "dsnt" (``(coords, heatmaps)``, see the module doc).
        **kwargs: constructor arguments, e.g. ``stacks``, ``num_joints``, ``features``.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(names())}")
    if head not in (None, "heatmap", "dsnt"):
        raise ValueError(f"head must be None, 'heatmap' or 'dsnt', got {head!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    model = _REGISTRY[name](**kwargs)
    if head == "dsnt":
        model = DSNTWrapped(model)
    return set_backend(model, backend)


__all__ = ["create", "names", "set_backend", "BACKENDS", "load_official", "convert_official", "OFFICIAL_SOURCES",
           "StackedHourglass", "HRNet", "CPM", "CPMVGG", "center_map", "HPMBlock", "HPMStackedHourglass",
           "DSNTWrapped"]

"""Evaluation metrics for keypoint localisation: PCK / PCKh, face NME, COCO OKS and keypoint AP.

Conventions shared by every function here (models.md §6):

* **Inputs** may be ``torch.Tensor`` (any device, any floating/integer dtype; gradients are not tracked),
  numpy arrays, or nested sequences of numbers. Everything is computed in float64 numpy on the CPU.
* **Outputs**: aggregate numbers (means, AP) are Python ``float``. Per-joint / per-sample arrays come back
  as the type of ``pred``: a ``torch.Tensor`` (float64, ``int64`` counts, ``bool`` masks) on ``pred``'s
  device when ``pred`` is a tensor, numpy arrays otherwise.
* **Coordinates** are (x, y) pixels as in the sample contract (:mod:`fastpose.data`); predictions,
  ground truth and boxes must share one frame (0- or 1-based makes no difference to any metric here).
* **Visibility** uses COCO's flags: a keypoint is *labelled* where ``visibility > 0`` (1 occluded and
  2 visible both count); a boolean mask is accepted as well. Unlabelled keypoints never count.
* Results are fractions in [0, 1], not percentages.
* Malformed inputs raise ``ValueError`` (wrong shape or value) or ``TypeError`` (not numeric), naming the
  argument.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .data.skeletons import COCO, COCO_OKS_SIGMAS, MPII, Skeleton
from .data import skeletons as _skeletons

__all__ = [
    "PCKResult", "PCKhResult", "NMEResult",
    "pck", "pckh", "bbox_size", "torso_diameter", "head_size", "nme", "oks",
    "coco_keypoint_ap", "load_coco_keypoints", "coco_keypoint_ap_from_files",
    "MPII_PCKH_EXCLUDED", "MPII_PCKH_PARTS", "SC_BIAS",
    "COCO_OKS_THRESHOLDS", "COCO_RECALL_THRESHOLDS", "COCO_KEYPOINT_AREA_RANGES",
]

#: MPII head-size factor: head size = SC_BIAS x head-box diagonal (MPII toolkit util_get_head_size.m).
SC_BIAS = 0.6
#: MPII joints left out of the PCKh "Mean": pelvis (6) and thorax (7).
MPII_PCKH_EXCLUDED = (6, 7)
#: MPII per-part PCKh columns: part name -> MPII joint indices averaged (right, left).
MPII_PCKH_PARTS = {
    "Head": (9,), "Shoulder": (12, 13), "Elbow": (11, 14), "Wrist": (10, 15),
    "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5),
}
#: cocoeval's OKS thresholds 0.50:0.05:0.95 and its 101 recall points (same construction as cocoeval).
COCO_OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
#: cocoeval keypoint area ranges (inclusive on both ends, as cocoeval compares with < lo or > hi).
COCO_KEYPOINT_AREA_RANGES = {"all": (0.0, 1e5 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e5 ** 2)}

_EPS = np.spacing(1)  # cocoeval's eps in the OKS denominator


# ---------------------------------------------------------------------------------------------------
# input / output helpers

def _as_array(x, name, dtype=np.float64):
    """``x`` as a numpy array of ``dtype`` (None keeps the dtype), with a TypeError naming ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bool:
            a = x.cpu().numpy()
        elif x.is_floating_point():
            a = x.to("cpu", torch.float64).numpy()
        elif x.is_complex():
            raise TypeError(f"{name} must be real-valued, got a tensor of dtype {x.dtype}")
        else:
            a = x.cpu().numpy()
    elif isinstance(x, np.ndarray):
        a = x
    elif isinstance(x, (list, tuple, int, float, np.number, np.bool_)) and not isinstance(x, str):
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be a rectangular array of numbers: {exc}") from None
    else:
        raise TypeError(f"{name} must be a torch.Tensor, a numpy array or a sequence of numbers, "
                        f"got {type(x).__name__}")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric (bool, int or float), got dtype {a.dtype}")
    return a if dtype is None else a.astype(dtype, copy=False)


def _labelled(visibility, name="visibility"):
    """Boolean mask of labelled keypoints: ``visibility > 0`` (a boolean mask passes through)."""
    v = _as_array(visibility, name, dtype=None)
    return v > 0


def _check_shape(a, shape, name):
    """Raise ValueError unless ``a.shape`` matches ``shape`` (None entries match anything)."""
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(a.shape)}")


def _check_points(a, name, last=(2,)):
    if a.ndim != 3 or a.shape[-1] not in last:
        lasts = " or ".join(str(n) for n in last)
        raise ValueError(f"{name} must have shape (N, K, {lasts}), got {tuple(a.shape)}")


class _Like:
    """Converts numpy results back to the container type of a reference input (``pred``)."""

    def __init__(self, ref):
        self.device = ref.device if isinstance(ref, torch.Tensor) else None

    def __call__(self, a):
        if self.device is None:
            return a
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)


def _per_sample(value, n, name):
    """A scalar or (N,) array broadcast to (N,) float64."""
    a = _as_array(value, name)
    if a.ndim == 0:
        return np.full(n, float(a))
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {tuple(a.shape)}")
    return a


def _check_normalizer(norm, has_label, name):
    bad = has_label & ~(np.isfinite(norm) & (norm > 0))
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"{name} must be finite and > 0 for every sample with a labelled keypoint; "
            f"{idx.size} sample(s) are not (first: index {idx[0]}, value {norm[idx[0]]!r}). "
            "Drop those samples or set their visibility to 0.")


def _nanmean(values):
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


# ---------------------------------------------------------------------------------------------------
# normalisers

def bbox_size(gt, visibility):
    """Per-sample bounding-box size: ``max(w, h)`` of the tight box around the *labelled* GT keypoints.

    Args:
        gt: (N, K, 2) ground-truth (x, y).
        visibility: (N, K) COCO flags (labelled where > 0) or a boolean mask.

    Returns:
        (N,) float64 (type of ``gt``); NaN for a sample with no labelled keypoint. A sample with a
        single labelled keypoint has size 0, which :func:`pck` rejects as a normaliser.
    """
    like = _Like(gt)
    g = _as_array(gt, "gt")
    _check_points(g, "gt")
    lab = _labelled(visibility)
    _check_shape(lab, g.shape[:2], "visibility")
    x = np.where(lab, g[..., 0], np.nan)
    y = np.where(lab, g[..., 1], np.nan)
    out = np.full(g.shape[0], np.nan)
    any_lab = lab.any(axis=1)
    if any_lab.any():
        xs, ys = x[any_lab], y[any_lab]
        w = np.nanmax(xs, axis=1) - np.nanmin(xs, axis=1)
        h = np.nanmax(ys, axis=1) - np.nanmin(ys, axis=1)
        out[any_lab] = np.maximum(w, h)
    return like(out)


def _resolve_skeleton(skeleton, k, name="skeleton"):
    if skeleton is None:
        for s in (MPII, COCO):
            if s.num_joints == k:
                return s
        raise ValueError(f"{name} is required: no built-in skeleton has K={k} keypoints (MPII 16, COCO 17)")
    if isinstance(skeleton, str):
        skeleton = _skeletons.get(skeleton)
    if not isinstance(skeleton, Skeleton):
        raise TypeError(f"{name} must be a Skeleton, 'mpii', 'coco' or None, got {type(skeleton).__name__}")
    if skeleton.num_joints != k:
        raise ValueError(f"{name} {skeleton.name!r} has {skeleton.num_joints} joints but gt has K={k}")
    return skeleton


def torso_diameter(gt, skeleton=None, visibility=None):
    """Per-sample torso diameter (LSP / FLIC PCK normaliser): ``||gt[l_shoulder] - gt[r_hip]||``.

    The LSP convention measures the torso along one diagonal, from the **left shoulder to the right
    hip**. For MPII these are joints 13 (l_shoulder) and 2 (r_hip); for COCO 5 (l_shoulder) and
    12 (r_hip). Any :class:`~fastpose.data.skeletons.Skeleton` with joints named ``l_shoulder`` and
    ``r_hip`` works.

    Args:
        gt: (N, K, 2) ground-truth (x, y).
        skeleton: a Skeleton, ``"mpii"``, ``"coco"``, or None to pick MPII (K=16) or COCO (K=17).
        visibility: optional (N, K); where either end joint is unlabelled the diameter is NaN.

    Returns:
        (N,) float64 (type of ``gt``).
    """
    like = _Like(gt)
    g = _as_array(gt, "gt")
    _check_points(g, "gt")
    sk = _resolve_skeleton(skeleton, g.shape[1])
    try:
        a, b = sk.index("l_shoulder"), sk.index("r_hip")
    except ValueError:
        raise ValueError(f"skeleton {sk.name!r} has no 'l_shoulder' / 'r_hip' joints") from None
    d = g[:, a] - g[:, b]
    out = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
    if visibility is not None:
        lab = _labelled(visibility)
        _check_shape(lab, g.shape[:2], "visibility")
        out = np.where(lab[:, a] & lab[:, b], out, np.nan)
    return like(out)


def head_size(head_boxes, sc_bias=SC_BIAS):
    """MPII head size: ``sc_bias * ||(x2 - x1, y2 - y1)||``, i.e. 60% of the head-box diagonal.

    Args:
        head_boxes: (N, 4) as x1, y1, x2, y2 (the sample contract's ``head_box``), or (N, 2, 2) as
            [[x1, y1], [x2, y2]] (MPII's ``headboxes_src`` layout, per sample).
        sc_bias: the factor, MPII's SC_BIAS = 0.6.

    Returns:
        (N,) float64 (type of ``head_boxes``); NaN where a box is NaN (unknown).
    """
    like = _Like(head_boxes)
    hb = _as_array(head_boxes, "head_boxes")
    if hb.ndim == 3 and hb.shape[1:] == (2, 2):
        hb = hb.reshape(-1, 4)
    if hb.ndim != 2 or hb.shape[1] != 4:
        raise ValueError(f"head_boxes must have shape (N, 4) or (N, 2, 2), got {tuple(hb.shape)}")
    dx = hb[:, 2] - hb[:, 0]
    dy = hb[:, 3] - hb[:, 1]
    return like(sc_bias * np.sqrt(dx * dx + dy * dy))


# ---------------------------------------------------------------------------------------------------
# PCK / PCKh

@dataclass(frozen=True)
class PCKResult:
    """Result of :func:`pck`.

    Attributes:
        per_joint: (K,) fraction of labelled samples whose joint is correct; NaN for joints never labelled.
        counts: (K,) number of samples in which each joint is labelled.
        correct: (N, K) bool, True where the joint is labelled and correct.
        mean: the headline mean (for :func:`pck` the weighted mean; for :func:`pckh` per its convention).
        weighted_mean: sum of correct / sum of labelled over the joints in the mean, i.e. per-joint PCK
            weighted by labelled counts (= pooled over all labelled keypoints). NaN if none labelled.
        unweighted_mean: plain mean of ``per_joint`` over the joints in the mean that were labelled at least once.
        alpha: the threshold used.
        strict: True if the test was ``dist / L < alpha``, False for ``<=``.
        joints: indices of the joints that enter the means.
    """
    per_joint: object
    counts: object
    correct: object
    mean: float
    weighted_mean: float
    unweighted_mean: float
    alpha: float
    strict: bool
    joints: tuple


@dataclass(frozen=True)
class PCKhResult(PCKResult):
    """Result of :func:`pckh`: :class:`PCKResult` plus the MPII table.

    Attributes:
        parts: {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"} -> float, the mean of the
            left and right per-joint PCKh (Head = joint 9 only); a side never labelled is left out.
        mean_at_0_1: the headline mean at threshold 0.1 under the same convention.
        weighted: whether ``mean`` is the count-weighted mean (HRNet) or the unweighted one (bearpaw).
    """
    parts: dict = field(default_factory=dict)
    mean_at_0_1: float = math.nan
    weighted: bool = True


def _pred_gt(pred, gt):
    """pred and gt as float64 arrays of (N, K, 2) points of the same shape."""
    p = _as_array(pred, "pred")
    g = _as_array(gt, "gt")
    _check_points(p, "pred")
    _check_points(g, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    return p, g


def _pck_arrays(pred, gt, visibility, normalizer, name_norm="normalizer"):
    p, g = _pred_gt(pred, gt)
    lab = _labelled(visibility)
    _check_shape(lab, g.shape[:2], "visibility")
    norm = _per_sample(normalizer, g.shape[0], name_norm)
    if not np.isfinite(g[lab]).all():
        raise ValueError("gt has non-finite coordinates at labelled keypoints")
    _check_normalizer(norm, lab.any(axis=1), name_norm)
    d = p - g
    dist = np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = dist / norm[:, None]  # same order of operations as the MPII ports: ratio, then compare
    return scaled, lab


def _pck_from_scaled(scaled, lab, alpha, strict, joints):
    with np.errstate(invalid="ignore"):
        hit = (scaled < alpha) if strict else (scaled <= alpha)  # NaN predictions are never correct
    correct = hit & lab
    counts = lab.sum(axis=0).astype(np.int64)
    n_ok = correct.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(counts > 0, n_ok / np.maximum(counts, 1), np.nan)
    j = list(joints)
    tot = counts[j].sum()
    weighted = float(n_ok[j].sum() / tot) if tot > 0 else math.nan
    unweighted = _nanmean(per_joint[j])
    return per_joint, counts, correct, weighted, unweighted


def _joint_list(joints, k, name="joints"):
    if joints is None:
        return tuple(range(k))
    j = tuple(int(i) for i in joints)
    for i in j:
        if not 0 <= i < k:
            raise ValueError(f"{name} contains {i}, outside 0..{k - 1}")
    return j


def pck(pred, gt, visibility, normalizer, alpha=0.2, strict=False, *, joints=None):
    """Percentage of Correct Keypoints, PCK@alpha (as a fraction).

    A labelled keypoint is **correct** if ``||pred - gt||_2 / L <= alpha`` (``strict=True``: ``<``),
    where ``L`` is the sample's normaliser (torso diameter for LSP/FLIC PCK@0.2, head size for PCKh,
    bbox size, ...; see :func:`torso_diameter`, :func:`head_size`, :func:`bbox_size`). The ratio is
    computed first and then compared, as the MPII / pose-hg-train ports do. A NaN prediction is wrong.

    Args:
        pred, gt: (N, K, 2) predicted and ground-truth (x, y).
        visibility: (N, K) COCO flags, labelled where > 0, or a boolean mask. Unlabelled keypoints are
            ignored entirely.
        normalizer: (N,) or a scalar ``L`` in pixels; must be finite and > 0 for every sample that has a
            labelled keypoint (ValueError otherwise).
        alpha: threshold as a fraction of ``L``.
        strict: use ``<`` instead of ``<=``.
        joints: indices of the joints that enter the means (default all K); ``per_joint`` covers all K.

    Returns:
        :class:`PCKResult`; ``mean`` is the **weighted** mean (correct / labelled, pooled over the joints
        in ``joints``); ``unweighted_mean`` is the plain mean of the per-joint values.
    """
    like = _Like(pred)
    scaled, lab = _pck_arrays(pred, gt, visibility, normalizer)
    j = _joint_list(joints, lab.shape[1])
    per_joint, counts, correct, w, u = _pck_from_scaled(scaled, lab, alpha, strict, j)
    return PCKResult(per_joint=like(per_joint), counts=like(counts), correct=like(correct), mean=w,
                     weighted_mean=w, unweighted_mean=u, alpha=float(alpha), strict=bool(strict), joints=j)


_PCKH_CONVENTIONS = {"hrnet": (False, True), "bearpaw": (True, False)}


def pckh(pred, gt, visibility, head_boxes, threshold=0.5, *, convention="hrnet", strict=None, weighted=None,
         exclude=MPII_PCKH_EXCLUDED, sc_bias=SC_BIAS):
    """MPII PCKh@threshold (as a fraction) with the MPII table: per-part columns and the 14-joint Mean.

    * Head size ``= sc_bias * ||(x2 - x1, y2 - y1)||`` of the head box, ``sc_bias = 0.6`` (SC_BIAS).
    * A labelled joint is correct if ``||pred - gt|| / head_size <= threshold`` (``<`` under bearpaw).
    * ``mean`` covers the 14 joints other than pelvis (6) and thorax (7); per-part columns average the
      left and right joints' PCKh: Head (9), Shoulder (12, 13), Elbow (11, 14), Wrist (10, 15),
      Hip (2, 3), Knee (1, 4), Ankle (0, 5).

    Two ports of the MPII evaluation disagree slightly (models.md §6.1); ``convention`` picks one:

    * ``"hrnet"`` (**default**, HRNet lib/dataset/mpii.py): ``<=``, and ``mean`` weighted by the per-joint
      labelled counts (HRNet's ``jnt_ratio``), i.e. correct / labelled pooled over the 14 joints.
    * ``"bearpaw"`` (bearpaw eval_PCKh.py): strict ``<``, and ``mean`` the unweighted mean of the 14
      per-joint values.

    ``strict`` / ``weighted`` override the convention's choice individually. Both means are always in
    the result (``weighted_mean``, ``unweighted_mean``). ``mean_at_0_1`` is ``mean`` at threshold 0.1
    (HRNet's "Mean@0.1"; note HRNet's code actually reads its threshold table at index 11, i.e. 0.11:
    call ``pckh(..., threshold=0.11).mean`` to reproduce that printed number).

    Args:
        pred, gt: (N, 16, 2) MPII-ordered (x, y), in the same frame as ``head_boxes``.
        visibility: (N, 16) COCO flags (labelled where > 0) or a boolean mask (MPII: not ``jnt_missing``).
        head_boxes: (N, 4) x1, y1, x2, y2, or (N, 2, 2); must be valid for every sample with a labelled joint.
        threshold: the PCKh threshold (0.5 for PCKh@0.5).
        exclude: joints left out of the means (default pelvis and thorax).

    Returns:
        :class:`PCKhResult`.
    """
    if convention not in _PCKH_CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(_PCKH_CONVENTIONS)}, got {convention!r}")
    c_strict, c_weighted = _PCKH_CONVENTIONS[convention]
    strict = c_strict if strict is None else bool(strict)
    weighted = c_weighted if weighted is None else bool(weighted)
    like = _Like(pred)
    g = _as_array(gt, "gt")
    _check_points(g, "gt")
    if g.shape[1] != MPII.num_joints:
        raise ValueError(f"gt must have the 16 MPII joints (shape (N, 16, 2)), got {tuple(g.shape)}")
    hs = _as_array(head_size(head_boxes, sc_bias), "head_boxes")
    if hs.shape[0] != g.shape[0]:
        raise ValueError(f"head_boxes must have one box per sample ({g.shape[0]}), got {hs.shape[0]}")
    scaled, lab = _pck_arrays(pred, g, visibility, hs, name_norm="head_boxes (head size)")
    ex = set(_joint_list(exclude, 16, "exclude"))
    j = tuple(i for i in range(16) if i not in ex)
    per_joint, counts, correct, w, u = _pck_from_scaled(scaled, lab, threshold, strict, j)
    _, _, _, w01, u01 = _pck_from_scaled(scaled, lab, 0.1, strict, j)
    parts = {name: _nanmean(per_joint[list(idx)]) for name, idx in MPII_PCKH_PARTS.items()}
    return PCKhResult(per_joint=like(per_joint), counts=like(counts), correct=like(correct),
                      mean=w if weighted else u, weighted_mean=w, unweighted_mean=u, alpha=float(threshold),
                      strict=strict, joints=j, parts=parts, mean_at_0_1=w01 if weighted else u01,
                      weighted=weighted)


# ---------------------------------------------------------------------------------------------------
# NME (faces)

#: Outer eye corners (0-based) used for the inter-ocular NME, by number of landmarks:
#: 300W 68 -> 36, 45; WFLW 98 -> 60, 72; COFW 29 -> 8, 9 (HRNet-facial's choices).
INTER_OCULAR_INDICES = {68: (36, 45), 98: (60, 72), 29: (8, 9)}
#: Eye-centre groups for the inter-pupil NME: 300W 68 -> mean of 36..41 and of 42..47; WFLW 98 -> pupils 96, 97.
INTER_PUPIL_INDICES = {68: (tuple(range(36, 42)), tuple(range(42, 48))), 98: ((96,), (97,))}


@dataclass(frozen=True)
class NMEResult:
    """Result of :func:`nme`.

    Attributes:
        per_sample: (N,) NME of each face (a fraction of the normaliser, not %).
        mean: mean of ``per_sample``.
        normalizer: (N,) the normalising distance ``d`` of each face in pixels.
        normalization: what ``d`` was ("inter_ocular", "inter_pupil", "box" or "given").
    """
    per_sample: object
    mean: float
    normalizer: object
    normalization: str

    def failure_rate(self, threshold=0.1):
        """Fraction of faces with NME strictly greater than ``threshold`` (e.g. FR@0.1 / @0.08)."""
        v = self.per_sample
        v = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        return float((v > threshold).mean()) if v.size else math.nan


def _box_xyxy(bbox, n, name, fmt):
    b = _as_array(bbox, name)
    if b.ndim == 1 and n == 1 and b.shape == (4,):
        b = b[None]
    _check_shape(b, (n, 4), name)
    if fmt == "xywh":
        b = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    elif fmt != "xyxy":
        raise ValueError(f"bbox_format must be 'xyxy' or 'xywh', got {fmt!r}")
    return b


def nme(pred, gt, normalization="inter_ocular", *, eye_indices=None, bbox=None, bbox_format="xyxy",
        visibility=None):
    """Normalised Mean Error for face landmarks: ``NME_i = mean_l ||p_l - g_l||_2 / d_i`` (a fraction).

    ``normalization`` chooses ``d_i`` (models.md §6.4):

    * ``"inter_ocular"`` (default): distance between the GT **outer eye corners**; by K: 300W 68 points
      -> 36 and 45, WFLW 98 -> 60 and 72, COFW 29 -> 8 and 9 (0-based); or ``eye_indices=(a, b)``.
    * ``"inter_pupil"``: distance between the GT eye centres, each the mean of a group of points: 68 ->
      36..41 and 42..47; 98 -> the pupil points 96 and 97; or ``eye_indices=((a, ...), (b, ...))``.
    * ``"box"`` (FAN / Bulat convention, AFLW2000-3D, LS3D-W): ``d = sqrt(w * h)`` of the GT box, taken
      from ``bbox`` ((N, 4) x1, y1, x2, y2; ``bbox_format="xywh"`` for COCO boxes) or, without ``bbox``,
      the tight box of the GT landmarks (labelled ones if ``visibility`` is given).
    * an array / tensor / number instead of a string: ``d`` itself, (N,) or scalar (e.g. AFLW's box_size).

    Inter-ocular and box NMEs are not comparable (box NME is smaller at equal error).

    Args:
        pred, gt: (N, L, 2) landmarks (x, y).
        visibility: optional (N, L); when given the mean over landmarks runs over labelled ones only
            (the normaliser still uses the GT points named above).

    Returns:
        :class:`NMEResult`; ``mean`` is the mean over faces of ``per_sample``.
    """
    like = _Like(pred)
    p, g = _pred_gt(pred, gt)
    n, k = g.shape[:2]
    lab = np.ones((n, k), dtype=bool)
    if visibility is not None:
        lab = _labelled(visibility)
        _check_shape(lab, (n, k), "visibility")

    if isinstance(normalization, str):
        kind = normalization
        if kind == "inter_ocular":
            idx = INTER_OCULAR_INDICES.get(k) if eye_indices is None else eye_indices
            if idx is None:
                raise ValueError(f"no default outer-eye-corner indices for K={k} landmarks "
                                 f"(known: {sorted(INTER_OCULAR_INDICES)}); pass eye_indices=(a, b) or "
                                 "use normalization='box'")
            try:
                a, b = (int(i) for i in idx)
            except (TypeError, ValueError):
                raise ValueError(f"eye_indices must be two landmark indices, got {idx!r}") from None
            groups = ((a,), (b,))
        elif kind == "inter_pupil":
            idx = INTER_PUPIL_INDICES.get(k) if eye_indices is None else eye_indices
            if idx is None:
                raise ValueError(f"no default eye-centre indices for K={k} landmarks "
                                 f"(known: {sorted(INTER_PUPIL_INDICES)}); pass eye_indices=((a, ...), (b, ...))")
            try:
                left, right = idx
                groups = tuple(tuple(int(i) for i in np.atleast_1d(grp)) for grp in (left, right))
            except (TypeError, ValueError):
                raise ValueError(f"eye_indices must be two groups of landmark indices, got {idx!r}") from None
        elif kind == "box":
            groups = None
        else:
            raise ValueError("normalization must be 'inter_ocular', 'inter_pupil', 'box' or an array of "
                             f"normalisers, got {normalization!r}")
        if groups is not None:
            for grp in groups:
                if not grp or any(not 0 <= i < k for i in grp):
                    raise ValueError(f"eye_indices {groups!r} out of range for K={k} landmarks")
            c0 = g[:, list(groups[0])].mean(axis=1)
            c1 = g[:, list(groups[1])].mean(axis=1)
            dd = c0 - c1
            d = np.sqrt(dd[:, 0] * dd[:, 0] + dd[:, 1] * dd[:, 1])
        else:
            if bbox is not None:
                bx = _box_xyxy(bbox, n, "bbox", bbox_format)
                w, h = bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]
            else:
                x = np.where(lab, g[..., 0], np.nan)
                y = np.where(lab, g[..., 1], np.nan)
                with np.errstate(invalid="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: caught below
                    w = np.nanmax(x, axis=1) - np.nanmin(x, axis=1)
                    h = np.nanmax(y, axis=1) - np.nanmin(y, axis=1)
            with np.errstate(invalid="ignore"):
                d = np.sqrt(w * h)
    else:
        kind = "given"
        d = _per_sample(normalization, n, "normalization")

    has = lab.any(axis=1)
    if not has.all():
        raise ValueError("visibility marks no landmark of some face as labelled; drop those faces")
    _check_normalizer(d, has, "normalization (the normaliser d)")
    e = p - g
    err = np.sqrt(e[..., 0] * e[..., 0] + e[..., 1] * e[..., 1])
    per = np.where(lab, err, 0.0).sum(axis=1) / lab.sum(axis=1) / d if n else np.zeros(0)
    return NMEResult(per_sample=like(per), mean=float(per.mean()) if n else math.nan,
                     normalizer=like(d), normalization=kind)


# ---------------------------------------------------------------------------------------------------
# OKS

def _sigmas_array(sigmas, k):
    s = _as_array(sigmas, "sigmas")
    if s.ndim != 1 or s.shape[0] != k:
        raise ValueError(f"sigmas must have shape ({k},) to match K={k} keypoints, got {tuple(s.shape)}")
    return s


def _oks(dxy, gxy, glab, area, bbox_xywh, sigmas):
    """cocoeval computeOks on broadcastable arrays: dxy, gxy (..., K, 2), glab (..., K), area (...),
    bbox_xywh (..., 4) -> (...). Pairwise: dxy[:, None] against gxy[None] gives cocoeval's (D, G) matrix.

    ``e = (dx^2 + dy^2) / (2 sigma)^2 / (area + eps) / 2``; OKS = mean of exp(-e) over the GT's labelled
    keypoints; a GT with none labelled measures each detected keypoint's distance to the GT box
    expanded by its own size on each side (x in [x - w, x + 2w], y in [y - h, y + 2h]), over all K.
    """
    var = (sigmas * 2) ** 2
    xd, yd = dxy[..., 0], dxy[..., 1]
    dx = xd - gxy[..., 0]
    dy = yd - gxy[..., 1]
    none = glab.sum(axis=-1) == 0
    if none.any():
        bb = bbox_xywh
        x0, x1 = (bb[..., 0] - bb[..., 2])[..., None], (bb[..., 0] + bb[..., 2] * 2)[..., None]
        y0, y1 = (bb[..., 1] - bb[..., 3])[..., None], (bb[..., 1] + bb[..., 3] * 2)[..., None]
        bdx = np.maximum(0, x0 - xd) + np.maximum(0, xd - x1)
        bdy = np.maximum(0, y0 - yd) + np.maximum(0, yd - y1)
        dx = np.where(none[..., None], bdx, dx)
        dy = np.where(none[..., None], bdy, dy)
    e = (dx ** 2 + dy ** 2) / var / (area[..., None] + _EPS) / 2
    use = glab | none[..., None]
    return np.where(use, np.exp(-e), 0.0).sum(axis=-1) / use.sum(axis=-1)


def _oks_matrix(dxy, gxy, glab, area, bbox_xywh, sigmas):
    """(D, K, 2) detections vs (G, K, 2) GTs -> (D, G) OKS."""
    return _oks(dxy[:, None], gxy[None], glab[None], area[None], bbox_xywh[None], sigmas)


def oks(pred, gt, visibility, area, sigmas=COCO_OKS_SIGMAS, *, bbox=None, bbox_format="xywh", pairwise=False):
    """Object Keypoint Similarity exactly as cocoeval's ``computeOks``.

    ``OKS = mean over the GT's labelled keypoints (v > 0) of exp(-e_i)``, with
    ``e_i = d_i^2 / (2 sigma_i)^2 / (area + eps) / 2`` (``eps = np.spacing(1)``, ``area`` the GT segment
    area, i.e. s^2). When the GT has **no** labelled keypoint, ``d_i`` is the distance from each predicted
    keypoint to the GT box expanded by its own size on each side (``[x - w, x + 2w] x [y - h, y + 2h]``,
    zero inside) and the mean runs over all K keypoints; this needs ``bbox``.

    Args:
        pred: (N, K, 2) or (N, K, 3) (a third column, e.g. COCO's v / score, is ignored); (K, 2|3) for one.
        gt: (N, K, 2|3) ground truth, same layout (pairwise: (G, K, 2|3)).
        visibility: (N, K) GT flags (labelled where > 0) or a boolean mask.
        area: (N,) or scalar GT area (pairwise: (G,)).
        sigmas: (K,) per-keypoint constants (default COCO's 17).
        bbox: (N, 4) GT boxes, COCO [x, y, w, h] (``bbox_format="xyxy"`` for x1, y1, x2, y2); only
            needed when some GT has no labelled keypoint.
        pairwise: False: OKS of pred[i] with gt[i] -> (N,). True: every prediction with every GT,
            pred (D, K, .), gt (G, K, .) -> (D, G) (cocoeval's ``ious`` matrix).

    Returns:
        A Python float for a single (K, .) pair; otherwise (N,) or (D, G) float64 (type of ``pred``).
    """
    like = _Like(pred)
    p = _as_array(pred, "pred")
    g = _as_array(gt, "gt")
    single = p.ndim == 2 and g.ndim == 2 and not pairwise
    if single:
        p, g = p[None], g[None]
    _check_points(p, "pred", last=(2, 3))
    _check_points(g, "gt", last=(2, 3))
    p, g = p[..., :2], g[..., :2]
    if pairwise:
        if p.shape[1] != g.shape[1]:
            raise ValueError(f"pred and gt must have the same K, got {p.shape[1]} and {g.shape[1]}")
    elif p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    ng, k = g.shape[:2]
    lab = _labelled(visibility)
    if single and lab.ndim == 1:
        lab = lab[None]
    _check_shape(lab, (ng, k), "visibility")
    ar = _per_sample(area, ng, "area")
    s = _sigmas_array(sigmas, k)
    if not np.isfinite(g[lab]).all():
        raise ValueError("gt has non-finite coordinates at labelled keypoints")
    if bbox_format not in ("xywh", "xyxy"):
        raise ValueError(f"bbox_format must be 'xywh' or 'xyxy', got {bbox_format!r}")
    bb = np.zeros((ng, 4))
    if not lab.any(axis=1).all():
        if bbox is None:
            raise ValueError("bbox is required: some ground truths have no labelled keypoint, and cocoeval "
                             "then measures OKS to the GT box")
        bb = _as_array(bbox, "bbox")
        if bb.ndim == 1 and ng == 1 and bb.shape == (4,):
            bb = bb[None]
        _check_shape(bb, (ng, 4), "bbox")
        if bbox_format == "xyxy":
            bb = np.concatenate([bb[:, :2], bb[:, 2:] - bb[:, :2]], axis=1)
    if pairwise:
        return like(_oks_matrix(p, g, lab, ar, bb, s))
    out = _oks(p, g, lab, ar, bb, s)
    return float(out[0]) if single else like(out)


# ---------------------------------------------------------------------------------------------------
# COCO keypoint AP (own implementation of COCOeval with iouType="keypoints")

def _kp_array(kp, k, name, allow_xy):
    a = _as_array(kp, name)
    if a.ndim == 1 and a.size == 3 * k:
        a = a.reshape(k, 3)
    if a.ndim != 2 or a.shape[0] != k or a.shape[1] not in ((2, 3) if allow_xy else (3,)):
        want = "(K, 2), (K, 3)" if allow_xy else "(K, 3)"
        raise ValueError(f"{name} must be a flat [x, y, v] * K list or of shape {want} with K={k}, "
                         f"got shape {tuple(a.shape)}")
    return a


def _get(d, key, name):
    if not isinstance(d, dict):
        raise TypeError(f"{name} must be a dict, got {type(d).__name__}")
    if key not in d:
        raise ValueError(f"{name} has no {key!r}")
    return d[key]


def _parse_gts(ground_truths, k):
    out = []
    for i, gt in enumerate(ground_truths):
        name = f"ground_truths[{i}]"
        kp = _kp_array(_get(gt, "keypoints", name), k, f"{name}['keypoints']", allow_xy=False)
        lab = kp[:, 2] > 0
        bbox = gt.get("bbox")
        if bbox is not None:
            bbox = _as_array(bbox, f"{name}['bbox']")
            _check_shape(bbox, (4,), f"{name}['bbox']")
        if "area" in gt:
            area = float(gt["area"])
        elif bbox is not None:
            area = float(bbox[2] * bbox[3])
        else:
            raise ValueError(f"{name} needs 'area' (or a 'bbox' to take it from)")
        if bbox is None:
            if not lab.any():
                raise ValueError(f"{name} has no labelled keypoint and no 'bbox' (OKS is then measured to the box)")
            bbox = np.zeros(4)
        n_kp = int(gt["num_keypoints"]) if "num_keypoints" in gt else int(lab.sum())
        crowd = int(bool(gt.get("iscrowd", 0)))
        out.append(dict(image_id=_get(gt, "image_id", name), category_id=gt.get("category_id", 1), xy=kp[:, :2],
                        lab=lab, bbox=bbox, area=area, crowd=crowd, ignore=bool(crowd or n_kp == 0)))
    return out


def _parse_dts(predictions, k):
    out = []
    for i, dt in enumerate(predictions):
        name = f"predictions[{i}]"
        kp = _kp_array(_get(dt, "keypoints", name), k, f"{name}['keypoints']", allow_xy=True)
        xy = kp[:, :2]
        score = _get(dt, "score", name)
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise TypeError(f"{name}['score'] must be a number, got {type(score).__name__}") from None
        # loadRes: a detection's area is that of the tight box of all its K keypoints
        area = float((xy[:, 0].max() - xy[:, 0].min()) * (xy[:, 1].max() - xy[:, 1].min()))
        out.append(dict(image_id=_get(dt, "image_id", name), category_id=dt.get("category_id", 1), xy=xy,
                        score=score, area=area))
    return out


def _evaluate_image(gts, dts, ious, area_rng, thresholds):
    """cocoeval evaluateImg for one (image, category, area range). ``dts`` sorted and truncated already."""
    lo, hi = area_rng
    g_ig = np.array([g["ignore"] or g["area"] < lo or g["area"] > hi for g in gts], dtype=bool)
    order = np.argsort(g_ig, kind="mergesort")  # non-ignored GTs first, stable
    g_ig = g_ig[order]
    crowd = [gts[j]["crowd"] for j in order]
    n_t, n_d, n_g = len(thresholds), len(dts), len(gts)
    dt_matched = np.zeros((n_t, n_d), dtype=bool)
    dt_ig = np.zeros((n_t, n_d), dtype=bool)
    if n_d and n_g:
        iou = ious[:, order].tolist()
        gig = g_ig.tolist()
        for ti, t in enumerate(thresholds):
            gt_matched = [False] * n_g
            for di in range(n_d):
                best, m = min(float(t), 1 - 1e-10), -1
                row = iou[di]
                for gi in range(n_g):
                    if gt_matched[gi] and not crowd[gi]:
                        continue  # a regular GT matches one detection only
                    if m > -1 and not gig[m] and gig[gi]:
                        break  # matched a regular GT already: ignored GTs (sorted last) cannot replace it
                    if row[gi] < best:
                        continue
                    best, m = row[gi], gi
                if m == -1:
                    continue
                dt_ig[ti, di] = gig[m]
                dt_matched[ti, di] = True
                gt_matched[m] = True
    out_rng = np.array([d["area"] < lo or d["area"] > hi for d in dts], dtype=bool)
    dt_ig |= ~dt_matched & out_rng[None, :]
    return dict(scores=np.array([d["score"] for d in dts], dtype=np.float64),
                matched=dt_matched, dt_ig=dt_ig, gt_ig=g_ig)


def _coco_eval_arrays(predictions, ground_truths, image_ids=None, sigmas=COCO_OKS_SIGMAS, max_dets=20,
                      area_ranges=COCO_KEYPOINT_AREA_RANGES):
    """Per-threshold precision (T, R, C, A) and recall (T, C, A) as cocoeval's accumulate (-1 = undefined)."""
    s = _as_array(sigmas, "sigmas")
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D array, got shape {tuple(s.shape)}")
    k = s.shape[0]
    if isinstance(predictions, dict) or isinstance(ground_truths, dict):
        raise TypeError("predictions and ground_truths must be lists of dicts (COCO results / annotations)")
    gts, dts = _parse_gts(ground_truths, k), _parse_dts(predictions, k)
    if image_ids is None:
        img_ids = sorted({g["image_id"] for g in gts} | {d["image_id"] for d in dts})
    else:
        img_ids = sorted(set(image_ids))
    cat_ids = sorted({g["category_id"] for g in gts} | {d["category_id"] for d in dts})
    by_key_g, by_key_d = {}, {}
    for g in gts:
        by_key_g.setdefault((g["image_id"], g["category_id"]), []).append(g)
    for d in dts:
        by_key_d.setdefault((d["image_id"], d["category_id"]), []).append(d)

    thresholds, rec_thrs = COCO_OKS_THRESHOLDS, COCO_RECALL_THRESHOLDS
    areas = list(area_ranges.values())
    n_t, n_r, n_c, n_a = len(thresholds), len(rec_thrs), len(cat_ids), len(areas)
    precision = -np.ones((n_t, n_r, n_c, n_a))
    recall = -np.ones((n_t, n_c, n_a))
    for ci, cat in enumerate(cat_ids):
        per_area = [[] for _ in areas]
        for img in img_ids:
            g = by_key_g.get((img, cat), [])
            d = by_key_d.get((img, cat), [])
            if not g and not d:
                continue
            d_order = np.argsort([-x["score"] for x in d], kind="mergesort")[:max_dets]
            d = [d[i] for i in d_order]
            ious = None
            if g and d:
                ious = _oks_matrix(np.stack([x["xy"] for x in d]), np.stack([x["xy"] for x in g]),
                                   np.stack([x["lab"] for x in g]), np.array([x["area"] for x in g]),
                                   np.stack([x["bbox"] for x in g]), s)
            for ai, rng in enumerate(areas):
                per_area[ai].append(_evaluate_image(g, d, ious, rng, thresholds))
        for ai, evs in enumerate(per_area):
            if not evs:
                continue
            scores = np.concatenate([e["scores"] for e in evs])
            order = np.argsort(-scores, kind="mergesort")
            matched = np.concatenate([e["matched"] for e in evs], axis=1)[:, order]
            dt_ig = np.concatenate([e["dt_ig"] for e in evs], axis=1)[:, order]
            n_pos = int(np.count_nonzero(~np.concatenate([e["gt_ig"] for e in evs])))
            if n_pos == 0:
                continue
            tp = np.cumsum(matched & ~dt_ig, axis=1).astype(np.float64)
            fp = np.cumsum(~matched & ~dt_ig, axis=1).astype(np.float64)
            for ti in range(n_t):
                nd = tp.shape[1]
                rc = tp[ti] / n_pos
                pr = tp[ti] / (fp[ti] + tp[ti] + _EPS)
                recall[ti, ci, ai] = rc[-1] if nd else 0.0
                pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope: monotone non-increasing
                idx = np.searchsorted(rc, rec_thrs, side="left")
                q = np.zeros(n_r)
                ok = idx < nd
                q[ok] = pr[idx[ok]]
                precision[ti, :, ci, ai] = q
    return precision, recall


def _mean_defined(x):
    x = x[x > -1]
    return float(x.mean()) if x.size else -1.0


def coco_keypoint_ap(predictions, ground_truths, *, image_ids=None, sigmas=COCO_OKS_SIGMAS, max_dets=20):
    """COCO keypoint AP / AR: an own implementation of ``COCOeval(iouType="keypoints")``.

    Input format (the COCO results / annotations JSON shapes):

    * ``predictions``: list of dicts ``{"image_id", "keypoints", "score"}`` (+ optional ``"category_id"``,
      default 1). ``keypoints`` is a flat ``[x, y, v] * K`` list or a (K, 3) / (K, 2) array / tensor; v is
      ignored. A prediction's area is that of the tight box of its K keypoints (as ``COCO.loadRes``).
    * ``ground_truths``: list of dicts ``{"image_id", "keypoints", "bbox", "area", "iscrowd",
      "num_keypoints", "id"}`` (+ optional ``"category_id"``, default 1). ``keypoints`` flat
      ``[x, y, v] * K`` or (K, 3); ``bbox`` COCO ``[x, y, w, h]`` (needed only for a GT with no labelled
      keypoint); ``area`` the segment area (defaults to w * h of the bbox); ``iscrowd`` defaults to 0,
      ``num_keypoints`` to the count of v > 0; ``id`` is not used (matches are tracked by position, so
      unlike cocoeval an id of 0 is harmless).

    The protocol follows cocoeval: per image and category, detections sorted by score (stable) and cut
    to ``max_dets`` = 20; OKS (:func:`oks`) against every GT; GTs with ``iscrowd`` or ``num_keypoints == 0``
    are ignored, and so, per area range, are GTs whose area is outside it (all [0, 1e10], medium
    [32^2, 96^2], large [96^2, 1e10], ends inclusive); for each OKS threshold 0.50:0.05:0.95 a greedy match
    (each detection in score order takes the not-yet-matched GT of highest OKS >= threshold, regular GTs
    before ignored ones, crowd GTs matchable repeatedly); detections matched to an ignored GT, and
    unmatched ones whose area is outside the range, are ignored. Precision is made monotone and read at
    101 recall points 0:0.01:1; AP is the mean over thresholds, recall points and categories, AR the mean
    of final recall over thresholds and categories.

    Args:
        image_ids: the images evaluated (cocoeval's ``params.imgIds``); default all image ids that occur
            in either list. Images with detections but no GT count (their detections are false positives).
        sigmas: (K,) OKS constants, default COCO's 17.
        max_dets: detections kept per image.

    Returns:
        dict of floats: ``AP, AP50, AP75, AP_M, AP_L, AR, AR50, AR75, AR_M, AR_L`` (the order of
        ``COCOeval.stats``), -1.0 where undefined (no non-ignored GT), as cocoeval.
    """
    precision, recall = _coco_eval_arrays(predictions, ground_truths, image_ids, sigmas, max_dets)
    t50 = int(np.argmin(np.abs(COCO_OKS_THRESHOLDS - 0.5)))
    t75 = int(np.argmin(np.abs(COCO_OKS_THRESHOLDS - 0.75)))
    a_all, a_m, a_l = 0, 1, 2
    return {
        "AP": _mean_defined(precision[..., a_all]),
        "AP50": _mean_defined(precision[t50, ..., a_all]),
        "AP75": _mean_defined(precision[t75, ..., a_all]),
        "AP_M": _mean_defined(precision[..., a_m]),
        "AP_L": _mean_defined(precision[..., a_l]),
        "AR": _mean_defined(recall[..., a_all]),
        "AR50": _mean_defined(recall[t50, ..., a_all]),
        "AR75": _mean_defined(recall[t75, ..., a_all]),
        "AR_M": _mean_defined(recall[..., a_m]),
        "AR_L": _mean_defined(recall[..., a_l]),
    }


def load_coco_keypoints(annotation_file, results_file):
    """Read a COCO keypoints annotation file and a results file for :func:`coco_keypoint_ap`.

    Args:
        annotation_file: path to a COCO annotations JSON (e.g. ``person_keypoints_val2017.json``); its
            annotations that carry ``"keypoints"`` are the ground truths, its ``"images"`` the image ids.
        results_file: path to a COCO results JSON: a list of ``{"image_id", "category_id", "keypoints",
            "score"}``.

    Returns:
        ``(predictions, ground_truths, image_ids)``; raises ValueError if a result names an image that
        is not in the annotation file (as ``COCO.loadRes`` does).
    """
    with open(os.fspath(annotation_file)) as f:
        ann = json.load(f)
    with open(os.fspath(results_file)) as f:
        res = json.load(f)
    if not isinstance(ann, dict) or "annotations" not in ann:
        raise ValueError(f"annotation_file {annotation_file!s} is not a COCO annotations file (no 'annotations')")
    if not isinstance(res, list):
        raise ValueError(f"results_file {results_file!s} must hold a JSON list of results")
    gts = [a for a in ann["annotations"] if "keypoints" in a]
    if "images" in ann:
        image_ids = sorted({im["id"] for im in ann["images"]})
    else:
        image_ids = sorted({a["image_id"] for a in gts})
    missing = {r.get("image_id") for r in res} - set(image_ids)
    if missing:
        raise ValueError(f"results_file has results for {len(missing)} image(s) not in annotation_file, "
                         f"e.g. {sorted(missing, key=str)[:3]}")
    return res, gts, image_ids


def coco_keypoint_ap_from_files(annotation_file, results_file, **kwargs):
    """:func:`coco_keypoint_ap` on the files read by :func:`load_coco_keypoints`."""
    preds, gts, image_ids = load_coco_keypoints(annotation_file, results_file)
    return coco_keypoint_ap(preds, gts, image_ids=image_ids, **kwargs)

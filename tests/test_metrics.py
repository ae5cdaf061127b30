"""fastpose.metrics: hand-computed cases, slow loop references, OKS transcription and pycocotools agreement."""
import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch

from fastpose import metrics as M
from fastpose.data.skeletons import COCO_OKS_SIGMAS

SIG = np.array(COCO_OKS_SIGMAS)


# ---------------------------------------------------------------------------------------------------
# slow, obviously-correct references

def ref_pck(pred, gt, vis, norm, alpha, strict, joints=None):
    n, k = len(vis), len(vis[0])
    joints = range(k) if joints is None else joints
    per, cnt, ok = [], [], []
    for j in range(k):
        c = o = 0
        for i in range(n):
            if vis[i][j] > 0:
                c += 1
                d = math.sqrt((pred[i][j][0] - gt[i][j][0]) ** 2 + (pred[i][j][1] - gt[i][j][1]) ** 2)
                r = d / norm[i]
                if (r < alpha) if strict else (r <= alpha):
                    o += 1
        cnt.append(c)
        ok.append(o)
        per.append(o / c if c else math.nan)
    tot = sum(cnt[j] for j in joints)
    weighted = sum(ok[j] for j in joints) / tot
    vals = [per[j] for j in joints if cnt[j] > 0]
    return per, cnt, weighted, sum(vals) / len(vals)


def ref_nme(pred, gt, d):
    out = []
    for i in range(len(pred)):
        s = 0.0
        for p, g in zip(pred[i], gt[i]):
            s += math.sqrt((p[0] - g[0]) ** 2 + (p[1] - g[1]) ** 2)
        out.append(s / len(pred[i]) / d[i])
    return out


def ref_oks(dt, gt, vis, area, bbox_xywh, sigmas):
    """Direct transcription of the cocoeval formula for one (detection, ground truth) pair."""
    k = len(sigmas)
    labelled = [j for j in range(k) if vis[j] > 0]
    x, y, w, h = bbox_xywh if bbox_xywh is not None else (0, 0, 0, 0)
    x0, x1, y0, y1 = x - w, x + 2 * w, y - h, y + 2 * h
    terms = []
    for j in range(k):
        if labelled:
            if j not in labelled:
                continue
            dx, dy = dt[j][0] - gt[j][0], dt[j][1] - gt[j][1]
        else:
            dx = max(0, x0 - dt[j][0]) + max(0, dt[j][0] - x1)
            dy = max(0, y0 - dt[j][1]) + max(0, dt[j][1] - y1)
        e = (dx ** 2 + dy ** 2) / (2 * sigmas[j]) ** 2 / (area + np.spacing(1)) / 2
        terms.append(math.exp(-e))
    return sum(terms) / len(terms)


# ---------------------------------------------------------------------------------------------------
# PCK

def _pck_case():
    gt = np.zeros((2, 3, 2))
    pred = gt.copy()
    pred[0, 0] = [3, 4]      # dist 5 = 0.5 * 10: exactly on the boundary
    pred[1, 0] = [6, 8]      # dist 10: wrong
    pred[0, 1] = [0, 1]      # dist 1: right
    pred[1, 1] = [100, 0]    # unlabelled below: ignored
    vis = np.array([[2, 1, 0], [2, 0, 0]])  # joint 2 never labelled
    return pred, gt, vis


def test_pck_hand_boundary_weighting_unlabelled():
    pred, gt, vis = _pck_case()
    r = M.pck(pred, gt, vis, 10.0, alpha=0.5)
    np.testing.assert_array_equal(r.counts, [2, 1, 0])
    np.testing.assert_allclose(r.per_joint[:2], [0.5, 1.0])
    assert math.isnan(r.per_joint[2])
    assert r.weighted_mean == pytest.approx(2 / 3) and r.mean == r.weighted_mean
    assert r.unweighted_mean == pytest.approx(0.75)
    np.testing.assert_array_equal(r.correct, [[True, True, False], [False, False, False]])
    s = M.pck(pred, gt, vis, 10.0, alpha=0.5, strict=True)  # < : the boundary joint fails
    np.testing.assert_allclose(s.per_joint[:2], [0.0, 1.0])
    assert s.mean == pytest.approx(1 / 3) and s.unweighted_mean == pytest.approx(0.5)
    assert not r.strict and s.strict and r.alpha == 0.5


def test_pck_bool_mask_per_sample_normalizer_and_joints():
    pred, gt, vis = _pck_case()
    a = M.pck(pred, gt, vis > 0, np.array([10.0, 20.0]), alpha=0.5)
    np.testing.assert_allclose(a.per_joint[:2], [1.0, 1.0])  # sample 1 now has L = 20: dist 10 is on the boundary
    b = M.pck(pred, gt, vis, 10.0, alpha=0.5, joints=[1])
    assert b.mean == 1.0 and b.unweighted_mean == 1.0 and b.joints == (1,)
    # a NaN prediction is wrong, not an error
    p = pred.copy()
    p[0, 1] = np.nan
    assert M.pck(p, gt, vis, 10.0, alpha=0.5).per_joint[1] == 0.0


def test_pck_types_follow_pred():
    pred, gt, vis = _pck_case()
    rt = M.pck(torch.tensor(pred, dtype=torch.float32), torch.tensor(gt), torch.tensor(vis), torch.tensor(10.0), 0.5)
    rn = M.pck(pred, gt, vis, 10.0, 0.5)
    assert isinstance(rt.per_joint, torch.Tensor) and rt.per_joint.dtype == torch.float64
    assert isinstance(rt.counts, torch.Tensor) and rt.correct.dtype == torch.bool
    assert isinstance(rn.per_joint, np.ndarray) and isinstance(rn.counts, np.ndarray)
    assert type(rt.mean) is float and type(rn.unweighted_mean) is float
    np.testing.assert_allclose(rt.per_joint.numpy(), rn.per_joint)


@pytest.mark.parametrize("strict", [False, True])
def test_pck_random_vs_loop(strict):
    rng = np.random.default_rng(11)
    n, k = 40, 9
    gt = rng.uniform(0, 100, (n, k, 2))
    pred = gt + rng.normal(0, 6, (n, k, 2))
    pred[3, 2] = gt[3, 2] + [6.0, 8.0]  # dist 10 = 0.2 * 50: boundary
    vis = rng.integers(0, 3, (n, k))
    norm = rng.uniform(20, 80, n)
    norm[3] = 50.0
    vis[3, 2] = 2
    for alpha in (0.05, 0.1, 0.2):
        r = M.pck(pred, gt, vis, norm, alpha=alpha, strict=strict)
        per, cnt, w, u = ref_pck(pred.tolist(), gt.tolist(), vis.tolist(), norm.tolist(), alpha, strict)
        np.testing.assert_allclose(r.per_joint, per, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(r.counts, cnt)
        assert r.weighted_mean == pytest.approx(w, abs=1e-12)
        assert r.unweighted_mean == pytest.approx(u, abs=1e-12)
    assert M.pck(pred, gt, vis, norm, 0.2, strict=strict).correct[3, 2] == (not strict)


def test_pck_errors_name_the_argument():
    pred, gt, vis = _pck_case()
    with pytest.raises(ValueError, match="pred"):
        M.pck(pred[..., :1], gt, vis, 1.0)
    with pytest.raises(ValueError, match="pred and gt"):
        M.pck(pred[:1], gt, vis, 1.0)
    with pytest.raises(ValueError, match="visibility"):
        M.pck(pred, gt, vis[:, :2], 1.0)
    with pytest.raises(ValueError, match="normalizer"):
        M.pck(pred, gt, vis, np.ones(3))
    with pytest.raises(ValueError, match="normalizer"):
        M.pck(pred, gt, vis, np.array([10.0, 0.0]))  # sample 1 has a labelled joint
    M.pck(pred, gt, np.array([[2, 1, 0], [0, 0, 0]]), np.array([10.0, np.nan]))  # masked out: fine
    with pytest.raises(TypeError, match="pred"):
        M.pck("pred", gt, vis, 1.0)
    with pytest.raises(TypeError, match="visibility"):
        M.pck(pred, gt, np.array([["a"] * 3] * 2), 1.0)


# ---------------------------------------------------------------------------------------------------
# normalisers

def test_normalisers_hand():
    gt = np.array([[[0.0, 0], [4, 1], [2, 9], [100, 100]]])
    np.testing.assert_allclose(M.bbox_size(gt, [[2, 1, 2, 0]]), [9.0])
    assert math.isnan(M.bbox_size(gt, [[0, 0, 0, 0]])[0])
    np.testing.assert_allclose(M.head_size([[1.0, 1.0, 4.0, 5.0]]), [3.0])           # 0.6 * 5
    np.testing.assert_allclose(M.head_size(np.array([[[1.0, 1.0], [4.0, 5.0]]])), [3.0])
    mp = np.zeros((2, 16, 2))
    mp[:, 13] = [3, 4]   # l_shoulder
    mp[:, 12] = [50, 50]  # r_shoulder (not used)
    co = np.zeros((1, 17, 2))
    co[:, 5] = [6, 8]    # l_shoulder; r_hip (12) at 0
    np.testing.assert_allclose(M.torso_diameter(mp), [5.0, 5.0])
    np.testing.assert_allclose(M.torso_diameter(mp, "mpii"), [5.0, 5.0])
    np.testing.assert_allclose(M.torso_diameter(co, "coco"), [10.0])
    vis = np.ones((2, 16))
    vis[1, 2] = 0
    t = M.torso_diameter(torch.tensor(mp), visibility=vis)
    assert isinstance(t, torch.Tensor) and t[0] == 5.0 and torch.isnan(t[1])
    with pytest.raises(ValueError, match="skeleton"):
        M.torso_diameter(np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match="head_boxes"):
        M.head_size(np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------------------
# PCKh

def _pckh_case():
    gt = np.zeros((2, 16, 2))
    gt[:, :, 0] = np.arange(16) * 20.0
    pred = gt.copy()
    pred[0, 0] += [3, 0]     # 3 / 6 = 0.5: the boundary (head size 6)
    pred[0, 6] += [10, 0]    # pelvis, excluded
    pred[0, 7] += [0, 10]    # thorax, excluded
    pred[0, 10] += [4, 0]    # wrong
    pred[1, 9] += [0, 1]     # right at 0.5, wrong at 0.1
    pred[1, 5] += [50, 0]    # unlabelled
    pred[1, 15] += [50, 0]   # unlabelled
    vis = np.full((2, 16), 2)
    vis[1, 5] = vis[1, 15] = 0
    boxes = np.array([[0.0, 0.0, 6.0, 8.0], [10.0, 10.0, 16.0, 18.0]])  # 0.6 * 10 = 6
    return pred, gt, vis, boxes


def test_pckh_hand_hrnet_default():
    pred, gt, vis, boxes = _pckh_case()
    r = M.pckh(pred, gt, vis, boxes)
    assert isinstance(r, M.PCKhResult) and r.weighted and not r.strict
    assert r.joints == tuple(j for j in range(16) if j not in (6, 7))
    assert r.mean == pytest.approx(25 / 26)            # 26 labelled among the 14 joints, 1 wrong
    assert r.unweighted_mean == pytest.approx(13.5 / 14)
    assert r.per_joint[0] == 1.0 and r.per_joint[10] == 0.5 and r.per_joint[6] == 0.5
    assert r.parts["Ankle"] == 1.0 and r.parts["Wrist"] == pytest.approx(0.75) and r.parts["Head"] == 1.0
    assert set(r.parts) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"}
    assert r.mean_at_0_1 == pytest.approx(23 / 26)     # joint 9 of sample 1 (1/6 > 0.1) fails too


def test_pckh_hand_bearpaw_and_overrides():
    pred, gt, vis, boxes = _pckh_case()
    b = M.pckh(pred, gt, vis, boxes, convention="bearpaw")
    assert b.strict and not b.weighted
    assert b.per_joint[0] == 0.5
    assert b.mean == pytest.approx(13 / 14) and b.weighted_mean == pytest.approx(24 / 26)
    assert b.parts["Ankle"] == pytest.approx(0.75)
    assert b.mean_at_0_1 == pytest.approx(12.5 / 14)   # joints 0, 9, 10 at 0.5, the other 11 at 1
    o = M.pckh(pred, gt, vis, boxes, strict=True)      # hrnet weighting, strict test
    assert o.mean == pytest.approx(24 / 26)
    e = M.pckh(pred, gt, vis, boxes, exclude=())       # all 16 joints
    assert e.mean == pytest.approx(27 / 30)            # pelvis and thorax of sample 0 now count
    with pytest.raises(ValueError, match="convention"):
        M.pckh(pred, gt, vis, boxes, convention="mmpose")
    with pytest.raises(ValueError, match="16"):
        M.pckh(pred[:, :15], gt[:, :15], vis[:, :15], boxes)
    with pytest.raises(ValueError, match="head_boxes"):
        M.pckh(pred, gt, vis, boxes[:1])
    bad = boxes.copy()
    bad[1] = np.nan
    with pytest.raises(ValueError, match="head_boxes"):
        M.pckh(pred, gt, vis, bad)


@pytest.mark.parametrize("convention", ["hrnet", "bearpaw"])
def test_pckh_random_vs_loop(convention):
    rng = np.random.default_rng(5)
    n = 60
    gt = rng.uniform(0, 200, (n, 16, 2))
    pred = gt + rng.normal(0, 5, (n, 16, 2))
    vis = (rng.uniform(size=(n, 16)) > 0.2).astype(np.int64)
    x1 = rng.uniform(0, 100, n)
    y1 = rng.uniform(0, 100, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(10, 40, n), y1 + rng.uniform(10, 40, n)], 1)
    hs = [0.6 * math.hypot(b[2] - b[0], b[3] - b[1]) for b in boxes]
    strict = convention == "bearpaw"
    joints = [j for j in range(16) if j not in (6, 7)]
    r = M.pckh(torch.tensor(pred), torch.tensor(gt), torch.tensor(vis), torch.tensor(boxes), convention=convention)
    per, cnt, w, u = ref_pck(pred.tolist(), gt.tolist(), vis.tolist(), hs, 0.5, strict, joints)
    np.testing.assert_allclose(r.per_joint.numpy(), per, atol=1e-12)
    assert r.mean == pytest.approx(u if strict else w, abs=1e-12)
    for name, idx in {"Head": (9,), "Knee": (1, 4), "Shoulder": (12, 13)}.items():
        assert r.parts[name] == pytest.approx(sum(per[i] for i in idx) / len(idx), abs=1e-12)
    _, _, w01, u01 = ref_pck(pred.tolist(), gt.tolist(), vis.tolist(), hs, 0.1, strict, joints)
    assert r.mean_at_0_1 == pytest.approx(u01 if strict else w01, abs=1e-12)


# ---------------------------------------------------------------------------------------------------
# NME

def test_nme_hand():
    gt = np.zeros((1, 68, 2))
    gt[0, :, 0] = np.linspace(0, 40, 68)
    gt[0, :, 1] = np.linspace(0, 10, 68) ** 2 / 10
    gt[0, 36] = [0, 0]
    gt[0, 45] = [10, 0]
    pred = gt.copy()
    pred[0, 0] += [3, 4]
    r = M.nme(pred, gt)
    assert r.normalization == "inter_ocular" and r.normalizer[0] == 10.0
    assert r.mean == pytest.approx(5 / 68 / 10) and r.per_sample[0] == pytest.approx(r.mean)
    b = M.nme(pred, gt, "box", bbox=[[0.0, 0.0, 40.0, 10.0]])         # sqrt(40 * 10) = 20
    assert b.normalizer[0] == pytest.approx(20.0) and b.mean == pytest.approx(5 / 68 / 20)
    bw = M.nme(pred, gt, "box", bbox=[[0.0, 0.0, 40.0, 10.0]], bbox_format="xywh")
    assert bw.normalizer[0] == pytest.approx(20.0)
    t = M.nme(pred, gt, "box")                                         # tight box of gt: 40 x 10
    assert t.normalizer[0] == pytest.approx(20.0)
    g = M.nme(pred, gt, 4.0)
    assert g.normalization == "given" and g.mean == pytest.approx(5 / 68 / 4)
    p = M.nme(pred, gt, "inter_pupil")
    c0, c1 = gt[0, 36:42].mean(0), gt[0, 42:48].mean(0)
    assert p.normalizer[0] == pytest.approx(np.linalg.norm(c0 - c1))
    v = np.ones((1, 68))
    v[0, 1] = 0
    assert M.nme(pred, gt, visibility=v).mean == pytest.approx(5 / 67 / 10)
    assert r.failure_rate(0.0) == 1.0 and r.failure_rate(0.1) == 0.0


def test_nme_wflw_eye_indices_and_errors():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0, 100, (4, 98, 2))
    pred = gt + rng.normal(0, 2, gt.shape)
    r = M.nme(torch.tensor(pred), torch.tensor(gt))
    d = np.linalg.norm(gt[:, 60] - gt[:, 72], axis=1)
    assert isinstance(r.per_sample, torch.Tensor)
    np.testing.assert_allclose(r.normalizer.numpy(), d)
    np.testing.assert_allclose(r.per_sample.numpy(), ref_nme(pred.tolist(), gt.tolist(), d), atol=1e-12)
    assert r.mean == pytest.approx(float(np.mean(ref_nme(pred.tolist(), gt.tolist(), d))))
    e = M.nme(pred, gt, eye_indices=(0, 1))
    np.testing.assert_allclose(e.normalizer, np.linalg.norm(gt[:, 0] - gt[:, 1], axis=1))
    np.testing.assert_allclose(M.nme(pred, gt, "inter_pupil").normalizer, np.linalg.norm(gt[:, 96] - gt[:, 97], axis=1))
    with pytest.raises(ValueError, match="eye_indices"):
        M.nme(pred[:, :19], gt[:, :19])
    with pytest.raises(ValueError, match="normalization"):
        M.nme(pred, gt, "diagonal")
    with pytest.raises(ValueError, match="bbox"):
        M.nme(pred, gt, "box", bbox=np.ones((3, 4)))
    with pytest.raises(ValueError, match="normalization"):
        M.nme(pred, gt, np.array([1.0, 1.0, 0.0, 1.0]))


def test_nme_300w_random_vs_loop():
    rng = np.random.default_rng(8)
    gt = rng.uniform(0, 256, (10, 68, 2))
    pred = gt + rng.normal(0, 3, gt.shape)
    d_io = [math.hypot(*(g[36] - g[45])) for g in gt]
    d_box = [math.sqrt((g[:, 0].max() - g[:, 0].min()) * (g[:, 1].max() - g[:, 1].min())) for g in gt]
    np.testing.assert_allclose(M.nme(pred, gt).per_sample, ref_nme(pred.tolist(), gt.tolist(), d_io), atol=1e-12)
    np.testing.assert_allclose(M.nme(pred, gt, "box").per_sample, ref_nme(pred.tolist(), gt.tolist(), d_box),
                               atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# OKS

def test_oks_hand():
    gt = np.zeros((17, 2))
    assert M.oks(gt, gt, np.full(17, 2), 100.0) == 1.0
    vis = np.zeros(17)
    vis[5] = 1
    pred = gt.copy()
    pred[5] = [3, 4]
    pred[0] = [1000, 0]  # not labelled in the GT: ignored
    want = math.exp(-25 / (2 * SIG[5]) ** 2 / (400 + np.spacing(1)) / 2)
    assert M.oks(pred, gt, vis, 400.0) == pytest.approx(want, rel=1e-15)
    # no labelled keypoint: distance to the box [x - w, x + 2w] x [y - h, y + 2h] = [-10, 50]^2, all 17 count
    p = np.full((17, 2), 20.0)
    p[3] = [60, 10]   # 10 right of the expanded box
    p[4] = [-12, 55]  # 2 left, 5 below
    want = (15 + math.exp(-100 / (2 * SIG[3]) ** 2 / (50 + np.spacing(1)) / 2)
            + math.exp(-29 / (2 * SIG[4]) ** 2 / (50 + np.spacing(1)) / 2)) / 17
    assert M.oks(p, gt, np.zeros(17), 50.0, bbox=[10, 10, 20, 20]) == pytest.approx(want, rel=1e-14)
    assert M.oks(p, gt, np.zeros(17), 50.0, bbox=[10, 10, 30, 30], bbox_format="xyxy") == pytest.approx(want, rel=1e-14)
    with pytest.raises(ValueError, match="bbox"):
        M.oks(p, gt, np.zeros(17), 50.0)
    with pytest.raises(ValueError, match="sigmas"):
        M.oks(p, gt, np.ones(17), 50.0, sigmas=SIG[:5])
    with pytest.raises(ValueError, match="visibility"):
        M.oks(p[None], gt[None], np.ones((1, 16)), 50.0)


def test_oks_random_vs_transcription():
    rng = np.random.default_rng(17)
    d_n, g_n = 7, 5
    gt = rng.uniform(0, 200, (g_n, 17, 2))
    vis = rng.integers(0, 3, (g_n, 17))
    vis[1] = 0  # one GT with no labelled keypoint
    area = rng.uniform(100, 20000, g_n)
    bbox = np.concatenate([gt.min(1), gt.max(1) - gt.min(1)], 1)
    dt = np.concatenate([gt + rng.normal(0, 8, gt.shape), rng.uniform(-100, 300, (2, 17, 2))])
    dt3 = np.concatenate([dt, np.ones((d_n, 17, 1))], 2)  # COCO triples: v ignored
    m = M.oks(torch.tensor(dt3), torch.tensor(gt), torch.tensor(vis), area, bbox=bbox, pairwise=True)
    assert isinstance(m, torch.Tensor) and m.shape == (d_n, g_n)
    for i in range(d_n):
        for j in range(g_n):
            assert m[i, j].item() == pytest.approx(ref_oks(dt[i], gt[j], vis[j], area[j], bbox[j], SIG), rel=1e-12)
    diag = M.oks(dt[:g_n], gt, vis, area, bbox=bbox)
    assert isinstance(diag, np.ndarray)
    np.testing.assert_allclose(diag, np.diag(m.numpy()[:g_n]), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------
# COCO keypoint AP

STATS = ["AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L"]


def _gt(image_id, kp, area, ann_id, vis=None, iscrowd=0, bbox=None):
    kp = np.asarray(kp, dtype=np.float64)
    vis = np.full(len(kp), 2) if vis is None else np.asarray(vis)
    lab = vis > 0
    if bbox is None:
        lo, hi = kp[lab].min(0), kp[lab].max(0)
        bbox = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
    flat = np.concatenate([kp, vis[:, None]], 1).ravel().tolist()
    return {"image_id": image_id, "category_id": 1, "keypoints": flat, "area": float(area), "bbox": bbox,
            "iscrowd": iscrowd, "num_keypoints": int(lab.sum()), "id": ann_id}


def _dt(image_id, kp, score):
    kp = np.asarray(kp, dtype=np.float64)
    flat = np.concatenate([kp, np.ones((len(kp), 1))], 1).ravel().tolist()
    return {"image_id": image_id, "category_id": 1, "keypoints": flat, "score": float(score)}


def _person(rng, size):
    return rng.uniform(0, size, 2) + rng.uniform(0, size, (17, 2))


def test_ap_perfect_predictions():
    rng = np.random.default_rng(1)
    gts, dts = [], []
    for img in range(1, 9):
        for _ in range(rng.integers(1, 4)):
            size = rng.choice([40.0, 150.0])
            kp = _person(rng, size)
            gts.append(_gt(img, kp, size * size, len(gts) + 1))
            dts.append(_dt(img, kp, rng.uniform()))
    r = M.coco_keypoint_ap(dts, gts)
    assert list(r) == STATS
    assert all(r[s] == pytest.approx(1.0) for s in STATS), r
    assert all(type(v) is float for v in r.values())


def _one_gt_case(target_oks=0.72):
    """One GT (only keypoint 0 labelled, area 5000: 'medium') and a detection at OKS ``target_oks``."""
    gt_kp = np.full((17, 2), 100.0)
    vis = np.zeros(17)
    vis[0] = 2
    area = 5000.0
    d = math.sqrt(-math.log(target_oks) * 2 * (2 * SIG[0]) ** 2 * (area + np.spacing(1)))
    dt_kp = gt_kp + np.linspace(-30, 30, 17)[:, None]  # spread: area 60 x 60 = 3600, 'medium'
    dt_kp[0] = gt_kp[0] + [d, 0]
    gt = _gt(1, gt_kp, area, 1, vis=vis, bbox=[70.0, 70.0, 60.0, 60.0])
    return gt, dt_kp


def test_ap_hand_thresholds_and_false_positive():
    gt, dt_kp = _one_gt_case(0.72)
    assert M.oks(dt_kp, np.array(gt["keypoints"]).reshape(17, 3)[:, :2], np.array(gt["keypoints"][2::3]),
                 gt["area"]) == pytest.approx(0.72)
    r = M.coco_keypoint_ap([_dt(1, dt_kp, 0.9)], [gt])
    # OKS 0.72 passes the thresholds 0.50 .. 0.70 (5 of 10)
    assert r["AP"] == pytest.approx(0.5) and r["AP50"] == pytest.approx(1.0) and r["AP75"] == 0.0
    assert r["AR"] == pytest.approx(0.5) and r["AR50"] == pytest.approx(1.0) and r["AR75"] == 0.0
    assert r["AP_M"] == pytest.approx(0.5) and r["AP_L"] == -1.0 and r["AR_L"] == -1.0
    # a higher-scored false positive with a 'large' area: precision 1/2 at every recall for 'all';
    # for 'medium' it is unmatched and outside the range, hence ignored
    fp = np.random.default_rng(0).uniform(500, 700, (17, 2))
    r = M.coco_keypoint_ap([_dt(1, dt_kp, 0.5), _dt(1, fp, 0.9)], [gt])
    assert r["AP"] == pytest.approx(0.25) and r["AP_M"] == pytest.approx(0.5) and r["AR"] == pytest.approx(0.5)
    # the false positive below the true positive in score: precision 1 up to the recall reached
    r = M.coco_keypoint_ap([_dt(1, dt_kp, 0.9), _dt(1, fp, 0.5)], [gt])
    assert r["AP"] == pytest.approx(0.5)
    # a detection on an image without GT is a false positive too
    r = M.coco_keypoint_ap([_dt(1, dt_kp, 0.5), _dt(2, fp, 0.9)], [gt])
    assert r["AP"] == pytest.approx(0.25)


def test_ap_ignored_ground_truths_and_max_dets():
    rng = np.random.default_rng(2)
    kp = _person(rng, 100)
    crowd_kp = kp + 300
    gts = [_gt(1, kp, 100 * 100, 1),
           _gt(1, crowd_kp, 100 * 100, 2, iscrowd=1),
           _gt(1, kp + 600, 100 * 100, 3, vis=np.zeros(17), bbox=[600.0, 600.0, 100.0, 100.0])]
    assert gts[2]["num_keypoints"] == 0
    # detections on the crowd GT (twice: crowds match repeatedly) and on the unlabelled GT are ignored
    dts = [_dt(1, crowd_kp, 0.99), _dt(1, crowd_kp + 1, 0.98), _dt(1, kp + 600, 0.97), _dt(1, kp, 0.5)]
    r = M.coco_keypoint_ap(dts, gts)
    assert r["AP"] == pytest.approx(1.0) and r["AR"] == pytest.approx(1.0)
    # the true positive is ranked 21st in its image: cut by maxDets = 20
    far = [_dt(1, kp + 2000 + 10 * i, 0.9) for i in range(20)]
    assert M.coco_keypoint_ap(far + [_dt(1, kp, 0.1)], gts[:1])["AR"] == 0.0
    assert M.coco_keypoint_ap(far + [_dt(1, kp, 0.1)], gts[:1], max_dets=21)["AR"] == pytest.approx(1.0)
    assert M.coco_keypoint_ap([], gts[:1])["AP"] == 0.0
    assert M.coco_keypoint_ap([], [])["AP"] == -1.0


def test_ap_errors():
    gt, dt_kp = _one_gt_case()
    with pytest.raises(ValueError, match=r"ground_truths\[0\]"):
        M.coco_keypoint_ap([], [dict(gt, keypoints=gt["keypoints"][:-3])])
    with pytest.raises(ValueError, match=r"predictions\[0\].*score"):
        M.coco_keypoint_ap([{"image_id": 1, "keypoints": dt_kp}], [gt])
    with pytest.raises(TypeError, match=r"predictions\[0\]"):
        M.coco_keypoint_ap([[1, 2, 3]], [gt])
    nobox = {k: v for k, v in gt.items() if k != "bbox"}
    nobox["keypoints"] = [0.0] * 51
    with pytest.raises(ValueError, match="bbox"):
        M.coco_keypoint_ap([], [nobox])


def _random_coco(seed, n_img=30):
    rng = np.random.default_rng(seed)
    gts, dts = [], []
    for img in range(1, n_img + 1):
        for _ in range(rng.integers(0, 5)):
            size = float(rng.uniform(15, 160))
            kp = _person(rng, size)
            vis = rng.choice([0, 1, 2], 17, p=[0.3, 0.2, 0.5])
            crowd = int(rng.uniform() < 0.05)
            if rng.uniform() < 0.08 or crowd:
                vis[:] = 0
            lo, hi = kp.min(0), kp.max(0)
            bbox = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
            area = size * size * float(rng.uniform(0.5, 1.0))
            gts.append(_gt(img, kp, area, len(gts) + 1, vis=vis, iscrowd=crowd, bbox=bbox))
            if rng.uniform() < 0.85:
                noise = rng.normal(0, size * rng.uniform(0.002, 0.06), (17, 2))
                dts.append(_dt(img, kp + noise, rng.uniform()))
        for _ in range(rng.integers(0, 3)):  # false positives, some on images without GT
            dts.append(_dt(img, _person(rng, rng.uniform(20, 150)) + rng.uniform(0, 300, 2), rng.uniform()))
    img = 3  # one crowded image: more than maxDets detections
    base = _person(rng, 120)
    gts.append(_gt(img, base, 120 * 120, len(gts) + 1))
    for _ in range(25):
        dts.append(_dt(img, base + rng.normal(0, 10, (17, 2)), rng.uniform()))
    return gts, dts, list(range(1, n_img + 1))


def _pycocotools_eval(gts, dts, image_ids):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": [{"id": i} for i in image_ids], "annotations": copy.deepcopy(gts),
                           "categories": [{"id": 1, "name": "person", "keypoints": [str(i) for i in range(17)]}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dts))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_random_vs_pycocotools(seed):
    pytest.importorskip("pycocotools")
    gts, dts, image_ids = _random_coco(seed)
    ev = _pycocotools_eval(gts, dts, image_ids)
    ours = M.coco_keypoint_ap(dts, gts, image_ids=image_ids)
    np.testing.assert_allclose([ours[s] for s in STATS], ev.stats, rtol=0, atol=1e-12)
    assert 0.05 < ours["AP"] < 0.95  # a non-trivial case
    prec, rec = M._coco_eval_arrays(dts, gts, image_ids)
    np.testing.assert_allclose(prec, ev.eval["precision"][..., 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(rec, ev.eval["recall"][..., 0], rtol=0, atol=1e-12)
    # OKS matrices, detections in cocoeval's order (score-sorted, cut to 20)
    for img in image_ids:
        ious = ev.ious[(img, 1)]
        if len(ious) == 0:
            continue
        g = [x for x in gts if x["image_id"] == img]
        d = sorted([x for x in dts if x["image_id"] == img], key=lambda x: -x["score"])[:20]
        gk = np.array([x["keypoints"] for x in g]).reshape(len(g), 17, 3)
        dk = np.array([x["keypoints"] for x in d]).reshape(len(d), 17, 3)
        mine = M.oks(dk, gk, gk[..., 2], [x["area"] for x in g], bbox=[x["bbox"] for x in g], pairwise=True)
        np.testing.assert_allclose(mine, ious, rtol=1e-12, atol=1e-15)


def test_ap_from_files(tmp_path):
    gts, dts, image_ids = _random_coco(4, n_img=8)
    ann = {"images": [{"id": i} for i in image_ids], "annotations": gts,
           "categories": [{"id": 1, "name": "person", "keypoints": []}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "res.json").write_text(json.dumps(dts))
    preds, g2, ids = M.load_coco_keypoints(tmp_path / "ann.json", str(tmp_path / "res.json"))
    assert ids == image_ids and len(g2) == len(gts) and len(preds) == len(dts)
    assert M.coco_keypoint_ap_from_files(tmp_path / "ann.json", tmp_path / "res.json") == \
        M.coco_keypoint_ap(dts, gts, image_ids=image_ids)
    (tmp_path / "bad.json").write_text(json.dumps(dts + [dict(dts[0], image_id=999)]))
    with pytest.raises(ValueError, match="image"):
        M.load_coco_keypoints(tmp_path / "ann.json", tmp_path / "bad.json")

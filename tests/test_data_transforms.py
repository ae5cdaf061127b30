"""fastpose.data.transforms: affine crops, warps, flips and the TopDownAffine augmentation."""
import math

import pytest
import torch
from conftest import DEVICES

from fastpose.data import skeletons
from fastpose.data.transforms import (TopDownAffine, affine_matrix, flip_keypoints, invert_affine,
                                      transform_boxes, transform_points, warp_image)


def _sample(K=16, H=90, W=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.stack([torch.rand(K, generator=g) * (W - 20) + 10,
                      torch.rand(K, generator=g) * (H - 20) + 10], -1)
    return dict(
        image=torch.rand(3, H, W, generator=g),
        keypoints=kp,
        visibility=torch.full((K,), 2, dtype=torch.int64),
        head_box=torch.tensor([30.0, 10.0, 50.0, 30.0]),
        bbox=torch.tensor([10.0, 10.0, W - 10.0, H - 10.0]),
        center=torch.tensor([(W - 1) / 2, (H - 1) / 2]),
        size=torch.tensor([W - 20.0, H - 20.0]),
        area=torch.tensor(float((W - 20) * (H - 20))),
        image_id=torch.tensor(3),
    )


def _blob(H, W, x, y, sigma=1.5):
    ys = torch.arange(H, dtype=torch.float64)[:, None]
    xs = torch.arange(W, dtype=torch.float64)[None, :]
    g = torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    return g.to(torch.float32).expand(3, H, W).clone()


def _centroid(img, near, radius=6):
    """Weighted centroid of channel 0 in a window around ``near`` (x, y)."""
    H, W = img.shape[-2:]
    x0, y0 = int(round(near[0])), int(round(near[1]))
    xs = slice(max(x0 - radius, 0), min(x0 + radius + 1, W))
    ys = slice(max(y0 - radius, 0), min(y0 + radius + 1, H))
    w = img[0, ys, xs].to(torch.float64)
    gy, gx = torch.meshgrid(torch.arange(ys.start, ys.stop, dtype=torch.float64),
                            torch.arange(xs.start, xs.stop, dtype=torch.float64), indexing="ij")
    return torch.stack([(w * gx).sum() / w.sum(), (w * gy).sum() / w.sum()])


def test_affine_matrix_region_corners_and_centre():
    m = affine_matrix((10.0, 20.0), (8.0, 6.0), 0.0, (16, 12))
    pts = torch.tensor([[6.0, 17.0], [14.0, 23.0], [10.0, 20.0]], dtype=torch.float64)
    out = transform_points(pts, m)
    torch.testing.assert_close(out, torch.tensor([[-0.5, -0.5], [15.5, 11.5], [7.5, 5.5]],
                                                 dtype=torch.float64))
    assert m.dtype == torch.float64 and m.shape == (2, 3)


def test_rotation_is_counter_clockwise_on_screen():
    m = affine_matrix((50.0, 50.0), (100.0, 100.0), 90.0, (100, 100))
    # A point right of the centre ends above it (smaller y) for +90 degrees.
    out = transform_points(torch.tensor([60.0, 50.0]), m)
    torch.testing.assert_close(out, torch.tensor([49.5, 39.5]), atol=1e-5, rtol=0)


def test_flip_mirrors_output():
    c, s = (40.0, 30.0), (50.0, 50.0)
    m = affine_matrix(c, s, 25.0, (64, 64))
    mf = affine_matrix(c, s, 25.0, (64, 64), flip=True)
    p = torch.rand(10, 2, dtype=torch.float64) * 60
    a, b = transform_points(p, m), transform_points(p, mf)
    torch.testing.assert_close(b[:, 0], 63 - a[:, 0])
    torch.testing.assert_close(b[:, 1], a[:, 1])


def test_affine_matrix_batched_and_inverse():
    c = torch.rand(5, 2) * 100
    s = torch.rand(5, 2) * 50 + 10
    r = torch.rand(5) * 80 - 40
    f = torch.tensor([True, False, True, False, False])
    m = affine_matrix(c, s, r, (48, 64), flip=f)
    assert m.shape == (5, 2, 3)
    for i in range(5):
        torch.testing.assert_close(m[i], affine_matrix(c[i], s[i], float(r[i]), (48, 64), bool(f[i])))
    p = torch.rand(5, 7, 2, dtype=torch.float64) * 100
    back = transform_points(transform_points(p, m), invert_affine(m))
    torch.testing.assert_close(back, p)


def test_transform_boxes_axis_aligned_and_nan():
    m = affine_matrix((0.0, 0.0), (2.0, 2.0), 45.0, (2, 2))
    box = transform_boxes(torch.tensor([-1.0, -1.0, 1.0, 1.0]), m)
    h = math.sqrt(2)
    torch.testing.assert_close(box, torch.tensor([0.5 - h, 0.5 - h, 0.5 + h, 0.5 + h]))
    assert torch.isnan(transform_boxes(torch.full((4,), math.nan), m)).all()
    mf = affine_matrix((5.0, 5.0), (10.0, 10.0), 0.0, (10, 10), flip=True)
    b = transform_boxes(torch.tensor([1.0, 2.0, 3.0, 4.0]), mf)
    assert b[0] <= b[2] and b[1] <= b[3]


def test_identity_crop_reproduces_image_exactly():
    s = _sample(H=37, W=53)
    t = TopDownAffine(input_size=(53, 37), train=False, padding=1.0)
    del s["center"], s["size"]  # the whole image
    out = t(s)
    assert torch.equal(out["image"], s["image"])
    assert torch.equal(out["keypoints"], s["keypoints"])
    assert torch.equal(out["visibility"], s["visibility"])
    torch.testing.assert_close(out["affine"], torch.eye(2, 3))
    assert out["affine"].dtype == torch.float32
    # An explicit whole-pixel shifted crop copies the pixels too, and outside is the fill.
    img = s["image"]
    m = affine_matrix((20.5, 10.5), (10.0, 6.0), 0.0, (10, 6))
    torch.testing.assert_close(warp_image(img, m, (10, 6)), img[:, 8:14, 16:26], atol=0, rtol=0)
    m = affine_matrix((0.5, 0.5), (10.0, 6.0), 0.0, (10, 6))
    out = warp_image(img, m, (10, 6), fill=0.25)
    assert torch.equal(out[:, 2:, 4:], img[:, :4, :6])
    assert (out[:, :2] == 0.25).all() and (out[:, :, :4] == 0.25).all()


def test_general_warp_matches_copy_for_subpixel_noise():
    # A crop a hair away from a whole-pixel shift goes through grid_sample: close to the copy.
    img = torch.rand(3, 40, 60)
    m = affine_matrix((29.5, 19.5), (60.0, 40.0), 1e-4, (60, 40))
    torch.testing.assert_close(warp_image(img, m, (60, 40)), img, atol=1e-3, rtol=0)
    # float64 path
    out = warp_image(img.double(), m, (60, 40))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("rotation,scale,flip", [(0.0, 1.0, False), (30.0, 0.8, False),
                                                 (-35.0, 1.25, True), (90.0, 1.0, True)])
def test_point_transform_matches_image_warp(rotation, scale, flip):
    H, W = 80, 100
    pts = [(37.3, 41.7), (60.6, 30.2)]
    t = TopDownAffine(input_size=(64, 64), skeleton="mpii", train=False)
    for x, y in pts:
        s = dict(image=_blob(H, W, x, y), keypoints=torch.tensor([[x, y]] * 16),
                 visibility=torch.full((16,), 2), center=torch.tensor([50.0, 40.0]),
                 size=torch.tensor([60.0, 60.0]))
        out = t.apply(s, scale=scale, rotation=rotation, flip=flip)
        target = out["keypoints"][0].to(torch.float64)
        found = _centroid(out["image"], target.tolist())
        assert torch.linalg.norm(found - target) < 0.05, (found, target)  # measured < 0.01


def test_flip_keypoints_twice_is_identity_and_swaps_pairs():
    for sk in (skeletons.MPII, skeletons.COCO):
        K = sk.num_joints
        kp = torch.rand(4, K, 2) * 50
        vis = torch.randint(0, 3, (4, K))
        fkp, fvis = flip_keypoints(kp, vis, 64, sk)
        for a, b in sk.flip_pairs:
            torch.testing.assert_close(fkp[:, a, 0], 63 - kp[:, b, 0])
            torch.testing.assert_close(fkp[:, a, 1], kp[:, b, 1])
            assert torch.equal(fvis[:, a], vis[:, b]) and torch.equal(fvis[:, b], vis[:, a])
        kp2, vis2 = flip_keypoints(fkp, fvis, 64, sk.name)
        torch.testing.assert_close(kp2, kp)
        assert torch.equal(vis2, vis)
    with pytest.raises(ValueError):
        flip_keypoints(torch.zeros(17, 2), torch.zeros(17), 10, "mpii")


def test_topdown_flip_equals_mirrored_crop():
    s = _sample(K=17)
    t = TopDownAffine(input_size=(48, 64), skeleton="coco", train=False)
    plain = t.apply(s, scale=1.1, rotation=12.0)
    flipped = t.apply(s, scale=1.1, rotation=12.0, flip=True)
    torch.testing.assert_close(flipped["image"], plain["image"].flip(-1), atol=1e-4, rtol=0)
    kp, vis = flip_keypoints(plain["keypoints"], plain["visibility"], 48, "coco")
    torch.testing.assert_close(flipped["keypoints"], kp, atol=1e-4, rtol=0)
    assert torch.equal(flipped["visibility"], vis)


def test_sample_contract_of_output():
    s = _sample()
    t = TopDownAffine(input_size=(64, 48), train=True)
    out = t(s)
    assert out["image"].shape == (3, 48, 64) and out["image"].dtype == torch.float32
    assert out["keypoints"].shape == (16, 2) and out["keypoints"].dtype == torch.float32
    assert out["visibility"].dtype == torch.int64
    assert out["head_box"].shape == (4,) and out["bbox"].shape == (4,)
    assert out["affine"].shape == (2, 3) and out["affine"].dtype == torch.float32
    for key in ("center", "size", "area", "image_id"):
        assert out[key] is s[key]
    # keypoints = the affine applied to the source keypoints.
    torch.testing.assert_close(out["keypoints"], transform_points(s["keypoints"], out["affine"])[
        torch.tensor(skeletons.MPII.flip_index) if bool(torch.det(out["affine"][:, :2]) < 0)
        else torch.arange(16)], atol=1e-3, rtol=0)


def test_region_aspect_and_padding():
    t = TopDownAffine(input_size=(192, 256), train=False, padding=1.25)
    s = _sample()
    s["center"], s["size"] = torch.tensor([60.0, 45.0]), torch.tensor([30.0, 80.0])
    c, size = t.region(s)
    torch.testing.assert_close(size, torch.tensor([60.0 * 1.25, 80.0 * 1.25], dtype=torch.float64))
    s["size"] = torch.tensor([90.0, 40.0])
    _, size = t.region(s)
    torch.testing.assert_close(size, torch.tensor([90.0 * 1.25, 120.0 * 1.25], dtype=torch.float64))
    out = t(s)
    # scale: output pixels per source pixel = 192 / (90 * 1.25)
    torch.testing.assert_close(out["affine"][0, 0], torch.tensor(192 / 112.5))


def test_train_ranges_over_many_draws():
    t = TopDownAffine(input_size=(32, 32), rotation=40.0, scale=(0.7, 1.3), flip_prob=0.5,
                      rotation_prob=0.6, generator=torch.Generator().manual_seed(1))
    draws = [t.sample_params() for _ in range(4000)]
    rot = torch.tensor([d["rotation"] for d in draws])
    sc = torch.tensor([d["scale"] for d in draws])
    fl = torch.tensor([d["flip"] for d in draws], dtype=torch.float64)
    assert rot.abs().max() <= 40.0 and rot.abs().max() > 38.0
    assert 0.55 < (rot != 0).double().mean() < 0.65
    assert abs(rot[rot != 0].mean()) < 2.5
    assert sc.min() >= 0.7 and sc.max() <= 1.3 and sc.min() < 0.71 and sc.max() > 1.29
    assert 0.46 < fl.mean() < 0.54
    # The affine of a real call carries them: |det| = (W / (size * scale))^2, angle = rotation.
    s = _sample(H=40, W=40)
    s["size"] = torch.tensor([32.0, 32.0]) / 1.25
    for _ in range(20):
        out = t(s)
        a = out["affine"][:, :2].double()
        det = torch.det(a)
        k = math.sqrt(abs(float(det)))  # = 1 / scale
        assert 0.7 - 1e-5 <= 1 / k <= 1.3 + 1e-5
        sgn = -1.0 if det < 0 else 1.0
        angle = math.degrees(math.atan2(float(a[0, 1]) * sgn, float(a[0, 0]) * sgn))
        assert abs(angle) <= 40.0 + 1e-4


def test_train_uses_global_rng_when_no_generator():
    t = TopDownAffine(input_size=(32, 32))
    s = _sample()
    torch.manual_seed(5)
    a = t(s)
    torch.manual_seed(5)
    b = t(s)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["affine"], b["affine"])


def test_visibility_zeroed_outside():
    s = _sample(H=100, W=100)
    s["keypoints"] = torch.tensor([[50.0, 50.0], [5.0, 50.0], [94.0, 50.0], [50.0, 1.0]] + [[50.0, 50.0]] * 12)
    s["visibility"] = torch.tensor([2, 2, 1, 2] + [0] + [2] * 11)
    s["center"], s["size"] = torch.tensor([50.0, 50.0]), torch.tensor([80.0, 80.0])
    t = TopDownAffine(input_size=(64, 64), train=False, padding=1.0)
    out = t(s)
    assert out["visibility"][:5].tolist() == [2, 0, 0, 0, 0]
    # edges: the output spans [-0.5, 63.5); a point exactly at -0.5 is inside, at 63.5 outside.
    m = out["affine"].double()
    inv = invert_affine(m)
    s["keypoints"][1] = transform_points(torch.tensor([-0.5, 10.0], dtype=torch.float64), inv).float()
    s["keypoints"][2] = transform_points(torch.tensor([63.5, 10.0], dtype=torch.float64), inv).float()
    s["visibility"][2] = 2
    out = t(s)
    assert out["visibility"][1:3].tolist() == [2, 0]


def test_eval_mode_is_deterministic():
    s = _sample()
    t = TopDownAffine(input_size=(48, 64), train=False)
    a, b = t(s), t(s)
    for key in ("image", "keypoints", "visibility", "affine", "bbox"):
        assert torch.equal(a[key], b[key])
    assert t.sample_params() == dict(scale=1.0, rotation=0.0, flip=False)


def test_batch_warp_matches_single():
    imgs = torch.rand(3, 3, 30, 40)
    c = torch.tensor([[20.0, 15.0], [10.0, 12.0], [25.5, 14.5]])
    s = torch.tensor([[30.0, 30.0], [20.0, 20.0], [40.0, 30.0]])
    m = affine_matrix(c, s, torch.tensor([10.0, -30.0, 0.0]), (24, 24),
                      flip=torch.tensor([False, True, False]))
    batch = warp_image(imgs, m, (24, 24), fill=(0.1, 0.2, 0.3))
    assert batch.shape == (3, 3, 24, 24)
    for i in range(3):
        torch.testing.assert_close(batch[i], warp_image(imgs[i], m[i], (24, 24), fill=(0.1, 0.2, 0.3)))
    shared = warp_image(imgs, m[0], (24, 24))
    torch.testing.assert_close(shared[2], warp_image(imgs[2], m[0], (24, 24)))


def test_warp_fill_value_outside():
    img = torch.ones(3, 10, 10)
    m = affine_matrix((4.5, 4.5), (30.0, 30.0), 20.0, (30, 30))
    out = warp_image(img, m, (30, 30), fill=0.5)
    assert out[:, 0, 0].tolist() == [0.5] * 3 and out[:, 15, 15].tolist() == [1.0] * 3
    assert out.min() >= 0.5 - 1e-6 and out.max() <= 1.0 + 1e-6


def test_errors():
    with pytest.raises(ValueError):
        affine_matrix((0, 0), (0, 10), 0, (10, 10))
    with pytest.raises(ValueError):
        affine_matrix((0, 0), (10, 10), 0, (10, 0))
    with pytest.raises(TypeError):
        warp_image(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.eye(2, 3), (4, 4))
    with pytest.raises(ValueError):
        warp_image(torch.zeros(2, 3, 4, 4), torch.eye(2, 3).expand(3, 2, 3), (4, 4))
    with pytest.raises(ValueError):
        TopDownAffine(flip_prob=1.5)
    with pytest.raises(KeyError):
        TopDownAffine()(dict(keypoints=torch.zeros(16, 2)))


@pytest.mark.parametrize("device", DEVICES)
def test_warp_on_device_matches_cpu(device):
    imgs = torch.rand(2, 3, 30, 40)
    m = affine_matrix(torch.tensor([[20.0, 15.0], [19.5, 14.5]]), torch.tensor([[30.0, 30.0], [40.0, 30.0]]),
                      torch.tensor([15.0, 0.0]), (24, 24), flip=torch.tensor([True, False]))
    ref = warp_image(imgs, m, (24, 24), fill=0.5)
    out = warp_image(imgs.to(device), m.to(device), (24, 24), fill=0.5)
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), ref, atol=1e-5, rtol=0)
    pts = torch.rand(2, 5, 2, device=device) * 30
    torch.testing.assert_close(transform_points(pts, m.to(device)).cpu(), transform_points(pts.cpu(), m))

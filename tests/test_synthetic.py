"""SyntheticPoses: determinism, the sample contract, visibility flags, skeleton options, caching."""
import pytest
import torch

from fastpose.data import COCO, MPII, SyntheticPoses
from fastpose.data.skeletons import get as get_skeleton


def test_deterministic_per_seed_and_index():
    a, b = SyntheticPoses(8, image_size=64, seed=3), SyntheticPoses(8, image_size=64, seed=3)
    for i in (0, 5, 7, -1):
        sa, sb = a[i], b[i]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    c = SyntheticPoses(8, image_size=64, seed=4)
    assert not torch.equal(a[0]["image"], c[0]["image"])
    assert not torch.equal(a[0]["image"], a[1]["image"])


@pytest.mark.parametrize("size", [64, (96, 64), 37])
def test_sample_contract(size):
    ds = SyntheticPoses(6, image_size=size, seed=1)
    w, h = (size, size) if isinstance(size, int) else size
    for s in ds:
        assert s["image"].shape == (3, h, w) and s["image"].dtype == torch.float32
        assert 0 <= float(s["image"].min()) and float(s["image"].max()) <= 1
        assert float(s["image"].std()) > 0.02  # textured, not blank
        assert s["keypoints"].shape == (16, 2) and s["keypoints"].dtype == torch.float32
        assert s["visibility"].shape == (16,) and s["visibility"].dtype == torch.int64
        assert set(s["visibility"].tolist()) <= {0, 1, 2}
        for k, shape in (("head_box", (4,)), ("bbox", (4,)), ("center", (2,)), ("size", (2,))):
            assert s[k].shape == shape and torch.isfinite(s[k]).all(), k
        assert s["area"].dim() == 0 and float(s["area"]) > 0
        x1, y1, x2, y2 = s["head_box"].tolist()
        assert x2 > x1 and y2 > y1


def test_visibility_follows_the_frame_and_occlusion():
    ds = SyntheticPoses(200, image_size=64, seed=0, truncation=0.5)
    kp = torch.stack([s["keypoints"] for s in ds])
    vis = torch.stack([s["visibility"] for s in ds])
    inside = (kp >= -0.5).all(-1) & (kp[..., 0] < 63.5) & (kp[..., 1] < 63.5)
    assert torch.equal(vis > 0, inside)  # 0 exactly for truncated (out-of-frame) joints
    frac = [(vis == k).float().mean().item() for k in range(3)]
    assert frac[0] > 0.02 and frac[1] > 0.01 and frac[2] > 0.7, frac
    # head box holds the head joints
    hb = torch.stack([s["head_box"] for s in ds])
    for j in (MPII.index("head_top"), MPII.index("upper_neck")):
        p = kp[:, j]
        assert ((p >= hb[:, :2] - 1e-4) & (p <= hb[:, 2:] + 1e-4)).all()


def test_left_right_layout_is_consistent():
    # The figure faces the viewer: in the torso frame the right hip is on the image's left.
    ds = SyntheticPoses(100, image_size=64, seed=2)
    for s in ds:
        kp = s["keypoints"]
        up = kp[MPII.index("thorax")] - kp[MPII.index("pelvis")]
        r = kp[MPII.index("r_hip")] - kp[MPII.index("pelvis")]
        cross = up[0] * r[1] - up[1] * r[0]  # image y points down
        assert cross < 0


def test_coco_skeleton():
    s = SyntheticPoses(3, image_size=64, skeleton="coco", seed=0)[2]
    assert s["keypoints"].shape == (17, 2) and s["visibility"].shape == (17,)
    m = SyntheticPoses(3, image_size=64, skeleton="mpii", seed=0)[2]
    # shared joints sit at the same place in both layouts
    for name in ("l_wrist", "r_ankle", "l_shoulder"):
        assert torch.equal(s["keypoints"][COCO.index(name)], m["keypoints"][MPII.index(name)])
    assert get_skeleton("coco") is COCO


def test_cache_and_transform():
    calls = []

    def tf(sample):
        calls.append(1)
        return {**sample, "tag": torch.tensor(1)}

    ds = SyntheticPoses(4, image_size=48, seed=5, cache=True, transform=tf)
    first, again = ds[1], ds[1]
    assert torch.equal(first["image"], again["image"]) and len(calls) == 2 and "tag" in first
    plain = SyntheticPoses(4, image_size=48, seed=5)[1]
    assert (first["image"] - plain["image"]).abs().max() <= 0.5 / 255 + 1e-6  # uint8 storage
    assert torch.equal(first["keypoints"], plain["keypoints"])


def test_dataloader_collate():
    loader = torch.utils.data.DataLoader(SyntheticPoses(10, image_size=32, seed=0), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["keypoints"].shape == (4, 16, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        SyntheticPoses(4, image_size=8)
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticPoses(-1)
    with pytest.raises(ValueError, match="skeleton"):
        SyntheticPoses(4, skeleton="lsp")
    with pytest.raises(ValueError, match="truncation"):
        SyntheticPoses(4, truncation=2)
    with pytest.raises(IndexError):
        SyntheticPoses(4, image_size=32)[4]
    assert len(SyntheticPoses(0)) == 0

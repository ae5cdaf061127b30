"""fastpose.data.coco / fastpose.data.mpii readers on small fixtures written to tmp_path."""
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from fastpose.data.coco import COCODetections, COCOKeypoints, coco_box_to_xyxy  # noqa: E402
from fastpose.data.mpii import MPIIAnnotations  # noqa: E402
from fastpose.data.transforms import TopDownAffine, load_image  # noqa: E402


def _write_png(path, w, h, seed):
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _coco_kp(points):
    """17 (x, y, v) -> COCO's flat list; missing ones as (0, 0, 0)."""
    flat = []
    for i in range(17):
        x, y, v = points.get(i, (0, 0, 0))
        flat += [x, y, v]
    return flat


@pytest.fixture
def coco(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    arrays = {1: _write_png(img_dir / "a.png", 64, 48, 1), 2: _write_png(img_dir / "b.png", 40, 50, 2)}
    person = _coco_kp({0: (20, 10, 2), 5: (15, 20, 1), 6: (25, 20, 2), 11: (18, 35, 2)})
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.png", "width": 40, "height": 50}],
        "annotations": [
            {"id": 10, "image_id": 1, "keypoints": person, "num_keypoints": 4,
             "bbox": [10.0, 5.0, 20.0, 36.0], "area": 400.5, "iscrowd": 0, "category_id": 1},
            {"id": 11, "image_id": 1, "keypoints": _coco_kp({}), "num_keypoints": 0,  # no keypoints
             "bbox": [40.0, 5.0, 10.0, 20.0], "area": 150.0, "iscrowd": 0, "category_id": 1},
            {"id": 12, "image_id": 1, "keypoints": _coco_kp({1: (50, 30, 2)}), "num_keypoints": 1,
             "bbox": [30.0, 20.0, 30.0, 25.0], "area": 600.0, "iscrowd": 1, "category_id": 1},  # crowd
            {"id": 13, "image_id": 2, "keypoints": _coco_kp({16: (30, 45, 2), 15: (10, 44, 1)}),
             "num_keypoints": 2, "bbox": [5.0, 10.0, 40.0, 45.0], "area": 900.0, "iscrowd": 0,
             "category_id": 1},  # box clipped to the image: x2 = 45 -> 40, y2 = 55 -> 50
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    ann = tmp_path / "person_keypoints.json"
    ann.write_text(json.dumps(data))
    return dict(ann=ann, img_dir=img_dir, data=data, arrays=arrays)


def test_load_image_is_rgb_float(tmp_path):
    arr = _write_png(tmp_path / "x.png", 7, 5, 0)
    img = load_image(tmp_path / "x.png")
    assert img.shape == (3, 5, 7) and img.dtype == torch.float32
    assert torch.equal(img, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    Image.fromarray(arr[..., 0]).save(tmp_path / "g.png")  # greyscale -> RGB
    assert load_image(tmp_path / "g.png").shape == (3, 5, 7)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_coco_items(coco):
    ds = COCOKeypoints(coco["ann"], coco["img_dir"])
    assert len(ds) == 2  # the zero-keypoint and the crowd instances are skipped
    s = ds[0]
    assert s["image"].shape == (3, 48, 64) and s["image"].dtype == torch.float32
    assert torch.equal(s["image"], torch.from_numpy(coco["arrays"][1]).permute(2, 0, 1).float() / 255)
    assert s["keypoints"].shape == (17, 2) and s["keypoints"].dtype == torch.float32
    assert s["keypoints"][0].tolist() == [20.0, 10.0] and s["keypoints"][11].tolist() == [18.0, 35.0]
    assert s["visibility"].dtype == torch.int64
    vis = [0] * 17
    vis[0], vis[5], vis[6], vis[11] = 2, 1, 2, 2
    assert s["visibility"].tolist() == vis
    assert torch.isnan(s["head_box"]).all() and s["head_box"].shape == (4,)
    # box edges -> pixel centres: [10, 30] x [5, 41] -> x1 y1 x2 y2 = 9.5, 4.5, 29.5, 40.5
    assert s["bbox"].tolist() == [9.5, 4.5, 29.5, 40.5]
    assert s["center"].tolist() == [19.5, 22.5] and s["size"].tolist() == [20.0, 36.0]
    assert s["area"].item() == pytest.approx(400.5) and s["area"].shape == ()
    assert s["image_id"].item() == 1 and s["image_id"].dtype == torch.int64
    assert s["ann_id"].item() == 10
    s = ds[1]
    assert s["image_id"].item() == 2 and s["ann_id"].item() == 13
    assert s["bbox"].tolist() == [4.5, 9.5, 39.5, 49.5] and s["size"].tolist() == [35.0, 40.0]
    assert s["visibility"][15].item() == 1 and s["visibility"][16].item() == 2
    with pytest.raises(IndexError):
        ds[2]


def test_coco_filters(coco):
    assert len(COCOKeypoints(coco["ann"], coco["img_dir"], include_crowd=True)) == 3
    ds = COCOKeypoints(coco["ann"], coco["img_dir"], min_keypoints=0, include_crowd=True)
    assert ds.ann_ids.tolist() == [10, 11, 12, 13]
    assert COCOKeypoints(coco["ann"], coco["img_dir"], min_keypoints=3).ann_ids.tolist() == [10]


def test_coco_box_conversion():
    assert coco_box_to_xyxy([0, 0, 10, 20]) == (-0.5, -0.5, 9.5, 19.5)
    assert coco_box_to_xyxy([-5, -5, 10, 10], 100, 100) == (-0.5, -0.5, 4.5, 4.5)
    assert coco_box_to_xyxy([120, 5, 10, 10], 100, 100) is None


def test_coco_errors(coco, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        COCOKeypoints(tmp_path / "missing.json", coco["img_dir"])
    with pytest.raises(FileNotFoundError, match="no_dir"):
        COCOKeypoints(coco["ann"], tmp_path / "no_dir")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(KeyError, match="annotations"):
        COCOKeypoints(bad, coco["img_dir"])
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        COCOKeypoints(bad, coco["img_dir"])
    data = json.loads(json.dumps(coco["data"]))
    del data["annotations"][0]["bbox"]
    bad.write_text(json.dumps(data))
    with pytest.raises(KeyError, match="bbox"):
        COCOKeypoints(bad, coco["img_dir"])
    data = json.loads(json.dumps(coco["data"]))
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="keypoint values"):
        COCOKeypoints(bad, coco["img_dir"])
    data = json.loads(json.dumps(coco["data"]))
    data["annotations"][0]["image_id"] = 99
    bad.write_text(json.dumps(data))
    with pytest.raises(KeyError, match="99"):
        COCOKeypoints(bad, coco["img_dir"])
    (coco["img_dir"] / "b.png").unlink()
    ds = COCOKeypoints(coco["ann"], coco["img_dir"])
    with pytest.raises(FileNotFoundError, match="b.png"):
        ds[1]


def test_coco_detections(coco, tmp_path):
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 36], "score": 0.9},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.1},
            {"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.95}]
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(dets))
    ds = COCODetections(det_file, coco["img_dir"], ann_file=coco["ann"], min_score=0.05)
    assert len(ds) == 2
    s = ds[0]
    assert s["bbox"].tolist() == [9.5, 4.5, 29.5, 40.5] and s["score"].item() == pytest.approx(0.9)
    assert s["visibility"].sum() == 0 and s["keypoints"].shape == (17, 2) and s["ann_id"].item() == -1
    assert s["image"].shape == (3, 48, 64)
    assert len(COCODetections(det_file, coco["img_dir"], ann_file=coco["ann"], min_score=0.5)) == 1


def test_coco_dataloader_with_transform(coco):
    t = TopDownAffine(input_size=(24, 32), skeleton="coco", train=True,
                      generator=torch.Generator().manual_seed(0))
    ds = COCOKeypoints(coco["ann"], coco["img_dir"], transform=t, min_keypoints=0)
    batch = next(iter(DataLoader(ds, batch_size=3, shuffle=False)))
    assert batch["image"].shape == (3, 3, 32, 24)
    assert batch["keypoints"].shape == (3, 17, 2) and batch["visibility"].shape == (3, 17)
    assert batch["affine"].shape == (3, 2, 3) and batch["area"].shape == (3,)
    assert batch["image_id"].tolist() == [1, 1, 2] and batch["ann_id"].tolist() == [10, 11, 13]


def _mpii_record(name, center, scale, joints, vis, **extra):
    return dict(image=name, center=center, scale=scale, joints=joints, joints_vis=vis, **extra)


@pytest.fixture
def mpii(tmp_path):
    img_dir = tmp_path / "mpii_images"
    img_dir.mkdir()
    _write_png(img_dir / "000000001.png", 80, 60, 3)
    _write_png(img_dir / "000000002.png", 50, 70, 4)
    joints = [[10.0 + 2 * i, 20.0 + i] for i in range(16)]
    joints[3] = [-1.0, -1.0]  # missing
    joints[4] = [0.0, 30.0]   # on the 1-based border: missing too
    vis = [1] * 16
    vis[3] = vis[4] = 0
    vis[7] = 0  # labelled-not-visible in the file: visibility 0
    vis[5] = 1
    records = [
        _mpii_record("000000001.png", [40.0, 30.0], 0.2, joints, vis, head_box=[31.0, 6.0, 41.0, 16.0]),
        _mpii_record("000000002.png", [25.0, 35.0], 0.3, [[-1.0, -1.0]] * 16, [0] * 16),
        _mpii_record("000000001.png", [-1.0, -1.0], 0.25, joints, [1] * 16, headbox=[1, 2, 3, 4]),
    ]
    path = tmp_path / "valid.json"
    path.write_text(json.dumps(records))
    return dict(json=path, img_dir=img_dir, records=records, joints=joints, vis=vis)


def test_mpii_items_and_hrnet_rule(mpii):
    ds = MPIIAnnotations(mpii["json"], mpii["img_dir"])
    assert len(ds) == 3
    s = ds[0]
    assert s["image"].shape == (3, 60, 80)
    # HRNet: cy += 15 * scale, then 1-based -> 0-based; size = 200 * scale (padding 1.25 in the transform)
    torch.testing.assert_close(s["center"], torch.tensor([39.0, 30.0 + 15 * 0.2 - 1]))
    torch.testing.assert_close(s["size"], torch.tensor([40.0, 40.0]))
    torch.testing.assert_close(s["keypoints"][0], torch.tensor([9.0, 19.0]))
    torch.testing.assert_close(s["keypoints"][15], torch.tensor([39.0, 34.0]))
    expected = [2] * 16
    expected[3] = expected[4] = expected[7] = 0
    assert s["visibility"].tolist() == expected and s["visibility"].dtype == torch.int64
    torch.testing.assert_close(s["head_box"], torch.tensor([30.0, 5.0, 40.0, 15.0]))
    lab = [i for i in range(16) if expected[i]]
    kp = s["keypoints"][lab]
    box = torch.stack([kp[:, 0].min(), kp[:, 1].min(), kp[:, 0].max(), kp[:, 1].max()])
    torch.testing.assert_close(s["bbox"], box)
    torch.testing.assert_close(s["area"], (box[2] - box[0]) * (box[3] - box[1]))
    assert s["image_id"].item() == 0 and s["image_id"].dtype == torch.int64
    assert all(s[k].dtype == torch.float32 for k in ("keypoints", "head_box", "bbox", "center", "size", "area"))

    s = ds[1]  # nothing labelled: bbox falls back to the crop square, head box NaN
    assert s["visibility"].sum() == 0 and torch.isnan(s["head_box"]).all()
    c = torch.tensor([24.0, 34.0 + 4.5])
    torch.testing.assert_close(s["center"], c)
    torch.testing.assert_close(s["bbox"], torch.cat([c - 30, c + 30]))
    assert s["image_id"].item() == 1
    s = ds[2]  # cx == -1: no 15 * scale shift; "headbox" spelling; same image as record 0
    torch.testing.assert_close(s["center"], torch.tensor([-2.0, -2.0]))
    torch.testing.assert_close(s["head_box"], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert s["image_id"].item() == 0 and ds.image_names == ["000000001.png", "000000002.png"]
    assert s["visibility"][3].item() == 0 and s["visibility"][4].item() == 0  # missing coordinates


def test_mpii_zero_based(mpii):
    ds = MPIIAnnotations(mpii["json"], mpii["img_dir"], one_based=False)
    s = ds[0]
    torch.testing.assert_close(s["keypoints"][0], torch.tensor([10.0, 20.0]))
    torch.testing.assert_close(s["center"], torch.tensor([40.0, 33.0]))
    torch.testing.assert_close(s["head_box"], torch.tensor([31.0, 6.0, 41.0, 16.0]))
    assert s["visibility"][4].item() == 0  # joints_vis 0 in the file
    assert s["visibility"][3].item() == 0  # -1: missing


def test_mpii_errors(mpii, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        MPIIAnnotations(tmp_path / "missing.json", mpii["img_dir"])
    with pytest.raises(FileNotFoundError, match="nodir"):
        MPIIAnnotations(mpii["json"], tmp_path / "nodir")
    bad = tmp_path / "bad.json"
    recs = json.loads(json.dumps(mpii["records"]))
    del recs[1]["scale"]
    bad.write_text(json.dumps(recs))
    with pytest.raises(KeyError, match="record 1 has no 'scale'"):
        MPIIAnnotations(bad, mpii["img_dir"])
    recs = json.loads(json.dumps(mpii["records"]))
    recs[0]["joints"] = recs[0]["joints"][:15]
    bad.write_text(json.dumps(recs))
    with pytest.raises(ValueError, match="joints"):
        MPIIAnnotations(bad, mpii["img_dir"])
    bad.write_text(json.dumps({"image": "x"}))
    with pytest.raises(ValueError, match="list"):
        MPIIAnnotations(bad, mpii["img_dir"])
    (mpii["img_dir"] / "000000002.png").unlink()
    ds = MPIIAnnotations(mpii["json"], mpii["img_dir"])
    with pytest.raises(FileNotFoundError, match="000000002.png"):
        ds[1]


def test_mpii_dataloader_with_transform(mpii):
    t = TopDownAffine(input_size=(32, 32), skeleton="mpii", train=True,
                      generator=torch.Generator().manual_seed(0))
    ds = MPIIAnnotations(mpii["json"], mpii["img_dir"], transform=t)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["keypoints"].shape == (3, 16, 2)
    assert batch["head_box"].shape == (3, 4) and batch["affine"].shape == (3, 2, 3)
    assert torch.isnan(batch["head_box"][1]).all()
    # eval transform: centre of the crop region lands on the output centre, 1.25 padding
    ev = MPIIAnnotations(mpii["json"], mpii["img_dir"], transform=TopDownAffine((32, 32), train=False))
    s = ev[0]
    a = s["affine"].double()
    torch.testing.assert_close(a[0, 0], torch.tensor(32 / (40 * 1.25), dtype=torch.float64))
    c = a[:, :2] @ s["center"].double() + a[:, 2]
    torch.testing.assert_close(c, torch.tensor([15.5, 15.5], dtype=torch.float64))
    assert not math.isnan(float(s["head_box"][0]))

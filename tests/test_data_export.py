"""export_coco / export_mpii round trips through the readers, and training on the written folders."""
import json

import pytest
import torch

pytest.importorskip("PIL")

from fastpose import metrics, train  # noqa: E402
from fastpose.data import COCOKeypoints, MPIIAnnotations, SyntheticPoses, export_coco, export_mpii  # noqa: E402


def test_coco_round_trip(tmp_path):
    ds = SyntheticPoses(5, image_size=48, skeleton="coco", seed=3)
    ann = export_coco(ds, tmp_path, "val2017")
    back = COCOKeypoints(ann, tmp_path / "val2017")
    assert len(back) == 5
    for i in range(5):
        a, b = ds[i], back[i]
        assert torch.equal(a["visibility"], b["visibility"])
        m = a["visibility"] > 0
        torch.testing.assert_close(b["keypoints"][m], a["keypoints"][m], atol=0.01, rtol=0)
        torch.testing.assert_close(b["bbox"], a["bbox"], atol=1e-4, rtol=0)
        assert (b["image"] - a["image"]).abs().max() <= 0.5 / 255 + 1e-6
    # the written file is valid COCO: perfect predictions score AP 1 with our cocoeval
    data = json.loads(open(ann).read())
    preds = [{"image_id": a["image_id"], "keypoints": a["keypoints"], "score": 1.0} for a in data["annotations"]]
    assert metrics.coco_keypoint_ap(preds, data["annotations"])["AP"] == pytest.approx(1.0)


def test_mpii_round_trip(tmp_path):
    ds = SyntheticPoses(4, image_size=40, seed=4, truncation=1.0)
    path = export_mpii(ds, tmp_path, "valid")
    back = MPIIAnnotations(path, tmp_path / "images")
    for i in range(4):
        a, b = ds[i], back[i]
        assert torch.equal(a["visibility"] > 0, b["visibility"] > 0)
        m = a["visibility"] > 0
        torch.testing.assert_close(b["keypoints"][m], a["keypoints"][m], atol=1e-3, rtol=0)
        torch.testing.assert_close(b["head_box"], a["head_box"], atol=1e-4, rtol=0)
        side = (a["bbox"][2:] - a["bbox"][:2]).max()
        torch.testing.assert_close(b["size"], torch.stack([side, side]), atol=1e-4, rtol=0)
        torch.testing.assert_close(b["center"], (a["bbox"][:2] + a["bbox"][2:]) / 2, atol=1e-4, rtol=0)


def test_export_checks_the_layout(tmp_path):
    with pytest.raises(ValueError, match="17 COCO"):
        export_coco(SyntheticPoses(1, image_size=32), tmp_path)
    with pytest.raises(ValueError, match="16 MPII"):
        export_mpii(SyntheticPoses(1, image_size=32, skeleton="coco"), tmp_path)


@pytest.mark.parametrize("fmt", ["coco", "mpii"])
def test_train_and_eval_on_exported_folders(tmp_path, fmt):
    root = tmp_path / fmt
    if fmt == "coco":
        for split, seed in (("train2017", 0), ("val2017", 1)):
            export_coco(SyntheticPoses(8, image_size=48, skeleton="coco", seed=seed), root, split)
    else:
        for split, seed in (("train", 0), ("valid", 1)):
            export_mpii(SyntheticPoses(8, image_size=48, seed=seed), root, split)
    cfg = train.TrainConfig(model="hourglass", model_kwargs=dict(stacks=1, features=16, depth=2), data=f"{fmt}:{root}",
                            input_size=(32, 32), epochs=1, batch_size=4, val_samples=6, quiet=True, plots=False,
                            out=str(tmp_path / "run"))
    hist = train.train(cfg)
    rec = hist[0]
    assert 0 <= rec["pck@0.2"] <= 1
    if fmt == "coco":
        assert 0 <= rec["coco_AP"] <= 1 and "coco_AR" in rec
    else:
        assert 0 <= rec["pckh@0.5"] <= 1

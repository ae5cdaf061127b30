"""Write a dataset of the sample contract in the COCO or MPII file layouts.

``export_coco(SyntheticPoses(..., skeleton="coco"), root, "val2017")`` gives a folder that
``COCOKeypoints`` and ``python -m fastpose train --data coco:ROOT`` read like the real thing (and
pycocotools too), ``export_mpii`` the same for HRNet's MPII JSON layout: a way to try a training or
evaluation pipeline end to end without downloading anything, and the fixtures of the tests.

Conventions are the inverses of the readers': COCO boxes are written as ``[x1 + 0.5, y1 + 0.5, w, h]``
(the readers take box edges at half-integers), MPII coordinates 1-based with the centre shifted by
``-15 * scale`` (the reader adds it back) and ``scale`` = the box's longer side / 200.
"""
import json
import math
import os

import numpy as np

from . import skeletons


def _png(image, path):
    from PIL import Image

    arr = (image.detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return arr.shape[1], arr.shape[0]


def _samples(dataset, limit):
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        yield i, dataset[i]


def export_coco(dataset, root, split="val2017", limit=None):
    """Write ``dataset`` (COCO 17-keypoint samples) as ``root/split/*.png`` and
    ``root/annotations/person_keypoints_<split>.json``, one image and one person per sample.
    Returns the annotation file's path."""
    img_dir = os.path.join(root, split)
    ann_dir = os.path.join(root, "annotations")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    images, anns = [], []
    for i, s in _samples(dataset, limit):
        if s["keypoints"].shape[0] != 17:
            raise ValueError(f"export_coco needs 17 COCO keypoints per sample, got {s['keypoints'].shape[0]}")
        name = f"{i + 1:012d}.png"
        w, h = _png(s["image"], os.path.join(img_dir, name))
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        flat = []
        for (x, y), v in zip(s["keypoints"].tolist(), s["visibility"].tolist()):
            flat += [round(x, 2), round(y, 2), int(v)] if v > 0 else [0, 0, 0]
        x1, y1, x2, y2 = s["bbox"].tolist()
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "keypoints": flat, "num_keypoints": int((s["visibility"] > 0).sum()),
                     "bbox": [x1 + 0.5, y1 + 0.5, x2 - x1, y2 - y1], "area": float(s["area"])})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person",
                            "keypoints": list(skeletons.COCO.joints),
                            "skeleton": [[a + 1, b + 1] for a, b in skeletons.COCO.limbs]}]}
    path = os.path.join(ann_dir, f"person_keypoints_{split}.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def export_mpii(dataset, root, split="valid", limit=None):
    """Write ``dataset`` (MPII 16-joint samples) as ``root/images/*.png`` and ``root/annot/<split>.json``
    in HRNet's record layout (with each record's ``head_box``). Returns the JSON file's path."""
    img_dir = os.path.join(root, "images")
    ann_dir = os.path.join(root, "annot")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    records = []
    for i, s in _samples(dataset, limit):
        if s["keypoints"].shape[0] != 16:
            raise ValueError(f"export_mpii needs 16 MPII joints per sample, got {s['keypoints'].shape[0]}")
        name = f"{split}_{i:06d}.png"
        _png(s["image"], os.path.join(img_dir, name))
        x1, y1, x2, y2 = s["bbox"].tolist()
        scale = max(x2 - x1, y2 - y1) / 200.0
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        vis = s["visibility"].tolist()
        joints = [[round(x + 1, 3), round(y + 1, 3)] if v > 0 else [-1.0, -1.0]
                  for (x, y), v in zip(s["keypoints"].tolist(), vis)]
        head = s["head_box"].tolist()
        rec = {"image": name, "center": [cx + 1, cy + 1 - 15 * scale], "scale": scale, "joints": joints,
               "joints_vis": [int(v > 0) for v in vis]}
        if all(math.isfinite(v) for v in head):
            rec["head_box"] = [v + 1 for v in head]
        records.append(rec)
    path = os.path.join(ann_dir, f"{split}.json")
    with open(path, "w") as f:
        json.dump(records, f)
    return path

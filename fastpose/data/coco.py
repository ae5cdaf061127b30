"""COCO keypoints: one sample per annotated person, and person detections for top-down evaluation.

Reads the standard COCO keypoints JSON (``person_keypoints_{train,val}2017.json``): ``images``
(``id``, ``file_name``, ``width``, ``height``) and ``annotations`` (``keypoints`` = 17 x ``[x, y, v]``
flattened, ``bbox`` = ``[x, y, w, h]``, ``area``, ``iscrowd``, ``num_keypoints``, ``image_id``,
``id``). Coordinate conventions, in the pixel-centre frame of :mod:`fastpose.data`:

* keypoints are taken as they are: COCO's keypoints are pixel indices (integer = pixel centre),
  which is also what the evaluation compares against, so predictions need no offset;
* boxes are continuous coordinates with pixel edges on integers (they come from the segmentation
  polygons), so ``bbox = [x, y, w, h]`` becomes ``x1, y1, x2, y2 = x - 0.5, y - 0.5, x + w - 0.5,
  y + h - 0.5`` after clipping ``[x, x + w]`` to ``[0, width]`` (same for y), and
  ``center = ((x1 + x2)/2, (y1 + y2)/2)``, ``size = (w, h)`` of the clipped box. The transform adds
  the aspect-ratio expansion and the padding (1.25). (HRNet uses ``x + w/2`` without the half-pixel
  shift and clips to ``width - 1``; the difference is at most half a pixel of crop centre.)
"""
import json
import math
import os

import torch
from torch.utils.data import Dataset

from . import skeletons as _skeletons
from .transforms import load_image

__all__ = ["COCOKeypoints", "COCODetections", "coco_box_to_xyxy"]


def _load_json(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} file {path} is not valid JSON: {e}") from None


def _check_dir(image_dir):
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image directory not found: {image_dir}")


def coco_box_to_xyxy(bbox, width=None, height=None):
    """COCO ``[x, y, w, h]`` (pixel edges on integers) -> pixel-centre ``(x1, y1, x2, y2)``.

    Clipped to the image ``[0, width] x [0, height]`` (edge coordinates) when the size is known.
    Returns ``None`` if the clipped box is empty.
    """
    x, y, w, h = (float(v) for v in bbox)
    x0, y0, x1, y1 = x, y, x + max(w, 0.0), y + max(h, 0.0)
    if width is not None:
        x0, x1 = max(x0, 0.0), min(x1, float(width))
    if height is not None:
        y0, y1 = max(y0, 0.0), min(y1, float(height))
    if not (x1 > x0 and y1 > y0):
        return None
    return (x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5)


def _images_by_id(data, source):
    if not isinstance(data, dict) or "images" not in data:
        raise KeyError(f"{source}: a COCO annotation file needs an 'images' list")
    images = {}
    for i, im in enumerate(data["images"]):
        for key in ("id", "file_name"):
            if key not in im:
                raise KeyError(f"{source}: images[{i}] has no {key!r}")
        images[int(im["id"])] = im
    return images


def _region(x1, y1, x2, y2):
    center = torch.tensor([(x1 + x2) / 2.0, (y1 + y2) / 2.0], dtype=torch.float32)
    size = torch.tensor([x2 - x1, y2 - y1], dtype=torch.float32)
    return center, size


class COCOKeypoints(Dataset):
    """COCO person instances as samples of the :mod:`fastpose.data` contract.

    Args:
        ann_file: the keypoints annotation JSON.
        image_dir: folder holding the ``file_name`` of every image (e.g. ``train2017/``).
        transform: optional callable applied to every sample (e.g. :class:`TopDownAffine`).
        min_keypoints: keep instances with ``num_keypoints >= min_keypoints`` (1: at least one
            labelled keypoint, as HRNet's training set; 0 keeps unlabelled persons too).
        include_crowd: also keep ``iscrowd`` annotations (default: skip them).
        skeleton: the keypoint layout, "coco" (17 keypoints) by default.

    Instances whose box is empty after clipping to the image are skipped; the kept ones are in file
    order, their fields in the tensors ``keypoints`` (N, K, 3), ``boxes`` (N, 4) x1 y1 x2 y2,
    ``areas``, ``image_ids`` and ``ann_ids``; ``images`` maps an image id to its ``images`` entry.

    A sample (before ``transform``): ``image`` float32 (3, H, W) RGB in [0, 1] (PIL); ``keypoints``
    float32 (K, 2); ``visibility`` int64 (K,) = COCO's v (0, 1, 2); ``head_box`` NaN (4,); ``bbox``
    float32 (4,) x1, y1, x2, y2 (see the module doc); ``center``, ``size`` float32 (2,) of the box;
    ``area`` float32 () the annotation's segment area (bbox area if absent); ``image_id`` int64 ();
    ``ann_id`` int64 () the annotation id.
    """

    def __init__(self, ann_file, image_dir, transform=None, min_keypoints=1, include_crowd=False,
                 skeleton="coco"):
        self.ann_file = os.fspath(ann_file)
        self.image_dir = os.fspath(image_dir)
        self.transform = transform
        self.skeleton = _skeletons.get(skeleton)
        _check_dir(self.image_dir)
        data = _load_json(self.ann_file, "COCO annotation")
        self.images = _images_by_id(data, self.ann_file)
        if "annotations" not in data:
            raise KeyError(f"{self.ann_file}: a COCO annotation file needs an 'annotations' list")
        k = self.skeleton.num_joints
        keypoints, boxes, areas, image_ids, ann_ids = [], [], [], [], []
        for i, ann in enumerate(data["annotations"]):
            if "keypoints" not in ann:  # other categories of an instances file
                continue
            for key in ("bbox", "image_id"):
                if key not in ann:
                    raise KeyError(f"{self.ann_file}: annotations[{i}] has no {key!r}")
            if len(ann["keypoints"]) != 3 * k:
                raise ValueError(f"{self.ann_file}: annotations[{i}] has {len(ann['keypoints'])} "
                                 f"keypoint values, expected 3 x {k} for skeleton {self.skeleton.name!r}")
            if ann.get("iscrowd", 0) and not include_crowd:
                continue
            num = ann.get("num_keypoints")
            if num is None:
                num = sum(1 for v in ann["keypoints"][2::3] if v > 0)
            if num < min_keypoints:
                continue
            image_id = int(ann["image_id"])
            if image_id not in self.images:
                raise KeyError(f"{self.ann_file}: annotations[{i}] refers to image_id {image_id}, "
                               f"which is not in 'images'")
            im = self.images[image_id]
            box = coco_box_to_xyxy(ann["bbox"], im.get("width"), im.get("height"))
            if box is None:
                continue
            keypoints.append(ann["keypoints"])
            boxes.append(box)
            areas.append(float(ann["area"]) if "area" in ann
                         else float(ann["bbox"][2]) * float(ann["bbox"][3]))
            image_ids.append(image_id)
            ann_ids.append(int(ann.get("id", -1)))
        # Tensors rather than lists of Python objects: DataLoader workers share them without
        # copy-on-access (refcount) growth.
        n = len(image_ids)
        self.keypoints = torch.tensor(keypoints, dtype=torch.float32).reshape(n, k, 3)
        self.boxes = torch.tensor(boxes, dtype=torch.float64).reshape(n, 4)
        self.areas = torch.tensor(areas, dtype=torch.float32)
        self.image_ids = torch.tensor(image_ids, dtype=torch.int64)
        self.ann_ids = torch.tensor(ann_ids, dtype=torch.int64)

    def __len__(self):
        return len(self.image_ids)

    def image_path(self, image_id):
        """The file of image ``image_id``."""
        return os.path.join(self.image_dir, self.images[int(image_id)]["file_name"])

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} instances")
        image_id = int(self.image_ids[index])
        kp = self.keypoints[index]
        center, size = _region(*self.boxes[index].tolist())
        sample = dict(
            image=load_image(self.image_path(image_id)),
            keypoints=kp[:, :2].clone(),
            visibility=kp[:, 2].round().to(torch.int64).clamp_(0, 2),
            head_box=torch.full((4,), math.nan, dtype=torch.float32),
            bbox=self.boxes[index].to(torch.float32),
            center=center,
            size=size,
            area=self.areas[index].clone(),
            image_id=torch.tensor(image_id, dtype=torch.int64),
            ann_id=self.ann_ids[index].clone(),
        )
        return self.transform(sample) if self.transform is not None else sample


class COCODetections(Dataset):
    """Person detections (a COCO results JSON) as samples, for top-down evaluation.

    Args:
        det_file: a JSON list of ``{"image_id", "bbox": [x, y, w, h], "score", "category_id"}``
            (e.g. HRNet's ``COCO_val2017_detections_AP_H_56_person.json``).
        image_dir: the images' folder.
        ann_file: optional COCO JSON giving ``file_name`` and size for each ``image_id``; without
            it files are named ``{image_id:012d}.jpg`` (the 2017 naming) and boxes are not clipped.
        transform: optional sample transform.
        min_score: keep detections with ``score >= min_score``.
        category_id: keep this category only (1, person; ``None`` keeps all).
        skeleton: only sets the number of (placeholder) keypoints.

    Samples have the same keys as :class:`COCOKeypoints` so that they batch and transform alike:
    ``keypoints`` zeros with ``visibility`` 0, ``area`` the box area, ``ann_id`` -1, plus ``score``
    float32 () the detection score.
    """

    def __init__(self, det_file, image_dir, ann_file=None, transform=None, min_score=0.0,
                 category_id=1, skeleton="coco"):
        self.det_file = os.fspath(det_file)
        self.image_dir = os.fspath(image_dir)
        self.transform = transform
        self.skeleton = _skeletons.get(skeleton)
        _check_dir(self.image_dir)
        self.images = None
        if ann_file is not None:
            self.images = _images_by_id(_load_json(os.fspath(ann_file), "COCO annotation"),
                                        os.fspath(ann_file))
        dets = _load_json(self.det_file, "detections")
        if not isinstance(dets, list):
            raise ValueError(f"{self.det_file}: a detections file is a JSON list of results")
        self.items = []
        for i, det in enumerate(dets):
            for key in ("image_id", "bbox"):
                if key not in det:
                    raise KeyError(f"{self.det_file}: detection {i} has no {key!r}")
            if category_id is not None and det.get("category_id", category_id) != category_id:
                continue
            score = float(det.get("score", 1.0))
            if score < min_score:
                continue
            image_id = int(det["image_id"])
            width = height = None
            if self.images is not None:
                if image_id not in self.images:
                    raise KeyError(f"{self.det_file}: detection {i} refers to image_id {image_id}, "
                                   f"which is not in {ann_file}")
                width, height = self.images[image_id].get("width"), self.images[image_id].get("height")
            box = coco_box_to_xyxy(det["bbox"], width, height)
            if box is None:
                continue
            self.items.append(dict(image_id=image_id, box=box, score=score))

    def __len__(self):
        return len(self.items)

    def image_path(self, image_id):
        if self.images is not None:
            name = self.images[int(image_id)]["file_name"]
        else:
            name = f"{int(image_id):012d}.jpg"
        return os.path.join(self.image_dir, name)

    def __getitem__(self, index):
        item = self.items[index]
        k = self.skeleton.num_joints
        center, size = _region(*item["box"])
        x1, y1, x2, y2 = item["box"]
        sample = dict(
            image=load_image(self.image_path(item["image_id"])),
            keypoints=torch.zeros(k, 2, dtype=torch.float32),
            visibility=torch.zeros(k, dtype=torch.int64),
            head_box=torch.full((4,), math.nan, dtype=torch.float32),
            bbox=torch.tensor(item["box"], dtype=torch.float32),
            center=center,
            size=size,
            area=torch.tensor((x2 - x1) * (y2 - y1), dtype=torch.float32),
            image_id=torch.tensor(item["image_id"], dtype=torch.int64),
            ann_id=torch.tensor(-1, dtype=torch.int64),
            score=torch.tensor(item["score"], dtype=torch.float32),
        )
        return self.transform(sample) if self.transform is not None else sample

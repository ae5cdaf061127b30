"""MPII Human Pose from the JSON annotations common to pose repositories.

The layout is HRNet's ``data/mpii/annot/{train,valid}.json`` (converted from pose-hg-train's
``annot/*.h5``): a JSON list with one record per person::

    {"image": "015601864.jpg", "center": [x, y], "scale": s,
     "joints": [[x, y]] * 16, "joints_vis": [0 or 1] * 16}

optionally with ``"head_box"`` (or ``"headbox"``) ``[x1, y1, x2, y2]``, the head rectangle of PCKh.
Coordinates in these files are MATLAB 1-based; joints are in the order of
:data:`fastpose.data.skeletons.MPII`. ``scale`` is the person height / 200.

Preprocessing (HRNet ``lib/dataset/mpii.py``):

* the centre moves down, ``cy += 15 * scale`` (unless ``cx == -1``, a missing centre), to cover the
  body rather than the torso midpoint;
* the crop is the square ``size = (200 * scale, 200 * scale)``; HRNet's ``scale *= 1.25`` is the
  transform's ``padding`` (1.25 by default in :class:`~fastpose.data.transforms.TopDownAffine`);
* with ``one_based=True`` 1 is subtracted from joints, centre and head box, giving the
  pixel-centre 0-based frame of :mod:`fastpose.data` (MATLAB pixel 1 is our pixel 0); predictions go
  back to the MPII evaluation by adding 1.
"""
import json
import math
import os

import torch
from torch.utils.data import Dataset

from . import skeletons as _skeletons
from .transforms import load_image

__all__ = ["MPIIAnnotations"]

_NUM_JOINTS = _skeletons.MPII.num_joints


def _vector(value, n, what):
    try:
        t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{what} must be {n} numbers, got {value!r}") from None
    if t.numel() != n:
        raise ValueError(f"{what} must be {n} numbers, got {t.numel()}")
    return t


class MPIIAnnotations(Dataset):
    """MPII person records as samples of the :mod:`fastpose.data` contract.

    Args:
        json_file: the annotation JSON (a list of records, see the module doc).
        image_dir: folder holding the records' ``image`` files.
        transform: optional callable applied to every sample (e.g. :class:`TopDownAffine`).
        one_based: the file's coordinates are MATLAB 1-based (HRNet's files are); subtract 1.

    A sample (before ``transform``):

    * ``image`` float32 (3, H, W) RGB in [0, 1];
    * ``keypoints`` float32 (16, 2), 0-based pixel centres;
    * ``visibility`` int64 (16,): 2 where ``joints_vis`` is set and the joint is present, 0
      otherwise; a joint is missing when a coordinate is not finite or ``<= 0`` in a 1-based file
      (``< 0`` in a 0-based one), as the ``-1`` placeholders of the files. Records without
      ``joints`` (a test split) get zeros with visibility 0; without ``joints_vis``, visibility
      follows presence alone;
    * ``head_box`` float32 (4,) from ``head_box``/``headbox`` (converted like the joints), NaN
      otherwise;
    * ``bbox`` the tight box ``x1, y1, x2, y2`` of the labelled joints (the crop square if none);
      ``area`` its area (float32 ());
    * ``center`` float32 (2,) after the ``15 * scale`` shift and ``size`` float32 (2,) =
      ``(200 * scale,) * 2``, before padding;
    * ``image_id`` int64 (): index of the record's image in ``self.image_names`` (first-appearance
      order; several records share an image).
    """

    def __init__(self, json_file, image_dir, transform=None, one_based=True):
        self.json_file = os.fspath(json_file)
        self.image_dir = os.fspath(image_dir)
        self.transform = transform
        self.one_based = bool(one_based)
        if not os.path.isfile(self.json_file):
            raise FileNotFoundError(f"MPII annotation file not found: {self.json_file}")
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(f"image directory not found: {self.image_dir}")
        with open(self.json_file, "r") as f:
            try:
                records = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.json_file} is not valid JSON: {e}") from None
        if not isinstance(records, list):
            raise ValueError(f"{self.json_file}: expected a JSON list of person records, "
                             f"got {type(records).__name__}")
        if not records:
            raise ValueError(f"{self.json_file} holds no person records")

        k = _NUM_JOINTS
        offset = 1.0 if self.one_based else 0.0
        names, name_index = [], {}
        image_ids, centers, sizes, keypoints, visibility, head_boxes = [], [], [], [], [], []
        for i, rec in enumerate(records):
            where = f"{self.json_file}: record {i}"
            if not isinstance(rec, dict):
                raise ValueError(f"{where} is not an object")
            for key in ("image", "center", "scale"):
                if key not in rec:
                    raise KeyError(f"{where} has no {key!r}")
            name = str(rec["image"])
            if name not in name_index:
                name_index[name] = len(names)
                names.append(name)
            image_ids.append(name_index[name])

            center = _vector(rec["center"], 2, f"{where} 'center'")
            scale = float(rec["scale"])
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"{where} has scale {rec['scale']!r}; it must be positive")
            if center[0] != -1:
                center[1] += 15.0 * scale
            centers.append(center - offset)
            sizes.append([200.0 * scale, 200.0 * scale])

            if "joints" in rec:
                joints = _vector(rec["joints"], 2 * k, f"{where} 'joints'").reshape(k, 2)
                if self.one_based:
                    present = torch.isfinite(joints).all(-1) & (joints > 0).all(-1)
                else:
                    present = torch.isfinite(joints).all(-1) & (joints >= 0).all(-1)
                if "joints_vis" in rec:
                    flags = _vector(rec["joints_vis"], k, f"{where} 'joints_vis'") > 0
                else:
                    flags = torch.ones(k, dtype=torch.bool)
                vis = torch.where(flags & present, 2, 0).to(torch.int64)
                joints = torch.where(torch.isfinite(joints), joints - offset, torch.zeros_like(joints))
            else:
                joints = torch.zeros(k, 2, dtype=torch.float64)
                vis = torch.zeros(k, dtype=torch.int64)
            keypoints.append(joints)
            visibility.append(vis)

            head = rec.get("head_box", rec.get("headbox"))
            if head is None:
                head_boxes.append(torch.full((4,), math.nan, dtype=torch.float64))
            else:
                head_boxes.append(_vector(head, 4, f"{where} 'head_box'") - offset)

        n = len(records)
        self.image_names = names
        self.image_ids = torch.tensor(image_ids, dtype=torch.int64)
        self.centers = torch.stack(centers).to(torch.float32)
        self.sizes = torch.tensor(sizes, dtype=torch.float32)
        self.keypoints = torch.stack(keypoints).to(torch.float32)
        self.visibility = torch.stack(visibility)
        self.head_boxes = torch.stack(head_boxes).to(torch.float32)

        # bbox: tight box of the labelled joints; the crop square when none is labelled.
        labelled = self.visibility > 0
        x, y = self.keypoints[..., 0], self.keypoints[..., 1]
        inf = torch.tensor(math.inf)
        boxes = torch.stack([torch.where(labelled, x, inf).amin(-1), torch.where(labelled, y, inf).amin(-1),
                             torch.where(labelled, x, -inf).amax(-1), torch.where(labelled, y, -inf).amax(-1)],
                            dim=-1)
        square = torch.cat([self.centers - self.sizes / 2, self.centers + self.sizes / 2], dim=-1)
        self.boxes = torch.where(labelled.any(-1, keepdim=True), boxes, square)
        assert self.boxes.shape == (n, 4)
        self.areas = ((self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1]))

    def __len__(self):
        return len(self.image_ids)

    def image_path(self, image_id):
        """The file of image ``image_id`` (an index into ``self.image_names``)."""
        return os.path.join(self.image_dir, self.image_names[int(image_id)])

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        sample = dict(
            image=load_image(self.image_path(self.image_ids[index])),
            keypoints=self.keypoints[index].clone(),
            visibility=self.visibility[index].clone(),
            head_box=self.head_boxes[index].clone(),
            bbox=self.boxes[index].clone(),
            center=self.centers[index].clone(),
            size=self.sizes[index].clone(),
            area=self.areas[index].clone(),
            image_id=self.image_ids[index].clone(),
        )
        return self.transform(sample) if self.transform is not None else sample

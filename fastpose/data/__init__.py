"""Datasets for keypoint localisation: the embedded synthetic dataset and readers for COCO and MPII.

Every dataset returns samples as dicts of tensors (the *sample contract*, shared by the transforms,
the training loop and the metrics):

===============  ===============================  =====================================================
key              type                             meaning
===============  ===============================  =====================================================
``image``        float32 (3, H, W), RGB in [0,1]  the image (the crop, after a transform)
``keypoints``    float32 (K, 2)                   (x, y) in pixels of ``image``; integer coordinates are
                                                  pixel centres (pixel (0, 0) covers [-0.5, 0.5]^2)
``visibility``   int64 (K,)                       COCO's flags: 0 not labelled (absent, or truncated
                                                  outside the image), 1 labelled but occluded, 2 visible
``head_box``     float32 (4,)                     x1, y1, x2, y2 of the head (PCKh); NaN when unknown
``bbox``         float32 (4,)                     x1, y1, x2, y2 of the person
``center``       float32 (2,)                     centre of the region to crop (raw reader samples)
``size``         float32 (2,)                     (w, h) of that region, before the transform's padding
``area``         float32 ()                       COCO segment area (OKS scale); bbox area otherwise
``affine``       float32 (2, 3)                   after a transform: maps source-image pixels to
                                                  ``image`` pixels (predictions go back through its
                                                  inverse)
``image_id``     int64 ()                         the source image's id (COCO id; index otherwise)
===============  ===============================  =====================================================
"""
from . import skeletons
from .skeletons import COCO, MPII, Skeleton
from .synthetic import SyntheticPoses
from .transforms import (TopDownAffine, affine_matrix, flip_keypoints, invert_affine, load_image, transform_boxes,
                         transform_points, warp_image)
from .coco import COCODetections, COCOKeypoints, coco_box_to_xyxy
from .mpii import MPIIAnnotations
from .export import export_coco, export_mpii

__all__ = ["skeletons", "Skeleton", "MPII", "COCO", "SyntheticPoses", "TopDownAffine", "affine_matrix",
           "invert_affine", "warp_image", "transform_points", "transform_boxes", "flip_keypoints", "load_image",
           "COCOKeypoints", "COCODetections", "coco_box_to_xyxy", "MPIIAnnotations", "export_coco", "export_mpii"]

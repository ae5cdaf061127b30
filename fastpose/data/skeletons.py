"""Keypoint layouts: joint names, left/right flip pairs and the limbs drawn between joints.

MPII (16 joints) and COCO (17 keypoints) in the order of the datasets' own annotation files
(models.md §6.1, §6.2). ``Skeleton.flip_index`` is the permutation that swaps left and right, used by
horizontal-flip augmentation and the flip test.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Skeleton:
    name: str
    joints: tuple
    flip_pairs: tuple
    limbs: tuple

    @property
    def num_joints(self):
        return len(self.joints)

    @property
    def flip_index(self):
        """perm such that ``flipped_joints = joints[perm]`` after mirroring the image."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def index(self, joint):
        return self.joints.index(joint)


MPII = Skeleton(
    name="mpii",
    joints=("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
            "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    limbs=((0, 1), (1, 2), (2, 6), (3, 6), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
           (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15)),
)

COCO = Skeleton(
    name="coco",
    joints=("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
            "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle"),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    limbs=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
           (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
)

# COCO's per-keypoint OKS constants (cocoeval kpt_oks_sigmas).
COCO_OKS_SIGMAS = (.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89)
COCO_OKS_SIGMAS = tuple(s / 10.0 for s in COCO_OKS_SIGMAS)

SKELETONS = {"mpii": MPII, "coco": COCO}


def get(name):
    """The Skeleton called ``name`` ("mpii" or "coco"), or ``name`` itself if it is one."""
    if isinstance(name, Skeleton):
        return name
    if name not in SKELETONS:
        raise ValueError(f"skeleton must be one of {sorted(SKELETONS)}, got {name!r}")
    return SKELETONS[name]

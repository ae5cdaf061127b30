"""SyntheticPoses: an embedded pose dataset rendered procedurally (no download).

Each sample is an articulated figure on the MPII 16-joint skeleton (or COCO's 17 keypoints) drawn over a
cluttered, textured background with distractor shapes. Everything is a deterministic function of
``(seed, index)``, so a dataset of any length costs nothing until it is read, and two processes (DDP
ranks, DataLoader workers) see the same samples.

How a figure is made:
- A 2D kinematic tree in body units (torso length 1): torso lean, neck and head, shoulder and hip widths,
  upper/lower arm and leg lengths, each limb segment foreshortened by a random factor (out-of-plane
  motion). Joint angles are drawn within human limits: shoulders -30..180 degrees of abduction, elbows
  and knees -15..150 of flexion, hips -30..75 of abduction, torso lean and neck +-20.
- Global scale (figure height 45-95% of the image), rotation (+-``max_rotation``), translation; some
  samples are shifted so that limbs leave the frame (truncation).
- Parts are capsules and polygons with per-sample widths and clothing colours (top, bottom, skin),
  shaded across their width, some striped. One side of the body is drawn behind the torso and one in
  front, each arm independently in front of or behind the torso, so limbs hide each other.
- Visibility (COCO flags): 0 for joints outside the image (truncated, not labelled), 1 for joints covered
  by a part they do not belong to (or by a distractor drawn in front), 2 otherwise.
- Backgrounds: smooth gradients plus multi-octave value noise, stripes or checks, and 3-9 distractors
  (ellipses, boxes, limb-like sticks), some drawn in front of the figure.
- The head box (for PCKh) is the axis-aligned box of the head ellipse; ``bbox`` the box of the figure's
  pixels clipped to the image; ``area`` its pixel count.

Samples follow the sample contract of ``fastpose.data``; coordinates are pixel centres.
"""
import math

import numpy as np
import torch

from . import skeletons

# Internal point set: MPII's 16 joints, then the face points COCO needs.
_MPII = skeletons.MPII.joints
_FACE = ("nose", "l_eye", "r_eye", "l_ear", "r_ear")
_POINTS = _MPII + _FACE
_P = {name: i for i, name in enumerate(_POINTS)}
_COCO_FROM_POINTS = [_P[n] for n in skeletons.COCO.joints]

# Parts: (name, joint a, joint b, clothing slot, side); side -1 right, +1 left, 0 centre.
_LIMBS = (
    ("r_upper_arm", "r_shoulder", "r_elbow", "top", -1), ("r_forearm", "r_elbow", "r_wrist", "skin", -1),
    ("l_upper_arm", "l_shoulder", "l_elbow", "top", 1), ("l_forearm", "l_elbow", "l_wrist", "skin", 1),
    ("r_thigh", "r_hip", "r_knee", "bottom", -1), ("r_shin", "r_knee", "r_ankle", "bottom", -1),
    ("l_thigh", "l_hip", "l_knee", "bottom", 1), ("l_shin", "l_knee", "l_ankle", "bottom", 1),
    ("neck", "thorax", "upper_neck", "skin", 0),
)
# Which parts a joint belongs to (a joint covered by any other part is occluded).
_OWNERS = {
    "r_ankle": ("r_shin",), "r_knee": ("r_thigh", "r_shin"), "r_hip": ("r_thigh", "torso"),
    "l_hip": ("l_thigh", "torso"), "l_knee": ("l_thigh", "l_shin"), "l_ankle": ("l_shin",),
    "pelvis": ("torso", "r_thigh", "l_thigh"), "thorax": ("torso", "neck"), "upper_neck": ("neck", "head", "torso"),
    "head_top": ("head",), "r_wrist": ("r_forearm",), "r_elbow": ("r_upper_arm", "r_forearm"),
    "r_shoulder": ("r_upper_arm", "torso"), "l_shoulder": ("l_upper_arm", "torso"),
    "l_elbow": ("l_upper_arm", "l_forearm"), "l_wrist": ("l_forearm",),
    "nose": ("head",), "l_eye": ("head",), "r_eye": ("head",), "l_ear": ("head",), "r_ear": ("head",),
}
_PART_IDS = {name: k + 1 for k, name in enumerate([p[0] for p in _LIMBS] + ["torso", "head"])}
_DISTRACTOR_ID = 100


def _unit(a):
    return np.array([math.sin(a), math.cos(a)])  # angle 0 points "up" (+y in body frame)


def _rot(v, a):
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _figure(rng):
    """Joint positions in body units (y up), plus per-part widths and the face direction."""
    d = math.radians
    u = rng.uniform
    p = {}
    lean = d(u(-20, 20))
    up = _unit(lean)
    right = np.array([-up[1], up[0]])  # the figure faces the viewer: its right is on the image's left
    right = -right if right[0] > 0 else right
    p["pelvis"] = np.zeros(2)
    p["thorax"] = up * u(0.9, 1.1) * u(0.75, 1.0)
    neck_dir = _rot(up, d(u(-20, 20)))
    p["upper_neck"] = p["thorax"] + neck_dir * u(0.22, 0.3)
    head_len = u(0.42, 0.52)
    p["head_top"] = p["upper_neck"] + neck_dir * head_len
    sh, hip = u(0.28, 0.4), u(0.16, 0.24)
    for side, sgn in (("r", 1.0), ("l", -1.0)):
        p[side + "_shoulder"] = p["thorax"] - up * 0.06 + right * sgn * sh
        p[side + "_hip"] = p["pelvis"] + right * sgn * hip
        # arms: abduction from "down", outward positive; flexion bends either way
        down = -up
        a_sh = d(u(-30, 180))
        upper = _rot(down, a_sh if side == "l" else -a_sh)
        p[side + "_elbow"] = p[side + "_shoulder"] + upper * u(0.5, 0.6) * u(0.55, 1.0)
        fore = _rot(upper, d(u(-15, 150)) * rng.choice([-1, 1]))
        p[side + "_wrist"] = p[side + "_elbow"] + fore * u(0.45, 0.55) * u(0.55, 1.0)
        a_hip = d(u(-30, 75))
        thigh = _rot(down, a_hip if side == "l" else -a_hip)
        p[side + "_knee"] = p[side + "_hip"] + thigh * u(0.7, 0.85) * u(0.6, 1.0)
        shin = _rot(thigh, d(u(-15, 150)) * rng.choice([-1, 1]))
        p[side + "_ankle"] = p[side + "_knee"] + shin * u(0.65, 0.8) * u(0.6, 1.0)
    # face: yaw shifts the face points sideways; the far ear hides behind the head
    yaw = u(-0.7, 0.7)
    head_c = p["upper_neck"] + neck_dir * head_len * 0.45
    side_dir = np.array([neck_dir[1], -neck_dir[0]])  # perpendicular, towards the figure's left
    side_dir = side_dir if np.dot(side_dir, right) < 0 else -side_dir
    p["nose"] = head_c + side_dir * yaw * 0.1 - neck_dir * 0.03
    for side, sgn in (("l", 1.0), ("r", -1.0)):
        p[side + "_eye"] = head_c + side_dir * (sgn * 0.08 + yaw * 0.08) + neck_dir * 0.05
        p[side + "_ear"] = head_c + side_dir * (sgn * 0.15 + yaw * 0.04)
    widths = {
        "upper_arm": u(0.09, 0.16), "forearm": u(0.07, 0.12), "thigh": u(0.13, 0.22),
        "shin": u(0.09, 0.16), "neck": u(0.08, 0.12),
    }
    return p, widths, head_len, yaw


def _value_noise(rng, h, w, cells):
    g = rng.random((cells + 1, cells + 1), dtype=np.float32)
    ys = np.linspace(0, cells, h, dtype=np.float32)
    xs = np.linspace(0, cells, w, dtype=np.float32)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    e = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + e * fx) * fy


def _background(rng, h, w):
    c0, c1 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
    t = _value_noise(rng, h, w, int(rng.integers(1, 3)))
    img = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
    for cells, amp in ((4, 0.25), (12, 0.12), (32, 0.06)):
        img = img + amp * (_value_noise(rng, h, w, cells) - 0.5)[None] * rng.random(3, dtype=np.float32)[:, None, None]
    kind = rng.integers(0, 3)
    if kind > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, math.pi)
        period = rng.uniform(4, 16)
        v = np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period)
        if kind == 2:
            v = v * np.sin((-xx * math.sin(a) + yy * math.cos(a)) * 2 * math.pi / period)
        img = img + 0.15 * (v > 0)[None] * (rng.random(3, dtype=np.float32)[:, None, None] - 0.5)
    return img


class _Canvas:
    """An image plus a part-id map; shapes are painted on the bounding box of their pixels only."""

    def __init__(self, img):
        self.img = img
        self.h, self.w = img.shape[1:]
        self.ids = np.zeros((self.h, self.w), np.int32)

    def _window(self, lo, hi):
        x0, y0 = max(int(math.floor(lo[0])), 0), max(int(math.floor(lo[1])), 0)
        x1, y1 = min(int(math.ceil(hi[0])) + 1, self.w), min(int(math.ceil(hi[1])) + 1, self.h)
        if x0 >= x1 or y0 >= y1:
            return None
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        return (slice(y0, y1), slice(x0, x1)), xx, yy

    def _paint(self, win, cover, shade, colour, part, stripes=None):
        sl, xx, yy = win
        if stripes is not None:
            shade = shade * (1 - 0.25 * stripes)
        col = colour[:, None, None] * shade[None]
        region = self.img[:, sl[0], sl[1]]
        self.img[:, sl[0], sl[1]] = region * (1 - cover[None]) + col * cover[None]
        self.ids[sl][cover > 0.5] = part

    def capsule(self, a, b, radius, colour, part, stripe_period=None):
        lo, hi = np.minimum(a, b) - radius - 1, np.maximum(a, b) + radius + 1
        win = self._window(lo, hi)
        if win is None:
            return
        _, xx, yy = win
        ab = b - a
        L2 = float(ab @ ab) + 1e-9
        t = np.clip(((xx - a[0]) * ab[0] + (yy - a[1]) * ab[1]) / L2, 0, 1)
        dx, dy = xx - (a[0] + t * ab[0]), yy - (a[1] + t * ab[1])
        dist = np.sqrt(dx * dx + dy * dy)
        cover = np.clip(radius - dist + 0.5, 0, 1)
        shade = 0.65 + 0.35 * np.clip(1 - (dist / max(radius, 1e-3)) ** 2, 0, 1)
        stripes = None
        if stripe_period:
            stripes = (np.sin(t * math.sqrt(L2) * 2 * math.pi / stripe_period) > 0).astype(np.float32)
        self._paint(win, cover, shade, colour, part, stripes)

    def ellipse(self, c, rx, ry, angle, colour, part):
        r = max(rx, ry)
        win = self._window(c - r - 1, c + r + 1)
        if win is None:
            return
        _, xx, yy = win
        ca, sa = math.cos(angle), math.sin(angle)
        u = ((xx - c[0]) * ca + (yy - c[1]) * sa) / rx
        v = (-(xx - c[0]) * sa + (yy - c[1]) * ca) / ry
        rho = np.sqrt(u * u + v * v)
        cover = np.clip((1 - rho) * min(rx, ry) + 0.5, 0, 1)
        shade = 0.7 + 0.3 * np.clip(1 - rho * rho, 0, 1)
        self._paint(win, cover, shade, colour, part)

    def polygon(self, pts, colour, part, stripe_period=None):
        win = self._window(pts.min(0) - 1, pts.max(0) + 1)
        if win is None:
            return
        _, xx, yy = win
        # signed distance to a convex polygon (counter-clockwise orientation fixed below)
        area2 = sum(pts[i, 0] * pts[(i + 1) % len(pts), 1] - pts[(i + 1) % len(pts), 0] * pts[i, 1]
                    for i in range(len(pts)))
        if area2 < 0:
            pts = pts[::-1]
        inside = np.full(xx.shape, np.inf, np.float32)
        for i in range(len(pts)):
            p, q = pts[i], pts[(i + 1) % len(pts)]
            e = q - p
            n = np.array([e[1], -e[0]]) / (np.hypot(*e) + 1e-9)
            inside = np.minimum(inside, -((xx - p[0]) * n[0] + (yy - p[1]) * n[1]))
        cover = np.clip(inside + 0.5, 0, 1)
        depth = np.clip(inside / 6.0, 0, 1)
        shade = 0.75 + 0.25 * depth
        stripes = None
        if stripe_period:
            stripes = (np.sin(yy * 2 * math.pi / stripe_period) > 0).astype(np.float32)
        self._paint(win, cover, shade, colour, part, stripes)


class SyntheticPoses(torch.utils.data.Dataset):
    """Procedurally rendered articulated figures: an embedded pose dataset that needs no download.

    Args:
        num_samples: the dataset's length (any number; samples are rendered when read).
        image_size: int or (W, H) of the rendered images (default 128).
        skeleton: "mpii" (16 joints, default) or "coco" (17 keypoints).
        seed: samples are a deterministic function of (seed, index); use different seeds for
            training and held-out sets.
        max_rotation: global in-plane rotation range, +- degrees (default 30).
        truncation: probability that a figure is shifted partly out of the frame (default 0.15).
        distractors: (min, max) number of distractor shapes (default (3, 9)).
        transform: optional callable applied to each sample dict (e.g. ``TopDownAffine``).
        cache: keep rendered samples in memory (uint8 images): for small sets read many times.

    Each item is a dict of the sample contract (``fastpose.data``): image (3, H, W) float32 in [0, 1],
    keypoints (K, 2), visibility (K,) int64, head_box (4,), bbox (4,), center (2,), size (2,), area,
    image_id.
    """

    def __init__(self, num_samples=1000, image_size=128, skeleton="mpii", seed=0, max_rotation=30.0,
                 truncation=0.15, distractors=(3, 9), transform=None, cache=False):
        if int(num_samples) < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if len(image_size) != 2 or min(image_size) < 16:
            raise ValueError(f"image_size must be an int or (W, H), each >= 16, got {image_size}")
        if not 0.0 <= truncation <= 1.0:
            raise ValueError(f"truncation must be a probability, got {truncation}")
        if len(distractors) != 2 or not 0 <= distractors[0] <= distractors[1]:
            raise ValueError(f"distractors must be (min, max) with 0 <= min <= max, got {distractors}")
        self.num_samples = int(num_samples)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.skeleton = skeletons.get(skeleton)
        self.seed = int(seed)
        self.max_rotation = float(max_rotation)
        self.truncation = float(truncation)
        self.distractors = (int(distractors[0]), int(distractors[1]))
        self.transform = transform
        self._cache = {} if cache else None

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index):
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for a dataset of {self.num_samples}")
        index = index % self.num_samples if self.num_samples else index
        if self._cache is not None and index in self._cache:
            sample = {k: v.clone() for k, v in self._cache[index].items()}
            sample["image"] = sample["image"].float().div_(255)
        else:
            sample = self.render(index)
            if self._cache is not None:
                stored = dict(sample)
                stored["image"] = (sample["image"] * 255).round_().to(torch.uint8)
                self._cache[index] = stored
                sample = {k: v.clone() for k, v in stored.items()}
                sample["image"] = sample["image"].float().div_(255)
        return self.transform(sample) if self.transform is not None else sample

    def render(self, index):
        """Render sample ``index`` (no cache, no transform)."""
        rng = np.random.default_rng([self.seed, int(index), 0x5EED])
        w, h = self.image_size
        img = _background(rng, h, w)
        canvas = _Canvas(img)

        def distractor(in_front):
            kind = rng.integers(0, 3)
            col = rng.random(3, dtype=np.float32)
            c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            s = min(w, h)
            part = _DISTRACTOR_ID if in_front else 0
            if kind == 0:
                canvas.ellipse(c, rng.uniform(0.03, 0.12) * s, rng.uniform(0.03, 0.12) * s,
                               rng.uniform(0, math.pi), col, part)
            elif kind == 1:
                a = rng.uniform(0, math.pi)
                half = np.array([rng.uniform(0.03, 0.12), rng.uniform(0.03, 0.12)]) * s
                corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
                canvas.polygon(np.array([c + _rot(p, a) for p in corners]), col, part)
            else:
                d = _unit(rng.uniform(0, 2 * math.pi)) * rng.uniform(0.1, 0.3) * s
                canvas.capsule(c - d / 2, c + d / 2, rng.uniform(0.015, 0.04) * s, col, part)

        n_dis = int(rng.integers(self.distractors[0], self.distractors[1] + 1))
        n_front = int(rng.binomial(n_dis, 0.2))
        for _ in range(n_dis - n_front):
            distractor(False)
        canvas.ids[:] = 0

        body, widths, head_len, yaw = _figure(rng)
        pts = np.stack([body[n] for n in _POINTS])
        # body units -> pixels: scale to a figure height, rotate, then translate; y flips (image y down)
        extent = pts.max(0) - pts.min(0)
        height_px = rng.uniform(0.45, 0.95) * min(w, h)
        scale = height_px / max(extent[1], extent[0] * 0.8, 1e-3)
        angle = math.radians(rng.uniform(-self.max_rotation, self.max_rotation))
        centre_body = (pts.max(0) + pts.min(0)) / 2
        q = (pts - centre_body) * scale
        q[:, 1] = -q[:, 1]
        ca, sa = math.cos(angle), math.sin(angle)
        q = q @ np.array([[ca, sa], [-sa, ca]])
        shift = np.array([w / 2, h / 2]) + rng.uniform(-0.1, 0.1, 2) * np.array([w, h])
        if rng.random() < self.truncation:
            shift += _unit(rng.uniform(0, 2 * math.pi)) * rng.uniform(0.2, 0.4) * np.array([w, h])
        q = q + shift
        P = {n: q[i] for i, n in enumerate(_POINTS)}

        colours = {"top": rng.random(3, dtype=np.float32), "bottom": rng.random(3, dtype=np.float32),
                   "skin": np.clip(np.array([0.55, 0.4, 0.3], np.float32) * rng.uniform(0.5, 1.6)
                                   + rng.normal(0, 0.05, 3).astype(np.float32), 0, 1)}
        stripes = {k: (rng.uniform(3, 8) * scale / 40 if rng.random() < 0.3 else None) for k in ("top", "bottom")}
        limbs = {name: (a, b, slot, side) for name, a, b, slot, side in _LIMBS}

        def draw_limb(name):
            a, b, slot, _ = limbs[name]
            kind = name.split("_", 1)[-1]
            radius = widths[kind] * scale / 2
            canvas.capsule(P[a], P[b], radius, colours[slot], _PART_IDS[name], stripes.get(slot))

        def draw_torso():
            quad = np.stack([P["r_shoulder"], P["l_shoulder"], P["l_hip"], P["r_hip"]])
            centre = quad.mean(0)
            quad = centre + (quad - centre) * 1.15
            canvas.polygon(quad, colours["top"], _PART_IDS["torso"], stripes["top"])

        def draw_head():
            c = (P["upper_neck"] + P["head_top"]) / 2
            axis = P["head_top"] - P["upper_neck"]
            ry = np.hypot(*axis) / 2 * 1.05
            rx = ry * rng.uniform(0.7, 0.85)
            canvas.ellipse(c, ry, rx, math.atan2(axis[1], axis[0]), colours["skin"], _PART_IDS["head"])
            # dark eyes: a face cue that tells where the figure looks (and the COCO eye points)
            for name in ("l_eye", "r_eye"):
                canvas.ellipse(P[name], 0.045 * scale, 0.03 * scale, 0.0, colours["skin"] * 0.3, _PART_IDS["head"])

        back = rng.choice(["l", "r"])
        front = "r" if back == "l" else "l"
        arm_front = {s: rng.random() < 0.5 for s in ("l", "r")}
        for s in (back,):
            for part in ("thigh", "shin"):
                draw_limb(f"{s}_{part}")
        for s in ("l", "r"):
            if not arm_front[s]:
                draw_limb(f"{s}_upper_arm")
                draw_limb(f"{s}_forearm")
        for part in ("thigh", "shin"):
            draw_limb(f"{front}_{part}")
        draw_torso()
        draw_limb("neck")
        draw_head()
        for s in (back, front):
            if arm_front[s]:
                draw_limb(f"{s}_upper_arm")
                draw_limb(f"{s}_forearm")
        figure_mask = canvas.ids > 0
        for _ in range(n_front):
            distractor(True)

        # visibility from the part-id map at each point
        vis = np.zeros(len(_POINTS), np.int64)
        for i, n in enumerate(_POINTS):
            x, y = q[i]
            xi, yi = int(round(x)), int(round(y))
            if not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
                continue
            owner = canvas.ids[min(max(yi, 0), h - 1), min(max(xi, 0), w - 1)]
            owners = {_PART_IDS[p] for p in _OWNERS[n]}
            vis[i] = 2 if owner in owners else 1
        # ears: the one on the far side of a turned head is hidden by the head itself
        if yaw > 0.25 and vis[_P["r_ear"]] == 2:
            vis[_P["r_ear"]] = 1
        if yaw < -0.25 and vis[_P["l_ear"]] == 2:
            vis[_P["l_ear"]] = 1

        ys, xs = np.nonzero(figure_mask)
        if len(xs):
            bbox = np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5])
        else:
            bbox = np.array([-0.5, -0.5, w - 0.5, h - 0.5])
        hc = (P["upper_neck"] + P["head_top"]) / 2
        axis = P["head_top"] - P["upper_neck"]
        half = np.abs(axis) / 2 * 1.05 + np.abs(axis[::-1]) / 2 * 0.8
        head_box = np.concatenate([hc - half, hc + half])

        if self.skeleton is skeletons.COCO:
            sel = _COCO_FROM_POINTS
        else:
            sel = list(range(len(_MPII)))
        f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        image = torch.from_numpy(np.clip(canvas.img, 0, 1).astype(np.float32))
        return {
            "image": image,
            "keypoints": f32(q[sel]),
            "visibility": torch.as_tensor(vis[sel]),
            "head_box": f32(head_box),
            "bbox": f32(bbox),
            "center": f32((bbox[:2] + bbox[2:]) / 2),
            "size": f32(bbox[2:] - bbox[:2]),
            "area": torch.tensor(float(figure_mask.sum()), dtype=torch.float32),
            "image_id": torch.tensor(int(index), dtype=torch.int64),
        }

"""Affine cropping and augmentation for top-down keypoint localisation.

Conventions (shared by every function here and by the sample contract of :mod:`fastpose.data`):

* **Pixel centres.** Integer coordinates are pixel centres: pixel ``(i, j)`` (row, column) covers
  ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]`` and an image of width ``W`` spans ``[-0.5, W - 0.5]``
  horizontally. Points are ``(x, y)``: x along columns (right), y along rows (down).
* **Affine matrices** are float64 ``(2, 3)`` tensors ``[A | t]`` mapping *source*-image pixel
  coordinates to *output* pixel coordinates, ``p_out = A @ p_src + t``. ``warp_image`` samples the
  source at the inverse map of every output pixel centre.
* **Crop region.** ``affine_matrix(center, size, ...)`` maps the rectangle of ``size = (w, h)``
  centred at ``center`` onto the whole output: ``[cx - w/2, cx + w/2]`` onto ``[-0.5, W_out - 0.5]``,
  so ``center`` lands on the output centre ``((W_out - 1)/2, (H_out - 1)/2)``. (HRNet maps the centre
  to ``W_out/2``, half a pixel off under this convention; see Huang et al., "The Devil is in the
  Details: Delving into Unbiased Data Processing", CVPR 2020.)
* **Rotation** is in degrees, **positive = the image content turns counter-clockwise on screen**
  (the direction of HRNet's ``rot`` and OpenCV's ``getRotationMatrix2D``): a point to the right of
  the centre ends above it for +90. Equivalently the crop rectangle in the source is turned
  clockwise by the angle. The rotation is about ``center``, before the scaling to the output.
* **Flip** mirrors the *output* horizontally, ``x_out -> W_out - 1 - x_out``, after the rotation
  (mirror o rotate(r) equals rotate(-r) o mirror, and the rotation draws are symmetric). Mirroring
  turns the person's left into the image's right, so keypoint channels are permuted with the
  skeleton's ``flip_index`` (:func:`flip_keypoints`).
"""
import math
from numbers import Real

import torch
import torch.nn.functional as F

from . import skeletons as _skeletons

__all__ = ["affine_matrix", "invert_affine", "warp_image", "transform_points", "transform_boxes",
           "flip_keypoints", "load_image", "TopDownAffine"]


def _as64(x):
    """float64 CPU tensor of ``x`` (matrices and crop parameters are small, kept on the CPU)."""
    if torch.is_tensor(x):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(x, dtype=torch.float64)


def _check_size(output_size, name="output_size"):
    try:
        w, h = (int(v) for v in output_size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (W, H), got {output_size!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"{name} must be positive, got {output_size!r}")
    return w, h


def affine_matrix(center, size, rotation, output_size, flip=False):
    """The affine map from source pixels to output pixels for cropping a (rotated) region.

    Args:
        center: (..., 2) region centre ``(cx, cy)`` in source pixel coordinates.
        size: (..., 2) region size ``(w, h)`` in source pixels; it is mapped onto the full output,
            so ``w / W_out`` and ``h / H_out`` are the source pixels per output pixel (different
            ratios stretch the image; :class:`TopDownAffine` keeps them equal).
        rotation: (...) degrees, positive turns the content counter-clockwise on screen, about
            ``center``.
        output_size: ``(W_out, H_out)``.
        flip: (...) bool, mirror the output horizontally (``x -> W_out - 1 - x``).

    Returns:
        float64 tensor of shape ``(..., 2, 3)`` (the broadcast batch shape of the arguments),
        ``p_out = M[..., :, :2] @ p_src + M[..., :, 2]``. The source region
        ``[cx - w/2, cx + w/2] x [cy - h/2, cy + h/2]`` (turned by the rotation) maps onto
        ``[-0.5, W_out - 0.5] x [-0.5, H_out - 0.5]``.
    """
    W, H = _check_size(output_size)
    c = _as64(center)
    s = _as64(size)
    if c.shape[-1:] != (2,) or s.shape[-1:] != (2,):
        raise ValueError(f"center and size must have a last dimension of 2, got {tuple(c.shape)} "
                         f"and {tuple(s.shape)}")
    if not bool((s > 0).all()):
        raise ValueError(f"size must be positive, got {s.tolist()}")
    r = _as64(rotation)
    f = torch.as_tensor(flip).to("cpu", torch.bool)
    batch = torch.broadcast_shapes(c.shape[:-1], s.shape[:-1], r.shape, f.shape)
    c = c.expand(*batch, 2)
    s = s.expand(*batch, 2)
    r = r.expand(batch)
    f = f.expand(batch)

    theta = torch.deg2rad(r)
    cos, sin = torch.cos(theta), torch.sin(theta)
    sx = W / s[..., 0]
    sy = H / s[..., 1]
    # Content counter-clockwise on screen with y pointing down: (x, y) -> (c x + s y, -s x + c y).
    m = torch.empty(*batch, 2, 3, dtype=torch.float64)
    m[..., 0, 0] = sx * cos
    m[..., 0, 1] = sx * sin
    m[..., 1, 0] = -sy * sin
    m[..., 1, 1] = sy * cos
    out_c = torch.tensor([(W - 1) / 2.0, (H - 1) / 2.0], dtype=torch.float64)
    m[..., :, 2] = out_c - (m[..., :, :2] @ c.unsqueeze(-1)).squeeze(-1)
    # Mirror the output: x_out -> (W - 1) - x_out.
    mirrored = m.clone()
    mirrored[..., 0, :] = -m[..., 0, :]
    mirrored[..., 0, 2] += W - 1
    return torch.where(f[..., None, None], mirrored, m)


def invert_affine(matrix):
    """The inverse of (..., 2, 3) affine matrices (output -> source for a crop), float64."""
    m = _as64(matrix)
    if m.shape[-2:] != (2, 3):
        raise ValueError(f"matrix must be (..., 2, 3), got {tuple(m.shape)}")
    a_inv = torch.linalg.inv(m[..., :, :2])
    t = -(a_inv @ m[..., :, 2:])
    return torch.cat([a_inv, t], dim=-1)


def transform_points(points, matrix):
    """Apply (..., 2, 3) affine matrices to (..., N, 2) points (x, y); batch dims broadcast.

    A single (2, 3) matrix applies to points of any shape (..., 2). Computed in float64 and returned
    in the points' floating dtype (float32 for integer input). NaN points stay NaN.
    """
    p = torch.as_tensor(points)
    out_dtype = p.dtype if p.is_floating_point() else torch.float32
    m = torch.as_tensor(matrix, dtype=torch.float64, device=p.device)
    if m.shape[-2:] != (2, 3):
        raise ValueError(f"matrix must be (..., 2, 3), got {tuple(m.shape)}")
    if p.shape[-1:] != (2,):
        raise ValueError(f"points must have a last dimension of 2, got {tuple(p.shape)}")
    p64 = p.to(torch.float64)
    if m.dim() == 2:
        out = p64 @ m[:, :2].T + m[:, 2]
    else:
        out = p64 @ m[..., :, :2].transpose(-1, -2) + m[..., None, :, 2]
    return out.to(out_dtype)


def transform_boxes(boxes, matrix):
    """Transform (..., 4) boxes ``x1, y1, x2, y2`` by an affine matrix.

    The four corners are transformed and the axis-aligned box around them is returned (so under a
    rotation the box grows to enclose the turned rectangle; under a flip the corners are re-ordered
    to keep ``x1 <= x2``). NaN boxes stay NaN.
    """
    b = torch.as_tensor(boxes)
    if b.shape[-1:] != (4,):
        raise ValueError(f"boxes must have a last dimension of 4, got {tuple(b.shape)}")
    x1, y1, x2, y2 = b.unbind(-1)
    corners = torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y1], -1),
                           torch.stack([x1, y2], -1), torch.stack([x2, y2], -1)], dim=-2)
    t = transform_points(corners, matrix)
    lo = t.amin(dim=-2)
    hi = t.amax(dim=-2)
    out = torch.cat([lo, hi], dim=-1)
    # amin/amax propagate NaN already; keep it explicit for partially-NaN boxes.
    nan = torch.isnan(b).any(dim=-1, keepdim=True)
    return torch.where(nan, torch.full_like(out, float("nan")), out)


def _is_pixel_shift(m):
    """Every (2, 3) in ``m`` (n, 2, 3) maps pixel centres onto pixel centres one to one: a whole
    pixel translation, possibly mirrored in x."""
    a, t = m[:, :, :2], m[:, :, 2]
    ok = (a[:, 0, 0].abs() == 1) & (a[:, 0, 1] == 0) & (a[:, 1, 0] == 0) & (a[:, 1, 1] == 1)
    return bool((ok & (t == t.round()).all(-1)).all())


def _shift_copy(image, m, W, H, fill):
    """warp_image for :func:`_is_pixel_shift` matrices: an exact copy of the pixels."""
    n, ch, h_in, w_in = image.shape
    out = fill.reshape(1, -1, 1, 1).expand(n, ch, H, W).clone()
    xo = torch.arange(W, dtype=torch.float64)
    yo = torch.arange(H, dtype=torch.float64)
    for i in range(n):
        sx, tx, ty = float(m[i, 0, 0]), float(m[i, 0, 2]), float(m[i, 1, 2])
        xs = (sx * (xo - tx)).long()  # x_out = sx * x_src + tx, sx = +-1
        ys = (yo - ty).long()
        vx = (xs >= 0) & (xs < w_in)
        vy = (ys >= 0) & (ys < h_in)
        if vx.any() and vy.any():
            dev = image.device
            src = image[i].index_select(1, ys[vy].to(dev)).index_select(2, xs[vx].to(dev))
            ix, iy = vx.nonzero()[:, 0].to(dev), vy.nonzero()[:, 0].to(dev)
            out[i, :, iy[:, None], ix[None, :]] = src
    return out


def warp_image(image, matrix, output_size, fill=0.0, mode="bilinear"):
    """Warp an image (C, H, W) or a batch (N, C, H, W) by source -> output affine matrices.

    Every output pixel centre ``(x, y)`` samples the source at ``inverse(matrix) @ (x, y, 1)`` with
    ``grid_sample(..., align_corners=False)``, whose normalised coordinates ``(2p + 1)/n - 1`` are
    exactly this module's pixel-centre convention, so a matrix that maps pixel centres onto pixel
    centres copies pixels: a whole-pixel shift (optionally mirrored in x, the identity-like crops)
is done as an exact copy, anything else with grid_sample (bilinear by default, ``mode`` as
grid_sample; float32 un-normalisation error about 1e-7 x the image size in pixels).

    Args:
        image: floating tensor (C, H, W) or (N, C, H, W), on any device.
        matrix: (2, 3) or, for a batch, (N, 2, 3) (a single (2, 3) is shared by the batch).
        output_size: ``(W_out, H_out)``.
        fill: value outside the source image, a number or a per-channel sequence. The source is
            treated as surrounded by ``fill`` (the band of border pixels blends with it bilinearly).

    Returns:
        the warped image, same dtype and device, (C, H_out, W_out) or (N, C, H_out, W_out).
    """
    if not torch.is_tensor(image) or not image.is_floating_point():
        raise TypeError("image must be a floating-point tensor (C, H, W) or (N, C, H, W)")
    W, H = _check_size(output_size)
    single = image.dim() == 3
    if single:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"image must be (C, H, W) or (N, C, H, W), got {tuple(image.shape)}")
    n, ch, h_in, w_in = image.shape
    m = _as64(matrix)
    if m.dim() == 2:
        m = m.unsqueeze(0)
    if m.shape[-2:] != (2, 3) or m.dim() != 3 or m.shape[0] not in (1, n):
        raise ValueError(f"matrix must be (2, 3) or ({n}, 2, 3), got {tuple(m.shape)}")
    m = m.expand(n, 2, 3)

    def normaliser(width, height):  # pixel -> grid_sample's normalised coordinates, (3, 3)
        return torch.tensor([[2.0 / width, 0.0, 1.0 / width - 1.0],
                             [0.0, 2.0 / height, 1.0 / height - 1.0],
                             [0.0, 0.0, 1.0]], dtype=torch.float64)

    fill_t = torch.as_tensor(fill, dtype=image.dtype, device=image.device)
    if fill_t.dim() > 1 or (fill_t.dim() == 1 and fill_t.numel() not in (1, ch)):
        raise ValueError(f"fill must be a number or {ch} values, got {fill!r}")

    if _is_pixel_shift(m):
        out = _shift_copy(image, m, W, H, fill_t)
        return out[0] if single else out

    inv = invert_affine(m)
    inv3 = torch.cat([inv, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(n, 1, 3)], dim=1)
    theta = normaliser(w_in, h_in) @ inv3 @ torch.linalg.inv(normaliser(W, H))
    # The grid in float64 (one rounding to the image dtype); grid_sample itself still un-normalises
    # in the image dtype, about 1e-7 * size pixels of error in float32.
    grid = F.affine_grid(theta[:, :2].to(image.device), (n, ch, H, W), align_corners=False)
    grid = grid.to(image.dtype)

    if bool((fill_t == 0).all()):
        out = F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=False)
    else:
        ones = torch.ones_like(image[:, :1])
        both = F.grid_sample(torch.cat([image, ones], 1), grid, mode=mode, padding_mode="zeros",
                             align_corners=False)
        out, mask = both[:, :ch], both[:, ch:]
        out = out + fill_t.reshape(1, -1, 1, 1) * (1 - mask)
    return out[0] if single else out


def flip_keypoints(keypoints, visibility, width, skeleton):
    """Mirror keypoints horizontally in an image of ``width`` pixels and swap left and right.

    ``x -> width - 1 - x`` (the pixel-centre mirror of ``torch.flip(image, [-1])``), then the joint
    axis is permuted with ``skeleton.flip_index`` so that e.g. the "l_wrist" entry holds the mirrored
    right wrist. Shapes (..., K, 2) and (..., K); returns new tensors (keypoints, visibility).
    Applying it twice is the identity.
    """
    sk = _skeletons.get(skeleton)
    kp = torch.as_tensor(keypoints)
    vis = torch.as_tensor(visibility)
    k = sk.num_joints
    if kp.shape[-2:] != (k, 2) or vis.shape[-1:] != (k,):
        raise ValueError(f"skeleton {sk.name!r} has {k} joints: keypoints must be (..., {k}, 2) and "
                         f"visibility (..., {k}), got {tuple(kp.shape)} and {tuple(vis.shape)}")
    perm = torch.tensor(sk.flip_index, device=kp.device)
    kp = kp.clone()
    kp[..., 0] = (width - 1) - kp[..., 0]
    return kp.index_select(-2, perm), vis.index_select(-1, perm.to(vis.device))


def load_image(path):
    """Read an image file with PIL as an RGB float32 (3, H, W) tensor in [0, 1]."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - pillow is in the "train" extra
        raise ImportError("reading images needs Pillow: pip install pillow "
                          "(or fastpose's 'train' extra)") from e
    import numpy as np

    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32).div_(255.0).contiguous()


def _draw_range(scale):
    if scale is None:
        return (1.0, 1.0)
    if isinstance(scale, Real):
        return (1.0 - float(scale), 1.0 + float(scale))
    lo, hi = (float(v) for v in scale)
    if not 0 < lo <= hi:
        raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {scale!r}")
    return (lo, hi)


class TopDownAffine:
    """Crop, and in training augment, a person region to a fixed input size (a sample transform).

    ``transform(sample) -> new sample``, following the sample contract of :mod:`fastpose.data`.

    The crop region is ``sample["center"]`` and ``sample["size"]`` (source pixels); its size is
    first expanded to the input aspect ratio ``W/H`` (the shorter side grows, as HRNet's
    ``_xywh2cs``) and then multiplied by ``padding`` (1.25 in HRNet, SimpleBaselines and for MPII's
    ``scale * 1.25``). A sample without ``center``/``size`` crops the whole image: centre
    ``((W_img - 1)/2, (H_img - 1)/2)``, size ``(W_img, H_img)`` expanded to the aspect ratio, without
    ``padding``.

    Training (``train=True``) draws, per call, from ``generator`` or torch's global RNG (which the
    DataLoader seeds differently per worker):

    * a scale factor uniform in ``scale = (lo, hi)`` multiplying the region size, so > 1 zooms out
      (the person looks smaller); a number ``s`` means ``(1 - s, 1 + s)``, ``None`` disables it;
    * with probability ``rotation_prob`` (HRNet: 0.6) a rotation uniform in ``[-rotation, rotation]``
      degrees (positive: content counter-clockwise on screen), otherwise 0;
    * with probability ``flip_prob`` a horizontal flip of the output, with left/right joints swapped
      by the skeleton's ``flip_index``.

    With DataLoader workers leave ``generator=None``: the DataLoader seeds every worker's global RNG
    differently, whereas a ``torch.Generator`` is copied into each worker in the same state (the
    workers would then draw identical augmentations).

    Evaluation (``train=False``) uses scale 1, rotation 0 and no flip: deterministic.
    :meth:`apply` performs the crop for given parameters (e.g. a flipped copy for flip testing).

    Output sample: a shallow copy of the input with

    * ``image``: (3, H, W) warped bilinearly (``fill`` outside the source image);
    * ``keypoints``: transformed (float32); ``visibility``: input flags, set to 0 where the
      transformed point falls outside the output image (``x`` not in ``[-0.5, W - 0.5)``, same for
      ``y``) or is not finite; after a flip both are permuted by ``flip_index``. Coordinates of
      joints with visibility 0 are transformed like the others and carry no meaning;
    * ``head_box`` and ``bbox``: the axis-aligned box around the four transformed corners (so it
      grows under rotation; NaN stays NaN) -- PCKh head sizes should be taken in the source frame;
    * ``affine``: float32 (2, 3), source pixels -> output pixels (its inverse takes predictions back);
    * every other key (``center``, ``size``, ``area``, ``image_id``, ...) unchanged, i.e. still in
      source-image terms.
    """

    def __init__(self, input_size=(256, 256), skeleton="mpii", train=True, rotation=40.0,
                 scale=(0.7, 1.3), flip_prob=0.5, rotation_prob=0.6, padding=1.25, fill=0.0,
                 generator=None):
        self.input_size = _check_size(input_size, "input_size")
        self.skeleton = _skeletons.get(skeleton)
        self.train = bool(train)
        self.rotation = abs(float(rotation or 0.0))
        self.scale = _draw_range(scale)
        self.flip_prob = float(flip_prob or 0.0)
        self.rotation_prob = float(rotation_prob or 0.0)
        for name, p in (("flip_prob", self.flip_prob), ("rotation_prob", self.rotation_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.padding = float(padding)
        if self.padding <= 0:
            raise ValueError(f"padding must be positive, got {padding}")
        self.fill = fill
        self.generator = generator

    def __repr__(self):
        return (f"{type(self).__name__}(input_size={self.input_size}, skeleton={self.skeleton.name!r}, "
                f"train={self.train}, rotation={self.rotation}, scale={self.scale}, "
                f"flip_prob={self.flip_prob}, rotation_prob={self.rotation_prob}, "
                f"padding={self.padding})")

    def sample_params(self):
        """Draw ``dict(scale=, rotation=, flip=)`` (the identity ``1, 0, False`` in eval mode)."""
        if not self.train:
            return dict(scale=1.0, rotation=0.0, flip=False)
        u = torch.rand(4, generator=self.generator, dtype=torch.float64).tolist()
        lo, hi = self.scale
        scale = lo + (hi - lo) * u[0]
        rotation = self.rotation * (2.0 * u[1] - 1.0) if u[2] < self.rotation_prob else 0.0
        flip = u[3] < self.flip_prob
        return dict(scale=scale, rotation=rotation, flip=flip)

    def region(self, sample):
        """The crop ``(center, size)`` (float64 (2,) each) before augmentation, see the class doc."""
        image = sample["image"]
        W, H = self.input_size
        aspect = W / H
        if "center" in sample and "size" in sample:
            center = _as64(sample["center"]).reshape(2)
            w, h = _as64(sample["size"]).reshape(2).tolist()
            padding = self.padding
        else:
            h_img, w_img = image.shape[-2:]
            center = torch.tensor([(w_img - 1) / 2.0, (h_img - 1) / 2.0], dtype=torch.float64)
            w, h = float(w_img), float(h_img)
            padding = 1.0
        if not (math.isfinite(w) and math.isfinite(h)) or (w <= 0 and h <= 0) or w < 0 or h < 0:
            raise ValueError(f"cannot crop a region of size {(w, h)}")
        if w > aspect * h:
            h = w / aspect
        else:
            w = h * aspect
        if not bool(torch.isfinite(center).all()):
            raise ValueError(f"cannot crop around center {center.tolist()}")
        return center, torch.tensor([w * padding, h * padding], dtype=torch.float64)

    def __call__(self, sample):
        return self.apply(sample, **self.sample_params())

    def apply(self, sample, scale=1.0, rotation=0.0, flip=False):
        """Crop ``sample`` with the given augmentation parameters (no randomness)."""
        if "image" not in sample:
            raise KeyError("TopDownAffine needs a sample with an 'image' (3, H, W) tensor")
        image = sample["image"]
        if not torch.is_tensor(image) or image.dim() != 3:
            raise ValueError("sample['image'] must be a (C, H, W) tensor")
        W, H = self.input_size
        center, size = self.region(sample)
        m = affine_matrix(center, size * float(scale), float(rotation), (W, H), flip=bool(flip))
        out = dict(sample)
        out["image"] = warp_image(image, m, (W, H), fill=self.fill)
        if "keypoints" in sample:
            kp = transform_points(torch.as_tensor(sample["keypoints"], dtype=torch.float32), m)
            if "visibility" in sample:
                vis = torch.as_tensor(sample["visibility"], dtype=torch.int64).clone()
            else:
                vis = torch.full(kp.shape[:-1], 2, dtype=torch.int64)
            x, y = kp[..., 0], kp[..., 1]
            inside = (x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < H - 0.5)
            vis[~inside] = 0
            if flip:
                perm = torch.tensor(self.skeleton.flip_index)
                if kp.shape[-2] != len(perm):
                    raise ValueError(f"flip with skeleton {self.skeleton.name!r} needs "
                                     f"{len(perm)} keypoints, the sample has {kp.shape[-2]}")
                kp, vis = kp[..., perm, :], vis[..., perm]
            out["keypoints"] = kp.contiguous()
            out["visibility"] = vis.contiguous()
        for key in ("head_box", "bbox"):
            if key in sample:
                out[key] = transform_boxes(torch.as_tensor(sample[key], dtype=torch.float32), m)
        out["affine"] = m.to(torch.float32)
        return out

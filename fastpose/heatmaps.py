"""Heatmap targets, decoding and the flip test.

Coordinate convention (the sample contract of ``fastpose.data``): integer coordinates are pixel centres,
in the image and in the heatmap alike, and a heatmap at stride s covers the same extent as the image.
Image pixel x and heatmap pixel u are then related by

    u = (x + 0.5) / s - 0.5,        x = (u + 0.5) * s - 0.5,

so mirroring the image (x -> W - 1 - x) mirrors the heatmap exactly (u -> w - 1 - u) and the flip test
needs no shift for models trained on these targets. HRNet's code maps u = x / s and therefore shifts
the flipped heatmaps by one pixel; ``flip_test(..., shift=1)`` reproduces that for such models.
DSNT coordinates are on the normalised pixel-centre grid: x_n = (2 x + 1) / W - 1 at any resolution.
"""
import torch
import torch.nn.functional as F

from .data import skeletons


def _size2(size, name):
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be an int or (W, H) of positive ints, got {size}")
    return size


def image_to_heatmap(coords, stride):
    """Image pixel coordinates (..., 2) -> heatmap pixel coordinates at ``stride`` (number or (sx, sy))."""
    s = torch.as_tensor(stride, dtype=coords.dtype, device=coords.device)
    return (coords + 0.5) / s - 0.5


def heatmap_to_image(coords, stride):
    """Heatmap pixel coordinates (..., 2) -> image pixel coordinates (inverse of ``image_to_heatmap``)."""
    s = torch.as_tensor(stride, dtype=coords.dtype, device=coords.device)
    return (coords + 0.5) * s - 0.5


def normalized_to_pixels(coords, image_size):
    """DSNT's normalised (x, y) in (-1, 1) -> pixel coordinates of an image of ``image_size`` (W, H)."""
    w, h = _size2(image_size, "image_size")
    size = torch.tensor([w, h], dtype=coords.dtype, device=coords.device)
    return ((coords + 1) * size - 1) / 2


def pixels_to_normalized(coords, image_size):
    """Pixel coordinates -> DSNT's normalised grid (inverse of ``normalized_to_pixels``)."""
    w, h = _size2(image_size, "image_size")
    size = torch.tensor([w, h], dtype=coords.dtype, device=coords.device)
    return (2 * coords + 1) / size - 1


def gaussian_targets(keypoints, visibility, heatmap_size, image_size, sigma=2.0, subpixel=False):
    """Gaussian heatmap targets, one map per keypoint.

    Args:
        keypoints: (N, K, 2) or (K, 2) image pixel coordinates (x, y).
        visibility: (N, K) / (K,) flags; joints with visibility 0 get an all-zero map and weight 0.
        heatmap_size: (w, h) of the maps; image_size: (W, H) of the image the keypoints refer to.
        sigma: standard deviation in heatmap pixels.
        subpixel: False (default, as the hourglass and HRNet code): the Gaussian is centred on the
            nearest heatmap pixel, so its peak is exactly 1; True: centred on the exact position (peak <= 1).

    Returns ``(targets, weights)``: targets (N, K, h, w) float32 with the Gaussian cut to zero outside
    the square of half-width 3 sigma around its centre; weights (N, K) float32, 1 for labelled joints
    whose centre lies on the map (within the 3-sigma margin, as HRNet), else 0.
    """
    squeeze = keypoints.dim() == 2
    if squeeze:
        keypoints, visibility = keypoints[None], visibility[None]
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be (N, K, 2) or (K, 2), got {tuple(keypoints.shape)}")
    if visibility.shape != keypoints.shape[:2]:
        raise ValueError(f"visibility must be {tuple(keypoints.shape[:2])}, got {tuple(visibility.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    w, h = _size2(heatmap_size, "heatmap_size")
    W, H = _size2(image_size, "image_size")
    kp = keypoints.detach().to(torch.float32)
    u = image_to_heatmap(kp, (W / w, H / h))
    centre = u if subpixel else torch.floor(u + 0.5)
    dev = kp.device
    xs = torch.arange(w, device=dev, dtype=torch.float32)
    ys = torch.arange(h, device=dev, dtype=torch.float32)
    dx = xs.view(1, 1, 1, w) - centre[..., 0, None, None]
    dy = ys.view(1, 1, h, 1) - centre[..., 1, None, None]
    g = torch.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
    r = 3 * sigma
    g = g * ((dx.abs() <= r) & (dy.abs() <= r))
    margin = r
    on_map = ((centre[..., 0] >= -margin) & (centre[..., 0] <= w - 1 + margin)
              & (centre[..., 1] >= -margin) & (centre[..., 1] <= h - 1 + margin))
    weights = ((visibility > 0) & on_map & torch.isfinite(u).all(-1)).to(torch.float32)
    g = torch.nan_to_num(g) * weights[..., None, None]
    if squeeze:
        return g[0], weights[0]
    return g, weights


def decode_argmax(heatmaps, shift=0.25):
    """Argmax decoding with the quarter-pixel refinement of the hourglass / HRNet code.

    Returns ``(coords, maxvals)``: coords (N, K, 2) in heatmap pixels, each argmax moved by ``shift``
    toward its larger horizontal and vertical neighbour (no move at the border or on ties); maxvals
    (N, K) the peak values (use them as confidences).
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (N, K, h, w), got {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    hm = heatmaps.detach().float()
    flat = hm.reshape(n, k, h * w)
    if h * w == 0:
        raise ValueError("heatmaps must have a non-empty spatial size")
    maxvals, idx = flat.max(-1)
    x, y = (idx % w), torch.div(idx, w, rounding_mode="floor")
    coords = torch.stack([x, y], -1).to(torch.float32)
    if shift:
        def at(xx, yy):
            xx, yy = xx.clamp(0, w - 1), yy.clamp(0, h - 1)
            return flat.gather(-1, (yy * w + xx).unsqueeze(-1)).squeeze(-1)

        inner_x = (x > 0) & (x < w - 1)
        inner_y = (y > 0) & (y < h - 1)
        ddx = torch.sign(at(x + 1, y) - at(x - 1, y)) * inner_x
        ddy = torch.sign(at(x, y + 1) - at(x, y - 1)) * inner_y
        coords = coords + shift * torch.stack([ddx, ddy], -1)
    return coords, maxvals


def decode_heatmaps(heatmaps, image_size, shift=0.25):
    """Argmax-decode heatmaps (N, K, h, w) to image pixel coordinates (N, K, 2); returns (coords, maxvals)."""
    W, H = _size2(image_size, "image_size")
    h, w = heatmaps.shape[-2:]
    coords, maxvals = decode_argmax(heatmaps, shift)
    return heatmap_to_image(coords, (W / w, H / h)), maxvals


def flip_heatmaps(heatmaps, flip_index, shift=0):
    """Mirror heatmaps (N, K, h, w) horizontally and swap left/right maps (``flip_index``: a permutation,
    a ``Skeleton`` or its name); ``shift`` moves the result right by that many pixels (HRNet convention)."""
    perm = _perm(flip_index, heatmaps.shape[1])
    out = heatmaps.flip(-1)[:, perm]
    if shift:
        out = torch.cat([out[..., :1].expand(*out.shape[:-1], shift), out[..., :-shift]], -1)
    return out


def flip_coords(coords, flip_index, width=None):
    """Mirror coordinates (N, K, 2) and swap left/right joints. ``width=None``: normalised coordinates
    (x -> -x); otherwise image pixels of an image ``width`` wide (x -> width - 1 - x)."""
    perm = _perm(flip_index, coords.shape[1])
    out = coords[:, perm].clone()
    out[..., 0] = -out[..., 0] if width is None else (width - 1) - out[..., 0]
    return out


def _perm(flip_index, k):
    if isinstance(flip_index, (str, skeletons.Skeleton)):
        flip_index = skeletons.get(flip_index).flip_index
    perm = list(flip_index)
    if sorted(perm) != list(range(k)):
        raise ValueError(f"flip_index must be a permutation of range({k}), got {perm}")
    return perm


def flip_test(model, images, flip_index, shift=0):
    """Run ``model`` on images and their mirror images and average.

    ``model(images)`` may return heatmaps (N, K, h, w), a list of them (the last is used: the final
    stack), or a DSNT head's ``(coords, heatmaps)`` (coordinates averaged with the mirrored, joint-swapped
    ones; heatmaps likewise). Returns what the model returns for one output, averaged.
    """
    out = _last(model(images))
    out_f = _last(model(images.flip(-1)))
    if isinstance(out, tuple):
        (c, hm), (cf, hmf) = out, out_f
        return (c + flip_coords(cf, flip_index)) / 2, (hm + flip_heatmaps(hmf, flip_index, shift)) / 2
    return (out + flip_heatmaps(out_f, flip_index, shift)) / 2


def _last(out):
    """The final output: the last stack's heatmaps, or (coords, heatmaps) of a DSNT head's last stack."""
    if isinstance(out, tuple) and len(out) == 2:
        c, h = (x[-1] if isinstance(x, (list, tuple)) else x for x in out)
        # a DSNT head gives (N, K, 2) coordinates beside (N, K, h, w) maps; two heatmaps are two stacks
        if isinstance(c, torch.Tensor) and c.dim() == 3 and c.shape[-1] == 2 and h.dim() == 4:
            return (c, h)
    return out[-1] if isinstance(out, (list, tuple)) else out


def soft_argmax_confidence(heatmaps):
    """Peak softmax probability per map (N, K): a confidence for DSNT heads' logits."""
    return F.softmax(heatmaps.flatten(2).float(), -1).amax(-1)
